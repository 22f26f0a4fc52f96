"""Market cores: the call market's crossing and the continuous double auction's book."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from foundation_trio.protocols.coordination import InvalidOrder, SessionClosed
from foundation_trio.protocols.markets import (
    CallMarketResult,
    ContinuousDoubleAuction,
    MarketStatus,
    Order,
    Side,
    clear_call_market,
    demand_at,
    supply_at,
)

orders_strategy = st.lists(
    st.builds(
        Order,
        agent=st.sampled_from(["a", "b", "c", "d", "e"]),
        side=st.sampled_from(Side),
        quantity=st.integers(1, 10),
        limit=st.integers(1, 20).map(float),
        seq=st.integers(0, 30),
    ),
    max_size=12,
)


def check_fills(result: CallMarketResult) -> None:
    """Conservation, limits and quantities of one clearing."""
    assert result.bought() == result.sold() == result.volume
    for fill in result.fills:
        assert 1 <= fill.quantity <= fill.order.quantity
        assert fill.price == result.price
        if fill.order.side is Side.BUY:
            assert fill.order.limit >= fill.price
        else:
            assert fill.order.limit <= fill.price


@settings(max_examples=300)
@given(orders=orders_strategy)
def test_call_market_clearing_equals_a_brute_force_crossing(orders: list[Order]) -> None:
    result = clear_call_market(orders)
    # Brute force: every price on a grid finer than the limits.
    grid = [k / 4 for k in range(21 * 4)]
    best = max(min(demand_at(orders, p), supply_at(orders, p)) for p in grid)
    assert result.volume == best
    if best == 0:
        assert result.status is MarketStatus.NO_TRADE and result.price is None
        assert result.fills == ()
        return
    assert result.status is MarketStatus.CLEARED and result.price is not None
    # A real crossing: at the price both curves still cover the volume.
    assert demand_at(orders, result.price) >= result.volume
    assert supply_at(orders, result.price) >= result.volume
    check_fills(result)


def test_call_market_price_is_the_midpoint_of_the_maximal_volume_interval() -> None:
    orders = [
        Order("b1", Side.BUY, 5, 10.0, 0),
        Order("b2", Side.BUY, 5, 8.0, 1),
        Order("s1", Side.SELL, 5, 4.0, 2),
        Order("s2", Side.SELL, 5, 9.0, 3),
    ]
    result = clear_call_market(orders)
    # Volume 5 is reachable for every limit price from 4 to 10 except none better.
    assert (result.volume, result.price) == (5, 7.0)
    assert {(f.order.agent, f.quantity) for f in result.fills} == {("b1", 5), ("s1", 5)}


def test_call_market_rations_the_long_side_by_price_then_receipt_order() -> None:
    orders = [
        Order("late", Side.BUY, 4, 10.0, 5),
        Order("early", Side.BUY, 4, 10.0, 1),
        Order("high", Side.BUY, 2, 12.0, 9),
        Order("s", Side.SELL, 5, 10.0, 0),
    ]
    result = clear_call_market(orders)
    assert result.volume == 5
    assert [(f.order.agent, f.quantity) for f in result.fills if f.order.side is Side.BUY] == [
        ("high", 2),
        ("early", 3),
    ]
    check_fills(result)


def test_no_crossing_is_no_trade() -> None:
    result = clear_call_market([Order("b", Side.BUY, 3, 4.0), Order("s", Side.SELL, 3, 5.0)])
    assert result.status is MarketStatus.NO_TRADE
    assert "no crossing" in (result.reason or "")
    assert clear_call_market([]).status is MarketStatus.NO_TRADE
    assert clear_call_market([Order("b", Side.BUY, 3, 4.0)]).volume == 0


@pytest.mark.parametrize(
    ("order", "match"),
    [
        (Order("a", Side.BUY, 0, 1.0), "quantity must be >= 1"),
        (Order("a", Side.BUY, 1.5, 1.0), "quantity must be an int"),  # type: ignore[arg-type]
        (Order("a", "buy", 1, 1.0), "side"),  # type: ignore[arg-type]
        (Order("a", Side.SELL, 1, -1.0), "limit"),
        (Order("a", Side.SELL, 1, math.inf), "limit"),
    ],
)
def test_malformed_orders_raise_invalid_order(order: Order, match: str) -> None:
    with pytest.raises(InvalidOrder, match=match):
        clear_call_market([order])
    with pytest.raises(InvalidOrder, match=match):
        ContinuousDoubleAuction().submit(order.agent, order.side, order.quantity, order.limit)


# -- continuous double auction -----------------------------------------------------------


def test_cda_matches_in_price_time_priority_at_the_resting_price() -> None:
    book = ContinuousDoubleAuction()
    book.submit("s1", Side.SELL, 2, 10.0)
    book.submit("s2", Side.SELL, 2, 9.0)
    book.submit("s3", Side.SELL, 2, 9.0)
    result = book.submit("b", Side.BUY, 5, 11.0, now=3.0)
    assert [(t.seller, t.price, t.quantity) for t in result.trades] == [
        ("s2", 9.0, 2),
        ("s3", 9.0, 2),
        ("s1", 10.0, 1),
    ]
    assert all(t.buyer == "b" and t.at == 3.0 for t in result.trades)
    assert result.resting == 0
    assert book.resting() == ((0, "s1", Side.SELL, 10.0, 1),)


def test_cda_rests_what_does_not_cross_and_cancel_withdraws_it() -> None:
    book = ContinuousDoubleAuction()
    bid = book.submit("b", Side.BUY, 3, 5.0)
    assert (bid.trades, bid.resting) == ((), 3)
    ask = book.submit("s", Side.SELL, 1, 6.0)
    assert ask.trades == ()
    assert (book.best_bid(), book.best_ask()) == (5.0, 6.0)
    sell = book.submit("s2", Side.SELL, 1, 4.0)
    assert [(t.buyer, t.seller, t.price) for t in sell.trades] == [("b", "s2", 5.0)]
    assert book.cancel(bid.order_id) == 2
    assert book.cancel(bid.order_id) == 0
    assert book.best_bid() is None
    assert book.close() == sell.trades
    with pytest.raises(SessionClosed):
        book.submit("b", Side.BUY, 1, 1.0)


def reference_match(
    book: list[list[object]], side: Side, quantity: int, limit: float
) -> list[tuple[int, float, int]]:
    """Naive price-time matching against a list of [id, side, limit, remaining]."""
    trades = []
    while quantity:
        opposite = [o for o in book if o[1] is not side and o[3]]
        crossing = [o for o in opposite if (o[2] <= limit if side is Side.BUY else o[2] >= limit)]  # type: ignore[operator]
        if not crossing:
            break
        sign = 1 if side is Side.BUY else -1
        best = min(crossing, key=lambda o: (sign * o[2], o[0]))  # type: ignore[operator]
        take = min(quantity, best[3])  # type: ignore[type-var]
        trades.append((best[0], best[2], take))
        best[3] -= take  # type: ignore[operator]
        quantity -= take
    return trades  # type: ignore[return-value]


class CdaMachine(RuleBasedStateMachine):
    """The book against a naive reference, with conservation and limits at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.book = ContinuousDoubleAuction()
        self.model: list[list[object]] = []
        self.limits: dict[int, tuple[Side, float, int]] = {}
        self.filled: dict[int, int] = {}

    @rule(
        agent=st.sampled_from(["a", "b", "c"]),
        side=st.sampled_from(Side),
        quantity=st.integers(1, 5),
        limit=st.integers(1, 10).map(float),
    )
    def submit(self, agent: str, side: Side, quantity: int, limit: float) -> None:
        expected = reference_match(self.model, side, quantity, limit)
        result = self.book.submit(agent, side, quantity, limit)
        assert [
            (t.sell_order if side is Side.BUY else t.buy_order, t.price, t.quantity)
            for t in result.trades
        ] == expected
        self.limits[result.order_id] = (side, limit, quantity)
        self.model.append([result.order_id, side, limit, quantity - sum(q for *_, q in expected)])
        for trade in result.trades:
            assert trade.buyer != "" and trade.seller != ""
            for order_id in (trade.buy_order, trade.sell_order):
                self.filled[order_id] = self.filled.get(order_id, 0) + trade.quantity
            buy_limit = self.limits[trade.buy_order][1]
            sell_limit = self.limits[trade.sell_order][1]
            assert sell_limit <= trade.price <= buy_limit

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        entry = data.draw(st.sampled_from(self.model))
        assert self.book.cancel(entry[0]) == entry[3]  # type: ignore[arg-type]
        entry[3] = 0

    @invariant()
    def book_is_never_crossed(self) -> None:
        bid, ask = self.book.best_bid(), self.book.best_ask()
        if bid is not None and ask is not None:
            assert bid < ask

    @invariant()
    def nobody_trades_beyond_their_order(self) -> None:
        for order_id, filled in self.filled.items():
            assert filled <= self.limits[order_id][2]
        bought = sum(t.quantity for t in self.book.trades)
        assert bought == sum(self.filled.values()) / 2


