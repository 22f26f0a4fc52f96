"""Voting consensus as a pure state machine: majority, supermajority, unanimous, weighted.

A :class:`VotingSession` counts the ballots of a fixed **electorate** for one
question. It imports no event loop; a driver (``foundation_trio.agents.consensus``)
asks the agents and feeds their ballots in.

**Rules.** Every threshold is taken over the whole electorate, never over the
ballots received: an option wins when its support ``s`` (a count, or a weight
sum for ``weighted``) satisfies ``s >= q * T`` and ``2 * s > T``, where ``T`` is
the electorate's total (members, or their total weight). ``q`` is 1/2 for
``majority``, ``k/n`` for ``supermajority`` (``k/n`` in [1/2, 1]), 1 for
``unanimous`` and ``threshold`` for ``weighted``. The second condition makes the
winner unique. Arithmetic is exact (:class:`fractions.Fraction`). A member who
abstains (explicitly, or because the driver lost it) supports nothing.

**Quorum.** ``quorum`` is the number of ballots (abstentions excluded) a result
needs; below it the result is ``no_quorum``, whatever the support.

**Byzantine mode** (``byzantine_f=f``): the electorate must have ``n >= 3f + 1``
members (:class:`InsufficientParticipants` names both numbers otherwise), and an
option needs at least ``Q = max(2f + 1, ceil((n + f + 1) / 2))`` ballots on top of
the rule. ``Q`` is ``2f + 1`` at ``n = 3f + 1``; for larger ``n``, ``2f + 1`` alone
would let two disjoint groups of honest voters with different preferences decide
differently, and ``ceil((n + f + 1) / 2)`` restores the argument: two sets of
``Q`` voters share at least ``f + 1`` members, so at least one honest member,
who votes the same at every participant. Hence two honest participants, each
counting the ballots it received, never decide different options
(``tests/protocols/test_voting_core.py`` simulates ``f`` equivocating voters).

**Early termination.** :meth:`VotingSession.fixed` returns the result as soon as
no completion of the remaining ballots can change it, and only then: an option
meets the rule and the quorum is met (supports only grow, and the winner is
unique), or no option can still meet it and the quorum is met (``no_decision``),
or the quorum can no longer be reached (``no_quorum``). The session then closes.

**Order independence.** The result depends on the set of ballots, not their
order; the tally lists options by support, then by their first ballot's order of
arrival, then by ``repr``.

Errors: :class:`~.coordination.NotAParticipant` (not a member),
:class:`AlreadyVoted` (second ballot), :class:`~.coordination.SessionClosed`
(after close or after the result was fixed), :class:`InvalidChoice` (not one of
the options, or unhashable), :class:`InsufficientParticipants`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any, Final, TypeAlias

import attrs

from .coordination import AgentId, CoordinationError, NotAParticipant, SessionClosed

__all__ = [
    "ABSTAIN",
    "AlreadyVoted",
    "Cast",
    "Close",
    "Fixed",
    "InsufficientParticipants",
    "InvalidChoice",
    "Lose",
    "Rule",
    "VotingResult",
    "VotingSession",
    "byzantine_quorum",
]


class AlreadyVoted(CoordinationError, ValueError):
    """A member voted a second time in the same session."""

    def __init__(self, voter: AgentId, session: str) -> None:
        super().__init__(f"{voter!r} has already voted in {session}")
        self.voter = voter


class InvalidChoice(CoordinationError, ValueError):
    """A ballot names no valid option."""


class InsufficientParticipants(CoordinationError, ValueError):
    """Too few members for the requested mode; names how many there are and are needed."""

    def __init__(self, what: str, have: int, need: int) -> None:
        super().__init__(f"{what}: {have} participants, at least {need} needed")
        self.have = have
        self.need = need


class Rule(enum.Enum):
    MAJORITY = "majority"
    SUPERMAJORITY = "supermajority"
    UNANIMOUS = "unanimous"
    WEIGHTED = "weighted"


class _Abstain:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSTAIN"


ABSTAIN: Final = _Abstain()
"""A ballot that supports no option (counts toward no quorum)."""

DECIDED: Final = "decided"
NO_DECISION: Final = "no_decision"
NO_QUORUM: Final = "no_quorum"


@attrs.frozen
class VotingResult:
    """The outcome of a session.

    ``status`` is ``"decided"`` (``choice`` is the winner), ``"no_decision"`` (the
    quorum was met but no option met the rule) or ``"no_quorum"``. ``tally`` is
    ``(option, support)`` pairs (support as a float), best first. ``ballots``
    counts votes for options; ``abstentions`` members who abstained or were lost;
    ``pending`` members who had not voted when the result was fixed.
    ``early`` is True when it was fixed before every member had voted.
    """

    status: str
    choice: Hashable | None
    tally: tuple[tuple[Hashable, float], ...]
    ballots: int
    abstentions: int
    pending: int
    electorate: int
    early: bool

    @property
    def decided(self) -> bool:
        return self.status == DECIDED

    def outcome(self) -> tuple[str, Hashable | None]:
        """``(status, choice)``: what every completion of the ballots agrees on."""
        return (self.status, self.choice)


# -- events and effects (the handle(event, now) interface) ----------------------------


@attrs.frozen
class Cast:
    voter: AgentId
    choice: Any


@attrs.frozen
class Lose:
    """The driver lost ``voter`` (crashed, or its node is gone): it becomes an abstention."""

    voter: AgentId


@attrs.frozen
class Close:
    """The voting deadline passed: members who have not voted count as not voting."""


@attrs.frozen
class Fixed:
    """Effect: the result is fixed (once per session)."""

    result: VotingResult


Event: TypeAlias = Cast | Lose | Close


def byzantine_quorum(n: int, f: int) -> int:
    """Ballots an option needs in Byzantine mode: ``max(2f + 1, ceil((n + f + 1) / 2))``."""
    return max(2 * f + 1, math.ceil((n + f + 1) / 2))


def _fraction(value: object, what: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return Fraction(value)


class VotingSession:
    """One vote of ``electorate`` under ``rule``; see the module doc.

    ``options``: the allowed choices (empty: any hashable value). ``supermajority``:
    ``(k, n)`` for that rule. ``weights``: member -> weight >= 0 for ``weighted``
    (members not listed weigh 1); ``threshold``: the weighted rule's ``q`` in
    [1/2, 1]. ``quorum``: ballots needed (default 0). ``byzantine_f``: tolerate
    that many equivocating members. Raises :class:`TypeError` /
    :class:`ValueError` naming a bad argument, :class:`InsufficientParticipants`.
    """

    def __init__(
        self,
        session_id: str,
        electorate: Iterable[AgentId],
        rule: Rule | str = Rule.MAJORITY,
        *,
        options: Sequence[Hashable] = (),
        supermajority: tuple[int, int] = (2, 3),
        weights: Mapping[AgentId, float] | None = None,
        threshold: float | Fraction = Fraction(1, 2),
        quorum: int = 0,
        byzantine_f: int | None = None,
    ) -> None:
        if not isinstance(session_id, str):
            raise TypeError(f"session_id must be a str, got {session_id!r}")
        self.session_id = session_id
        members = list(electorate)
        for member in members:
            if not isinstance(member, str) or not member:
                raise TypeError(f"electorate members are non-empty str ids, got {member!r}")
        if len(set(members)) != len(members):
            raise ValueError("electorate lists a member twice")
        if not members:
            raise InsufficientParticipants(f"voting session {session_id}", 0, 1)
        self.members: tuple[AgentId, ...] = tuple(members)
        try:
            self.rule = Rule(rule)
        except ValueError:
            allowed = ", ".join(r.value for r in Rule)
            raise ValueError(f"rule must be one of {allowed}, got {rule!r}") from None
        for option in options:
            _check_hashable(option)
        self.options: tuple[Hashable, ...] = tuple(dict.fromkeys(options))
        self.q = self._q(supermajority, threshold)
        # Exact integer arithmetic: every weight scaled by the common denominator.
        # (Fractions would be exact too, but cost a hundred times more per ballot.)
        self.weights: dict[AgentId, int]
        if weights is None and self.rule is not Rule.WEIGHTED:
            self.scale = 1
            self.weights = dict.fromkeys(self.members, 1)
        else:
            exact = self._weights(weights)
            self.scale = math.lcm(*(w.denominator for w in exact.values()))
            self.weights = {m: int(w * self.scale) for m, w in exact.items()}
        self.total = sum(self.weights.values())
        self._q_num = self.q.numerator
        self._q_den = self.q.denominator
        if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 0:
            raise ValueError(f"quorum must be an int >= 0, got {quorum!r}")
        if quorum > len(members):
            raise InsufficientParticipants(
                f"voting session {session_id} with quorum {quorum}", len(members), quorum
            )
        self.byzantine_f = byzantine_f
        self.min_support_ballots = 0
        if byzantine_f is not None:
            if (
                isinstance(byzantine_f, bool)
                or not isinstance(byzantine_f, int)
                or byzantine_f < 0
            ):
                raise ValueError(f"byzantine_f must be an int >= 0, got {byzantine_f!r}")
            if self.rule is Rule.WEIGHTED:
                raise ValueError("byzantine mode counts members, not weights: use another rule")
            need = 3 * byzantine_f + 1
            if len(members) < need:
                raise InsufficientParticipants(
                    f"byzantine voting session {session_id} tolerating f={byzantine_f} "
                    f"(needs n >= 3f + 1)",
                    len(members),
                    need,
                )
            self.min_support_ballots = byzantine_quorum(len(members), byzantine_f)
        self.quorum = quorum
        self.ballots: dict[AgentId, Hashable | _Abstain] = {}
        self._support: dict[Hashable, int] = {}
        self._pending = len(self.members)
        self._pending_weight = self.total
        self._count: dict[Hashable, int] = {}
        self._first: dict[Hashable, int] = {}
        self._votes = 0
        self._arrivals = 0
        self.result: VotingResult | None = None

    # -- setup checks ----------------------------------------------------------------

    def _q(self, supermajority: tuple[int, int], threshold: float | Fraction) -> Fraction:
        if self.rule is Rule.MAJORITY:
            return Fraction(1, 2)
        if self.rule is Rule.UNANIMOUS:
            return Fraction(1)
        if self.rule is Rule.SUPERMAJORITY:
            if (
                not isinstance(supermajority, tuple)
                or len(supermajority) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in supermajority)
                or supermajority[1] <= 0
            ):
                raise TypeError(
                    f"supermajority must be a pair (k, n) of ints, got {supermajority!r}"
                )
            q = Fraction(supermajority[0], supermajority[1])
        else:
            q = _fraction(threshold, "threshold")
        if not Fraction(1, 2) <= q <= 1:
            raise ValueError(f"the {self.rule.value} threshold must be in [1/2, 1], got {q}")
        return q

    def _weights(self, weights: Mapping[AgentId, float] | None) -> dict[AgentId, Fraction]:
        if weights is not None and self.rule is not Rule.WEIGHTED:
            raise ValueError(f"weights apply to the weighted rule, not {self.rule.value}")
        given = dict(weights or {})
        unknown = set(given) - set(self.members)
        if unknown:
            raise ValueError(f"weights name non-members: {sorted(map(str, unknown))}")
        result: dict[AgentId, Fraction] = {}
        for member in self.members:
            weight = _fraction(given.get(member, 1), f"weight of {member!r}")
            if weight < 0:
                raise ValueError(f"weight of {member!r} must be >= 0, got {float(weight)}")
            result[member] = weight
        if sum(result.values(), Fraction(0)) <= 0:
            raise ValueError("the electorate's total weight must be > 0")
        return result

    # -- events ---------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Fixed]:
        """Apply ``event``; return ``[Fixed(result)]`` when it fixes the result.

        ``now`` is accepted for the uniform protocol interface; voting has no timers
        of its own (the driver's deadline arrives as :class:`Close`).
        """
        if isinstance(event, Cast):
            found = self.cast(event.voter, event.choice)
        elif isinstance(event, Lose):
            found = self.lose(event.voter)
        elif isinstance(event, Close):
            found = self.close()
        else:
            raise TypeError(f"unknown voting event {event!r}")
        return [] if found is None else [Fixed(found)]

    def _check_open(self, voter: object) -> AgentId:
        if self.result is not None:
            raise SessionClosed(f"{self.session_id} is closed: its result is fixed")
        if not isinstance(voter, str) or voter not in self.weights:
            raise NotAParticipant(str(voter), self.session_id)
        if voter in self.ballots:
            raise AlreadyVoted(voter, self.session_id)
        return voter

    def cast(self, voter: AgentId, choice: Any) -> VotingResult | None:
        """Count ``voter``'s ballot for ``choice`` (or :data:`ABSTAIN`); return the
        result if this fixes it (the session is then closed)."""
        member = self._check_open(voter)
        if choice is ABSTAIN:
            self.ballots[member] = ABSTAIN
            self._settled(member)
            return self._settle()
        _check_hashable(choice)
        if self.options and choice not in self.options:
            raise InvalidChoice(
                f"{member!r} voted {choice!r}, not one of the options {list(self.options)}"
            )
        self.ballots[member] = choice
        self._settled(member)
        self._votes += 1
        self._support[choice] = self._support.get(choice, 0) + self.weights[member]
        self._count[choice] = self._count.get(choice, 0) + 1
        if choice not in self._first:
            self._first[choice] = self._arrivals
        self._arrivals += 1
        return self._settle()

    def lose(self, voter: AgentId) -> VotingResult | None:
        """``voter`` is gone: it abstains (a no-op if it already voted or the result is
        fixed). Returns the result if this fixes it."""
        if self.result is not None or voter in self.ballots:
            return None
        if voter not in self.weights:
            raise NotAParticipant(str(voter), self.session_id)
        self.ballots[voter] = ABSTAIN
        self._settled(voter)
        return self._settle()

    def close(self) -> VotingResult:
        """End the vote now; members who have not voted count as not voting.
        Idempotent: returns the fixed result if there is one."""
        if self.result is None:
            self.result = self._make(self._final_status(), early=False)
        return self.result

    # -- counting ------------------------------------------------------------------------

    def _meets(self, option: Hashable, support: int, count: int) -> bool:
        return (
            support * self._q_den >= self._q_num * self.total
            and 2 * support > self.total
            and count >= self.min_support_ballots
        )

    def _winner(self) -> Hashable | None:
        for option, support in self._support.items():
            if self._meets(option, support, self._count[option]):
                return option
        return None

    def _remaining(self) -> tuple[int, int]:
        return self._pending, self._pending_weight

    def _settled(self, member: AgentId) -> None:
        self._pending -= 1
        self._pending_weight -= self.weights[member]

    def _final_status(self) -> str:
        if self._votes < self.quorum:
            return NO_QUORUM
        return DECIDED if self._winner() is not None else NO_DECISION

    def fixed(self) -> VotingResult | None:
        """The result if no completion of the remaining ballots can change it, else None."""
        if self.result is not None:
            return self.result
        status = self._fixed_status()
        return None if status is None else self._make(status, early=True)

    def _fixed_status(self) -> str | None:
        pending, weight = self._remaining()
        if pending == 0:
            return self._final_status()
        if self._votes + pending < self.quorum:
            return NO_QUORUM
        quorum_met = self._votes >= self.quorum
        if self._winner() is not None:
            return DECIDED if quorum_met else None
        candidates = list(self._support.items())
        if not self.options or len(self._support) < len(self.options):
            candidates.append((_UNSEEN, 0))
        possible = any(
            self._meets(option, support + weight, self._count.get(option, 0) + pending)
            for option, support in candidates
        )
        if possible or not quorum_met:
            return None
        return NO_DECISION

    def _settle(self) -> VotingResult | None:
        status = self._fixed_status()
        if status is None:
            return None
        pending, _ = self._remaining()
        self.result = self._make(status, early=pending > 0)
        return self.result

    def _make(self, status: str, *, early: bool) -> VotingResult:
        order = sorted(
            self._support,
            key=lambda o: (-self._support[o], self._first[o], repr(o)),
        )
        pending, _ = self._remaining()
        return VotingResult(
            status=status,
            choice=self._winner() if status == DECIDED else None,
            tally=tuple((o, self._support[o] / self.scale) for o in order),
            ballots=self._votes,
            abstentions=sum(1 for b in self.ballots.values() if b is ABSTAIN),
            pending=pending,
            electorate=len(self.members),
            early=early,
        )


class _Unseen:
    """Stands for an option nobody has voted for yet, when checking what is possible."""

    __slots__ = ()


_UNSEEN: Final = _Unseen()


def _check_hashable(choice: object) -> None:
    try:
        hash(choice)
    except TypeError:
        raise InvalidChoice(f"a choice must be hashable, got {choice!r}") from None
