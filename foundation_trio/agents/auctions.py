"""Auctions among agents: sealed bid (first price, Vickrey), English, Dutch, combinatorial.

Each function here asks the agents through the round runner (:func:`~.rounds.run_round`:
concurrently, one absolute deadline per round, each participant's crash, timeout or late
answer recorded as its outcome) and lets the pure cores of
:mod:`foundation_trio.protocols.auctions` and :mod:`foundation_trio.protocols.combinatorial`
decide. A hanging or crashing bidder therefore never holds an auction past its deadline,
and an answer after the deadline is recorded as a rejected ``late`` bid that never changes
the result.

Agents answer through hooks (an agent without the hook refuses, see
:class:`~.messages.Question`):

=================  ====================  =================================================
question           hook                  answer
=================  ====================  =================================================
:class:`BidRequest`      ``bid``            the amount (a number), or a ``Refusal``
:class:`PriceOffer`      ``accept_price``   ``True`` to stay in (English) / buy (Dutch)
:class:`BundleRequest`   ``bundle_bids``    an iterable of ``(items, amount)`` pairs
:class:`AwardNotice`     ``award``          anything but a ``Refusal`` to take the item
=================  ====================  =================================================

Telemetry (metadata always holds ``auction_id`` and ``kind``):

- ``agents.auction.started`` ``{participants}``
- ``agents.auction.bid_accepted`` ``{amount}`` + ``agent``, ``seq`` (sealed bid; for a
  combinatorial auction ``{bundles}``)
- ``agents.auction.bid_rejected`` ``{}`` + ``agent``, ``reason`` (``late``,
  ``below_reserve``, ``not_a_number``, ...)
- ``agents.auction.round`` ``{round, price, stayed}`` + ``dropped`` (each English/Dutch
  clock step)
- ``agents.auction.award_failed`` ``{price}`` + ``agent``, ``reason``, ``policy``
- ``agents.auction.cleared`` ``{price, bids, duration}`` + ``winner`` (combinatorial:
  ``{welfare, winners, bids, duration}`` + ``payments``)
- ``agents.auction.no_sale`` ``{bids, duration}`` + ``reason`` (also when voided)
- ``agents.protocol.won`` ``{wins: 1}`` + ``protocol``, ``agent`` for every winner.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any, ClassVar

import attrs
import trio

from ..cluster import wire
from ..protocols.auctions import (
    AuctionResult,
    AuctionStatus,
    Bid,
    ClockRound,
    DutchAuction,
    DutchConfig,
    EnglishAuction,
    EnglishConfig,
    FailurePolicy,
    Pricing,
    RejectedBid,
    SealedBidAuction,
)
from ..protocols.combinatorial import (
    CombinatorialAuction,
    CombinatorialConfig,
    CombinatorialResult,
    CombinatorialStatus,
)
from ._protocol_support import (
    Roster,
    by_outcome,
    check_id,
    check_timeout,
    count_win,
    deadline_in,
    emit,
    late_answers,
    new_id,
    roster,
)
from .messages import Question
from .rounds import Participant, Responded, RoundResult, run_round

__all__ = [
    "AuctionReport",
    "AwardNotice",
    "BidRequest",
    "BundleRequest",
    "CombinatorialReport",
    "PriceOffer",
    "combinatorial_auction",
    "dutch_auction",
    "english_auction",
    "sealed_bid_auction",
]


@attrs.frozen
class BidRequest(Question):
    """Bid for ``item`` in sealed-bid auction ``auction_id`` (``kind``: first or second
    price); bids below ``reserve`` are rejected. Answered by the ``bid`` hook."""

    hook: ClassVar[str] = "bid"
    auction_id: str
    item: str
    kind: str
    reserve: float


@attrs.frozen
class PriceOffer(Question):
    """Clock auction step: does the agent stay in (English) or buy (Dutch) at ``price``?
    Answered by the ``accept_price`` hook with ``True``; anything else is a no."""

    hook: ClassVar[str] = "accept_price"
    auction_id: str
    item: str
    kind: str
    price: float
    round: int


@attrs.frozen
class BundleRequest(Question):
    """Bid on bundles of ``items``; at most one bundle bid per agent wins. Answered by
    the ``bundle_bids`` hook with ``[(items, amount), ...]``."""

    hook: ClassVar[str] = "bundle_bids"
    auction_id: str
    items: tuple[str, ...]


@attrs.frozen
class AwardNotice(Question):
    """The agent won ``item`` at ``price``: it confirms by answering anything but a
    ``Refusal`` (``award`` hook). A refusal, crash or timeout is a winner failure."""

    hook: ClassVar[str] = "award"
    auction_id: str
    item: str
    price: float


@attrs.frozen
class AuctionReport:
    """An auction's immutable record: the core's :class:`AuctionResult`, every round
    run (bidding, clock steps, award confirmations), and trio times."""

    auction_id: str
    result: AuctionResult
    rounds: tuple[RoundResult, ...]
    started_at: float
    finished_at: float

    @property
    def status(self) -> AuctionStatus:
        return self.result.status

    @property
    def winner(self) -> str | None:
        return self.result.winner

    @property
    def price(self) -> float | None:
        return self.result.price

    def participants_by_outcome(self) -> dict[str, list[str]]:
        """The first round's participants by outcome (``Responded``, ``TimedOut``...)."""
        return by_outcome(self.rounds[0])


