"""Single-item auctions as pure state machines: sealed bid (first price and Vickrey),
English (ascending clock) and Dutch (descending clock).

The cores never ask a bidder anything. A driver asks the invited agents concurrently
under one deadline, stamps every answer with its receipt sequence number ``seq`` and
time, and feeds the answers in; the core decides. Ties break by the order of
:mod:`foundation_trio.protocols.coordination`: higher amount, then earlier ``seq``, then
smaller agent id.

Sealed bid (:class:`SealedBidAuction`, :func:`clear_sealed_bid`)
    A valid bid is a finite real at or above the reserve, from an invited participant,
    the first from that agent, received at or before the deadline. Anything else is
    recorded as a :class:`RejectedBid` with its reason and never changes the result.
    The winner is the best valid bid. First price pays its bid; second price (Vickrey)
    pays ``max(second-highest valid bid, reserve)``, so a lone bidder pays the reserve
    and tied top bids pay the tied amount. The price never exceeds the winner's bid.
    No valid bid is a :attr:`AuctionStatus.NO_SALE` result, not an error. A winner that
    fails after the award is handled by :meth:`SealedBidAuction.after_winner_failure`
    under a :class:`FailurePolicy`: ``VOID`` (nobody gets the item) or ``RUNNER_UP``
    (the auction is cleared again without the failed agent, at the recomputed price).

English (:class:`EnglishAuction`)
    The clock starts at ``start_price`` (the reserve) and every round asks each active
    bidder whether it stays in at the current price. Silence, a refusal, a crash or a
    late answer is dropping out, for good. While two or more stay, the price rises by
    ``increment``. When exactly one stays it wins at the current price. When everyone
    still active drops in the same round, the best of them by the tie-break order (their
    receipt order in the previous round) wins at the previous round's price. With
    truthful drop-out (stay while ``value >= price``) the winner is Vickrey's winner
    whenever the top two values are at least one increment apart, and the price is
    within one increment of the Vickrey price. ``max_rounds`` bounds the clock: a clock
    still contested after it is a no-sale result saying so.

Dutch (:class:`DutchAuction`)
    The auctioneer drives a falling clock: step ``k`` offers ``start_price - k *
    decrement`` and the driver moves on at each step's deadline, so a silent bidder never
    stalls it. The first accept in receipt order wins at the current price. Falling below
    ``floor`` (the reserve) is no sale. On bids that lie on the clock's grid the outcome
    is exactly first-price sealed bid's; otherwise the price is within one decrement.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence

import attrs

from foundation_trio.protocols.coordination import (
    AgentId,
    InvalidBid,
    SessionClosed,
    check_agent_id,
    check_amount,
    check_seq,
    priority_key,
)

__all__ = [
    "AuctionResult",
    "AuctionStatus",
    "Bid",
    "ClockRound",
    "DutchAuction",
    "DutchConfig",
    "EnglishAuction",
    "EnglishConfig",
    "FailurePolicy",
    "Pricing",
    "RejectedBid",
    "SealedBidAuction",
    "clear_sealed_bid",
]


class Pricing(enum.Enum):
    """What a sealed-bid winner pays."""

    FIRST = "first"
    """Its own bid."""
    SECOND = "second"
    """``max(second-highest valid bid, reserve)`` (Vickrey)."""


class AuctionStatus(enum.Enum):
    """How an auction ended."""

    SOLD = "sold"
    NO_SALE = "no_sale"
    VOID = "void"
    """The winner failed after the award and the policy was :attr:`FailurePolicy.VOID`."""


class FailurePolicy(enum.Enum):
    """What happens when the winner fails to honour the award."""

    VOID = "void"
    RUNNER_UP = "runner_up"


@attrs.frozen(slots=True)
class Bid:
    """A valid bid: ``amount`` from ``agent``, the ``seq``-th answer, received at a time."""

    agent: AgentId
    amount: float
    seq: int
    received_at: float = 0.0

    def key(self) -> tuple[float, int, AgentId]:
        """The tie-break sort key: best bid first."""
        return priority_key(self.amount, self.seq, self.agent)


@attrs.frozen(slots=True)
class RejectedBid:
    """An answer that did not count, with why: ``not_invited``, ``duplicate``,
    ``not_a_number``, ``not_finite``, ``below_reserve``, ``late`` or ``dropped_out``."""

    agent: AgentId
    amount: object
    seq: int
    received_at: float
    reason: str


@attrs.frozen(slots=True)
class AuctionResult:
    """The immutable outcome of an auction.

    ``bids`` are the valid bids, best first (for clock auctions: each bidder's last
    accepted price). ``price`` and ``winner`` are ``None`` unless ``status`` is
    :attr:`AuctionStatus.SOLD`; ``reason`` says why otherwise. ``excluded`` lists
    winners that failed after the award, in order.
    """

    kind: str
    status: AuctionStatus
    winner: AgentId | None
    price: float | None
    bids: tuple[Bid, ...]
    rejected: tuple[RejectedBid, ...] = ()
    reason: str | None = None
    excluded: tuple[AgentId, ...] = ()
    rounds: int = 1

    @property
    def winning_bid(self) -> Bid | None:
        """The winner's bid, or ``None`` when nothing was sold."""
        if self.winner is None:
            return None
        return next(b for b in self.bids if b.agent == self.winner)


