"""The round runner: ask many agents one question each, concurrently, under one deadline.

Every coordination protocol of the agents layer runs its rounds through
:func:`run_round`::

    result = await run_round(["a", "b", "c"], VoteRequest(topic="lunch"),
                             deadline=trio.current_time() + 2.0)
    for outcome in result.outcomes: ...

**Guarantees.**

- A round is one nursery with one absolute ``deadline`` (trio time), which every
  question carries. All participants are asked at once.
- Each participant ends with exactly one recorded outcome: :class:`Responded`,
  :class:`Refused` (it answered with a :class:`~.messages.Refusal`),
  :class:`TimedOut`, :class:`Crashed` (it raised while answering, is not running,
  or could not be reached), :class:`Late` (answered after the deadline, within
  ``late_grace``; a late answer is never counted as a response), or
  :class:`NotNeeded` (the round ended early through ``until`` before it answered).
- One participant's crash or timeout never cancels the others.
- A round never runs past ``deadline + late_grace``; a hanging participant is
  recorded as timed out.
- Cancelling the caller cancels every question; no task is left behind, and the
  cancellation propagates.
- ``until(outcomes)`` ("collect until fixed") is called after each outcome;
  when it returns True the round ends at once and the participants still
  pending are :class:`NotNeeded`.
- Participants are reached only through :func:`~foundation_trio.call`, so a
  target may be any target the runtime can call (local today, ``(name, node)``
  pairs once the cluster is up).

**Ordering.** ``seq`` numbers the responses (responded and refused) in the order
they were received: by the trio time of receipt, and between answers received at
the same instant by the participant's position in the (possibly shuffled)
invitation order. :func:`ranked` sorts responses by the documented tie-break order:
the better amount first, then the smaller ``seq``, then the smaller participant id.
With ``rng`` (a seeded :class:`random.Random`) the invitation order is shuffled
with it, reproducibly.

A round run in the caller's task fails only by the caller's own cancellation or
by an exception from ``until`` (which propagates after every question was
cancelled). :func:`start_round` runs a round (or any coordination job) in a
**coordinator process** instead; any number of tasks can wait on its
:class:`Coordination` handle, and if the coordinator crashes or is killed before it
has a result, every waiter wakes with :class:`~.errors.CoordinatorCrashed`.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeAlias, TypeVar, overload

import attrs
import trio

from ..protocols.coordination import priority_key
from ..runtime.errors import CallTimeout, ServerExited
from ..runtime.pid import ExitReason, Pid
from ..runtime.process import Target, current_process, spawn
from ..runtime.process import exit as exit_process
from ..runtime.server import call
from . import telemetry as tm
from .errors import AgentNotFound, CoordinatorCrashed
from .messages import Question, Refusal
from .telemetry import emit

__all__ = [
    "Coordination",
    "Crashed",
    "Late",
    "NotNeeded",
    "Outcome",
    "Participant",
    "Refused",
    "Responded",
    "RoundResult",
    "TimedOut",
    "ranked",
    "run_round",
    "start_round",
]

T = TypeVar("T")


@attrs.frozen
class Responded:
    """The participant answered ``value`` at trio time ``received_at``; ``seq`` is
    its receipt sequence number in the round (0 first)."""

    participant: str
    value: Any
    received_at: float
    seq: int


@attrs.frozen
class Refused:
    """The participant declined with a :class:`~.messages.Refusal` (``reason``)."""

    participant: str
    reason: str
    received_at: float
    seq: int


@attrs.frozen
class TimedOut:
    """No answer by the deadline (nor within the late grace)."""

    participant: str


@attrs.frozen
class Crashed:
    """The participant failed instead of answering: ``error`` is its exit reason if
    it crashed while answering, else the error of reaching it (not running, no
    such process)."""

    participant: str
    error: object = attrs.field(eq=False)


@attrs.frozen
class Late:
    """An answer received after the deadline: recorded, never counted."""

    participant: str
    value: Any
    received_at: float


@attrs.frozen
class NotNeeded:
    """The round ended early (its result was fixed) before this participant answered."""

    participant: str


Outcome: TypeAlias = Responded | Refused | TimedOut | Crashed | Late | NotNeeded


@attrs.frozen
class RoundResult:
    """What a round recorded: one outcome per participant, in invitation order.

    ``started_at``, ``deadline`` and ``finished_at`` are trio times; ``ended_early``
    is True when ``until`` ended the round.
    """

    name: str
    outcomes: tuple[Outcome, ...]
    started_at: float
    deadline: float
    finished_at: float
    ended_early: bool

    def responses(self) -> list[Responded]:
        """The counted answers, by ``seq``."""
        found = [o for o in self.outcomes if isinstance(o, Responded)]
        return sorted(found, key=lambda o: o.seq)

    def outcome(self, participant: str) -> Outcome:
        """The outcome of ``participant``; :class:`KeyError` if it was not invited."""
        for item in self.outcomes:
            if item.participant == participant:
                return item
        raise KeyError(participant)

    def participants(self, kind: type[Any] | None = None) -> list[str]:
        """The participants (whose outcome is of class ``kind``), in invitation order."""
        return [o.participant for o in self.outcomes if kind is None or isinstance(o, kind)]

    def counts(self) -> dict[str, int]:
        """How many outcomes of each kind: ``{"Responded": 2, "TimedOut": 1, ...}``."""
        counted: dict[str, int] = {}
        for item in self.outcomes:
            name = type(item).__name__
            counted[name] = counted.get(name, 0) + 1
        return counted


def ranked(
    responses: Iterable[Responded],
    amount: Callable[[Responded], float] = lambda r: float(r.value),
    *,
    higher_is_better: bool = True,
) -> list[Responded]:
    """``responses`` best first, by the tie-break order every protocol uses: the better
    ``amount(response)`` first, then the smaller ``seq``, then the smaller participant id
    (:func:`foundation_trio.protocols.coordination.priority_key`, shared with the
    protocol cores).
    """
    sign = 1.0 if higher_is_better else -1.0
    return sorted(responses, key=lambda r: priority_key(sign * amount(r), r.seq, r.participant))


# -- participants ------------------------------------------------------------------------


@attrs.frozen
class Participant:
    """A participant named explicitly: ``id`` as it appears in the outcomes, and the
    ``target`` to call; ``target=None`` means ``id`` is an agent id, resolved to the
    agent's live pid when it is asked."""

    id: str
    target: Target | None = None


