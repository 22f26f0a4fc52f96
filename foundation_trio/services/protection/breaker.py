"""The circuit breaker: stop calling a service that keeps failing, then try it again.

States (:class:`BreakerState`):

``closed``
    Calls go through. ``failure_threshold`` failures in a row open the breaker; a
    success resets the count.
``open``
    Calls are refused at once with :class:`CircuitOpen`, whose ``retry_after`` is
    the time until the breaker half-opens: ``recovery_time`` after it opened.
``half_open``
    Up to ``half_open_trials`` trial calls are let through; further calls are refused
    (``retry_after`` None: the next chance comes when a trial ends). A trial that
    fails opens the breaker again for another ``recovery_time``; once
    ``half_open_trials`` trials have succeeded, the breaker closes.

The breaker has no timer task: it half-opens on the first call (or ``state`` read)
after the recovery time, and its ``half_opened`` event is emitted then.

What counts. A call **succeeds** if it returns and **fails** if it raises an
instance of ``failure_types`` (default ``(Exception,)``). Anything else says nothing
about the service and counts as neither: trio's ``Cancelled`` (the caller gave up,
whatever ``failure_types`` says), exceptions outside ``failure_types``, and the
refusals of the protection mechanisms (:class:`ProtectionError`: rate limit, an
open breaker, a pool checkout timeout). A half-open trial that ends that way gives
its trial slot back, so a cancelled trial never wedges the breaker half-open.

Only calls let through in the current state count: a call that started before the
breaker opened and fails afterwards does not extend the open period, and a slow
call from the closed period cannot close a half-open breaker.

Telemetry events (metadata ``breaker``: its name):
``protection.breaker.opened`` (measurements ``failures``: the failures that opened
it, 1 for a failed trial), ``protection.breaker.half_opened``,
``protection.breaker.closed``, and ``protection.breaker.rejected`` (measurements
``retry_after`` when known; metadata ``state``).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import attrs
import trio

from ..._validation import structure_options
from ._common import (
    Clock,
    ProtectionError,
    as_tuple,
    check_clock,
    check_name,
    emit,
    exception_types,
    non_negative_finite,
    positive_int,
)

T = TypeVar("T")


class BreakerState(enum.Enum):
    """The state of a :class:`CircuitBreaker`."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen(kw_only=True)
class BreakerOptions:
    """Options of a :class:`CircuitBreaker`, validated on construction."""

    failure_threshold: int = attrs.field(default=5, validator=positive_int)
    """Failures in a row, while closed, that open the breaker."""

    recovery_time: float = attrs.field(default=30.0, validator=non_negative_finite)
    """Seconds the breaker stays open before it lets trial calls through."""

    half_open_trials: int = attrs.field(default=1, validator=positive_int)
    """Trial calls let through while half-open; that many successes close it."""

    failure_types: Any = attrs.field(
        default=(Exception,), converter=as_tuple, validator=exception_types
    )
    """Exceptions that count as failures (``Cancelled`` never does)."""


class CircuitOpen(ProtectionError):
    """The breaker refused the call. ``retry_after`` is the seconds until it lets
    a trial through, or None when it is half-open and all its trial slots are taken
    (the next chance comes when a trial ends)."""

    def __init__(self, name: str, state: BreakerState, retry_after: float | None) -> None:
        if retry_after is None:
            detail = "half-open and its trial calls are all in flight; retry when one ends"
        else:
            detail = f"open; the next trial call is let through in {retry_after:.3f} s"
        super().__init__(f"circuit breaker {name!r} is {detail}")
        self.name = name
        self.state = state
        self.retry_after = retry_after


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


class Ticket:
    """A call let through: the state generation it belongs to, and whether it is a
    half-open trial. (A plain class: one is made per call.)"""

    __slots__ = ("done", "generation", "trial")

    def __init__(self, generation: int, trial: bool) -> None:
        self.generation = generation
        self.trial = trial
        self.done = False

    def __repr__(self) -> str:
        return f"Ticket(generation={self.generation}, trial={self.trial}, done={self.done})"


