"""Phi-accrual failure detection (Hayashibara et al. 2004) with a Lifeguard-style local health.

The detector keeps, per peer, the last ``window`` inter-arrival times of heartbeats and
fits a normal distribution to them. For a peer last heard from ``dt`` seconds ago::

    mean' = mean(intervals) + acceptable_heartbeat_pause
    sigma = max(stddev(intervals), min_std_deviation)
    phi   = -log10(1 - F(dt))   with F the CDF of N(mean', sigma)
          = -log10(0.5 * erfc((dt - mean') / (sigma * sqrt 2)))

``phi`` is the confidence, in powers of ten, that the peer is gone: phi = 8 means about
one chance in 10^8 that a live peer's next heartbeat is still on its way. A new peer's
history starts with two intervals around ``first_heartbeat_estimate`` (plus and minus a
quarter of it) so a single heartbeat already gives a usable estimate.

Local health (after Lifeguard, Dadgar et al. 2018): a node that is itself slow (its event
loop stalled, its own acks left late) sees everyone's heartbeats late and would accuse
healthy peers. It records that evidence in :class:`LocalHealth`, an integer score in
``[0, max_score]``: +1 per stall longer than ``stall_threshold`` or late own ack, -1 per
on-time own ack, and -1 per ``recovery_interval`` seconds without a bad event. The
detector then suspects a peer only when::

    phi >= threshold * (1 + score)

Because phi grows roughly with the square of the lateness, a multiplier ``m`` lets a
heartbeat be about ``sqrt(m)`` times later (beyond the expected arrival) before the
verdict; at the default maximum score of 8 that is three times later.
"""

from __future__ import annotations

import math
from collections import deque

import attrs

from foundation_trio.protocols.common import NodeId, require_non_negative, require_positive

__all__ = [
    "LocalHealth",
    "LocalHealthConfig",
    "PhiAccrualConfig",
    "PhiAccrualDetector",
]

_SQRT2 = math.sqrt(2.0)


@attrs.frozen(slots=True)
class PhiAccrualConfig:
    """Detector parameters (seconds); defaults follow Akka's production settings."""

    threshold: float = 8.0
    window: int = 200
    min_std_deviation: float = 0.1
    acceptable_heartbeat_pause: float = 3.0
    first_heartbeat_estimate: float = 1.0

    def __attrs_post_init__(self) -> None:
        owner = "PhiAccrualConfig"
        require_positive(owner, "threshold", self.threshold)
        if not isinstance(self.window, int) or self.window < 2:
            raise ValueError(f"{owner}.window must be an integer >= 2, got {self.window!r}")
        require_positive(owner, "min_std_deviation", self.min_std_deviation)
        require_non_negative(owner, "acceptable_heartbeat_pause", self.acceptable_heartbeat_pause)
        require_positive(owner, "first_heartbeat_estimate", self.first_heartbeat_estimate)


@attrs.frozen(slots=True)
class LocalHealthConfig:
    """Local-health parameters: score cap, what counts as a stall, recovery speed."""

    max_score: int = 8
    stall_threshold: float = 0.2
    recovery_interval: float = 5.0

    def __attrs_post_init__(self) -> None:
        owner = "LocalHealthConfig"
        if not isinstance(self.max_score, int) or self.max_score < 0:
            raise ValueError(f"{owner}.max_score must be an integer >= 0, got {self.max_score!r}")
        require_positive(owner, "stall_threshold", self.stall_threshold)
        require_positive(owner, "recovery_interval", self.recovery_interval)


