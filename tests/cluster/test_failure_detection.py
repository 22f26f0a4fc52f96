"""The phi-accrual failure detector as the cluster drives it (``cluster/failure.py``):
verdicts, the fixed timeout as the upper bound, local health against the node's own
stalls. Virtual time (``autojump_clock``) with a stand-in for the links; the live
test over real links is in ``test_failure_detection_live.py``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

import foundation_trio as ft
from foundation_trio.cluster.failure import (
    MIN_CHECK_INTERVAL,
    STALLED_EVENT,
    SUSPECTED_EVENT,
    FailureDetector,
)

DEFAULTS = ft.Cluster(cookie="phi")
FIXED_BOUND = DEFAULTS.heartbeat_interval * DEFAULTS.peer_down_after


class StubLinks:
    """What the detector calls on the links: verdicts are recorded with their time."""

    def __init__(self) -> None:
        self.downs: list[tuple[str, str, float]] = []
        self.busy: set[str] = set()

    def declare_down(self, peer: str, reason: str) -> None:
        self.downs.append((peer, reason, trio.current_time()))

    def delivering(self, peer: str) -> bool:
        return peer in self.busy


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, float], dict[str, object]]] = []

    def __call__(
        self, event: str, measurements: dict[str, float], meta: dict[str, object]
    ) -> None:
        self.seen.append((event, dict(measurements), dict(meta)))

    def named(self, event: str) -> list[tuple[dict[str, float], dict[str, object]]]:
        return [(m, meta) for name, m, meta in self.seen if name == event]


async def beat(detector: FailureDetector, peer: str, until: float = math.inf) -> None:
    """``peer`` sends a heartbeat every second (on an absolute schedule: a stall of
    this node delays the ones due during it) until ``until``."""
    due = trio.current_time() + 1.0
    while due <= until:
        await trio.sleep_until(due)
        detector.heartbeat(peer, trio.current_time())
        due += 1.0


async def scenario(
    options: ft.Cluster,
    seconds: float,
    peers: dict[str, float],
    *extra: Callable[[FailureDetector], Any],
) -> tuple[FailureDetector, StubLinks, Events]:
    """Run a detector for ``seconds`` of virtual time with ``peers`` (name -> when it
    falls silent) beating; ``extra`` are more tasks (stalls), given the detector."""
    detector = FailureDetector(options)
    links = StubLinks()
    events = Events()
    start = trio.current_time()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for peer, silent_at in peers.items():
                detector.peer_up(peer, start)
                nursery.start_soon(beat, detector, peer, start + silent_at)
            nursery.start_soon(detector.run, links, events)
            for task in extra:
                nursery.start_soon(task, detector)
    return detector, links, events


def stall_at(
    clock: trio.testing.MockClock, when: float, seconds: float
) -> Callable[[FailureDetector], Any]:
    """A task that blocks the whole (virtual) event loop for ``seconds`` at ``when``:
    the clock jumps while no task runs, as when a callback hogs the CPU."""

    async def stall(_: FailureDetector) -> None:
        await trio.sleep_until(when)
        clock.jump(seconds)

    return stall


async def test_a_silent_peer_is_declared_down_by_phi_before_the_fixed_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    detector, links, events = await scenario(DEFAULTS, 40, {"live": math.inf, "gone": 20})
    assert [peer for peer, _, _ in links.downs] == ["gone"]
    _, reason, at = links.downs[0]
    last_beat = start + 20
    detection = at - last_beat
    # Beyond the usual interval plus the acceptable pause, well before the bound.
    assert 1.0 + DEFAULTS.phi_acceptable_pause < detection < FIXED_BOUND
    assert reason.startswith("suspected by the phi detector: phi ")
    assert f"{detection:.2f} s without a heartbeat" in reason
    [(measured, meta)] = events.named(SUSPECTED_EVENT)
    assert meta == {"peer": "gone"}
    assert measured["phi"] >= measured["threshold"] == 8.0
    assert measured["silence"] == pytest.approx(detection)
    assert detector.suspected == 1
    assert detector.peers == ["live"]  # the verdict forgets the peer
    assert detector.phi("live", trio.current_time()) < 1.0


async def test_the_check_runs_every_quarter_heartbeat_not_faster_than_the_floor() -> None:
    assert FailureDetector(DEFAULTS).check_interval == 0.25
    fast = ft.Cluster(cookie="phi", heartbeat_interval=0.05)
    assert FailureDetector(fast).check_interval == MIN_CHECK_INTERVAL


async def test_a_stall_of_this_node_makes_no_false_suspicion(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    # A 3 s stall: when it ends, every peer looks 3 s late; the silent peer stops
    # later and is still detected.
    detector, links, events = await scenario(
        DEFAULTS,
        60,
        {"b": math.inf, "c": math.inf, "gone": 40},
        stall_at(autojump_clock, start + 20.5, 3.0),
    )
    assert [peer for peer, _, _ in links.downs] == ["gone"]
    assert links.downs[0][2] - (start + 40) < FIXED_BOUND
    [(stalled, _)] = events.named(STALLED_EVENT)
    assert stalled["lag"] >= 3.0 - detector.check_interval
    assert stalled["local_health"] == 1
    assert detector.stalls == 1


async def test_a_node_late_all_the_time_still_detects_a_silent_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()

    async def sluggish(_: FailureDetector) -> None:
        # The loop is blocked 0.3 s out of every 0.5 s, for the whole run.
        while True:
            await trio.sleep(0.2)
            autojump_clock.jump(0.3)

    detector, links, events = await scenario(
        DEFAULTS, 60, {"live": math.inf, "gone": 30}, sluggish
    )
    assert detector.stalls > 50
    assert detector.health.score(trio.current_time()) == DEFAULTS.local_health_max
    assert [peer for peer, _, _ in links.downs] == ["gone"]
    # Later than on a healthy node (the threshold is up to nine times higher), not never.
    assert links.downs[0][2] - (start + 30) < 2 * FIXED_BOUND
    [(measured, _)] = events.named(SUSPECTED_EVENT)
    assert measured["threshold"] > DEFAULTS.phi_threshold  # type: ignore[operator]


async def test_local_health_raises_the_threshold(autojump_clock: trio.testing.MockClock) -> None:
    detector = FailureDetector(DEFAULTS)
    now = trio.current_time()
    assert detector.effective_threshold(now) == 8.0
    for _ in range(3):
        detector.health.record_loop_lag(0.5, now)
    assert detector.effective_threshold(now) == 8.0 * 4
    # Scores decay by one per 5 s without a stall.
    assert detector.effective_threshold(now + 5.0) == 8.0 * 3
    capped = FailureDetector(ft.Cluster(cookie="phi", local_health_max=0))
    capped.health.record_loop_lag(10.0, now)
    assert capped.effective_threshold(now) == 8.0


async def late_heartbeat_run(
    clock: trio.testing.MockClock, local_health_max: int
) -> tuple[FailureDetector, StubLinks]:
    """Peer ``b`` beats every second until 20 s, then its next heartbeat comes 3 s
    later (slow, not gone); shortly before, this node's loop stalled three times."""
    options = ft.Cluster(cookie="phi", local_health_max=local_health_max)
    start = trio.current_time()

    async def late_beat(detector: FailureDetector) -> None:
        await trio.sleep_until(start + 23.0)
        detector.heartbeat("b", trio.current_time())
        await beat(detector, "b")  # and on time again from then on

    stalls = [stall_at(clock, start + at, 0.5) for at in (17.6, 18.6, 19.6)]
    detector, links, _ = await scenario(options, 30, {"b": 20}, late_beat, *stalls)
    return detector, links