@attrs.frozen
class _Invitee:
    id: str
    target: Target | None  # None: an agent id, resolved when asked
    position: int


ParticipantLike: TypeAlias = "str | Pid | tuple[str, str] | Participant"


def _invitees(
    participants: Iterable[ParticipantLike] | Mapping[str, Target], rng: random.Random | None
) -> list[_Invitee]:
    from .registry import _existing_system

    system = _existing_system()
    pairs: list[tuple[str, Target | None]] = []
    if isinstance(participants, Mapping):
        for key, target in participants.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"participant ids are non-empty str, got {key!r}")
            pairs.append((key, target))
    else:
        if isinstance(participants, str | bytes):
            raise TypeError("participants is a collection of agent ids or targets, not one str")
        for item in participants:
            if isinstance(item, Participant):
                if not isinstance(item.id, str) or not item.id:
                    raise TypeError(f"participant ids are non-empty str, got {item.id!r}")
                if item.target is None and (system is None or item.id not in system.records):
                    raise AgentNotFound(item.id)
                pairs.append((item.id, item.target))
            elif isinstance(item, str):
                if system is None or item not in system.records:
                    raise AgentNotFound(item)
                pairs.append((item, None))
            elif isinstance(item, Pid):
                pairs.append((str(item), item))
            elif (
                isinstance(item, tuple)
                and len(item) == 2
                and all(isinstance(x, str) and x for x in item)
            ):
                pairs.append((f"{item[0]}@{item[1]}", item))
            else:
                raise TypeError(
                    "a participant is an agent id (str), a Pid or a (name, node) pair; "
                    f"pass a mapping {{id: target}} for other targets; got {item!r}"
                )
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"participant {key!r} is listed twice")
        seen.add(key)
    if rng is not None:
        if not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random, got {rng!r}")
        rng.shuffle(pairs)
    return [_Invitee(key, target, position) for position, (key, target) in enumerate(pairs)]