@attrs.frozen
class CombinatorialReport:
    """A combinatorial auction's record: the core's result, its round and trio times."""

    auction_id: str
    result: CombinatorialResult
    rounds: tuple[RoundResult, ...]
    started_at: float
    finished_at: float

    def participants_by_outcome(self) -> dict[str, list[str]]:
        return by_outcome(self.rounds[0])


def _meta(auction_id: str, kind: str, **extra: object) -> dict[str, object]:
    return {"auction_id": auction_id, "kind": kind, **extra}


def emit_bid(auction_id: str, kind: str, outcome: Bid | RejectedBid) -> None:
    """Emit ``agents.auction.bid_accepted`` or ``agents.auction.bid_rejected``."""
    if isinstance(outcome, Bid):
        emit(
            "agents.auction.bid_accepted",
            {"amount": outcome.amount},
            _meta(auction_id, kind, agent=outcome.agent, seq=outcome.seq),
        )
    else:
        emit(
            "agents.auction.bid_rejected",
            {},
            _meta(auction_id, kind, agent=outcome.agent, reason=outcome.reason),
        )


def _emit_end(report: AuctionReport) -> None:
    duration = report.finished_at - report.started_at
    emit_auction_end(report.auction_id, report.result, duration)
    if report.result.winner is not None:
        count_win(report.result.kind, report.result.winner)


def emit_auction_end(auction_id: str, result: AuctionResult, duration: float) -> None:
    """Emit ``agents.auction.cleared`` or ``agents.auction.no_sale`` for ``result``."""
    meta = _meta(auction_id, result.kind)
    if result.winner is not None and result.price is not None:
        emit(
            "agents.auction.cleared",
            {"price": result.price, "bids": len(result.bids), "duration": duration},
            {**meta, "winner": result.winner},
        )
    else:
        emit(
            "agents.auction.no_sale",
            {"bids": len(result.bids), "duration": duration},
            {**meta, "reason": result.reason or result.status.value},
        )


