"""Markets among agents: a call market and a continuous double auction.

Agents send limit orders through the ``orders`` hook, answering an
:class:`OrderRequest` with an iterable of ``(side, quantity, limit)`` triples (``side``
is ``"buy"`` / ``"sell"`` or a :class:`~foundation_trio.protocols.markets.Side`). The
pure cores of :mod:`foundation_trio.protocols.markets` do the matching: the call market
crosses every order of the round at one price (maximal volume); the continuous double
auction matches each order on arrival in price-time priority at the resting price. In
both, the quantity bought equals the quantity sold and nobody trades beyond its limit.
A malformed order is rejected on its own (the agent's other orders stand); a late
answer, a crash or a timeout contributes no order.

Telemetry (metadata always holds ``market_id`` and ``kind``, ``"call"`` or
``"continuous"``):

- ``agents.market.started`` ``{participants}``
- ``agents.market.order_rejected`` ``{}`` + ``agent``, ``reason``
- ``agents.market.trade`` ``{price, quantity}`` + ``buyer``, ``seller``
- ``agents.market.cleared`` ``{volume, trades, duration}`` (+ ``price`` for a call market)
- ``agents.market.no_trade`` ``{orders, duration}`` + ``reason``
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import ClassVar

import attrs
import trio

from ..cluster import wire
from ..protocols.coordination import InvalidOrder
from ..protocols.markets import (
    CallMarketResult,
    ContinuousDoubleAuction,
    MarketStatus,
    Order,
    Side,
    check_order,
    clear_call_market,
)
from ._protocol_support import (
    Roster,
    by_outcome,
    check_id,
    check_timeout,
    deadline_in,
    emit,
    new_id,
    roster,
)
from .messages import Question
from .rounds import Participant, RoundResult, run_round

__all__ = [
    "MarketReport",
    "MarketTrade",
    "OrderRequest",
    "call_market",
    "continuous_double_auction",
]


@attrs.frozen
class OrderRequest(Question):
    """Which limit orders the agent places in round ``round`` of market ``market_id``.

    ``best_bid`` / ``best_ask`` are the book's best resting prices and ``last_price``
    the last trade's price (``None`` when there is none). Answered by the ``orders``
    hook with ``[(side, quantity, limit), ...]``.
    """

    hook: ClassVar[str] = "orders"
    market_id: str
    kind: str
    round: int
    best_bid: float | None = None
    best_ask: float | None = None
    last_price: float | None = None


@attrs.frozen
class MarketTrade:
    """``quantity`` units from ``seller`` to ``buyer`` at ``price``."""

    buyer: str
    seller: str
    price: float
    quantity: int


@attrs.frozen
class MarketReport:
    """A market session's immutable record.

    ``price`` is the uniform price of a call market (``None`` for a continuous market or
    no trade); ``volume`` the units traded; ``rejected`` the orders refused with their
    reasons; ``resting`` the continuous book's unfilled orders at the end as
    ``(order_id, agent, side, limit, remaining)``.
    """

    market_id: str
    kind: str
    status: MarketStatus
    price: float | None
    volume: int
    trades: tuple[MarketTrade, ...]
    rejected: tuple[tuple[str, str], ...]
    rounds: tuple[RoundResult, ...]
    started_at: float
    finished_at: float
    resting: tuple[tuple[int, str, Side, float, int], ...] = ()
    call_result: CallMarketResult | None = None

    def participants_by_outcome(self) -> dict[str, list[str]]:
        """The first round's participants by outcome."""
        return by_outcome(self.rounds[0])


def _order(agent: str, entry: object, seq: int) -> Order:
    """One ``(side, quantity, limit)`` entry as a checked :class:`Order`."""
    if not isinstance(entry, tuple | list) or len(entry) != 3:
        raise InvalidOrder(f"order {entry!r} is not a (side, quantity, limit) triple")
    side, quantity, limit = entry
    if isinstance(side, str):
        try:
            side = Side(side)
        except ValueError:
            raise InvalidOrder(f"side must be 'buy' or 'sell', got {side!r}") from None
    return check_order(Order(agent, side, quantity, limit, seq))


def _parse(agent: str, answer: object, seq: int) -> tuple[list[Order], list[str]]:
    """An agent's answer as valid orders and the reasons its other entries were refused."""
    if isinstance(answer, str | bytes) or not isinstance(answer, Iterable):
        return [], [f"answer must be an iterable of (side, quantity, limit), got {answer!r}"]
    orders: list[Order] = []
    reasons: list[str] = []
    for entry in answer:
        try:
            orders.append(_order(agent, entry, seq))
        except (InvalidOrder, TypeError, ValueError) as error:
            reasons.append(str(error))
    return orders, reasons


async def _collect(
    market_id: str,
    kind: str,
    team: Roster,
    seconds: float,
    round_number: int,
    rng: random.Random | None,
    rejected: list[tuple[str, str]],
    book: ContinuousDoubleAuction | None = None,
    last_price: float | None = None,
) -> tuple[RoundResult, list[Order]]:
    request = OrderRequest(
        market_id=market_id,
        kind=kind,
        round=round_number,
        best_bid=None if book is None else book.best_bid(),
        best_ask=None if book is None else book.best_ask(),
        last_price=last_price,
    )
    answers = await run_round(
        team.invite(team.ids),
        request,
        deadline=deadline_in(seconds),
        rng=rng,
        name=f"{market_id}.round{round_number}",
    )
    orders: list[Order] = []
    for response in answers.responses():
        found, reasons = _parse(response.participant, response.value, response.seq)
        orders.extend(found)
        for reason in reasons:
            rejected.append((response.participant, reason))
            emit(
                "agents.market.order_rejected",
                {},
                {
                    "market_id": market_id,
                    "kind": kind,
                    "agent": response.participant,
                    "reason": reason,
                },
            )
    return answers, orders


