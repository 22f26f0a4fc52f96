"""``coordinate``: the agents agree on a universal variable's next value, committed once.

::

    result = await ft.agents.coordinate("temperature", "median", ["a", "b", "c"], timeout=2.0)
    if result.committed:
        print(result.value, result.version)

A strategy asks the participants (one round, or several, through the round runner,
under one deadline ``now + timeout``) and returns a :class:`Decision`. A decision
to commit goes through **exactly one** compare-and-set against the version the
variable had when ``coordinate`` started. If anyone commits another version while
the strategy runs, the round ends at once and :class:`~.errors.VersionConflict` is
raised; nothing is committed. A strategy that does not reach a decision (no quorum,
no majority, the leader did not answer) commits nothing and says why.

Built-in strategies (``options`` are keyword arguments of :func:`coordinate`):

``unanimous``
    Every participant proposes (``preferred_value`` hook); commits if all proposals
    are the same valid value. Ends at the first disagreement or failure.
``majority``
    Commits a value proposed by more than half of **all** participants (those who
    did not answer count against). ``supermajority=(k, n)`` needs at least ``k/n``.
``plurality``
    The most proposed value; needs ``quorum`` (default 0.5) of all participants to
    propose a valid value; ties go to the value proposed first (receipt order).
``weighted``
    Like majority over weights: ``weights`` (participant -> weight, default 1),
    ``cap`` (each weight is at most this), ``threshold`` (default 1/2; more than
    half of the total weight is always needed).
``leader``
    The proposal of ``leader`` (default: the first participant), if valid.
``mean``, ``median``
    Numeric variables only. Proposals are finite numbers, each clamped to the
    domain; needs ``quorum`` (default 0.5) of all participants to propose; the
    mean or median (of two middle values: their mean) of the clamped proposals,
    rounded to the nearest int for an :class:`~.variables.IntRange`.

Proposals outside the domain are invalid and count as no answer (listed in
``details["invalid"]``). The voting strategies count through the voting core
(:mod:`foundation_trio.protocols.voting`), so their thresholds are taken over the
electorate as there.

**Adding a strategy** (the auction and negotiation strategies plug in here)::

    async def my_strategy(ctx: StrategyContext) -> Decision: ...
    register_strategy("my_strategy", my_strategy)

A strategy must reach participants only through ``ctx`` (``ctx.ask(question)`` runs
a round under the shared deadline) and must not write the variable itself.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Final

import attrs
import trio

from ..protocols.voting import VotingSession
from . import telemetry as tm
from ._protocol_support import count_win
from .errors import InsufficientParticipants, ReadOnly, StrategyNotFound, VersionConflict
from .messages import Question, ValueRequest
from .rounds import (
    Outcome,
    Participant,
    ParticipantLike,
    Responded,
    RoundResult,
    _invitees,
    run_round,
)
from .telemetry import emit
from .variables import (
    Choice,
    FloatRange,
    IntRange,
    VariableSpec,
    VariableUpdate,
    variable_store,
)

__all__ = [
    "COMMITTED",
    "NO_DECISION",
    "NO_QUORUM",
    "CoordinationResult",
    "Decision",
    "Strategy",
    "StrategyContext",
    "coordinate",
    "register_strategy",
    "strategies",
]

COMMITTED: Final = "committed"
NO_DECISION: Final = "no_decision"
NO_QUORUM: Final = "no_quorum"


def _read_only(details: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(details))


def _ids(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(ids)


@attrs.frozen
class Decision:
    """What a strategy decided: ``commit`` ``value`` (checked against the domain), or
    not, with ``status`` (``"no_quorum"`` or ``"no_decision"``) and ``reason``.
    ``details`` are recorded in the result (e.g. an auction's winner and payment);
    ``winners`` are the participants whose answer carried the day (for telemetry)."""

    commit: bool
    value: Any = None
    status: str = COMMITTED
    reason: str = ""
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_read_only)
    winners: tuple[str, ...] = attrs.field(default=(), converter=_ids)

    @classmethod
    def no(cls, status: str, reason: str, **details: Any) -> Decision:
        return cls(False, None, status, reason, details)


@attrs.frozen
class StrategyContext:
    """What a strategy works with. ``current`` is the variable as it was when
    ``coordinate`` started; ``participants`` the participant ids in order; ``options``
    the strategy's keyword options."""

    variable: str
    spec: VariableSpec
    current: VariableUpdate
    participants: tuple[str, ...]
    invitation: tuple[Participant, ...]
    deadline: float
    options: Mapping[str, Any]
    rng: random.Random | None
    rounds: list[RoundResult] = attrs.field(factory=list)

    async def ask(
        self,
        question: Question | Callable[[str], Question],
        *,
        participants: Sequence[str] | None = None,
        until: Callable[[Sequence[Outcome]], bool] | None = None,
        name: str = "",
    ) -> RoundResult:
        """Run one round among the participants (or the subset ``participants``) under
        the coordination's deadline; the result is also kept in ``rounds``."""
        invited = self.invitation
        if participants is not None:
            chosen = set(participants)
            invited = tuple(p for p in invited if p.id in chosen)
        result = await run_round(
            invited,
            question,
            deadline=self.deadline,
            until=until,
            rng=self.rng,
            name=name or f"coordinate:{self.variable}",
        )
        self.rounds.append(result)
        return result

    def value_request(self) -> ValueRequest:
        domain = self.spec.domain
        return ValueRequest(
            variable=self.variable,
            current=self.current.value,
            version=self.current.version,
            domain=domain.describe(),
            options=domain.options if isinstance(domain, Choice) else (),
        )

    def valid(self, value: Any) -> tuple[bool, Any]:
        """``(True, checked value)`` if ``value`` is in the domain, else ``(False, None)``."""
        try:
            return True, self.spec.domain.check(value)
        except ValueError:
            return False, None

    def option(self, name: str, default: Any) -> Any:
        return self.options.get(name, default)


Strategy = Callable[[StrategyContext], Awaitable[Decision]]

_strategies: dict[str, tuple[Strategy, frozenset[str]]] = {}


def register_strategy(
    name: str, strategy: Strategy, *, options: Sequence[str] = (), replace: bool = False
) -> None:
    """Make ``strategy`` available to :func:`coordinate` as ``name``. ``options`` are the
    keyword options it accepts (others are refused with :class:`TypeError`). A taken
    name raises :class:`ValueError` unless ``replace``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a strategy name is a non-empty str, got {name!r}")
    if not callable(strategy):
        raise TypeError(f"a strategy is an async function of a StrategyContext, got {strategy!r}")
    if name in _strategies and not replace:
        raise ValueError(f"a coordination strategy {name!r} is already registered")
    _strategies[name] = (strategy, frozenset(options))


def strategies() -> list[str]:
    """The names of the registered strategies."""
    return sorted(_strategies)


@attrs.frozen
class CoordinationResult:
    """The outcome of :func:`coordinate`.

    ``status`` is ``"committed"`` (then ``value`` and ``version`` are what was
    committed), ``"no_quorum"`` or ``"no_decision"`` (nothing committed, ``reason``
    says why). ``previous_version`` is the version the coordination started from.
    ``rounds`` are the rounds the strategy ran (their outcomes per participant);
    ``details`` what the strategy recorded. Times are trio times.
    """

    variable: str
    strategy: str
    status: str
    value: Any
    version: int | None
    previous_version: int
    reason: str
    rounds: tuple[RoundResult, ...]
    details: Mapping[str, Any]
    started_at: float
    finished_at: float

    @property
    def committed(self) -> bool:
        return self.status == COMMITTED


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"coordinate(): timeout must be seconds, got {timeout!r}")
    if not 0 <= timeout < math.inf:
        raise ValueError(f"coordinate(): timeout must be finite seconds >= 0, got {timeout!r}")
    return float(timeout)


async def coordinate(
    variable: str,
    strategy: str,
    participants: Sequence[ParticipantLike] | Mapping[str, Any],
    timeout: float,
    *,
    rng: random.Random | None = None,
    **options: Any,
) -> CoordinationResult:
    """Let ``participants`` decide the next value of ``variable`` by ``strategy`` within
    ``timeout`` seconds, and commit it with one compare-and-set.

    Returns a :class:`CoordinationResult` (committed, or not with the reason).
    Raises :class:`~.errors.VersionConflict` if the variable changed during the
    coordination (nothing is committed), :class:`~.errors.StrategyNotFound`,
    :class:`~.errors.VariableNotFound`, :class:`~.errors.PermissionDenied` if the
    variable does not allow coordinated commits, :class:`~.errors.ReadOnly` if at
    commit time this node sees no strict majority of the variable's ``members``
    (nothing is committed), :class:`~.errors.AgentNotFound`
    for an unregistered agent id, :class:`~.errors.InsufficientParticipants` for
    none, :class:`TypeError` for options the strategy does not take. Cancelling
    the caller cancels the rounds (no task is left) and commits nothing.
    """
    store = variable_store()
    if not isinstance(strategy, str) or strategy not in _strategies:
        raise StrategyNotFound(strategy, strategies())
    run, accepted = _strategies[strategy]
    unknown = set(options) - accepted
    if unknown:
        raise TypeError(
            f"coordinate(): strategy {strategy!r} takes options {sorted(accepted)}, "
            f"not {sorted(unknown)}"
        )
    seconds = _check_timeout(timeout)
    entry = store.get(variable)
    spec = entry.spec
    if not spec.coordinated:
        from .errors import PermissionDenied

        raise PermissionDenied(variable, f"coordinate:{strategy}", spec.access())
    invitees = _invitees(participants, None)
    if not invitees:
        raise InsufficientParticipants(f"coordinate({variable!r}, {strategy!r})", 0, 1)
    started_at = trio.current_time()
    current = entry.current
    ctx = StrategyContext(
        variable=variable,
        spec=spec,
        current=current,
        participants=tuple(i.id for i in invitees),
        invitation=tuple(Participant(i.id, i.target) for i in invitees),
        deadline=started_at + seconds,
        options=MappingProxyType(dict(options)),
        rng=rng,
    )
    emit(
        tm.COORDINATE_STARTED,
        {"participants": len(invitees), "version": current.version},
        {"variable": variable, "strategy": strategy},
    )
    decision: Decision | None = None
    failure: Exception | None = None
    conflict: VariableUpdate | None = None

    async def decide(cancel_scope: trio.CancelScope) -> None:
        nonlocal decision, failure
        try:
            decision = await run(ctx)
        except Exception as exc:
            # Re-raised below as itself, not wrapped in the nursery's group.
            failure = exc
        cancel_scope.cancel()

    async def watch(cancel_scope: trio.CancelScope) -> None:
        nonlocal conflict
        conflict = await store.wait_changed(variable, current.version)
        cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(decide, nursery.cancel_scope)
        nursery.start_soon(watch, nursery.cancel_scope)
    if failure is not None:
        raise failure
    if conflict is not None and decision is None:
        emit(
            tm.COORDINATE_FAILED,
            {"duration": trio.current_time() - started_at},
            {"variable": variable, "strategy": strategy, "status": "version_conflict"},
        )
        raise VersionConflict(variable, current.version, conflict.version)
    assert decision is not None
    rounds = tuple(ctx.rounds)
    if not decision.commit:
        emit(
            tm.COORDINATE_FAILED,
            {"duration": trio.current_time() - started_at},
            {
                "variable": variable,
                "strategy": strategy,
                "status": decision.status,
                "reason": decision.reason,
            },
        )
        return CoordinationResult(
            variable,
            strategy,
            decision.status,
            None,
            None,
            current.version,
            decision.reason,
            rounds,
            decision.details,
            started_at,
            trio.current_time(),
        )
    try:
        update = store.commit(
            variable, decision.value, current.version, f"coordinate:{strategy}", coordinated=True
        )
    except (VersionConflict, ReadOnly) as exc:
        status = "read_only" if isinstance(exc, ReadOnly) else "version_conflict"
        emit(
            tm.COORDINATE_FAILED,
            {"duration": trio.current_time() - started_at},
            {"variable": variable, "strategy": strategy, "status": status},
        )
        raise
    for winner in decision.winners:
        count_win(f"coordinate:{strategy}", winner)
    emit(
        tm.COORDINATE_COMMITTED,
        {"version": update.version, "duration": trio.current_time() - started_at},
        {"variable": variable, "strategy": strategy, "value": update.value},
    )
    return CoordinationResult(
        variable,
        strategy,
        COMMITTED,
        update.value,
        update.version,
        current.version,
        "",
        rounds,
        decision.details,
        started_at,
        trio.current_time(),
    )


# -- the built-in strategies ------------------------------------------------------------------


def _valid_answers(ctx: StrategyContext, result: RoundResult) -> tuple[list[Responded], list[str]]:
    valid: list[Responded] = []
    invalid: list[str] = []
    for response in result.responses():
        ok, checked = ctx.valid(response.value)
        if ok:
            valid.append(attrs.evolve(response, value=checked))
        else:
            invalid.append(response.participant)
    return valid, invalid


def _quorum(ctx: StrategyContext) -> int:
    fraction = ctx.option("quorum", 0.5)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(
            f"coordinate(): quorum is a fraction of the participants, got {fraction!r}"
        )
    if not 0 <= fraction <= 1:
        raise ValueError(f"coordinate(): quorum must be in [0, 1], got {fraction!r}")
    return max(1, math.ceil(Fraction(fraction) * len(ctx.participants)))


async def _vote_strategy(ctx: StrategyContext, rule: str) -> Decision:
    """unanimous, majority (and supermajority), weighted: the voting core counts."""
    kwargs: dict[str, Any] = {}
    if rule == "majority" and "supermajority" in ctx.options:
        rule = "supermajority"
        kwargs["supermajority"] = ctx.options["supermajority"]
    if rule == "weighted":
        weights = dict(ctx.option("weights", {}))
        cap = ctx.option("cap", None)
        if cap is not None:
            if isinstance(cap, bool) or not isinstance(cap, int | float) or not cap > 0:
                raise ValueError(f"coordinate(): cap must be a number > 0, got {cap!r}")
            weights = {p: min(weights.get(p, 1), cap) for p in ctx.participants}
        kwargs["weights"] = weights
        kwargs["threshold"] = ctx.option("threshold", Fraction(1, 2))
    domain = ctx.spec.domain
    options = tuple(_Key(o) for o in domain.options) if isinstance(domain, Choice) else ()
    session = VotingSession(
        f"coordinate:{ctx.variable}", ctx.participants, rule, options=options, **kwargs
    )
    invalid: list[str] = []

    def feed(outcomes: Sequence[Outcome]) -> bool:
        latest = outcomes[-1]
        ok, value = ctx.valid(latest.value) if isinstance(latest, Responded) else (False, None)
        if ok:
            session.cast(latest.participant, _Key(value))
        else:
            if isinstance(latest, Responded):
                invalid.append(latest.participant)
            session.lose(latest.participant)
        return session.result is not None

    await ctx.ask(ctx.value_request(), until=feed)
    result = session.close()
    details = {
        "tally": tuple((k.value, s) for k, s in result.tally if isinstance(k, _Key)),
        "ballots": result.ballots,
        "invalid": tuple(invalid),
    }
    if not result.decided:
        return Decision.no(
            NO_DECISION,
            f"no value met the {rule} rule over {len(ctx.participants)} participants",
            **details,
        )
    assert isinstance(result.choice, _Key)
    value = result.choice.value
    winners = [p for p, b in session.ballots.items() if isinstance(b, _Key) and b == result.choice]
    return Decision(True, value, details=details, winners=tuple(winners))


@attrs.frozen
class _Key:
    """A proposed value as a ballot: composite values (read-only mappings) are made
    hashable by their items."""

    value: Any = attrs.field(eq=False, hash=False)
    key: Hashable = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "key", _hashable(self.value))


def _hashable(value: Any) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return (type(value).__name__, value)


async def _unanimous(ctx: StrategyContext) -> Decision:
    return await _vote_strategy(ctx, "unanimous")


async def _majority(ctx: StrategyContext) -> Decision:
    return await _vote_strategy(ctx, "majority")


async def _weighted(ctx: StrategyContext) -> Decision:
    return await _vote_strategy(ctx, "weighted")


async def _plurality(ctx: StrategyContext) -> Decision:
    need = _quorum(ctx)
    result = await ctx.ask(ctx.value_request())
    valid, invalid = _valid_answers(ctx, result)
    if len(valid) < need:
        return Decision.no(
            NO_QUORUM,
            f"{len(valid)} valid proposals of {len(ctx.participants)} participants, {need} needed",
            invalid=tuple(invalid),
        )
    counts: dict[Hashable, list[Responded]] = {}
    for response in valid:  # by seq
        counts.setdefault(_hashable(response.value), []).append(response)
    best = min(counts.values(), key=lambda group: (-len(group), group[0].seq))
    shares = tuple(
        (group[0].value, len(group) / len(ctx.participants)) for group in counts.values()
    )
    return Decision(
        True,
        best[0].value,
        details={"shares": shares, "invalid": tuple(invalid)},
        winners=tuple(r.participant for r in best),
    )


async def _leader(ctx: StrategyContext) -> Decision:
    leader = ctx.option("leader", ctx.participants[0])
    if leader not in ctx.participants:
        raise ValueError(f"coordinate(): leader {leader!r} is not a participant")
    result = await ctx.ask(ctx.value_request(), participants=[leader])
    outcome = result.outcome(leader)
    if not isinstance(outcome, Responded):
        return Decision.no(NO_DECISION, f"the leader {leader!r} did not answer: {outcome!r}")
    ok, value = ctx.valid(outcome.value)
    if not ok:
        return Decision.no(
            NO_DECISION, f"the leader {leader!r} proposed {outcome.value!r}, outside the domain"
        )
    return Decision(True, value, details={"leader": leader}, winners=(leader,))


async def _numeric(ctx: StrategyContext, how: str) -> Decision:
    domain = ctx.spec.domain
    if not isinstance(domain, FloatRange | IntRange):
        raise TypeError(
            f"coordinate(): the {how} strategy needs a FloatRange or IntRange variable, "
            f"{ctx.variable!r} is {domain.describe()}"
        )
    need = _quorum(ctx)
    result = await ctx.ask(ctx.value_request())
    numbers: list[float] = []
    invalid: list[str] = []
    for response in result.responses():
        value = response.value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            invalid.append(response.participant)
        else:
            numbers.append(float(min(max(value, domain.low), domain.high)))
    if len(numbers) < need:
        return Decision.no(
            NO_QUORUM,
            f"{len(numbers)} numeric proposals of {len(ctx.participants)} participants, "
            f"{need} needed",
            invalid=tuple(invalid),
        )
    combined = statistics.fmean(numbers) if how == "mean" else statistics.median(numbers)
    value = domain.clamp(combined)
    return Decision(True, value, details={"proposals": tuple(numbers), "invalid": tuple(invalid)})


async def _mean(ctx: StrategyContext) -> Decision:
    return await _numeric(ctx, "mean")


async def _median(ctx: StrategyContext) -> Decision:
    return await _numeric(ctx, "median")


register_strategy("unanimous", _unanimous)
register_strategy("majority", _majority, options=("supermajority",))
register_strategy("plurality", _plurality, options=("quorum",))
register_strategy("weighted", _weighted, options=("weights", "cap", "threshold"))
register_strategy("leader", _leader, options=("leader",))
register_strategy("mean", _mean, options=("quorum",))
register_strategy("median", _median, options=("quorum",))
