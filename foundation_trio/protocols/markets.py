"""Markets: a call market (uniform-price batch auction) and a continuous double auction.

Orders are limit orders: a side, an integer quantity >= 1 and a finite limit price >= 0.
A buyer never pays more than its limit and a seller never receives less than its limit;
in every trade the quantity bought equals the quantity sold.

Call market (:func:`clear_call_market`)
    All orders of a batch are crossed at one price. Aggregate demand ``D(p)`` is the
    quantity of buy orders with ``limit >= p``, aggregate supply ``S(p)`` the quantity
    of sell orders with ``limit <= p``. The traded volume is the largest tradable
    quantity ``V = max_p min(D(p), S(p))`` (attained at some limit price). The clearing
    price is the midpoint of the lowest and highest limit prices that reach ``V``; at
    that price ``D >= V`` and ``S >= V`` still hold (``D`` falls and ``S`` rises with
    ``p``), so it is a real crossing of the two curves. Orders strictly better than the
    price are filled in full; the long side is rationed among its marginal orders by
    price, then receipt ``seq``, then agent id. ``V == 0`` is a ``NO_TRADE`` result.

Continuous double auction (:class:`ContinuousDoubleAuction`)
    An order is matched on arrival against the resting orders of the other side in
    price-time priority (best price first, then earliest arrival) while their prices
    cross; each trade is at the resting order's price. Whatever is left rests in the
    book until it is matched or cancelled. Self-trades are not prevented.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterable, Sequence

import attrs

from foundation_trio.protocols.coordination import (
    AgentId,
    InvalidOrder,
    SessionClosed,
    check_agent_id,
    check_amount,
    check_seq,
)

__all__ = [
    "CallMarketResult",
    "ContinuousDoubleAuction",
    "Fill",
    "MarketStatus",
    "Order",
    "Side",
    "SubmitResult",
    "Trade",
    "check_order",
    "clear_call_market",
    "demand_at",
    "supply_at",
]


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class MarketStatus(enum.Enum):
    CLEARED = "cleared"
    NO_TRADE = "no_trade"


@attrs.frozen(slots=True)
class Order:
    """A limit order: ``agent`` wants to ``side`` ``quantity`` units at ``limit`` or better."""

    agent: AgentId
    side: Side
    quantity: int
    limit: float
    seq: int = 0


def check_order(order: object) -> Order:
    """Return ``order`` if valid, else raise ``TypeError`` or :class:`InvalidOrder`."""
    if not isinstance(order, Order):
        raise TypeError(f"expected an Order, got {type(order).__name__}")
    check_agent_id(order.agent, "Order.agent")
    check_seq(order.seq, "Order.seq")
    if not isinstance(order.side, Side):
        raise InvalidOrder(f"order from {order.agent!r}: side must be a Side, got {order.side!r}")
    if isinstance(order.quantity, bool) or not isinstance(order.quantity, int):
        raise InvalidOrder(
            f"order from {order.agent!r}: quantity must be an int, got {order.quantity!r}"
        )
    if order.quantity < 1:
        raise InvalidOrder(
            f"order from {order.agent!r}: quantity must be >= 1, got {order.quantity}"
        )
    try:
        check_amount(order.limit, "limit", minimum=0.0)
    except (TypeError, ValueError) as error:
        raise InvalidOrder(f"order from {order.agent!r}: {error}") from None
    return order


@attrs.frozen(slots=True)
class Fill:
    """``quantity`` units of ``order`` executed at ``price``."""

    order: Order
    quantity: int
    price: float


@attrs.frozen(slots=True)
class CallMarketResult:
    """Outcome of one call-market batch: price, volume and one fill per executed order."""

    status: MarketStatus
    price: float | None
    volume: int
    fills: tuple[Fill, ...]
    orders: tuple[Order, ...]
    reason: str | None = None

    def bought(self) -> int:
        return sum(f.quantity for f in self.fills if f.order.side is Side.BUY)

    def sold(self) -> int:
        return sum(f.quantity for f in self.fills if f.order.side is Side.SELL)

    def trades(self) -> tuple[tuple[AgentId, AgentId, int], ...]:
        """The fills paired into ``(buyer, seller, quantity)`` trades at :attr:`price`.

        Buy and sell fills are paired in their priority order (the order of
        :attr:`fills`); the pairing only names counterparties, every trade is at the
        one uniform price.
        """
        buys = [(f.order.agent, f.quantity) for f in self.fills if f.order.side is Side.BUY]
        sells = [(f.order.agent, f.quantity) for f in self.fills if f.order.side is Side.SELL]
        buy_left = [q for _, q in buys]
        sell_left = [q for _, q in sells]
        paired: list[tuple[AgentId, AgentId, int]] = []
        i = j = 0
        while i < len(buys) and j < len(sells):
            quantity = min(buy_left[i], sell_left[j])
            paired.append((buys[i][0], sells[j][0], quantity))
            buy_left[i] -= quantity
            sell_left[j] -= quantity
            i += buy_left[i] == 0
            j += sell_left[j] == 0
        return tuple(paired)


def demand_at(orders: Iterable[Order], price: float) -> int:
    """Quantity of buy orders willing to pay ``price`` (limit >= price)."""
    return sum(o.quantity for o in orders if o.side is Side.BUY and o.limit >= price)


def supply_at(orders: Iterable[Order], price: float) -> int:
    """Quantity of sell orders willing to sell at ``price`` (limit <= price)."""
    return sum(o.quantity for o in orders if o.side is Side.SELL and o.limit <= price)


def _ration(orders: Sequence[Order], volume: int, better_first: bool) -> list[tuple[Order, int]]:
    ranked = sorted(
        orders, key=lambda o: ((-o.limit if better_first else o.limit), o.seq, o.agent)
    )
    fills: list[tuple[Order, int]] = []
    left = volume
    for order in ranked:
        if left == 0:
            break
        take = min(order.quantity, left)
        fills.append((order, take))
        left -= take
    return fills


def clear_call_market(orders: Sequence[Order]) -> CallMarketResult:
    """Cross a batch of ``orders`` at one uniform price; see the module docstring.

    Raises ``TypeError`` or :class:`InvalidOrder` for a malformed order.
    """
    checked = tuple(check_order(o) for o in orders)
    prices = sorted({o.limit for o in checked})
    volume = 0
    reaching: list[float] = []
    for price in prices:
        tradable = min(demand_at(checked, price), supply_at(checked, price))
        if tradable > volume:
            volume, reaching = tradable, [price]
        elif tradable == volume and volume > 0:
            reaching.append(price)
    if volume == 0:
        return CallMarketResult(
            status=MarketStatus.NO_TRADE,
            price=None,
            volume=0,
            fills=(),
            orders=checked,
            reason="no crossing: no buy limit reaches a sell limit",
        )
    price = (reaching[0] + reaching[-1]) / 2
    buyers = [o for o in checked if o.side is Side.BUY and o.limit >= price]
    sellers = [o for o in checked if o.side is Side.SELL and o.limit <= price]
    fills = [
        Fill(order, quantity, price)
        for order, quantity in [
            *_ration(buyers, volume, better_first=True),
            *_ration(sellers, volume, better_first=False),
        ]
    ]
    return CallMarketResult(
        status=MarketStatus.CLEARED,
        price=price,
        volume=volume,
        fills=tuple(fills),
        orders=checked,
    )


@attrs.frozen(slots=True)
class Trade:
    """``quantity`` units from ``seller`` to ``buyer`` at ``price`` (the resting order's)."""

    seq: int
    buyer: AgentId
    seller: AgentId
    price: float
    quantity: int
    buy_order: int
    sell_order: int
    at: float


@attrs.frozen(slots=True)
class SubmitResult:
    """What an order did on arrival: its id, the trades it made, what rests in the book."""

    order_id: int
    trades: tuple[Trade, ...]
    resting: int


@attrs.define(slots=True)
class _Resting:
    order_id: int
    agent: AgentId
    side: Side
    limit: float
    remaining: int


class ContinuousDoubleAuction:
    """A limit order book with price-time priority; see the module docstring.

    Order ids are assigned in arrival order and are the time priority. :meth:`close`
    ends the session: later submissions raise :class:`SessionClosed`.
    """

    def __init__(self) -> None:
        self._next_id = 0
        self._trade_seq = 0
        self._live: dict[int, _Resting] = {}
        # Heaps of (price key, order id); entries of filled or cancelled orders are
        # dropped lazily when they reach the top.
        self._bids: list[tuple[float, int]] = []
        self._asks: list[tuple[float, int]] = []
        self.trades: list[Trade] = []
        self.closed = False

    def submit(
        self, agent: AgentId, side: Side, quantity: int, limit: float, *, now: float = 0.0
    ) -> SubmitResult:
        """Match a new limit order on arrival; rest what is left. See the module docstring.

        Raises :class:`InvalidOrder` for a malformed order, :class:`SessionClosed` after
        :meth:`close`.
        """
        if self.closed:
            raise SessionClosed("the continuous double auction is closed")
        order = check_order(Order(agent, side, quantity, limit))
        now = check_amount(now, "now")
        order_id = self._next_id
        self._next_id += 1
        incoming = _Resting(order_id, order.agent, order.side, float(order.limit), order.quantity)
        trades: list[Trade] = []
        book = self._asks if side is Side.BUY else self._bids
        while incoming.remaining and book:
            _, resting_id = book[0]
            resting = self._live.get(resting_id)
            if resting is None:
                heapq.heappop(book)
                continue
            crosses = (
                resting.limit <= incoming.limit
                if side is Side.BUY
                else resting.limit >= incoming.limit
            )
            if not crosses:
                break
            quantity = min(incoming.remaining, resting.remaining)
            buyer, seller = (incoming, resting) if side is Side.BUY else (resting, incoming)
            trade = Trade(
                seq=self._trade_seq,
                buyer=buyer.agent,
                seller=seller.agent,
                price=resting.limit,
                quantity=quantity,
                buy_order=buyer.order_id,
                sell_order=seller.order_id,
                at=now,
            )
            self._trade_seq += 1
            trades.append(trade)
            incoming.remaining -= quantity
            resting.remaining -= quantity
            if resting.remaining == 0:
                del self._live[resting_id]
                heapq.heappop(book)
        if incoming.remaining:
            self._live[order_id] = incoming
            if side is Side.BUY:
                heapq.heappush(self._bids, (-incoming.limit, order_id))
            else:
                heapq.heappush(self._asks, (incoming.limit, order_id))
        self.trades.extend(trades)
        return SubmitResult(order_id, tuple(trades), incoming.remaining)

    def cancel(self, order_id: int) -> int:
        """Withdraw a resting order; return the quantity withdrawn (0 if none was left)."""
        resting = self._live.pop(order_id, None)
        return 0 if resting is None else resting.remaining

    def best_bid(self) -> float | None:
        """Highest resting buy limit, or ``None``."""
        return self._best(self._bids, -1.0)

    def best_ask(self) -> float | None:
        """Lowest resting sell limit, or ``None``."""
        return self._best(self._asks, 1.0)

    def _best(self, heap: list[tuple[float, int]], sign: float) -> float | None:
        while heap and heap[0][1] not in self._live:
            heapq.heappop(heap)
        return None if not heap else sign * heap[0][0]

    def resting(self) -> tuple[tuple[int, AgentId, Side, float, int], ...]:
        """Resting orders as ``(order_id, agent, side, limit, remaining)`` by order id."""
        return tuple(
            (r.order_id, r.agent, r.side, r.limit, r.remaining)
            for _, r in sorted(self._live.items())
        )

    def close(self) -> tuple[Trade, ...]:
        """End the session and return every trade made, in order."""
        self.closed = True
        return tuple(self.trades)