def _check_participants(participants: Iterable[AgentId], what: str) -> frozenset[AgentId]:
    if isinstance(participants, str):
        raise TypeError(f"{what} must be an iterable of agent ids, not a single str")
    found = frozenset(check_agent_id(a, f"{what} item") for a in participants)
    if not found:
        raise ValueError(f"{what} must name at least one agent")
    return found


def clear_sealed_bid(
    bids: Sequence[Bid],
    *,
    pricing: Pricing,
    reserve: float = 0.0,
    kind: str | None = None,
    rejected: Sequence[RejectedBid] = (),
    excluded: Sequence[AgentId] = (),
) -> AuctionResult:
    """Clear a sealed-bid auction on already valid ``bids``; see the module docstring.

    Raises :class:`InvalidBid` for a bid that is not finite, is below ``reserve`` or is
    an agent's second bid (a driver should have filtered those through
    :class:`SealedBidAuction`), ``TypeError`` for a wrong ``pricing``.
    """
    if not isinstance(pricing, Pricing):
        raise TypeError(f"pricing must be a Pricing, got {pricing!r}")
    reserve = check_amount(reserve, "reserve")
    seen: set[AgentId] = set()
    for bid in bids:
        if not isinstance(bid, Bid):
            raise TypeError(f"bids must hold Bid records, got {type(bid).__name__}")
        if not math.isfinite(bid.amount):
            raise InvalidBid(bid.agent, f"amount {bid.amount!r} is not finite")
        if bid.amount < reserve:
            raise InvalidBid(bid.agent, f"amount {bid.amount} is below the reserve {reserve}")
        if bid.agent in seen:
            raise InvalidBid(bid.agent, "second bid from the same agent")
        seen.add(bid.agent)
    ranked = tuple(sorted(bids, key=Bid.key))
    kind = kind if kind is not None else f"sealed_{pricing.value}_price"
    if not ranked:
        return AuctionResult(
            kind=kind,
            status=AuctionStatus.NO_SALE,
            winner=None,
            price=None,
            bids=(),
            rejected=tuple(rejected),
            reason="no valid bid",
            excluded=tuple(excluded),
        )
    top = ranked[0]
    if pricing is Pricing.FIRST:
        price = top.amount
    else:
        price = max(ranked[1].amount, reserve) if len(ranked) > 1 else reserve
    return AuctionResult(
        kind=kind,
        status=AuctionStatus.SOLD,
        winner=top.agent,
        price=price,
        bids=ranked,
        rejected=tuple(rejected),
        excluded=tuple(excluded),
    )