class LocalHealth:
    """How unhealthy this node believes itself to be; see the module docstring."""

    __slots__ = ("_score", "_settled_at", "config")

    def __init__(self, config: LocalHealthConfig | None = None) -> None:
        self.config = config if config is not None else LocalHealthConfig()
        self._score = 0
        self._settled_at = 0.0

    def score(self, now: float) -> int:
        """Current score, after the time-based recovery up to ``now``."""
        recovered = int(max(0.0, now - self._settled_at) // self.config.recovery_interval)
        return max(0, self._score - recovered)

    def multiplier(self, now: float) -> float:
        """Factor applied to the detector threshold: ``1 + score``."""
        return 1.0 + self.score(now)

    def record_loop_lag(self, lag: float, now: float) -> None:
        """Report how late the event loop ran a timer; a lag above the threshold is a stall."""
        if lag >= self.config.stall_threshold:
            self._adjust(+1, now)

    def record_late_ack(self, now: float) -> None:
        """Report that an ack this node owed went out late (or a probe it sent timed out)."""
        self._adjust(+1, now)

    def record_on_time_ack(self, now: float) -> None:
        """Report that an ack this node owed went out in time."""
        self._adjust(-1, now)

    def _adjust(self, delta: int, now: float) -> None:
        current = self.score(now)
        self._score = min(self.config.max_score, max(0, current + delta))
        self._settled_at = now


class _History:
    __slots__ = ("intervals", "last_arrival", "sum", "sum_squares")

    def __init__(self, window: int, now: float, estimate: float) -> None:
        self.intervals: deque[float] = deque(maxlen=window)
        self.sum = 0.0
        self.sum_squares = 0.0
        self.last_arrival = now
        spread = estimate / 4.0
        self.add(estimate - spread)
        self.add(estimate + spread)

    def add(self, interval: float) -> None:
        if len(self.intervals) == self.intervals.maxlen:
            evicted = self.intervals[0]
            self.sum -= evicted
            self.sum_squares -= evicted * evicted
        self.intervals.append(interval)
        self.sum += interval
        self.sum_squares += interval * interval


class PhiAccrualDetector:
    """Per-peer phi-accrual detector; pure: every method takes the current time."""

    __slots__ = ("_histories", "config", "local_health")

    def __init__(
        self, config: PhiAccrualConfig | None = None, local_health: LocalHealth | None = None
    ) -> None:
        self.config = config if config is not None else PhiAccrualConfig()
        self.local_health = local_health
        self._histories: dict[NodeId, _History] = {}

    @property
    def peers(self) -> tuple[NodeId, ...]:
        """Peers with a heartbeat history."""
        return tuple(self._histories)

    def heartbeat(self, peer: NodeId, now: float) -> None:
        """Record a heartbeat from ``peer`` arriving at ``now``.

        Raises ``ValueError`` if ``now`` is earlier than the previous heartbeat.
        """
        history = self._histories.get(peer)
        if history is None:
            self._histories[peer] = _History(
                self.config.window, now, self.config.first_heartbeat_estimate
            )
            return
        interval = now - history.last_arrival
        if interval < 0:
            raise ValueError(
                f"heartbeat from {peer!r} at {now} is earlier than the previous one at"
                f" {history.last_arrival}"
            )
        history.add(interval)
        history.last_arrival = now

    def remove(self, peer: NodeId) -> None:
        """Forget ``peer`` (it left or was declared dead); unknown peers are ignored."""
        self._histories.pop(peer, None)

    def phi(self, peer: NodeId, now: float) -> float:
        """Suspicion level of ``peer`` at ``now`` (``inf`` beyond float precision).

        Raises ``KeyError`` for a peer that never sent a heartbeat.
        """
        history = self._histories.get(peer)
        if history is None:
            raise KeyError(f"no heartbeat recorded from {peer!r}")
        count = len(history.intervals)
        mean = history.sum / count
        variance = max(0.0, history.sum_squares / count - mean * mean)
        sigma = max(math.sqrt(variance), self.config.min_std_deviation)
        expected = mean + self.config.acceptable_heartbeat_pause
        elapsed = max(0.0, now - history.last_arrival)
        tail = 0.5 * math.erfc((elapsed - expected) / (sigma * _SQRT2))
        if tail <= 0.0:
            return math.inf
        return -math.log10(tail)

    def effective_threshold(self, now: float) -> float:
        """``threshold * (1 + local health score)``; the plain threshold without health."""
        threshold = self.config.threshold
        if self.local_health is not None:
            threshold *= self.local_health.multiplier(now)
        return threshold

    def is_available(self, peer: NodeId, now: float) -> bool:
        """Whether ``peer`` is below the effective threshold (``KeyError`` if unknown)."""
        return self.phi(peer, now) < self.effective_threshold(now)

    def suspects(self, now: float) -> list[NodeId]:
        """Peers whose phi is at or above the effective threshold, in first-seen order."""
        threshold = self.effective_threshold(now)
        return [peer for peer in self._histories if self.phi(peer, now) >= threshold]
