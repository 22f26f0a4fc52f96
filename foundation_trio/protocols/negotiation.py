"""Alternating-offers negotiation over an outcome space, as a pure state machine.

The parties take turns in a fixed order: in round ``r`` party ``parties[r % n]`` offers a
value of the outcome space (a :class:`Choices` set or a closed :class:`Interval`, e.g. a
variable's domain) and every other party answers :attr:`Response.ACCEPT`,
:attr:`Response.REJECT` or :attr:`Response.END`.

* When every other party accepts, the offer is the agreement: it is in the space and
  accepted by all (the proposer made it).
* ``END`` from anyone breaks the negotiation (status ``BROKEN``, ``ended_by`` says who).
* A party that fails (crashes, raises) breaks it too, with the error recorded.
* A missing answer counts as a reject; a proposer that makes no offer, or an offer
  outside the space, loses its turn (recorded in the history).
* ``max_rounds`` and ``deadline`` are limits: reaching either is a ``TIMED_OUT`` result.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Mapping, Sequence

import attrs

from foundation_trio.protocols.coordination import (
    AgentId,
    SessionClosed,
    check_agent_id,
    check_amount,
)

__all__ = [
    "AlternatingOffers",
    "Choices",
    "Interval",
    "NegotiationResult",
    "NegotiationStatus",
    "OfferRecord",
    "OutcomeSpace",
    "Response",
]


@attrs.frozen(slots=True)
class Choices:
    """A finite outcome space: exactly these values."""

    values: tuple[Hashable, ...]

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.values, tuple) or not self.values:
            raise ValueError("Choices.values must be a non-empty tuple")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"Choices.values has duplicates: {self.values!r}")

    def contains(self, value: object) -> bool:
        try:
            return value in self.values
        except TypeError:
            return False


@attrs.frozen(slots=True)
class Interval:
    """A closed real interval ``[low, high]``."""

    low: float
    high: float

    def __attrs_post_init__(self) -> None:
        low = check_amount(self.low, "Interval.low")
        high = check_amount(self.high, "Interval.high")
        if low > high:
            raise ValueError(f"Interval.low ({low}) must be <= Interval.high ({high})")

    def contains(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return math.isfinite(value) and self.low <= value <= self.high


OutcomeSpace = Choices | Interval


class Response(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    END = "end"


class NegotiationStatus(enum.Enum):
    AGREED = "agreed"
    BROKEN = "broken"
    TIMED_OUT = "timed_out"


@attrs.frozen(slots=True)
class OfferRecord:
    """One round: who offered what (``None`` with a ``note`` when the turn was lost)."""

    round: int
    proposer: AgentId
    offer: object
    responses: tuple[tuple[AgentId, Response], ...]
    note: str | None = None


@attrs.frozen(slots=True)
class NegotiationResult:
    status: NegotiationStatus
    agreement: object
    rounds: int
    history: tuple[OfferRecord, ...]
    ended_by: AgentId | None = None
    errors: tuple[tuple[AgentId, str], ...] = ()
    reason: str | None = None


class _Phase(enum.Enum):
    OFFER = "offer"
    RESPONSES = "responses"
    OVER = "over"


class AlternatingOffers:
    """One alternating-offers negotiation; see the module docstring.

    Drive it with: read :attr:`proposer`, ask it for an offer, feed :meth:`offer` (or
    :meth:`skip` when it gave none); read :attr:`responders`, ask them, feed
    :meth:`respond`. :meth:`end`, :meth:`fail` and :meth:`tick` may be fed at any time.
    Each returns the :class:`NegotiationResult` once the negotiation is over, else
    ``None``. Feeding anything after the end raises :class:`SessionClosed`.
    """

    def __init__(
        self,
        parties: Sequence[AgentId],
        space: OutcomeSpace,
        *,
        deadline: float = math.inf,
        max_rounds: int = 100,
    ) -> None:
        if isinstance(parties, str) or not isinstance(parties, Sequence):
            raise TypeError("parties must be a sequence of agent ids (the turn order)")
        self.parties = tuple(check_agent_id(p, "parties item") for p in parties)
        if len(self.parties) < 2:
            raise ValueError(f"a negotiation needs at least 2 parties, got {len(self.parties)}")
        if len(set(self.parties)) != len(self.parties):
            raise ValueError(f"parties has duplicates: {self.parties!r}")
        if not isinstance(space, Choices | Interval):
            raise TypeError(f"space must be Choices or Interval, got {type(space).__name__}")
        if (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or deadline != deadline
        ):
            raise TypeError(f"deadline must be a number (or math.inf), got {deadline!r}")
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValueError(f"max_rounds must be an int >= 1, got {max_rounds!r}")
        self.space = space
        self.deadline = float(deadline)
        self.max_rounds = max_rounds
        self.round = 0
        self._phase = _Phase.OFFER
        self._offer: object = None
        self._history: list[OfferRecord] = []
        self._errors: list[tuple[AgentId, str]] = []
        self.result: NegotiationResult | None = None

    @property
    def proposer(self) -> AgentId:
        """Whose turn it is to offer."""
        return self.parties[self.round % len(self.parties)]

    @property
    def responders(self) -> tuple[AgentId, ...]:
        """Who answers the current offer: everyone but the proposer."""
        return tuple(p for p in self.parties if p != self.proposer)

    @property
    def current_offer(self) -> object:
        return self._offer

    @property
    def awaiting_responses(self) -> bool:
        return self._phase is _Phase.RESPONSES

    def _check(self, now: float, phase: _Phase | None) -> NegotiationResult | None:
        if self._phase is _Phase.OVER:
            raise SessionClosed("the negotiation is over")
        if phase is not None and self._phase is not phase:
            raise RuntimeError(
                f"the negotiation expects {self._phase.value} now, not {phase.value}"
            )
        now = check_amount(now, "now")
        if now > self.deadline:
            return self._finish(NegotiationStatus.TIMED_OUT, None, reason="deadline passed")
        return None

    def offer(self, agent: AgentId, value: object, *, now: float) -> NegotiationResult | None:
        """The proposer offers ``value``; outside the space, it loses its turn."""
        ended = self._check(now, _Phase.OFFER)
        if ended is not None:
            return ended
        if agent != self.proposer:
            raise ValueError(f"it is {self.proposer!r}'s turn to offer, not {agent!r}")
        if not self.space.contains(value):
            return self._next_round(OfferRecord(self.round, agent, value, (), "outside the space"))
        self._offer = value
        self._phase = _Phase.RESPONSES
        return None

    def skip(self, agent: AgentId, reason: str, *, now: float) -> NegotiationResult | None:
        """The proposer made no offer (silence, refusal): it loses its turn."""
        ended = self._check(now, _Phase.OFFER)
        if ended is not None:
            return ended
        if agent != self.proposer:
            raise ValueError(f"it is {self.proposer!r}'s turn to offer, not {agent!r}")
        return self._next_round(OfferRecord(self.round, agent, None, (), str(reason)))

    def respond(
        self, responses: Mapping[AgentId, Response], *, now: float
    ) -> NegotiationResult | None:
        """The responders' answers, in receipt order; a missing one counts as a reject."""
        ended = self._check(now, _Phase.RESPONSES)
        if ended is not None:
            return ended
        if not isinstance(responses, Mapping):
            raise TypeError("responses must map agent id -> Response")
        answers: list[tuple[AgentId, Response]] = []
        for agent, response in responses.items():
            if agent not in self.responders:
                raise ValueError(f"{agent!r} is not a responder of round {self.round}")
            if not isinstance(response, Response):
                raise TypeError(f"response of {agent!r} must be a Response, got {response!r}")
            answers.append((agent, response))
        given = dict(answers)
        answers.extend((a, Response.REJECT) for a in self.responders if a not in given)
        record = OfferRecord(self.round, self.proposer, self._offer, tuple(answers))
        enders = [a for a, r in answers if r is Response.END]
        if enders:
            self._history.append(record)
            return self._finish(NegotiationStatus.BROKEN, None, ended_by=enders[0], reason="ended")
        if all(r is Response.ACCEPT for _, r in answers):
            self._history.append(record)
            return self._finish(NegotiationStatus.AGREED, self._offer)
        return self._next_round(record)

    def end(self, agent: AgentId, *, now: float) -> NegotiationResult:
        """``agent`` ends the negotiation: it is broken."""
        self._check(now, None)
        if agent not in self.parties:
            raise ValueError(f"{agent!r} is not a party")
        if self._phase is _Phase.OVER:
            assert self.result is not None
            return self.result
        return self._finish(NegotiationStatus.BROKEN, None, ended_by=agent, reason="ended")

    def fail(self, agent: AgentId, error: str, *, now: float) -> NegotiationResult:
        """``agent`` failed (crashed, raised): the negotiation is broken, error recorded."""
        if self._phase is _Phase.OVER:
            raise SessionClosed("the negotiation is over")
        if agent not in self.parties:
            raise ValueError(f"{agent!r} is not a party")
        check_amount(now, "now")
        self._errors.append((agent, str(error)))
        return self._finish(
            NegotiationStatus.BROKEN, None, ended_by=agent, reason=f"{agent!r} failed: {error}"
        )

    def tick(self, now: float) -> NegotiationResult | None:
        """Check the deadline at ``now``."""
        return self._check(now, None)

    def _next_round(self, record: OfferRecord) -> NegotiationResult | None:
        self._history.append(record)
        self._offer = None
        self._phase = _Phase.OFFER
        if self.round + 1 >= self.max_rounds:
            return self._finish(
                NegotiationStatus.TIMED_OUT,
                None,
                reason=f"no agreement in {self.max_rounds} rounds",
            )
        self.round += 1
        return None

    def _finish(
        self,
        status: NegotiationStatus,
        agreement: object,
        *,
        ended_by: AgentId | None = None,
        reason: str | None = None,
    ) -> NegotiationResult:
        self._phase = _Phase.OVER
        self.result = NegotiationResult(
            status=status,
            agreement=agreement,
            rounds=len(self._history),
            history=tuple(self._history),
            ended_by=ended_by,
            errors=tuple(self._errors),
            reason=reason,
        )
        return self.result