class SealedBidAuction:
    """Collects sealed bids until ``deadline``, then clears them; see the module docstring.

    Feed every answer through :meth:`submit` (valid or not: the core records why it
    did not count), then call :meth:`close` once. :meth:`submit` after :meth:`close`
    raises :class:`SessionClosed`.
    """

    def __init__(
        self,
        participants: Iterable[AgentId],
        *,
        pricing: Pricing,
        deadline: float,
        reserve: float = 0.0,
    ) -> None:
        if not isinstance(pricing, Pricing):
            raise TypeError(f"pricing must be a Pricing, got {pricing!r}")
        self.participants = _check_participants(participants, "participants")
        self.pricing = pricing
        self.deadline = check_amount(deadline, "deadline")
        self.reserve = check_amount(reserve, "reserve")
        self._bids: dict[AgentId, Bid] = {}
        self._rejected: list[RejectedBid] = []
        self._result: AuctionResult | None = None
        self._excluded: list[AgentId] = []

    @property
    def kind(self) -> str:
        return f"sealed_{self.pricing.value}_price"

    @property
    def closed(self) -> bool:
        return self._result is not None

    def submit(self, agent: AgentId, amount: object, *, seq: int, now: float) -> Bid | RejectedBid:
        """Record ``agent``'s answer ``amount``; return the :class:`Bid` or why it was rejected.

        ``seq`` is the answer's receipt sequence number and ``now`` its receipt time.
        """
        if self._result is not None:
            raise SessionClosed(f"{self.kind} auction is closed; bid from {agent!r} not taken")
        check_agent_id(agent, "agent")
        check_seq(seq, "seq")
        now = check_amount(now, "now")
        reason = self._rejection(agent, amount, now)
        if reason is not None:
            rejected = RejectedBid(agent, amount, seq, now, reason)
            self._rejected.append(rejected)
            return rejected
        assert isinstance(amount, int | float)
        bid = Bid(agent, float(amount), seq, now)
        self._bids[agent] = bid
        return bid

    def _rejection(self, agent: AgentId, amount: object, now: float) -> str | None:
        if agent not in self.participants:
            return "not_invited"
        if now > self.deadline:
            return "late"
        if agent in self._bids:
            return "duplicate"
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            return "not_a_number"
        if not math.isfinite(amount):
            return "not_finite"
        if amount < self.reserve:
            return "below_reserve"
        return None

    def close(self) -> AuctionResult:
        """Clear the auction on the bids received; a second call returns the same result."""
        if self._result is None:
            self._result = clear_sealed_bid(
                list(self._bids.values()),
                pricing=self.pricing,
                reserve=self.reserve,
                rejected=self._rejected,
            )
        return self._result

    def after_winner_failure(self, winner: AgentId, policy: FailurePolicy) -> AuctionResult:
        """The current winner ``winner`` failed to honour the award: apply ``policy``.

        ``VOID`` ends the auction with status ``VOID``. ``RUNNER_UP`` clears the auction
        again without every failed winner so far, so the price is recomputed (under
        second price the new winner pays the next bid down, or the reserve). Raises
        ``ValueError`` if ``winner`` is not the current winner.
        """
        if not isinstance(policy, FailurePolicy):
            raise TypeError(f"policy must be a FailurePolicy, got {policy!r}")
        current = self.close()
        if current.status is not AuctionStatus.SOLD or current.winner != winner:
            raise ValueError(f"{winner!r} is not the current winner ({current.winner!r})")
        self._excluded.append(winner)
        if policy is FailurePolicy.VOID:
            self._result = attrs.evolve(
                current,
                status=AuctionStatus.VOID,
                winner=None,
                price=None,
                reason=f"winner {winner!r} failed after the award",
                excluded=tuple(self._excluded),
            )
        else:
            remaining = [b for b in self._bids.values() if b.agent not in self._excluded]
            result = clear_sealed_bid(
                remaining,
                pricing=self.pricing,
                reserve=self.reserve,
                rejected=self._rejected,
                excluded=self._excluded,
            )
            if result.status is AuctionStatus.NO_SALE:
                result = attrs.evolve(
                    result, reason=f"winner {winner!r} failed and no runner-up is left"
                )
            self._result = result
        return self._result


@attrs.frozen(slots=True)
class ClockRound:
    """One step of a clock auction: who stayed (or accepted) at ``price``, who dropped,
    and the result when the auction ended at this step."""

    round: int
    price: float
    stayed: tuple[AgentId, ...]
    dropped: tuple[AgentId, ...]
    result: AuctionResult | None


