"""Phi-accrual detector and local health."""

from __future__ import annotations

import math

import pytest

from foundation_trio.protocols.phi import (
    LocalHealth,
    LocalHealthConfig,
    PhiAccrualConfig,
    PhiAccrualDetector,
)


def steady(detector: PhiAccrualDetector, peer: str, beats: int, every: float) -> float:
    now = 0.0
    for _ in range(beats):
        detector.heartbeat(peer, now)
        now += every
    return now - every


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threshold", 0.0),
        ("window", 1),
        ("min_std_deviation", 0.0),
        ("acceptable_heartbeat_pause", -1.0),
        ("first_heartbeat_estimate", 0.0),
    ],
)
def test_bad_detector_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        PhiAccrualConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"), [("max_score", -1), ("stall_threshold", 0.0), ("recovery_interval", 0.0)]
)
def test_bad_health_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        LocalHealthConfig(**{field: value})  # type: ignore[arg-type]


def test_defaults_follow_akka() -> None:
    config = PhiAccrualConfig()
    assert config.threshold == 8.0
    assert config.min_std_deviation == 0.1
    assert config.acceptable_heartbeat_pause == 3.0


def test_phi_matches_the_normal_tail_formula() -> None:
    config = PhiAccrualConfig(acceptable_heartbeat_pause=0.0, min_std_deviation=0.1)
    detector = PhiAccrualDetector(config)
    last = steady(detector, "p", 50, 1.0)
    # The two bootstrap intervals (0.75, 1.25) plus 49 intervals of exactly 1.0.
    intervals = [0.75, 1.25] + [1.0] * 49
    mean = sum(intervals) / len(intervals)
    sigma = max(math.sqrt(sum((i - mean) ** 2 for i in intervals) / len(intervals)), 0.1)
    elapsed = 1.3
    expected = -math.log10(0.5 * math.erfc((elapsed - mean) / (sigma * math.sqrt(2))))
    assert detector.phi("p", last + elapsed) == pytest.approx(expected, rel=1e-9)


def test_phi_grows_with_silence_and_crosses_the_threshold() -> None:
    detector = PhiAccrualDetector(PhiAccrualConfig(acceptable_heartbeat_pause=0.0))
    last = steady(detector, "p", 30, 1.0)
    values = [detector.phi("p", last + dt) for dt in (0.5, 1.0, 1.5, 2.0, 3.0)]
    assert values == sorted(values)
    assert detector.is_available("p", last + 1.0)
    assert not detector.is_available("p", last + 3.0)
    assert detector.suspects(last + 3.0) == ["p"]
    assert detector.suspects(last + 0.5) == []


def test_acceptable_pause_delays_the_verdict() -> None:
    strict = PhiAccrualDetector(PhiAccrualConfig(acceptable_heartbeat_pause=0.0))
    lenient = PhiAccrualDetector(PhiAccrualConfig(acceptable_heartbeat_pause=3.0))
    last = steady(strict, "p", 30, 1.0)
    steady(lenient, "p", 30, 1.0)
    assert strict.suspects(last + 3.0) == ["p"]
    assert lenient.suspects(last + 3.0) == []
    assert lenient.suspects(last + 6.0) == ["p"]


def test_huge_silence_gives_infinite_phi() -> None:
    detector = PhiAccrualDetector(PhiAccrualConfig(acceptable_heartbeat_pause=0.0))
    last = steady(detector, "p", 10, 1.0)
    assert detector.phi("p", last + 1e6) == math.inf


def test_window_bounds_the_history() -> None:
    detector = PhiAccrualDetector(PhiAccrualConfig(window=5, acceptable_heartbeat_pause=0.0))
    steady(detector, "p", 40, 10.0)
    # After the window forgot the fast start, only 10 s intervals remain.
    now = 0.0
    for _ in range(20):
        detector.heartbeat("q", now)
        now += 0.1
    for _ in range(6):
        now += 10.0
        detector.heartbeat("q", now)
    assert detector.phi("q", now + 10.0) == pytest.approx(detector.phi("p", 390.0 + 10.0))


def test_unknown_peer_and_clock_going_backwards_are_errors() -> None:
    detector = PhiAccrualDetector()
    with pytest.raises(KeyError, match="ghost"):
        detector.phi("ghost", 0.0)
    detector.heartbeat("p", 5.0)
    with pytest.raises(ValueError, match="earlier"):
        detector.heartbeat("p", 4.0)
    detector.remove("p")
    detector.remove("never-seen")
    assert detector.peers == ()


def test_local_health_score_rises_on_stalls_and_recovers_over_time() -> None:
    health = LocalHealth(
        LocalHealthConfig(max_score=3, stall_threshold=0.2, recovery_interval=5.0)
    )
    health.record_loop_lag(0.05, 0.0)
    assert health.score(0.0) == 0
    for _ in range(5):
        health.record_loop_lag(0.5, 1.0)
    assert health.score(1.0) == 3
    assert health.multiplier(1.0) == 4.0
    assert health.score(6.0) == 2
    assert health.score(100.0) == 0
    health.record_late_ack(100.0)
    health.record_late_ack(100.0)
    health.record_on_time_ack(100.0)
    assert health.score(100.0) == 1


def test_poor_local_health_raises_the_effective_threshold_and_spares_peers() -> None:
    health = LocalHealth()
    config = PhiAccrualConfig(acceptable_heartbeat_pause=0.0)
    detector = PhiAccrualDetector(config, local_health=health)
    plain = PhiAccrualDetector(config)
    last = steady(detector, "p", 30, 1.0)
    steady(plain, "p", 30, 1.0)
    probe = last + 2.2
    assert plain.suspects(probe) == ["p"]
    assert detector.suspects(probe) == ["p"]
    for _ in range(4):
        health.record_loop_lag(1.0, probe)
    assert detector.effective_threshold(probe) == 8.0 * 5
    assert detector.suspects(probe) == []