async def sealed_bid_auction(
    participants: Iterable[str | Participant],
    *,
    item: str = "item",
    pricing: Pricing = Pricing.SECOND,
    reserve: float = 0.0,
    timeout: float = 5.0,
    late_grace: float = 0.0,
    confirm_award: bool = False,
    award_timeout: float = 5.0,
    on_winner_failure: FailurePolicy = FailurePolicy.RUNNER_UP,
    auction_id: str | None = None,
    rng: random.Random | None = None,
) -> AuctionReport:
    """Run a sealed-bid auction among ``participants``; see the module doc.

    Participants (in every driver of this module) are local agent ids or agents on any
    node as :func:`~.registry.agent_on` ``(node, id)``, named ``"<id>@<node>"`` in the
    report; a remote bidder whose node is lost is recorded as ``Crashed`` at once.

    Every participant gets one :class:`BidRequest` with one deadline ``timeout``
    seconds from now; answers after it (within ``late_grace``, to be recorded) are
    rejected as ``late``. ``pricing`` is :attr:`Pricing.FIRST` (pay your bid) or
    :attr:`Pricing.SECOND` (Vickrey: pay ``max(second bid, reserve)``). No valid bid is
    an :attr:`AuctionStatus.NO_SALE` report, not an error.

    With ``confirm_award`` the winner is sent an :class:`AwardNotice` (deadline
    ``award_timeout``); if it refuses, crashes or times out, ``on_winner_failure``
    applies: ``VOID`` ends the auction void, ``RUNNER_UP`` awards the next best bid at
    the price recomputed without the failed winner (and asks that winner in turn).

    ``rng`` shuffles the invitation order (ties between answers received at the same
    instant follow it). Raises :class:`~.errors.AgentNotFound` for an unknown agent id,
    ``TypeError`` / ``ValueError`` for bad arguments. Cancelling the caller cancels the
    questions out and leaves no task behind.
    """
    team = roster(participants)
    ids = list(team.ids)
    check_id(item, "item")
    seconds = check_timeout(timeout, "timeout")
    award_seconds = check_timeout(award_timeout, "award_timeout")
    if not isinstance(on_winner_failure, FailurePolicy):
        raise TypeError(f"on_winner_failure must be a FailurePolicy, got {on_winner_failure!r}")
    auction_id = new_id("auction") if auction_id is None else check_id(auction_id, "auction_id")
    started = trio.current_time()
    deadline = started + seconds
    auction = SealedBidAuction(ids, pricing=pricing, deadline=deadline, reserve=reserve)
    kind = auction.kind
    emit(
        "agents.auction.started",
        {"participants": len(ids)},
        _meta(auction_id, kind, item=item, reserve=auction.reserve),
    )
    bidding = await run_round(
        team.invite(ids),
        BidRequest(auction_id=auction_id, item=item, kind=kind, reserve=auction.reserve),
        deadline=deadline,
        late_grace=late_grace,
        rng=rng,
        name=f"{auction_id}.bids",
    )
    rounds = [bidding]
    for answer in bidding.responses():
        emit_bid(
            auction_id,
            kind,
            auction.submit(
                answer.participant, answer.value, seq=answer.seq, now=answer.received_at
            ),
        )
    counted = len(bidding.responses())
    for extra, late_answer in enumerate(late_answers(bidding)):
        seq = counted + extra
        emit_bid(
            auction_id,
            kind,
            auction.submit(
                late_answer.participant, late_answer.value, seq=seq, now=late_answer.received_at
            ),
        )
    result = auction.close()
    while confirm_award and result.status is AuctionStatus.SOLD:
        assert result.winner is not None
        assert result.price is not None
        confirmation = await run_round(
            team.invite([result.winner]),
            AwardNotice(auction_id=auction_id, item=item, price=result.price),
            deadline=deadline_in(award_seconds),
            name=f"{auction_id}.award",
        )
        rounds.append(confirmation)
        confirmed = confirmation.outcomes[0]
        if isinstance(confirmed, Responded):
            break
        reason = _failure_reason(confirmed)
        emit(
            "agents.auction.award_failed",
            {"price": result.price},
            _meta(
                auction_id,
                kind,
                agent=result.winner,
                reason=reason,
                policy=on_winner_failure.value,
            ),
        )
        result = auction.after_winner_failure(result.winner, on_winner_failure)
    report = AuctionReport(auction_id, result, tuple(rounds), started, trio.current_time())
    _emit_end(report)
    return report