def _check_answers(answers: Mapping[AgentId, int], what: str) -> dict[AgentId, int]:
    if not isinstance(answers, Mapping):
        raise TypeError(f"{what} must map agent id -> receipt seq, got {type(answers).__name__}")
    return {
        check_agent_id(a, f"{what} key"): check_seq(s, f"{what}[{a!r}]")
        for a, s in answers.items()
    }


@attrs.frozen(slots=True)
class EnglishConfig:
    """English clock: ``start_price`` (the reserve), ``increment`` > 0, ``max_rounds`` >= 1."""

    start_price: float = 0.0
    increment: float = 1.0
    max_rounds: int = 10_000

    def __attrs_post_init__(self) -> None:
        check_amount(self.start_price, "EnglishConfig.start_price")
        check_amount(self.increment, "EnglishConfig.increment")
        if not self.increment > 0:
            raise ValueError(f"EnglishConfig.increment must be > 0, got {self.increment!r}")
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int):
            raise TypeError(f"EnglishConfig.max_rounds must be an int, got {self.max_rounds!r}")
        if self.max_rounds < 1:
            raise ValueError(f"EnglishConfig.max_rounds must be >= 1, got {self.max_rounds}")


class EnglishAuction:
    """Ascending clock auction; see the module docstring.

    Each round: read :attr:`price` and :attr:`active`, ask the active bidders whether
    they stay in at that price, and pass who said yes (agent -> receipt seq) to
    :meth:`record_round`. Everybody else dropped out.
    """

    kind = "english"

    def __init__(
        self, participants: Iterable[AgentId], config: EnglishConfig | None = None
    ) -> None:
        self.config = config if config is not None else EnglishConfig()
        self.participants = _check_participants(participants, "participants")
        self.active: frozenset[AgentId] = self.participants
        self.round = 0
        self._last: dict[AgentId, Bid] = {}
        self._rejected: list[RejectedBid] = []
        self.result: AuctionResult | None = None

    @property
    def price(self) -> float:
        """The asking price of the current round."""
        return self.config.start_price + self.round * self.config.increment

    def record_round(self, stayed: Mapping[AgentId, int], *, now: float = 0.0) -> ClockRound:
        """Feed the round's "stay in" answers (agent -> receipt seq); advance the clock.

        Answers from agents that are not active (dropped earlier, never invited) are
        recorded as rejected and ignored. Raises :class:`SessionClosed` once ended.
        """
        if self.result is not None:
            raise SessionClosed("english auction has ended")
        answers = _check_answers(stayed, "stayed")
        current = self.round
        price = self.price
        staying: dict[AgentId, int] = {}
        for agent, seq in answers.items():
            if agent in self.active:
                staying[agent] = seq
            else:
                reason = "dropped_out" if agent in self.participants else "not_invited"
                self._rejected.append(RejectedBid(agent, price, seq, now, reason))
        dropped = tuple(sorted(self.active - staying.keys()))
        for agent, seq in staying.items():
            self._last[agent] = Bid(agent, price, seq, now)
        order = tuple(sorted(staying, key=lambda a: (staying[a], a)))
        result: AuctionResult | None = None
        if len(staying) == 1:
            (winner,) = staying
            result = self._sold(winner, price)
        elif not staying:
            if self.round == 0:
                result = self._no_sale("no bidder accepted the start price")
            else:
                # Everyone still active dropped together: the best of them (their
                # receipt order in the previous round) wins at the previous price.
                best = min((self._last[a] for a in self.active), key=Bid.key)
                result = self._sold(best.agent, best.amount)
        elif self.round + 1 >= self.config.max_rounds:
            self.active = frozenset(staying)
            result = self._no_sale(
                f"{len(staying)} bidders still active after max_rounds="
                f"{self.config.max_rounds} (price {price})"
            )
        if result is None:
            self.active = frozenset(staying)
            self.round += 1
        self.result = result
        return ClockRound(current, price, order, dropped, result)

    def _bids(self) -> tuple[Bid, ...]:
        return tuple(sorted(self._last.values(), key=Bid.key))

    def _sold(self, winner: AgentId, price: float) -> AuctionResult:
        return AuctionResult(
            kind=self.kind,
            status=AuctionStatus.SOLD,
            winner=winner,
            price=price,
            bids=self._bids(),
            rejected=tuple(self._rejected),
            rounds=self.round + 1,
        )

    def _no_sale(self, reason: str) -> AuctionResult:
        return AuctionResult(
            kind=self.kind,
            status=AuctionStatus.NO_SALE,
            winner=None,
            price=None,
            bids=self._bids(),
            rejected=tuple(self._rejected),
            reason=reason,
            rounds=self.round + 1,
        )