class CircuitBreaker:
    """A circuit breaker named ``name`` (it appears in errors and telemetry).

    Options (see :class:`BreakerOptions`; a bad one raises
    :class:`~foundation_trio.ConfigError` naming it): ``failure_threshold`` (5),
    ``recovery_time`` (30.0 s), ``half_open_trials`` (1), ``failure_types``
    (``(Exception,)``). ``clock`` is where the time is read, ``trio.current_time``
    by default (so the breaker follows trio's ``MockClock`` in tests).

    Use :meth:`call`, or :meth:`guard` around a block. The breaker is plain data
    shared by the tasks that use it; it never waits and is not a checkpoint itself.
    """

    def __init__(self, name: str = "breaker", *, clock: Clock | None = None, **options: Any):
        self.name = check_name(name, "CircuitBreaker()")
        self.options = structure_options(BreakerOptions, options, f"CircuitBreaker({name!r})")
        self._clock = check_clock(clock, "CircuitBreaker()")
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials_taken = 0  # in flight plus succeeded, while half-open
        self._trial_successes = 0
        self._generation = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state.value}>"

    # -- reading ---------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose recovery time has passed
        half-opens here)."""
        self._refresh(self._clock())
        return self._state

    @property
    def failures(self) -> int:
        """Failures in a row counted while closed."""
        return self._failures

    def retry_after(self) -> float | None:
        """Seconds until an open breaker lets a trial through; 0.0 if a call would be
        let through now; None if half-open with every trial slot taken."""
        now = self._clock()
        self._refresh(now)
        if self._state is BreakerState.OPEN:
            return self._opened_at + self.options.recovery_time - now
        if self._state is BreakerState.HALF_OPEN and (
            self._trials_taken >= self.options.half_open_trials
        ):
            return None
        return 0.0

    # -- calls -----------------------------------------------------------------------

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` through the breaker and return its result.

        Raises :class:`CircuitOpen` without calling ``fn`` when the breaker refuses;
        otherwise whatever ``fn`` raises, after counting it (see the module doc).
        """
        if not callable(fn):
            raise TypeError(f"CircuitBreaker.call(): fn must be an async function, got {fn!r}")
        ticket = self.admit()
        try:
            result = await fn(*args)
        except BaseException as error:
            self.record(ticket, error)
            raise
        self.record(ticket, None)
        return result

    def guard(self) -> _Guard:
        """A context manager that lets the block through (or raises
        :class:`CircuitOpen` on entry) and counts how the block ends::

            with breaker.guard():
                reply = await client.get(url)
        """
        return _Guard(self)

    def admit(self) -> Ticket:
        """Let one call through or raise :class:`CircuitOpen`. Pair it with exactly
        one :meth:`record`; :meth:`guard` and :meth:`call` do both."""
        if self._state is BreakerState.CLOSED:
            # The common case needs no clock: a closed breaker lets everything through.
            return Ticket(self._generation, False)
        now = self._clock()
        self._refresh(now)
        state = self._state
        if state is BreakerState.OPEN:
            self._reject(state, self._opened_at + self.options.recovery_time - now)
        # Half-open (the only state left: _refresh never closes the breaker).
        if self._trials_taken >= self.options.half_open_trials:
            self._reject(state, None)
        self._trials_taken += 1
        return Ticket(self._generation, trial=True)

    def record(self, ticket: Ticket, error: BaseException | None) -> None:
        """Count how the call of ``ticket`` ended: ``error`` None for a success."""
        if ticket.done:
            raise ValueError("CircuitBreaker.record(): this ticket was already recorded")
        ticket.done = True
        if ticket.generation != self._generation:
            return
        if error is None and self._state is BreakerState.CLOSED:
            self._failures = 0
            return
        outcome = self.classify(error)
        if self._state is BreakerState.CLOSED:
            if outcome is Outcome.SUCCESS:
                self._failures = 0
            elif outcome is Outcome.FAILURE:
                self._failures += 1
                if self._failures >= self.options.failure_threshold:
                    self._open(self._failures)
        elif self._state is BreakerState.HALF_OPEN and ticket.trial:
            if outcome is Outcome.SUCCESS:
                self._trial_successes += 1
                if self._trial_successes >= self.options.half_open_trials:
                    self._close()
            elif outcome is Outcome.FAILURE:
                self._open(1)
            else:
                self._trials_taken -= 1

    def classify(self, error: BaseException | None) -> Outcome:
        """Whether ``error`` (None: the call returned) is a success, a failure or
        neither, per the module doc."""
        if error is None:
            return Outcome.SUCCESS
        if isinstance(error, trio.Cancelled | ProtectionError):
            return Outcome.NEUTRAL
        if isinstance(error, BaseExceptionGroup):
            _, rest = error.split(trio.Cancelled)
            if rest is None:
                return Outcome.NEUTRAL
            failures, _ = rest.split(self.options.failure_types)
            return Outcome.NEUTRAL if failures is None else Outcome.FAILURE
        if isinstance(error, self.options.failure_types):
            return Outcome.FAILURE
        return Outcome.NEUTRAL

    def reset(self) -> None:
        """Close the breaker by hand, with no failures counted; calls in flight no
        longer count."""
        if self._state is not BreakerState.CLOSED:
            self._close()
        else:
            self._enter(BreakerState.CLOSED)

    # -- transitions -------------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        if (
            self._state is BreakerState.OPEN
            and now >= self._opened_at + self.options.recovery_time
        ):
            self._enter(BreakerState.HALF_OPEN)
            emit("protection.breaker.half_opened", {}, {"breaker": self.name})

    def _reject(self, state: BreakerState, retry_after: float | None) -> NoReturn:
        measurements = {} if retry_after is None else {"retry_after": retry_after}
        emit(
            "protection.breaker.rejected",
            measurements,
            {"breaker": self.name, "state": state.value},
        )
        raise CircuitOpen(self.name, state, retry_after)

    def _open(self, failures: int) -> None:
        self._enter(BreakerState.OPEN)
        self._opened_at = self._clock()
        emit("protection.breaker.opened", {"failures": failures}, {"breaker": self.name})

    def _close(self) -> None:
        self._enter(BreakerState.CLOSED)
        emit("protection.breaker.closed", {}, {"breaker": self.name})

    def _enter(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._failures = 0
        self._trials_taken = 0
        self._trial_successes = 0


class _Guard:
    __slots__ = ("_breaker", "_ticket")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def __enter__(self) -> None:
        self._ticket = self._breaker.admit()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._breaker.record(self._ticket, error)


__all__ = [
    "BreakerOptions",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "Outcome",
    "Ticket",
]