def _failure_reason(outcome: object) -> str:
    reason = getattr(outcome, "reason", None)
    if reason is not None:
        return f"refused: {reason}"
    error = getattr(outcome, "error", None)
    if error is not None:
        return f"crashed: {error!r}"
    return type(outcome).__name__.lower()


def _emit_round(auction_id: str, kind: str, step: ClockRound) -> None:
    emit(
        "agents.auction.round",
        {"round": step.round, "price": step.price, "stayed": len(step.stayed)},
        _meta(auction_id, kind, dropped=step.dropped),
    )


async def _run_clock(
    auction: EnglishAuction | DutchAuction,
    team: Roster,
    auction_id: str,
    item: str,
    reserve: float,
    step_timeout: float,
    rng: random.Random | None,
) -> AuctionReport:
    """Drive a clock auction: each step offers the price to the bidders still in (all
    of them for Dutch) under one deadline and feeds the ``True`` answers, by seq."""
    kind = auction.kind
    started = trio.current_time()
    emit(
        "agents.auction.started",
        {"participants": len(auction.participants)},
        _meta(auction_id, kind, item=item, reserve=reserve),
    )
    rounds: list[RoundResult] = []
    while auction.result is None:
        if isinstance(auction, EnglishAuction):
            number, asked = auction.round, auction.active
        else:
            number, asked = auction.step, auction.participants
        offer = PriceOffer(
            auction_id=auction_id, item=item, kind=kind, price=auction.price, round=number
        )
        answers = await run_round(
            team.invite(sorted(asked)),
            offer,
            deadline=deadline_in(step_timeout),
            rng=rng,
            name=f"{auction_id}.round{number}",
        )
        rounds.append(answers)
        yes = {o.participant: o.seq for o in answers.responses() if o.value is True}
        now = trio.current_time()
        if isinstance(auction, EnglishAuction):
            step = auction.record_round(yes, now=now)
        else:
            step = auction.record_step(yes, now=now)
        _emit_round(auction_id, kind, step)
    report = AuctionReport(auction_id, auction.result, tuple(rounds), started, trio.current_time())
    _emit_end(report)
    return report


async def english_auction(
    participants: Iterable[str | Participant],
    *,
    item: str = "item",
    start_price: float = 0.0,
    increment: float = 1.0,
    max_rounds: int = 10_000,
    round_timeout: float = 1.0,
    auction_id: str | None = None,
    rng: random.Random | None = None,
) -> AuctionReport:
    """Run an English (ascending clock) auction; see :mod:`~foundation_trio.protocols.auctions`.

    Each round asks the active bidders a :class:`PriceOffer` under one deadline
    ``round_timeout`` seconds away; only ``True`` in time stays in. Silence, a refusal,
    a crash or a late answer is dropping out. Errors as :func:`sealed_bid_auction`.
    """
    team = roster(participants)
    ids = list(team.ids)
    check_id(item, "item")
    step_timeout = check_timeout(round_timeout, "round_timeout")
    config = EnglishConfig(start_price=start_price, increment=increment, max_rounds=max_rounds)
    auction_id = new_id("auction") if auction_id is None else check_id(auction_id, "auction_id")
    auction = EnglishAuction(ids, config)
    return await _run_clock(auction, team, auction_id, item, config.start_price, step_timeout, rng)


async def dutch_auction(
    participants: Iterable[str | Participant],
    *,
    start_price: float,
    decrement: float,
    floor: float = 0.0,
    item: str = "item",
    step_timeout: float = 1.0,
    auction_id: str | None = None,
    rng: random.Random | None = None,
) -> AuctionReport:
    """Run a Dutch (descending clock) auction; see :mod:`~foundation_trio.protocols.auctions`.

    The auctioneer drives the clock: each step offers the price to every participant
    under one deadline ``step_timeout`` seconds away and moves on at that deadline,
    so a silent bidder never stalls it. The first ``True`` by receipt order wins at the
    current price; passing the ``floor`` is no sale. Errors as :func:`sealed_bid_auction`.
    """
    team = roster(participants)
    ids = list(team.ids)
    check_id(item, "item")
    seconds = check_timeout(step_timeout, "step_timeout")
    config = DutchConfig(start_price=start_price, decrement=decrement, floor=floor)
    auction_id = new_id("auction") if auction_id is None else check_id(auction_id, "auction_id")
    auction = DutchAuction(ids, config)
    return await _run_clock(auction, team, auction_id, item, config.floor, seconds, rng)