def _emit_trade(market_id: str, kind: str, trade: MarketTrade) -> None:
    emit(
        "agents.market.trade",
        {"price": trade.price, "quantity": trade.quantity},
        {"market_id": market_id, "kind": kind, "buyer": trade.buyer, "seller": trade.seller},
    )


def _emit_end(report: MarketReport, orders: int) -> None:
    meta = {"market_id": report.market_id, "kind": report.kind}
    duration = report.finished_at - report.started_at
    if report.status is MarketStatus.CLEARED:
        measurements: dict[str, float] = {
            "volume": report.volume,
            "trades": len(report.trades),
            "duration": duration,
        }
        if report.price is not None:
            measurements["price"] = report.price
        emit("agents.market.cleared", measurements, meta)
    else:
        reason = "no crossing" if orders else "no valid order"
        emit(
            "agents.market.no_trade",
            {"orders": orders, "duration": duration},
            {**meta, "reason": reason},
        )


async def call_market(
    participants: Iterable[str | Participant],
    *,
    timeout: float = 5.0,
    market_id: str | None = None,
    rng: random.Random | None = None,
) -> MarketReport:
    """Run one call-market round: ask every participant for orders (one deadline,
    ``timeout`` seconds away), cross them at one uniform price.

    No crossing is a ``NO_TRADE`` report. Raises :class:`~.errors.AgentNotFound` for an
    unknown agent, ``TypeError`` / ``ValueError`` for bad arguments.
    """
    team = roster(participants)
    ids = team.ids
    seconds = check_timeout(timeout, "timeout")
    market_id = new_id("market") if market_id is None else check_id(market_id, "market_id")
    kind = "call"
    started = trio.current_time()
    emit(
        "agents.market.started", {"participants": len(ids)}, {"market_id": market_id, "kind": kind}
    )
    rejected: list[tuple[str, str]] = []
    answers, orders = await _collect(market_id, kind, team, seconds, 0, rng, rejected)
    result = clear_call_market(orders)
    trades = tuple(
        MarketTrade(buyer, seller, result.price, quantity)
        for buyer, seller, quantity in result.trades()
        if result.price is not None
    )
    for trade in trades:
        _emit_trade(market_id, kind, trade)
    report = MarketReport(
        market_id=market_id,
        kind=kind,
        status=result.status,
        price=result.price,
        volume=result.volume,
        trades=trades,
        rejected=tuple(rejected),
        rounds=(answers,),
        started_at=started,
        finished_at=trio.current_time(),
        call_result=result,
    )
    _emit_end(report, len(orders))
    return report


async def continuous_double_auction(
    participants: Iterable[str | Participant],
    *,
    rounds: int = 1,
    round_timeout: float = 1.0,
    market_id: str | None = None,
    rng: random.Random | None = None,
) -> MarketReport:
    """Run a continuous double auction for ``rounds`` rounds.

    Each round asks every participant for orders under one deadline (``round_timeout``
    seconds away), telling it the book's best bid and ask and the last price; the
    orders received are submitted to the book in receipt order (an agent's own orders
    in the order it listed them), each matched on arrival. Orders left in the book at
    the end are reported as ``resting`` and withdrawn.
    """
    team = roster(participants)
    ids = team.ids
    seconds = check_timeout(round_timeout, "round_timeout")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    market_id = new_id("market") if market_id is None else check_id(market_id, "market_id")
    kind = "continuous"
    started = trio.current_time()
    emit(
        "agents.market.started", {"participants": len(ids)}, {"market_id": market_id, "kind": kind}
    )
    book = ContinuousDoubleAuction()
    rejected: list[tuple[str, str]] = []
    trades: list[MarketTrade] = []
    round_results: list[RoundResult] = []
    submitted = 0
    for number in range(rounds):
        last = trades[-1].price if trades else None
        answers, orders = await _collect(
            market_id, kind, team, seconds, number, rng, rejected, book, last
        )
        round_results.append(answers)
        for order in sorted(orders, key=lambda o: o.seq):
            submitted += 1
            done = book.submit(
                order.agent, order.side, order.quantity, order.limit, now=trio.current_time()
            )
            for t in done.trades:
                trade = MarketTrade(t.buyer, t.seller, t.price, t.quantity)
                trades.append(trade)
                _emit_trade(market_id, kind, trade)
    resting = book.resting()
    book.close()
    volume = sum(t.quantity for t in trades)
    report = MarketReport(
        market_id=market_id,
        kind=kind,
        status=MarketStatus.CLEARED if volume else MarketStatus.NO_TRADE,
        price=None,
        volume=volume,
        trades=tuple(trades),
        rejected=tuple(rejected),
        rounds=tuple(round_results),
        started_at=started,
        finished_at=trio.current_time(),
        resting=resting,
    )
    _emit_end(report, submitted)
    return report


# Crosses nodes as a registered wire record; the answers (``(side, quantity, limit)``
# tuples, a side as its value ``"buy"`` / ``"sell"``) are plain bodies.
wire.register(OrderRequest, name="ft.agents.OrderRequest")