TestCdaMachine = CdaMachine.TestCase
TestCdaMachine.settings = settings(max_examples=60, stateful_step_count=30)


def test_same_seed_same_result() -> None:
    def run(seed: int) -> tuple[CallMarketResult, tuple[object, ...]]:
        rng = random.Random(seed)
        orders = [
            Order(f"a{k}", rng.choice(list(Side)), rng.randint(1, 9), float(rng.randint(1, 20)), k)
            for k in range(30)
        ]
        book = ContinuousDoubleAuction()
        for o in orders:
            book.submit(o.agent, o.side, o.quantity, o.limit)
        return clear_call_market(orders), book.close()

    assert run(3) == run(3)
    assert run(3) != run(4)


@given(orders=orders_strategy)
def test_call_market_trades_pair_every_unit_bought_with_a_unit_sold(orders: list[Order]) -> None:
    result = clear_call_market(orders)
    trades = result.trades()
    assert sum(q for *_, q in trades) == result.volume
    for side, position in ((Side.BUY, 0), (Side.SELL, 1)):
        per_agent: dict[str, int] = {}
        for trade in trades:
            per_agent[trade[position]] = per_agent.get(trade[position], 0) + trade[2]  # type: ignore[index]
        filled: dict[str, int] = {}
        for fill in result.fills:
            if fill.order.side is side:
                filled[fill.order.agent] = filled.get(fill.order.agent, 0) + fill.quantity
        assert per_agent == filled