async def test_with_local_health_a_stalling_node_does_not_accuse_a_slow_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    detector, links = await late_heartbeat_run(autojump_clock, local_health_max=8)
    assert detector.stalls == 3
    assert links.downs == []
    # Without local health the same history is a (false) verdict.
    detector, links = await late_heartbeat_run(autojump_clock, local_health_max=0)
    assert [peer for peer, _, _ in links.downs] == ["b"]


async def test_a_stall_delays_the_verdict_on_a_silent_peer_but_does_not_prevent_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    _, calm, _ = await scenario(DEFAULTS, 40, {"gone": 20})
    calm_after = calm.downs[0][2] - start - 20
    start = trio.current_time()
    _, stalled, _ = await scenario(
        DEFAULTS, 40, {"gone": 20}, stall_at(autojump_clock, start + 21.0, 0.5)
    )
    stalled_after = stalled.downs[0][2] - start - 20
    assert [p for p, _, _ in stalled.downs] == ["gone"]
    assert calm_after < stalled_after < FIXED_BOUND


async def test_a_peer_whose_reader_this_node_holds_is_not_judged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    detector = FailureDetector(DEFAULTS)
    links = StubLinks()
    events = Events()
    detector.peer_up("b", trio.current_time())
    links.busy.add("b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(detector.run, links, events)
        await trio.sleep(10)
        assert links.downs == []
        assert detector.phi("b", trio.current_time()) > 8.0
        links.busy.clear()
        await trio.sleep(1)
        assert [peer for peer, _, _ in links.downs] == ["b"]
        nursery.cancel_scope.cancel()


async def test_without_a_threshold_phi_is_reported_and_never_acts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    options = ft.Cluster(cookie="phi", phi_threshold=None)
    detector, links, events = await scenario(options, 30, {"gone": 5})
    assert links.downs == [] and events.named(SUSPECTED_EVENT) == []
    now = trio.current_time()
    assert detector.effective_threshold(now) is None
    assert detector.phis(now)["gone"] == math.inf


async def test_histories_follow_the_links(autojump_clock: trio.testing.MockClock) -> None:
    detector = FailureDetector(DEFAULTS)
    detector.heartbeat("stranger", 1.0)  # not up: ignored
    assert detector.peers == []
    with pytest.raises(KeyError):
        detector.phi("stranger", 1.0)
    detector.peer_up("b", 10.0)
    detector.heartbeat("b", 9.0)  # read before the link (re)started: ignored
    detector.heartbeat("b", 11.0)
    assert detector.phi("b", 11.0) < 1.0
    assert detector.phi("b", 30.0) == math.inf
    detector.peer_up("b", 30.0)  # a new link: a fresh history
    assert detector.phi("b", 30.0) < 1.0
    detector.peer_down("b")
    detector.peer_down("b")  # twice: harmless
    assert detector.peers == []
    with pytest.raises(TypeError, match=r"ft\.Cluster"):
        FailureDetector("options")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phi_threshold", 0),
        ("phi_threshold", -1.0),
        ("phi_threshold", math.inf),
        ("phi_threshold", True),
        ("phi_threshold", "8"),
        ("phi_window", 1),
        ("phi_window", 2.5),
        ("phi_min_std", 0),
        ("phi_min_std", math.nan),
        ("phi_acceptable_pause", -0.1),
        ("local_health_max", -1),
        ("local_health_max", True),
        ("loop_stall_threshold", 0),
    ],
)
def test_bad_detector_options_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ft.ConfigError, match=f"Cluster.{field}"):
        ft.Cluster(cookie="phi", **{field: value})  # type: ignore[arg-type]


def test_detector_options_from_plain_data() -> None:
    options = ft.Cluster.from_mapping(
        {"cookie": "phi", "phi_threshold": None, "phi_window": 50, "phi_acceptable_pause": 0}
    )
    assert options.phi_threshold is None
    assert options.phi_window == 50
    assert options.phi_acceptable_pause == 0.0
    assert ft.Cluster.from_mapping({"cookie": "phi", "phi_threshold": 12}).phi_threshold == 12.0
    with pytest.raises(ft.ConfigError, match="phi_threshold"):
        ft.Cluster.from_mapping({"cookie": "phi", "phi_threshold": "high"})
