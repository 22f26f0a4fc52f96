"""Single-item auction cores: sealed bid (first price, Vickrey), English and Dutch clocks."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from foundation_trio.protocols.auctions import (
    AuctionResult,
    AuctionStatus,
    Bid,
    DutchAuction,
    DutchConfig,
    EnglishAuction,
    EnglishConfig,
    FailurePolicy,
    Pricing,
    RejectedBid,
    SealedBidAuction,
    clear_sealed_bid,
)
from foundation_trio.protocols.coordination import InvalidBid, SessionClosed

AGENTS = [f"a{i}" for i in range(6)]


def sealed(
    bids: Sequence[tuple[str, object]],
    pricing: Pricing,
    *,
    reserve: float = 0.0,
    participants: Sequence[str] | None = None,
) -> AuctionResult:
    auction = SealedBidAuction(
        participants if participants is not None else [a for a, _ in bids] or ["nobody"],
        pricing=pricing,
        deadline=10.0,
        reserve=reserve,
    )
    for seq, (agent, amount) in enumerate(bids):
        auction.submit(agent, amount, seq=seq, now=1.0)
    return auction.close()


# -- sealed bid: prices ------------------------------------------------------------------


def test_lone_vickrey_bidder_pays_the_reserve() -> None:
    result = sealed([("a", 50.0)], Pricing.SECOND, reserve=7.0)
    assert result.status is AuctionStatus.SOLD
    assert (result.winner, result.price) == ("a", 7.0)


def test_lone_vickrey_bidder_with_no_reserve_pays_zero() -> None:
    assert sealed([("a", 50.0)], Pricing.SECOND).price == 0.0


def test_tied_top_bids_pay_the_tied_amount_and_the_earlier_bid_wins() -> None:
    result = sealed([("b", 9.0), ("a", 9.0), ("c", 3.0)], Pricing.SECOND)
    assert (result.winner, result.price) == ("b", 9.0)


def test_tie_with_equal_seq_breaks_by_agent_id() -> None:
    bids = [Bid("z", 5.0, 0), Bid("m", 5.0, 0)]
    assert clear_sealed_bid(bids, pricing=Pricing.FIRST).winner == "m"


def test_second_price_pays_the_second_highest_bid_above_the_reserve() -> None:
    result = sealed([("a", 10.0), ("b", 4.0), ("c", 7.0)], Pricing.SECOND, reserve=5.0)
    # b's 4.0 is below the reserve and rejected; the second valid bid is c's 7.0.
    assert (result.winner, result.price) == ("a", 7.0)
    assert [r.reason for r in result.rejected] == ["below_reserve"]
    result = sealed([("a", 10.0), ("c", 5.0)], Pricing.SECOND, reserve=6.0)
    assert result.price == 6.0


def test_first_price_pays_its_own_bid() -> None:
    result = sealed([("a", 10.0), ("b", 4.0)], Pricing.FIRST)
    assert (result.winner, result.price) == ("a", 10.0)


def test_no_valid_bid_is_a_no_sale_result_not_an_error() -> None:
    result = sealed([("a", math.nan), ("b", -1.0)], Pricing.SECOND)
    assert result.status is AuctionStatus.NO_SALE
    assert (result.winner, result.price, result.bids) == (None, None, ())
    assert result.reason == "no valid bid"
    assert sealed([], Pricing.FIRST).status is AuctionStatus.NO_SALE


@given(
    amounts=st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=6),
    reserve=st.floats(0, 500),
    pricing=st.sampled_from(Pricing),
)
def test_price_never_exceeds_the_winners_bid_nor_falls_below_the_reserve(
    amounts: list[float], reserve: float, pricing: Pricing
) -> None:
    result = sealed(list(zip(AGENTS, amounts, strict=False)), pricing, reserve=reserve)
    if result.status is AuctionStatus.SOLD:
        winning = result.winning_bid
        assert winning is not None and result.price is not None
        assert reserve <= result.price <= winning.amount
        assert winning.amount == max(a for a in amounts if a >= reserve)
    else:
        assert all(a < reserve for a in amounts)


# -- sealed bid: what counts as a bid ----------------------------------------------------


def test_invalid_answers_are_rejected_with_their_reason() -> None:
    auction = SealedBidAuction(["a", "b", "c", "d", "e"], pricing=Pricing.SECOND, deadline=5.0)
    answers: list[tuple[str, object]] = [
        ("a", math.inf),
        ("b", "12"),
        ("c", True),
        ("x", 99.0),
        ("d", 3.0),
        ("d", 80.0),
    ]
    outcomes = [
        auction.submit(agent, amount, seq=i, now=1.0) for i, (agent, amount) in enumerate(answers)
    ]
    assert [o.reason if isinstance(o, RejectedBid) else "ok" for o in outcomes] == [
        "not_finite",
        "not_a_number",
        "not_a_number",
        "not_invited",
        "ok",
        "duplicate",
    ]
    result = auction.close()
    assert (result.winner, result.price) == ("d", 0.0)
    assert len(result.rejected) == 5


def test_late_bids_are_rejected_and_never_change_the_result() -> None:
    auction = SealedBidAuction(["a", "b"], pricing=Pricing.SECOND, deadline=5.0)
    auction.submit("a", 10.0, seq=0, now=4.0)
    auction.submit("b", 6.0, seq=1, now=5.0)  # at the deadline: in time
    late = auction.submit("a", 1000.0, seq=2, now=5.0001)
    assert isinstance(late, RejectedBid)
    assert late.reason == "late"
    result = auction.close()
    assert (result.winner, result.price) == ("a", 6.0)


def test_submitting_after_close_raises_session_closed() -> None:
    auction = SealedBidAuction(["a"], pricing=Pricing.FIRST, deadline=5.0)
    first = auction.close()
    assert auction.close() is first
    with pytest.raises(SessionClosed):
        auction.submit("a", 1.0, seq=0, now=1.0)


def test_clear_sealed_bid_refuses_invalid_bids() -> None:
    with pytest.raises(InvalidBid, match="below the reserve"):
        clear_sealed_bid([Bid("a", 1.0, 0)], pricing=Pricing.FIRST, reserve=2.0)
    with pytest.raises(InvalidBid, match="second bid"):
        clear_sealed_bid([Bid("a", 1.0, 0), Bid("a", 2.0, 1)], pricing=Pricing.FIRST)
    with pytest.raises(InvalidBid, match="not finite"):
        clear_sealed_bid([Bid("a", math.inf, 0)], pricing=Pricing.FIRST)
    with pytest.raises(TypeError, match="pricing"):
        clear_sealed_bid([], pricing="second")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"participants": "ab"}, TypeError, "participants"),
        ({"participants": []}, ValueError, "participants"),
        ({"participants": [1]}, TypeError, "participants item"),
        ({"pricing": "first"}, TypeError, "pricing"),
        ({"deadline": math.nan}, ValueError, "deadline"),
        ({"reserve": "1"}, TypeError, "reserve"),
    ],
)
def test_bad_auction_arguments_name_the_argument(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"participants": ["a"], "pricing": Pricing.FIRST, "deadline": 1.0}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        SealedBidAuction(**args)  # type: ignore[arg-type]


# -- sealed bid: a winner failing after the award ----------------------------------------


def test_winner_failure_under_void_policy_voids_the_auction() -> None:
    auction = SealedBidAuction(["a", "b"], pricing=Pricing.SECOND, deadline=5.0)
    auction.submit("a", 10.0, seq=0, now=1.0)
    auction.submit("b", 6.0, seq=1, now=1.0)
    assert auction.close().winner == "a"
    result = auction.after_winner_failure("a", FailurePolicy.VOID)
    assert result.status is AuctionStatus.VOID
    assert (result.winner, result.price, result.excluded) == (None, None, ("a",))
    assert "failed after the award" in (result.reason or "")


def test_winner_failure_under_runner_up_policy_recomputes_the_price() -> None:
    auction = SealedBidAuction(["a", "b", "c"], pricing=Pricing.SECOND, deadline=5.0, reserve=1.0)
    for seq, (agent, amount) in enumerate([("a", 10.0), ("b", 6.0), ("c", 4.0)]):
        auction.submit(agent, amount, seq=seq, now=1.0)
    result = auction.after_winner_failure("a", FailurePolicy.RUNNER_UP)
    assert (result.winner, result.price, result.excluded) == ("b", 4.0, ("a",))
    result = auction.after_winner_failure("b", FailurePolicy.RUNNER_UP)
    assert (result.winner, result.price, result.excluded) == ("c", 1.0, ("a", "b"))
    result = auction.after_winner_failure("c", FailurePolicy.RUNNER_UP)
    assert result.status is AuctionStatus.NO_SALE
    assert "no runner-up" in (result.reason or "")
    with pytest.raises(ValueError, match="not the current winner"):
        auction.after_winner_failure("c", FailurePolicy.RUNNER_UP)


# -- sealed bid: incentive properties ----------------------------------------------------

GRID = [-5.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 5.0]


def utility(valuation: float, bid: float, others: Sequence[float], pricing: Pricing) -> float:
    """Bidder "me" (receipt seq 0) with ``valuation`` bids ``bid`` against ``others``."""
    auction = SealedBidAuction(
        ["me", *(f"o{i}" for i in range(len(others)))], pricing=pricing, deadline=1.0
    )
    auction.submit("me", bid, seq=len(others), now=0.0)
    for i, amount in enumerate(others):
        auction.submit(f"o{i}", amount, seq=i, now=0.0)
    result = auction.close()
    if result.winner != "me":
        return 0.0
    assert result.price is not None
    return valuation - result.price


def profitable_deviation(
    valuation: float, others: Sequence[float], pricing: Pricing
) -> tuple[float, float] | None:
    """A (bid, gain) that beats bidding the valuation, searched on ``GRID``; or None."""
    truthful = utility(valuation, valuation, others, pricing)
    for delta in GRID:
        deviation = max(0.0, valuation + delta)
        gain = utility(valuation, deviation, others, pricing) - truthful
        if gain > 1e-9:
            return deviation, gain
    return None


@given(
    valuation=st.integers(0, 40).map(float),
    others=st.lists(st.integers(0, 40).map(float), min_size=0, max_size=4),
)
def test_truthful_bidding_is_dominant_under_second_price(
    valuation: float, others: list[float]
) -> None:
    assert profitable_deviation(valuation, others, Pricing.SECOND) is None


def test_the_same_checker_finds_a_profitable_deviation_under_first_price() -> None:
    found = profitable_deviation(10.0, [6.0], Pricing.FIRST)
    assert found is not None
    bid, gain = found
    assert bid < 10.0 and gain > 0


@given(
    valuation=st.integers(3, 40).map(float),
    others=st.lists(st.integers(0, 40).map(float), min_size=1, max_size=4),
)
def test_first_price_is_not_truthful_whenever_the_winner_has_slack(
    valuation: float, others: list[float]
) -> None:
    # Truthful bidding wins with zero surplus when the valuation beats every other bid
    # by more than the smallest grid step: shading by that step wins at a lower price.
    assume(valuation - max(others) > 0.5)
    assert profitable_deviation(valuation, others, Pricing.FIRST) is not None


@given(valuations=st.lists(st.integers(0, 100).map(float), min_size=2, max_size=6))
def test_vickrey_revenue_equals_the_second_highest_valuation(valuations: list[float]) -> None:
    result = sealed(list(zip(AGENTS, valuations, strict=False)), Pricing.SECOND)
    assert result.price == sorted(valuations)[-2]


# -- English clock -----------------------------------------------------------------------


def run_english(
    valuations: dict[str, float], config: EnglishConfig, *, receipt: Sequence[str] | None = None
) -> AuctionResult:
    """Truthful drop-out: stay while value >= price. Answers arrive in ``receipt`` order."""
    auction = EnglishAuction(valuations, config)
    order = list(receipt) if receipt is not None else sorted(valuations)
    while True:
        stayed = {
            a: seq
            for seq, a in enumerate(order)
            if a in auction.active and valuations[a] >= auction.price
        }
        step = auction.record_round(stayed)
        if step.result is not None:
            return step.result


def vickrey(valuations: dict[str, float], reserve: float, receipt: Sequence[str]) -> AuctionResult:
    return sealed([(a, valuations[a]) for a in receipt], Pricing.SECOND, reserve=reserve)


@settings(max_examples=150)
@given(
    values=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=5),
    increment=st.sampled_from([0.5, 1.0, 2.5]),
    reserve=st.sampled_from([0.0, 3.0, 10.0]),
)
def test_english_with_truthful_drop_out_matches_vickrey_within_one_increment(
    values: list[float], increment: float, reserve: float
) -> None:
    valuations = dict(zip(AGENTS, values, strict=False))
    receipt = sorted(valuations)
    english = run_english(valuations, EnglishConfig(start_price=reserve, increment=increment))
    reference = vickrey(valuations, reserve, receipt)
    assert english.status is reference.status
    if reference.status is AuctionStatus.NO_SALE:
        return
    assert english.price is not None and reference.price is not None
    assert abs(english.price - reference.price) <= increment + 1e-9
    ranked = sorted(values, reverse=True)
    if len(ranked) == 1 or ranked[0] - ranked[1] >= increment:
        assert english.winner == reference.winner
    else:
        assert english.winner is not None
        assert valuations[english.winner] >= ranked[0] - increment


def test_english_price_rises_while_two_or_more_stay() -> None:
    auction = EnglishAuction(["a", "b", "c"], EnglishConfig(start_price=10.0, increment=5.0))
    first = auction.record_round({"a": 0, "b": 1, "c": 2})
    assert (first.price, first.dropped, first.result) == (10.0, (), None)
    second = auction.record_round({"b": 0, "a": 1})  # c is silent: it dropped out
    assert (second.price, second.stayed, second.dropped) == (15.0, ("b", "a"), ("c",))
    third = auction.record_round({"a": 0})
    assert third.result is not None
    assert (third.result.winner, third.result.price, third.result.rounds) == ("a", 20.0, 3)


def test_english_dropped_bidder_cannot_come_back() -> None:
    auction = EnglishAuction(["a", "b", "c"], EnglishConfig(start_price=0.0, increment=1.0))
    auction.record_round({"a": 0, "b": 1})
    step = auction.record_round({"a": 0, "b": 1, "c": 2})
    assert step.stayed == ("a", "b")
    step = auction.record_round({"b": 0, "zz": 1})
    assert step.result is not None and step.result.winner == "b"
    assert [(r.agent, r.reason) for r in step.result.rejected] == [
        ("c", "dropped_out"),
        ("zz", "not_invited"),
    ]


def test_english_everyone_dropping_together_goes_to_the_earliest_at_the_previous_price() -> None:
    auction = EnglishAuction(["a", "b"], EnglishConfig(start_price=0.0, increment=1.0))
    auction.record_round({"b": 0, "a": 1})
    step = auction.record_round({})
    assert step.result is not None
    assert (step.result.winner, step.result.price) == ("b", 0.0)


def test_english_nobody_at_the_start_price_is_no_sale_and_max_rounds_ends_the_clock() -> None:
    auction = EnglishAuction(["a", "b"], EnglishConfig(start_price=5.0))
    step = auction.record_round({})
    assert step.result is not None and step.result.status is AuctionStatus.NO_SALE
    with pytest.raises(SessionClosed):
        auction.record_round({})
    auction = EnglishAuction(["a", "b"], EnglishConfig(increment=1.0, max_rounds=3))
    results = [auction.record_round({"a": 0, "b": 1}).result for _ in range(3)]
    assert results[:2] == [None, None]
    assert results[2] is not None and results[2].status is AuctionStatus.NO_SALE
    assert "max_rounds=3" in (results[2].reason or "")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"increment": 0.0}, "increment"),
        ({"max_rounds": 0}, "max_rounds"),
        ({"start_price": math.inf}, "start_price"),
    ],
)
def test_bad_english_config_names_the_field(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EnglishConfig(**kwargs)  # type: ignore[arg-type]


# -- Dutch clock -------------------------------------------------------------------------


def run_dutch(
    bids: dict[str, float], config: DutchConfig, receipt: Sequence[str]
) -> AuctionResult:
    """Each bidder accepts as soon as the clock is at or below its bid."""
    auction = DutchAuction(bids, config)
    while True:
        accepted = {a: seq for seq, a in enumerate(receipt) if bids[a] >= auction.price}
        step = auction.record_step(accepted)
        if step.result is not None:
            return step.result


@given(
    ticks=st.lists(st.integers(0, 40), min_size=1, max_size=5),
    floor_ticks=st.integers(0, 10),
    seed=st.integers(0, 1000),
)
def test_dutch_matches_first_price_sealed_bid_on_the_same_bids(
    ticks: list[int], floor_ticks: int, seed: int
) -> None:
    # Bids on the clock's grid: start 40, decrement 0.5.
    bids = {a: 20.0 - t * 0.5 for a, t in zip(AGENTS, ticks, strict=False)}
    receipt = list(bids)
    random.Random(seed).shuffle(receipt)
    floor = floor_ticks * 0.5
    dutch = run_dutch(bids, DutchConfig(start_price=20.0, decrement=0.5, floor=floor), receipt)
    first = sealed([(a, bids[a]) for a in receipt], Pricing.FIRST, reserve=floor)
    assert (dutch.status, dutch.winner, dutch.price) == (first.status, first.winner, first.price)


@given(bids=st.lists(st.floats(0, 20, allow_nan=False), min_size=1, max_size=5))
def test_dutch_off_grid_price_is_within_one_decrement_of_the_top_bid(bids: list[float]) -> None:
    named = dict(zip(AGENTS, bids, strict=False))
    result = run_dutch(named, DutchConfig(start_price=20.0, decrement=0.5), list(named))
    assert result.price is not None and result.winner is not None
    top = max(bids)
    assert top - 0.5 < result.price <= top
    assert named[result.winner] >= result.price


def test_dutch_first_accept_by_receipt_order_wins_and_strangers_are_ignored() -> None:
    auction = DutchAuction(["a", "b"], DutchConfig(start_price=10.0, decrement=1.0))
    assert auction.record_step({}).result is None
    step = auction.record_step({"x": 0, "b": 2, "a": 3})
    assert step.result is not None
    assert (step.result.winner, step.result.price, step.result.rounds) == ("b", 9.0, 2)
    assert [(r.agent, r.reason) for r in step.result.rejected] == [("x", "not_invited")]


def test_dutch_reaching_the_floor_is_no_sale() -> None:
    config = DutchConfig(start_price=1.0, decrement=0.1, floor=0.0)
    assert config.steps == 11
    auction = DutchAuction(["a"], config)
    prices = []
    result = None
    while result is None:
        prices.append(auction.price)
        result = auction.record_step({}).result
    assert len(prices) == 11 and prices[-1] == pytest.approx(0.0)
    assert result.status is AuctionStatus.NO_SALE and "floor" in (result.reason or "")


def test_bad_dutch_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="decrement"):
        DutchConfig(start_price=1.0, decrement=0.0)
    with pytest.raises(ValueError, match="floor"):
        DutchConfig(start_price=1.0, decrement=0.1, floor=2.0)
    with pytest.raises(TypeError, match="config"):
        DutchAuction(["a"], {"start_price": 1.0})  # type: ignore[arg-type]


# -- determinism -------------------------------------------------------------------------


def seeded_round(seed: int) -> tuple[AuctionResult, AuctionResult, AuctionResult]:
    rng = random.Random(seed)
    values = {a: float(rng.randint(0, 30)) for a in AGENTS}
    receipt = list(values)
    rng.shuffle(receipt)
    return (
        sealed([(a, values[a]) for a in receipt], Pricing.SECOND, reserve=2.0),
        run_english(values, EnglishConfig(start_price=2.0), receipt=receipt),
        run_dutch(values, DutchConfig(start_price=30.0, decrement=1.0, floor=2.0), receipt),
    )


@given(seed=st.integers(0, 10_000))
def test_same_seed_same_result(seed: int) -> None:
    assert seeded_round(seed) == seeded_round(seed)
