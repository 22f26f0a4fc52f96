"""The ``"auction"`` and ``"negotiation"`` strategies of :func:`~.coordinate.coordinate`.

``coordinate(variable, "auction", participants, timeout, pricing="second", reserve=0.0)``
    A sealed-bid auction for the right to set the variable. Every participant is asked a
    :class:`ValueBidRequest` (``bid_for_value`` hook) and answers ``(value, amount)`` (or
    a :class:`ValueBid`): the value it wants and what it bids for it. A value outside the
    variable's domain rejects the bid (``out_of_domain``); otherwise the bid is judged by
    :class:`~foundation_trio.protocols.auctions.SealedBidAuction` (first or second price,
    reserve, one bid per agent, late bids rejected). The winner's value is committed and
    its payment recorded in the result's ``details`` (``winner``, ``payment``,
    ``pricing``, ``bids``, ``rejected``). No valid bid commits nothing
    (``no_decision``). The auction's ``agents.auction.*`` events are emitted with
    ``auction_id`` ``"coordinate:<variable>"``.

``coordinate(variable, "negotiation", participants, timeout, round_timeout=..., max_rounds=100)``
    Alternating offers (:func:`~.negotiation.negotiate`) among the participants, in the
    order given, over the variable's domain (a float or int range, or a choice); the
    agreement is committed. A broken or timed-out negotiation commits nothing
    (``no_decision`` with the reason). ``round_timeout`` defaults to a tenth of the
    coordination's time. Composite domains are refused with ``TypeError``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import trio

from ..cluster import wire
from ..protocols.auctions import Bid, Pricing, SealedBidAuction
from ..protocols.negotiation import Choices, Interval, NegotiationStatus, OutcomeSpace
from ._protocol_support import emit
from .auctions import emit_auction_end, emit_bid
from .coordinate import Decision, StrategyContext, register_strategy
from .messages import Question
from .negotiation import negotiate
from .variables import Choice, FloatRange, IntRange

__all__ = ["ValueBid", "ValueBidRequest"]

INT_CHOICES_LIMIT = 10_000
"""An int range with at most this many values is negotiated as a set of choices (so
offers must be ints); a wider one as an interval whose agreement must be an int."""


@attrs.frozen
class ValueBidRequest(Question):
    """Which value the agent wants for ``variable`` and what it bids for it
    (``bid_for_value`` hook: answer ``(value, amount)`` or a :class:`ValueBid`)."""

    hook: ClassVar[str] = "bid_for_value"
    variable: str
    current: Any
    version: int
    domain: str
    pricing: str
    reserve: float


@attrs.frozen
class ValueBid:
    """An answer to :class:`ValueBidRequest`: ``amount`` offered to set ``value``."""

    value: Any
    amount: float


def _split(answer: object) -> tuple[bool, Any, object]:
    if isinstance(answer, ValueBid):
        return True, answer.value, answer.amount
    if isinstance(answer, tuple) and len(answer) == 2:
        return True, answer[0], answer[1]
    return False, None, None


async def auction_strategy(ctx: StrategyContext) -> Decision:
    pricing_name = ctx.option("pricing", "second")
    try:
        pricing = Pricing(pricing_name)
    except ValueError:
        raise ValueError(
            f"auction: pricing must be 'first' or 'second', got {pricing_name!r}"
        ) from None
    reserve = ctx.option("reserve", 0.0)
    auction = SealedBidAuction(
        ctx.participants, pricing=pricing, deadline=ctx.deadline, reserve=reserve
    )
    auction_id = f"coordinate:{ctx.variable}"
    meta = {"auction_id": auction_id, "kind": auction.kind}
    emit(
        "agents.auction.started",
        {"participants": len(ctx.participants)},
        {**meta, "item": ctx.variable, "reserve": auction.reserve},
    )
    started = trio.current_time()
    answers = await ctx.ask(
        ValueBidRequest(
            variable=ctx.variable,
            current=ctx.current.value,
            version=ctx.current.version,
            domain=ctx.spec.domain.describe(),
            pricing=pricing.value,
            reserve=auction.reserve,
        ),
        name=f"coordinate:{ctx.variable}:auction",
    )
    wanted: dict[str, Any] = {}
    rejected: list[tuple[str, str]] = []
    for response in answers.responses():
        agent = response.participant
        well_formed, value, amount = _split(response.value)
        ok, checked = ctx.valid(value) if well_formed else (False, None)
        if not ok:
            reason = "out_of_domain" if well_formed else "not_a_value_bid"
            rejected.append((agent, reason))
            emit("agents.auction.bid_rejected", {}, {**meta, "agent": agent, "reason": reason})
            continue
        outcome = auction.submit(agent, amount, seq=response.seq, now=response.received_at)
        emit_bid(auction_id, auction.kind, outcome)
        if isinstance(outcome, Bid):
            wanted[agent] = checked
        else:
            rejected.append((agent, outcome.reason))
    result = auction.close()
    emit_auction_end(auction_id, result, trio.current_time() - started)
    if result.winner is None or result.price is None:
        return Decision.no(
            "no_decision", result.reason or "no valid bid", rejected=tuple(rejected)
        )
    bids = {b.agent: b.amount for b in result.bids}
    return Decision(
        True,
        wanted[result.winner],
        details={
            "winner": result.winner,
            "payment": result.price,
            "pricing": pricing.value,
            "bids": bids,
            "rejected": tuple(rejected),
        },
        winners=(result.winner,),
    )


def _space(ctx: StrategyContext) -> OutcomeSpace:
    domain = ctx.spec.domain
    if isinstance(domain, FloatRange):
        return Interval(domain.low, domain.high)
    if isinstance(domain, IntRange):
        if domain.high - domain.low < INT_CHOICES_LIMIT:
            return Choices(tuple(range(domain.low, domain.high + 1)))
        return Interval(domain.low, domain.high)
    if isinstance(domain, Choice):
        return Choices(tuple(domain.options))
    raise TypeError(
        f"coordinate({ctx.variable!r}, 'negotiation'): the domain {domain.describe()} "
        "has no outcome space to negotiate over (float, int or choice domains only)"
    )


async def negotiation_strategy(ctx: StrategyContext) -> Decision:
    space = _space(ctx)
    remaining = ctx.deadline - trio.current_time()
    round_timeout = ctx.option("round_timeout", max(remaining / 10, 1e-3))
    max_rounds = ctx.option("max_rounds", 100)
    report = await negotiate(
        list(ctx.invitation),
        space,
        round_timeout=round_timeout,
        timeout=max(remaining, 1e-3),
        max_rounds=max_rounds,
        negotiation_id=f"coordinate:{ctx.variable}",
    )
    ctx.rounds.extend(report.rounds)
    result = report.result
    details = {
        "rounds": result.rounds,
        "history": tuple((r.proposer, r.offer) for r in result.history),
    }
    if result.status is not NegotiationStatus.AGREED:
        return Decision.no("no_decision", result.reason or result.status.value, **details)
    ok, value = ctx.valid(result.agreement)
    if not ok:
        return Decision.no(
            "no_decision", f"the agreement {result.agreement!r} is outside the domain", **details
        )
    proposer = result.history[-1].proposer
    return Decision(True, value, details=details, winners=(proposer,))


register_strategy("auction", auction_strategy, options=("pricing", "reserve"))
register_strategy("negotiation", negotiation_strategy, options=("round_timeout", "max_rounds"))

# The auction strategy's question and answer cross nodes as registered wire records.
for _record in (ValueBidRequest, ValueBid):
    wire.register(_record, name=f"ft.agents.{_record.__name__}")