@attrs.frozen(slots=True)
class DutchConfig:
    """Dutch clock: from ``start_price`` down by ``decrement`` > 0 to ``floor`` (the reserve)."""

    start_price: float
    decrement: float
    floor: float = 0.0

    def __attrs_post_init__(self) -> None:
        check_amount(self.start_price, "DutchConfig.start_price")
        check_amount(self.decrement, "DutchConfig.decrement")
        check_amount(self.floor, "DutchConfig.floor")
        if not self.decrement > 0:
            raise ValueError(f"DutchConfig.decrement must be > 0, got {self.decrement!r}")
        if self.floor > self.start_price:
            raise ValueError(
                f"DutchConfig.floor ({self.floor}) must be <= start_price ({self.start_price})"
            )

    @property
    def steps(self) -> int:
        """How many prices the clock offers: every ``start - k * decrement >= floor``."""
        # The small slack keeps a floor that lies on the grid (1.0 - 10 * 0.1) reachable
        # despite rounding.
        span = (self.start_price - self.floor) / self.decrement
        return math.floor(span + 1e-9) + 1


class DutchAuction:
    """Descending clock auction driven by the auctioneer; see the module docstring.

    Each step: read :attr:`price`, offer it to every participant under the step's
    deadline, and pass the accepts received in time (agent -> receipt seq) to
    :meth:`record_step`. A bidder that stays silent simply does not accept.
    """

    kind = "dutch"

    def __init__(self, participants: Iterable[AgentId], config: DutchConfig) -> None:
        if not isinstance(config, DutchConfig):
            raise TypeError(f"config must be a DutchConfig, got {config!r}")
        self.config = config
        self.participants = _check_participants(participants, "participants")
        self.step = 0
        self._rejected: list[RejectedBid] = []
        self.result: AuctionResult | None = None

    @property
    def price(self) -> float:
        """The price offered at the current step."""
        return self.config.start_price - self.step * self.config.decrement

    def record_step(self, accepted: Mapping[AgentId, int], *, now: float = 0.0) -> ClockRound:
        """Feed the accepts received at this step; sell or lower the clock.

        Accepts from agents that were not invited are recorded as rejected and ignored.
        Raises :class:`SessionClosed` once ended.
        """
        if self.result is not None:
            raise SessionClosed("dutch auction has ended")
        answers = _check_answers(accepted, "accepted")
        price = self.price
        valid: list[Bid] = []
        for agent, seq in answers.items():
            if agent in self.participants:
                valid.append(Bid(agent, price, seq, now))
            else:
                self._rejected.append(RejectedBid(agent, price, seq, now, "not_invited"))
        valid.sort(key=Bid.key)
        order = tuple(b.agent for b in valid)
        if valid:
            self.result = AuctionResult(
                kind=self.kind,
                status=AuctionStatus.SOLD,
                winner=valid[0].agent,
                price=price,
                bids=tuple(valid),
                rejected=tuple(self._rejected),
                rounds=self.step + 1,
            )
        elif self.step + 1 >= self.config.steps:
            self.result = AuctionResult(
                kind=self.kind,
                status=AuctionStatus.NO_SALE,
                winner=None,
                price=None,
                bids=(),
                rejected=tuple(self._rejected),
                reason=f"the clock reached the floor {self.config.floor} without an accept",
                rounds=self.step + 1,
            )
        step = self.step
        if self.result is None:
            self.step += 1
        return ClockRound(step, price, order, (), self.result)