def _check_deadline(deadline: object) -> float:
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        raise TypeError(f"deadline must be a trio time (float), got {deadline!r}")
    if math.isnan(deadline) or math.isinf(deadline):
        raise ValueError(f"deadline must be a finite trio time, got {deadline!r}")
    return float(deadline)


def _check_grace(grace: object) -> float:
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace < math.inf:
        raise ValueError(f"late_grace must be finite seconds >= 0, got {grace!r}")
    return float(grace)


def _same(question: Question, _: str) -> Question:
    return question


def _checked_question(question: object, participant: str) -> Question:
    if not isinstance(question, Question):
        raise TypeError(f"the question for {participant!r} is not a Question: {question!r}")
    return question


# -- the runner --------------------------------------------------------------------------


class _View(Sequence[Outcome]):
    """A read-only view of the outcomes recorded so far, in the order they were
    recorded (what ``until`` sees; no copy per call)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[Outcome]) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Outcome: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Outcome]: ...

    def __getitem__(self, index: int | slice) -> Outcome | Sequence[Outcome]:
        if isinstance(index, slice):
            return tuple(self._items[index])
        return self._items[index]


class _Round:
    """The mutable state of one running round."""

    def __init__(
        self,
        name: str,
        invitees: list[_Invitee],
        question: Callable[[str], Question],
        deadline: float,
        grace: float,
        until: Callable[[Sequence[Outcome]], bool] | None,
    ) -> None:
        self.name = name
        self.invitees = invitees
        self.question = question
        self.deadline = deadline
        self.hard_deadline = deadline + grace
        self.until = until
        self.outcomes: dict[str, Outcome] = {}
        self.recorded: list[Outcome] = []
        self.view = _View(self.recorded)
        self.arrivals: list[Responded | Refused] = []
        self.started_at = trio.current_time()
        from .registry import _existing_system

        self.system = _existing_system()
        self.ended_early = False
        self.until_error: Exception | None = None
        self.scope: trio.CancelScope | None = None

    def _resolve(self, invitee: _Invitee) -> Target:
        if invitee.target is not None:
            return invitee.target
        system = self.system
        pid = None if system is None else system.live_pid(invitee.id)
        if pid is None:
            raise AgentNotFound(invitee.id, "not running")
        return pid

    async def ask(self, invitee: _Invitee) -> None:
        try:
            question = _checked_question(self.question(invitee.id), invitee.id)
            question = attrs.evolve(question, deadline=self.deadline)
            target = self._resolve(invitee)
            timeout = self.hard_deadline - trio.current_time()
            answer = await call(target, question, timeout=max(timeout, 0.0))
        except CallTimeout:
            self.record(TimedOut(invitee.id))
            return
        except ServerExited as exc:
            self.record(Crashed(invitee.id, exc.reason))
            return
        except Exception as exc:
            self.record(Crashed(invitee.id, exc))
            return
        now = trio.current_time()
        if now > self.deadline:
            self.record(Late(invitee.id, answer, now))
        elif isinstance(answer, Refusal):
            self.record(Refused(invitee.id, answer.reason, now, len(self.arrivals)))
        else:
            self.record(Responded(invitee.id, answer, now, len(self.arrivals)))

    def record(self, outcome: Outcome) -> None:
        self.outcomes[outcome.participant] = outcome
        self.recorded.append(outcome)
        self._report(outcome)
        if isinstance(outcome, Responded | Refused):
            self.arrivals.append(outcome)
        if self.until is None or self.ended_early or self.until_error is not None:
            return
        try:
            fixed = self.until(self.view)
        except Exception as exc:
            # Raised by run_round itself once the other questions are cancelled,
            # rather than from inside the nursery wrapped in a group.
            self.until_error = exc
            fixed = True
        if fixed:
            self.ended_early = True
            assert self.scope is not None
            self.scope.cancel()

    def _report(self, outcome: Outcome) -> None:
        metadata: dict[str, object] = {"round": self.name, "agent": outcome.participant}
        if isinstance(outcome, Responded | Refused | Late):
            latency = outcome.received_at - self.started_at
            metadata["outcome"] = type(outcome).__name__.lower()
            emit(tm.ROUND_ANSWERED, {"latency": latency}, metadata)
        elif isinstance(outcome, TimedOut):
            emit(tm.ROUND_TIMED_OUT, {"latency": trio.current_time() - self.started_at}, metadata)
        elif isinstance(outcome, Crashed):
            metadata["error"] = outcome.error
            emit(tm.ROUND_CRASHED, {"latency": trio.current_time() - self.started_at}, metadata)

    def result(self, started_at: float) -> RoundResult:
        # Final receipt order: time of receipt, then invitation position (answers
        # received in the same instant may be recorded in any order by trio).
        position = {i.id: i.position for i in self.invitees}
        ordered = sorted(self.arrivals, key=lambda o: (o.received_at, position[o.participant]))
        seq = {o.participant: n for n, o in enumerate(ordered)}
        final: list[Outcome] = []
        for invitee in self.invitees:
            found = self.outcomes.get(invitee.id)
            if found is None:
                found = NotNeeded(invitee.id) if self.ended_early else TimedOut(invitee.id)
            elif isinstance(found, Responded | Refused):
                found = attrs.evolve(found, seq=seq[invitee.id])
            final.append(found)
        result = RoundResult(
            self.name,
            tuple(final),
            started_at,
            self.deadline,
            trio.current_time(),
            self.ended_early,
        )
        counts = result.counts()
        emit(
            tm.ROUND_STOPPED,
            {
                "duration": result.finished_at - started_at,
                "responded": counts.get("Responded", 0),
                "refused": counts.get("Refused", 0),
                "timed_out": counts.get("TimedOut", 0),
                "crashed": counts.get("Crashed", 0),
                "late": counts.get("Late", 0),
                "not_needed": counts.get("NotNeeded", 0),
            },
            {"round": self.name, "ended_early": self.ended_early},
        )
        return result


async def run_round(
    participants: Iterable[ParticipantLike] | Mapping[str, Target],
    question: Question | Callable[[str], Question],
    *,
    deadline: float,
    until: Callable[[Sequence[Outcome]], bool] | None = None,
    late_grace: float = 0.0,
    rng: random.Random | None = None,
    name: str = "round",
) -> RoundResult:
    """Ask every participant ``question`` concurrently and record each one's outcome.

    ``participants``: agent ids (str), pids, ``(name, node)`` pairs, or a mapping of
    participant id to any target. ``question``: one :class:`~.messages.Question`
    for all, or a function of the participant id returning one. ``deadline``: one
    absolute trio time for the whole round, filled into every question.
    ``until``: called with the outcomes so far after each one; True ends the round
    at once. ``late_grace``: seconds after the deadline during which answers are
    still received, only to be recorded as :class:`Late`. ``rng``: shuffles the
    invitation order (reproducibly for a seeded RNG).

    Returns a :class:`RoundResult` once every participant has an outcome, at the
    latest at ``deadline + late_grace``. Raises :class:`~.errors.AgentNotFound`
    before asking anyone if an agent id is not registered, :class:`TypeError` /
    :class:`ValueError` for bad arguments, and whatever ``until`` raises (after
    cancelling the questions still out). Must run in a process of a node
    (:class:`~foundation_trio.NoNodeError` otherwise). Cancelling the caller
    cancels every question and leaves no task behind.
    """
    current_process("run_round()")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    when = _check_deadline(deadline)
    grace = _check_grace(late_grace)
    if until is not None and not callable(until):
        raise TypeError(f"until must be a callable or None, got {until!r}")
    question_for: Callable[[str], Question]
    if isinstance(question, Question):
        question_for = functools.partial(_same, question)
    elif callable(question):
        question_for = question
    else:
        raise TypeError(
            f"question must be a Question or a function returning one, got {question!r}"
        )
    invitees = _invitees(participants, rng)
    state = _Round(name, invitees, question_for, when, grace, until)
    started_at = state.started_at
    emit(
        tm.ROUND_STARTED,
        {"participants": len(invitees), "timeout": when - started_at},
        {"round": name},
    )
    with trio.CancelScope() as scope:
        state.scope = scope
        async with trio.open_nursery() as nursery:
            for invitee in invitees:
                nursery.start_soon(state.ask, invitee)
    if state.until_error is not None:
        raise state.until_error
    return state.result(started_at)


# -- coordinator processes -----------------------------------------------------------------


class Coordination(Generic[T]):
    """A handle on a job run by a coordinator process (see :func:`start_round`).

    Any number of tasks, in any process of the node, may ``await result()``.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.pid: Pid | None = None
        self._done = trio.Event()
        self._value: T | None = None
        self._crash: tuple[ExitReason] | None = None

    @property
    def done(self) -> bool:
        """Whether the job has a result or its coordinator has ended."""
        return self._done.is_set()

    async def result(self) -> T:
        """Wait for the job's result and return it.

        Raises :class:`~.errors.CoordinatorCrashed` if the coordinator ended first
        (the job raised, or the process was killed or stopped). Cancelling a waiter
        affects only that waiter.
        """
        await self._done.wait()
        if self._crash is not None:
            # A fresh exception per waiter: one instance raised in many tasks
            # would collect all their tracebacks.
            raise CoordinatorCrashed(self.what, self._crash[0])
        return self._value  # type: ignore[return-value]

    def cancel(self) -> None:
        """Stop the coordinator; waiters get :class:`~.errors.CoordinatorCrashed`."""
        if self.pid is not None and not self._done.is_set():
            exit_process(self.pid, _CANCELLED)

    def _finish(self, value: T) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def _exited(self, reason: ExitReason) -> None:
        # A process exit hook: runs synchronously as the coordinator ends, however
        # it ends, so a waiter can never be left waiting.
        if not self._done.is_set():
            self._crash = (reason,)
            self._done.set()


class _Cancelled(Exception):
    """The exit reason of a coordinator stopped with :meth:`Coordination.cancel`."""

    def __repr__(self) -> str:
        return "cancelled"


_CANCELLED = _Cancelled()


def start_round(job: Callable[[], Awaitable[T]], *, what: str = "a round") -> Coordination[T]:
    """Run ``await job()`` in a new coordinator process; return its handle at once.

    ``job`` is typically ``functools.partial(run_round, ...)`` or a protocol driver.
    The coordinator belongs to the node (stopped with it at the latest). Its
    crash — ``job`` raising, the process being killed or stopped — fails the
    coordination: every waiter of :meth:`Coordination.result` wakes with
    :class:`~.errors.CoordinatorCrashed` carrying the exit reason.
    """
    if not callable(job):
        raise TypeError(f"start_round() needs an async function of no arguments, got {job!r}")
    handle: Coordination[T] = Coordination(what)

    async def coordinate() -> None:
        result = await job()
        handle._finish(result)

    pid = spawn(coordinate)
    handle.pid = pid
    # Hooked before the process first runs, so that no way of ending escapes it.
    process = current_process("start_round()").node.processes[pid.id]
    process.add_exit_hook(lambda _, reason: handle._exited(reason))
    return handle