async def combinatorial_auction(
    participants: Iterable[str | Participant],
    *,
    items: Iterable[str],
    timeout: float = 5.0,
    late_grace: float = 0.0,
    config: CombinatorialConfig | None = None,
    auction_id: str | None = None,
    rng: random.Random | None = None,
) -> CombinatorialReport:
    """Run a combinatorial auction with exact winner determination and VCG payments.

    Each participant gets one :class:`BundleRequest`; an answer is rejected as a whole
    if it is late or holds an invalid bundle bid. Raises
    :class:`~foundation_trio.protocols.coordination.InstanceTooLarge` (after emitting
    ``agents.auction.no_sale`` with the reason) when the bids received exceed
    ``config``'s limits: such an instance is refused, never approximated.
    """
    team = roster(participants)
    ids = list(team.ids)
    seconds = check_timeout(timeout, "timeout")
    if isinstance(items, str):
        raise TypeError("items must be a collection of item names, not one str")
    item_list = tuple(sorted(set(items)))
    auction_id = new_id("auction") if auction_id is None else check_id(auction_id, "auction_id")
    started = trio.current_time()
    deadline = started + seconds
    auction = CombinatorialAuction(ids, items=item_list, deadline=deadline, config=config)
    kind = "combinatorial"
    emit(
        "agents.auction.started",
        {"participants": len(ids)},
        _meta(auction_id, kind, items=item_list),
    )
    bidding = await run_round(
        team.invite(ids),
        BundleRequest(auction_id=auction_id, items=item_list),
        deadline=deadline,
        late_grace=late_grace,
        rng=rng,
        name=f"{auction_id}.bids",
    )
    answers: list[tuple[str, Any, int, float]] = [
        (o.participant, o.value, o.seq, o.received_at) for o in bidding.responses()
    ]
    answers += [
        (o.participant, o.value, len(answers) + i, o.received_at)
        for i, o in enumerate(late_answers(bidding))
    ]
    for agent, value, seq, at in answers:
        taken = auction.submit(agent, value, seq=seq, now=at)
        if isinstance(taken, str):
            emit(
                "agents.auction.bid_rejected",
                {},
                _meta(auction_id, kind, agent=agent, reason=taken),
            )
        else:
            emit(
                "agents.auction.bid_accepted",
                {"bundles": len(taken)},
                _meta(auction_id, kind, agent=agent, seq=seq),
            )
    try:
        result = auction.close()
    except Exception as error:
        emit(
            "agents.auction.no_sale",
            {"bids": len(answers), "duration": trio.current_time() - started},
            _meta(auction_id, kind, reason=str(error)),
        )
        raise
    finished = trio.current_time()
    report = CombinatorialReport(auction_id, result, (bidding,), started, finished)
    if result.status is CombinatorialStatus.ALLOCATED:
        emit(
            "agents.auction.cleared",
            {
                "welfare": result.welfare,
                "winners": len(result.winners),
                "bids": len(result.bids),
                "duration": finished - started,
            },
            _meta(auction_id, kind, payments=dict(result.payments)),
        )
        for winner in result.winners:
            count_win(kind, winner.agent)
    else:
        emit(
            "agents.auction.no_sale",
            {"bids": 0, "duration": finished - started},
            _meta(auction_id, kind, reason=result.reason or "no valid bid"),
        )
    return report


# The questions cross nodes as registered wire records, so agents on other nodes bid
# the same way (their answers are numbers, booleans and tuples: plain bodies).
for _record in (BidRequest, PriceOffer, BundleRequest, AwardNotice):
    wire.register(_record, name=f"ft.agents.{_record.__name__}")
