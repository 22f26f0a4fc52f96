"""Failure detection of a node's peers: phi accrual over the links' heartbeats, with
Lifeguard-style local health.

The links send a heartbeat on every control connection every ``heartbeat_interval``
seconds, whatever else that connection carries, and report each one they read through
their ``on_heartbeat`` hook. A :class:`FailureDetector` feeds those arrivals to the
pure :class:`~foundation_trio.protocols.phi.PhiAccrualDetector` and, every
:attr:`FailureDetector.check_interval` seconds, declares down every peer whose phi
has reached ``Cluster.phi_threshold * (1 + local health score)``: the link is closed
with a reason naming phi (``Links.declare_down``), so the overlay core sees
``LinkDown`` through the links' ``peer_down`` like any other loss, remote processes
get ``NodeDown``, and the peer's address stays on the redial list (a peer that was
only slow links again).

Two detectors, one verdict each: phi is the primary one, and the links' own watchdog
(no frame at all on control for ``peer_down_after`` heartbeat intervals) stays as the
hard upper bound, which also covers a peer never heard often enough to have a
history. Whichever fires first takes the link down; the reason says which.

Local health: the timer of the check loop measures how late the node's own event loop
runs it. A lateness of at least ``Cluster.loop_stall_threshold`` is a stall: it raises
the local-health score by one (the score decays by one per 5 s without a stall), and
the round that noticed it judges the peers as of the time it was due, not as of now:
what arrived during the stall has not been read yet, and the silence the stall added
is this node's, not the peers'. A node whose own loop stalls thus raises its threshold
instead of declaring everyone dead, and one that is late all the time still detects
(later by its lateness).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

import trio

from ..protocols.phi import LocalHealth, LocalHealthConfig, PhiAccrualConfig, PhiAccrualDetector
from .options import Cluster

__all__ = [
    "MIN_CHECK_INTERVAL",
    "STALLED_EVENT",
    "SUSPECTED_EVENT",
    "DetectorLinks",
    "FailureDetector",
]

logger = logging.getLogger("foundation_trio.cluster.failure")

SUSPECTED_EVENT: Final = "cluster.peer.suspected"
"""Telemetry event of a peer declared down by phi: measurements ``phi``,
``threshold`` (the effective one), ``silence`` (seconds since its last heartbeat),
``local_health``; metadata ``peer`` and ``node``."""

STALLED_EVENT: Final = "cluster.loop.stalled"
"""Telemetry event of a stall of this node's event loop seen by the detector's timer:
measurements ``lag`` (seconds late) and ``local_health`` (the score after it);
metadata ``node``."""

MIN_CHECK_INTERVAL: Final = 0.05
"""Seconds: the detector checks every quarter heartbeat interval, but not more often
than this."""


class DetectorLinks(Protocol):
    """What the detector needs of the links (``Links`` provides it)."""

    def declare_down(self, peer: str, reason: str) -> None: ...

    def delivering(self, peer: str) -> bool: ...


Emit = Callable[[str, dict[str, float], dict[str, object]], None]
"""``emit(event, measurements, metadata)``: how the detector reports telemetry."""


class FailureDetector:
    """The phi-accrual detector of one node's peers; see the module docstring.

    Peers are keyed by node name. :meth:`peer_up` starts a history (the link coming
    up counts as the first heartbeat), :meth:`heartbeat` adds to it, :meth:`peer_down`
    forgets it. :meth:`run` is the check loop.
    """

    def __init__(self, options: Cluster) -> None:
        if not isinstance(options, Cluster):
            raise TypeError(f"options must be an ft.Cluster, got {type(options).__name__}")
        self.threshold = options.phi_threshold
        """The configured threshold; None: phi is reported, never acted on."""
        self.health = LocalHealth(
            LocalHealthConfig(
                max_score=options.local_health_max, stall_threshold=options.loop_stall_threshold
            )
        )
        self.phi_detector = PhiAccrualDetector(
            PhiAccrualConfig(
                # Without a threshold the core's is never consulted: any valid value.
                threshold=options.phi_threshold or PhiAccrualConfig().threshold,
                window=options.phi_window,
                min_std_deviation=options.phi_min_std,
                acceptable_heartbeat_pause=options.phi_acceptable_pause,
                first_heartbeat_estimate=options.heartbeat_interval,
            ),
            self.health,
        )
        self.check_interval = max(MIN_CHECK_INTERVAL, options.heartbeat_interval / 4)
        """Seconds between two checks (and two measurements of the loop's lateness)."""
        self.suspected = 0
        """Peers declared down by phi since the links (re)started."""
        self.stalls = 0
        """Stalls of this node's loop seen by the check timer since then."""
        self.last_lag = 0.0
        """How late (seconds) the check timer ran last time."""
        self._last: dict[str, float] = {}

    # -- the links' events ---------------------------------------------------------------

    def peer_up(self, peer: str, now: float) -> None:
        """The link to ``peer`` is up: a fresh history, its first heartbeat ``now``."""
        self.phi_detector.remove(peer)
        self.phi_detector.heartbeat(peer, now)
        self._last[peer] = now

    def peer_down(self, peer: str) -> None:
        """The link to ``peer`` is gone: forget its history (unknown peers ignored)."""
        self.phi_detector.remove(peer)
        self._last.pop(peer, None)

    def heartbeat(self, peer: str, now: float) -> None:
        """A heartbeat from ``peer`` read at ``now``; ignored for a peer that is not up
        (a frame read while its link goes down) or with a time before the last one."""
        last = self._last.get(peer)
        if last is None or now < last:
            return
        self.phi_detector.heartbeat(peer, now)
        self._last[peer] = now

    # -- answers -------------------------------------------------------------------------

    @property
    def peers(self) -> list[str]:
        """The peers with a history (their links are up)."""
        return list(self._last)

    def phi(self, peer: str, now: float) -> float:
        """``peer``'s phi at ``now``; raises ``KeyError`` for a peer that is not up."""
        return self.phi_detector.phi(peer, now)

    def phis(self, now: float) -> dict[str, float]:
        """Every up peer's phi at ``now``, by name."""
        return {peer: self.phi_detector.phi(peer, now) for peer in self._last}

    def effective_threshold(self, now: float) -> float | None:
        """``phi_threshold * (1 + local health score)``, None without a threshold."""
        if self.threshold is None:
            return None
        return self.phi_detector.effective_threshold(now)

    # -- the check loop ------------------------------------------------------------------

    async def run(self, links: DetectorLinks, emit: Emit) -> None:
        """Every :attr:`check_interval` seconds: measure how late this timer ran (a
        stall raises the local-health score, and the round judges as of the time it
        was due), then declare down the peers at or above the effective threshold.
        Runs until cancelled; raises nothing else (``emit`` and ``links`` must not
        raise)."""
        period = self.check_interval
        stall = self.health.config.stall_threshold
        due = trio.current_time() + period
        while True:
            await trio.sleep_until(due)
            now = trio.current_time()
            lag = now - due
            self.last_lag = lag
            if lag >= stall:
                self.stalls += 1
                self.health.record_loop_lag(lag, now)
                score = self.health.score(now)
                logger.debug(
                    "event loop stalled %.3f s; local health score %d (phi threshold x%d)",
                    lag,
                    score,
                    1 + score,
                )
                emit(STALLED_EVENT, {"lag": lag, "local_health": score}, {})
                # What arrived during the stall is still unread, and the silence the
                # stall added is ours: judge as the round would have when it was due.
                self.judge(links, due, emit)
            else:
                self.judge(links, now, emit)
            due = now + period

    def judge(self, links: DetectorLinks, now: float, emit: Emit) -> list[str]:
        """Declare down every up peer whose phi at ``now`` is at or above the effective
        threshold, except one whose control reader is held by this node's own handler
        (``links.delivering``); return their names. ``now`` may be in the past (a round
        judging as of when it was due); a peer heard after it is not judged."""
        threshold = self.effective_threshold(now)
        if threshold is None:
            return []
        suspects: list[tuple[str, float]] = []
        for peer, last in self._last.items():
            if last > now:
                continue
            phi = self.phi_detector.phi(peer, now)
            if phi >= threshold and not links.delivering(peer):
                suspects.append((peer, phi))
        if not suspects:
            return []
        score = self.health.score(now)
        for peer, phi in suspects:
            silence = now - self._last[peer]
            self.peer_down(peer)
            self.suspected += 1
            reason = (
                f"suspected by the phi detector: phi {phi:.1f} >= {threshold:.1f} after "
                f"{silence:.2f} s without a heartbeat"
            )
            logger.warning("peer %s declared down: %s", peer, reason)
            emit(
                SUSPECTED_EVENT,
                {
                    "phi": phi,
                    "threshold": threshold,
                    "silence": silence,
                    "local_health": score,
                },
                {"peer": peer},
            )
            links.declare_down(peer, reason)
        return [peer for peer, _ in suspects]
