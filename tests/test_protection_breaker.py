"""The circuit breaker (issue 3, item 5): closed / open / half-open under MockClock,
what counts as a failure, cancellation, and a stateful model test."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import foundation_trio as ft
from foundation_trio.services import telemetry

protection = ft.protection
CLOSED, OPEN, HALF_OPEN = (
    protection.BreakerState.CLOSED,
    protection.BreakerState.OPEN,
    protection.BreakerState.HALF_OPEN,
)


async def fail() -> None:
    raise ConnectionError("service down")


async def succeed() -> str:
    return "ok"


async def failures(breaker: protection.CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(ConnectionError):
            await breaker.call(fail)


def telemetry_node() -> Any:
    return ft.open_node("brk")


async def test_breaker_opens_after_the_threshold_and_half_opens_after_the_recovery_time(
    autojump_clock,
):
    events: list[tuple[str, dict[str, Any]]] = []

    def record(name: str, measurements: Any, metadata: Any) -> None:
        events.append((name, dict(measurements)))

    async with telemetry_node():
        names = [
            f"protection.breaker.{n}" for n in ("opened", "half_opened", "closed", "rejected")
        ]
        telemetry.attach("test", names, record)
        breaker = protection.CircuitBreaker("db", failure_threshold=3, recovery_time=10.0)
        await failures(breaker, 2)
        assert await breaker.call(succeed) == "ok"  # a success resets the count
        await failures(breaker, 2)
        assert breaker.state is CLOSED
        assert breaker.failures == 2
        await failures(breaker, 1)
        assert breaker.state is OPEN
        opened_at = trio.current_time()

        await trio.sleep(4)
        called = []
        with pytest.raises(protection.CircuitOpen) as caught:
            await breaker.call(called.append, 1)
        assert called == []  # refused without calling
        assert caught.value.retry_after == pytest.approx(6.0)
        assert caught.value.state is OPEN

        await trio.sleep_until(opened_at + 10.0 - 0.001)
        assert breaker.state is OPEN
        await trio.sleep_until(opened_at + 10.0)
        assert breaker.state is HALF_OPEN
        assert await breaker.call(succeed) == "ok"
        assert breaker.state is CLOSED
        assert [name.rsplit(".", 1)[1] for name, _ in events] == [
            "opened",
            "rejected",
            "half_opened",
            "closed",
        ]
        assert events[0][1] == {"failures": 3}
        assert events[1][1] == {"retry_after": pytest.approx(6.0)}


async def test_a_failed_trial_reopens_for_another_recovery_time(autojump_clock):
    breaker = protection.CircuitBreaker("db", failure_threshold=1, recovery_time=5.0)
    await failures(breaker, 1)
    await trio.sleep(5)
    assert breaker.state is HALF_OPEN
    await failures(breaker, 1)
    assert breaker.state is OPEN
    assert breaker.retry_after() == pytest.approx(5.0)
    await trio.sleep(5)
    assert breaker.state is HALF_OPEN


async def test_half_open_admits_a_bounded_number_of_trials(autojump_clock):
    breaker = protection.CircuitBreaker(
        "db", failure_threshold=1, recovery_time=1.0, half_open_trials=2
    )
    await failures(breaker, 1)
    await trio.sleep(1)
    release = trio.Event()
    finished = []

    async def trial() -> None:
        async def wait() -> None:
            await release.wait()

        await breaker.call(wait)
        finished.append(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trial)
        nursery.start_soon(trial)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(protection.CircuitOpen) as caught:
            await breaker.call(succeed)
        assert caught.value.state is HALF_OPEN
        assert caught.value.retry_after is None
        assert breaker.retry_after() is None
        release.set()
    assert finished == [1, 1]
    assert breaker.state is CLOSED  # two successful trials close it


async def test_cancellation_is_not_a_failure_and_frees_a_trial_slot(autojump_clock):
    breaker = protection.CircuitBreaker("db", failure_threshold=1, recovery_time=1.0)
    # Closed: a cancelled call does not count.
    with trio.move_on_after(1):
        await breaker.call(trio.sleep_forever)
    assert breaker.state is CLOSED
    assert breaker.failures == 0
    # Half-open: a cancelled trial gives its slot back; the next call is the trial.
    await failures(breaker, 1)
    await trio.sleep(1)
    with trio.move_on_after(1):
        await breaker.call(trio.sleep_forever)
    assert breaker.state is HALF_OPEN
    assert breaker.retry_after() == 0.0
    assert await breaker.call(succeed) == "ok"
    assert breaker.state is CLOSED


async def test_only_failure_types_count(autojump_clock):
    breaker = protection.CircuitBreaker(
        "db", failure_threshold=2, failure_types=(ConnectionError, TimeoutError)
    )

    async def bad_request() -> None:
        raise ValueError("the caller's fault")

    await failures(breaker, 1)
    for _ in range(5):
        with pytest.raises(ValueError):
            await breaker.call(bad_request)
    # Neither a failure nor a success: the count of 1 stands.
    assert breaker.failures == 1
    assert breaker.state is CLOSED
    await failures(breaker, 1)
    assert breaker.state is OPEN


async def test_refusals_of_other_protections_are_not_failures(autojump_clock):
    inner = protection.CircuitBreaker("inner", failure_threshold=1, recovery_time=60)
    outer = protection.CircuitBreaker("outer", failure_threshold=1)
    await failures(inner, 1)
    with pytest.raises(protection.CircuitOpen):
        await outer.call(inner.call, succeed)
    assert outer.state is CLOSED


async def test_a_call_from_an_earlier_state_does_not_count(autojump_clock):
    breaker = protection.CircuitBreaker("db", failure_threshold=1, recovery_time=10.0)
    slow_started = trio.Event()

    async def slow_failure() -> None:
        slow_started.set()
        await trio.sleep(5)
        raise ConnectionError("late")

    async with trio.open_nursery() as nursery:

        async def run_slow() -> None:
            with pytest.raises(ConnectionError):
                await breaker.call(slow_failure)

        nursery.start_soon(run_slow)
        await slow_started.wait()
        await failures(breaker, 1)  # opens at t=0
        assert breaker.state is OPEN
    # The slow call failed at t=5 but belonged to the closed period: the breaker
    # still half-opens 10 s after it opened, not 10 s after that late failure.
    await trio.sleep(5)
    assert breaker.state is HALF_OPEN


async def test_guard_and_manual_reset(autojump_clock):
    breaker = protection.CircuitBreaker("db", failure_threshold=1, recovery_time=100)
    with pytest.raises(ConnectionError), breaker.guard():
        raise ConnectionError("x")
    assert breaker.state is OPEN
    breaker.reset()
    assert breaker.state is CLOSED
    # A reset also forgets the failures counted while closed, and the calls in flight.
    breaker = protection.CircuitBreaker("db", failure_threshold=2)
    in_flight = breaker.admit()
    await failures(breaker, 1)
    breaker.reset()
    assert breaker.failures == 0
    breaker.record(in_flight, ConnectionError("late"))
    assert breaker.failures == 0
    with breaker.guard():
        pass
    ticket = breaker.admit()
    breaker.record(ticket, None)
    with pytest.raises(ValueError, match="already recorded"):
        breaker.record(ticket, None)


def test_bad_options_raise_config_errors_naming_them():
    cases = {
        "failure_threshold": {"failure_threshold": 0},
        "recovery_time": {"recovery_time": -1.0},
        "half_open_trials": {"half_open_trials": "2"},
        "failure_types": {"failure_types": ("ConnectionError",)},
        "nonsense": {"nonsense": 1},
    }
    for name, options in cases.items():
        with pytest.raises(ft.ConfigError, match=name):
            protection.CircuitBreaker("db", **options)
    with pytest.raises(TypeError, match="name"):
        protection.CircuitBreaker("")
    with pytest.raises(TypeError, match="clock"):
        protection.CircuitBreaker("db", clock=5)  # type: ignore[arg-type]
    # A single class or a list is accepted where a tuple is expected.
    assert protection.CircuitBreaker("db", failure_types=OSError).options.failure_types == (
        OSError,
    )


async def test_call_needs_a_function():
    breaker = protection.CircuitBreaker("db")
    with pytest.raises(TypeError, match="fn"):
        await breaker.call(42)  # type: ignore[arg-type]


# -- a model of the breaker, checked against the implementation ------------------------------


class BreakerMachine(RuleBasedStateMachine):
    """Random admissions, call outcomes (in any order) and clock advances.

    The model keeps only the facts the docs state: the counts of consecutive
    failures, when the breaker opened, and the trial calls; calls remember the
    epoch (state change count) they were admitted in.
    """

    THRESHOLD = 3
    RECOVERY = 10.0
    TRIALS = 2

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.breaker = protection.CircuitBreaker(
            "model",
            failure_threshold=self.THRESHOLD,
            recovery_time=self.RECOVERY,
            half_open_trials=self.TRIALS,
            clock=lambda: self.now,
        )
        self.state = "closed"
        self.epoch = 0
        self.consecutive = 0
        self.opened_at = 0.0
        self.trials_taken = 0
        self.trial_successes = 0
        self.calls: list[tuple[Any, int, bool]] = []  # (ticket, epoch, is_trial)

    def _switch(self, state: str) -> None:
        self.state = state
        self.epoch += 1
        self.consecutive = 0
        self.trials_taken = 0
        self.trial_successes = 0
        if state == "open":
            self.opened_at = self.now

    def _due(self) -> None:
        if self.state == "open" and self.now >= self.opened_at + self.RECOVERY:
            self._switch("half_open")

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 9.99, 10.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def admit(self) -> None:
        self._due()
        expected_refusal = self.state == "open" or (
            self.state == "half_open" and self.trials_taken >= self.TRIALS
        )
        refused: protection.CircuitOpen | None = None
        try:
            ticket = self.breaker.admit()
        except protection.CircuitOpen as error:
            refused = error
        assert (refused is not None) == expected_refusal
        if refused is not None:
            if self.state == "open":
                assert refused.retry_after == pytest.approx(
                    self.opened_at + self.RECOVERY - self.now
                )
            else:
                assert refused.retry_after is None
            return
        trial = self.state == "half_open"
        if trial:
            self.trials_taken += 1
        self.calls.append((ticket, self.epoch, trial))

    @precondition(lambda self: bool(self.calls))
    @rule(
        index=st.integers(min_value=0, max_value=50),
        outcome=st.sampled_from(["success", "failure", "cancelled", "ignored"]),
    )
    def finish(self, index: int, outcome: str) -> None:
        ticket, epoch, trial = self.calls.pop(index % len(self.calls))
        error: BaseException | None = {
            "success": None,
            "failure": ConnectionError("down"),
            "cancelled": trio.Cancelled._create(),
            "ignored": KeyboardInterrupt(),
        }[outcome]
        self.breaker.record(ticket, error)
        if epoch != self.epoch:
            return
        if self.state == "closed":
            if outcome == "success":
                self.consecutive = 0
            elif outcome == "failure":
                self.consecutive += 1
                if self.consecutive >= self.THRESHOLD:
                    self._switch("open")
        elif self.state == "half_open" and trial:
            if outcome == "success":
                self.trial_successes += 1
                if self.trial_successes >= self.TRIALS:
                    self._switch("closed")
            elif outcome == "failure":
                self._switch("open")
            else:
                self.trials_taken -= 1

    @invariant()
    def same_state(self) -> None:
        self._due()
        assert self.breaker.state.value == self.state
        if self.state == "closed":
            assert self.breaker.failures == self.consecutive
        in_flight_trials = sum(
            1 for _, epoch, trial in self.calls if trial and epoch == self.epoch
        )
        assert in_flight_trials <= self.TRIALS


TestBreakerModel = BreakerMachine.TestCase
TestBreakerModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
