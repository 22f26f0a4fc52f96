"""Combinatorial auction core: exact winner determination, VCG payments, size limits."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_trio.protocols.auctions import Bid, Pricing, clear_sealed_bid
from foundation_trio.protocols.combinatorial import (
    BundleBid,
    CombinatorialAuction,
    CombinatorialConfig,
    CombinatorialResult,
    CombinatorialStatus,
    clear_combinatorial,
    determine_winners,
)
from foundation_trio.protocols.coordination import InstanceTooLarge, InvalidBid, SessionClosed

ITEMS = ("A", "B", "C", "D")


def brute_force_welfare(bids: list[BundleBid]) -> float:
    best = 0.0
    for size in range(1, len(bids) + 1):
        for subset in itertools.combinations(bids, size):
            agents = [b.agent for b in subset]
            bundles = [b.items for b in subset]
            if len(set(agents)) != len(agents):
                continue
            if sum(len(x) for x in bundles) != len(frozenset().union(*bundles)):
                continue
            best = max(best, math.fsum(b.amount for b in subset))
    return best


bundle_bids = st.lists(
    st.builds(
        BundleBid,
        agent=st.sampled_from(["p", "q", "r", "s"]),
        items=st.frozensets(st.sampled_from(ITEMS), min_size=1, max_size=3),
        amount=st.integers(1, 30).map(float) | st.floats(0.01, 30),
        seq=st.integers(0, 5),
    ),
    max_size=8,
)


@settings(max_examples=200)
@given(bids=bundle_bids)
def test_allocation_is_feasible_optimal_and_vcg_payments_lie_between_zero_and_the_bid(
    bids: list[BundleBid],
) -> None:
    result = clear_combinatorial(bids, items=ITEMS)
    # Feasible: disjoint bundles, one per agent.
    winners = result.winners
    assert len({w.agent for w in winners}) == len(winners)
    covered = [item for w in winners for item in w.items]
    assert len(covered) == len(set(covered))
    # Optimal: the welfare equals brute force.
    assert result.welfare == brute_force_welfare(bids)
    assert result.welfare == math.fsum(w.amount for w in winners)
    # VCG: 0 <= payment <= bid for winners; losers pay nothing.
    for winner in winners:
        assert 0.0 <= result.payment(winner.agent) <= winner.amount
    for bid in bids:
        if bid.agent not in {w.agent for w in winners}:
            assert result.payment(bid.agent) == 0.0
    if not bids:
        assert result.status is CombinatorialStatus.NO_SALE


def test_vcg_payments_are_the_externality_each_winner_imposes() -> None:
    bids = [
        BundleBid("x", frozenset({"A"}), 6.0),
        BundleBid("y", frozenset({"B"}), 5.0),
        BundleBid("z", frozenset({"A", "B"}), 10.0),
    ]
    result = clear_combinatorial(bids, items=["A", "B"])
    assert [w.agent for w in result.winners] == ["x", "y"]
    assert result.welfare == 11.0
    # Without x the best is z alone (10), and y gets 5 of it: x pays 10 - 5.
    assert result.payments == (("x", 5.0), ("y", 4.0))


@given(amounts=st.lists(st.integers(1, 50).map(float), min_size=1, max_size=5))
def test_vcg_on_one_item_is_vickrey(amounts: list[float]) -> None:
    agents = [f"a{i}" for i in range(len(amounts))]
    bids = [
        BundleBid(a, frozenset({"A"}), v, seq)
        for seq, (a, v) in enumerate(zip(agents, amounts, strict=True))
    ]
    result = clear_combinatorial(bids, items=["A"])
    reference = clear_sealed_bid(
        [Bid(a, v, seq) for seq, (a, v) in enumerate(zip(agents, amounts, strict=True))],
        pricing=Pricing.SECOND,
    )
    (winner,) = result.winners
    assert (winner.agent, result.payment(winner.agent)) == (reference.winner, reference.price)


def test_an_agent_wins_at_most_one_of_its_bundles() -> None:
    bids = [
        BundleBid("p", frozenset({"A"}), 5.0),
        BundleBid("p", frozenset({"B"}), 5.0),
        BundleBid("q", frozenset({"B"}), 1.0),
    ]
    welfare, winners = determine_winners(bids, items=["A", "B"])
    assert welfare == 6.0
    assert sorted(w.agent for w in winners) == ["p", "q"]


def test_equal_welfare_allocations_are_broken_deterministically_by_bid_priority() -> None:
    bids = [
        BundleBid("q", frozenset({"A", "B"}), 4.0, seq=1),
        BundleBid("p", frozenset({"A", "B"}), 4.0, seq=0),
    ]
    _, winners = determine_winners(bids, items=["A", "B"])
    assert [w.agent for w in winners] == ["p"]
    _, again = determine_winners(list(reversed(bids)), items=["A", "B"])
    assert again == winners


def test_instances_over_the_size_limit_are_refused_not_approximated() -> None:
    config = CombinatorialConfig(max_bids=3, max_items=2)
    bids = [BundleBid(f"a{i}", frozenset({"A"}), 1.0 + i) for i in range(4)]
    with pytest.raises(InstanceTooLarge, match="4 bundle bids exceed max_bids=3"):
        clear_combinatorial(bids, items=["A"], config=config)
    with pytest.raises(InstanceTooLarge, match="3 items exceed max_items=2"):
        determine_winners(bids[:1], items=["A", "B", "C"], config=config)


def test_the_default_limit_solves_a_full_instance_exactly() -> None:
    rng = random.Random(7)
    items = [f"i{k}" for k in range(8)]
    bids = [
        BundleBid(
            f"a{k % 10}",
            frozenset(rng.sample(items, rng.randint(1, 3))),
            float(rng.randint(1, 40)),
            k,
        )
        for k in range(CombinatorialConfig().max_bids)
    ]
    result = clear_combinatorial(bids, items=items)
    assert result.status is CombinatorialStatus.ALLOCATED
    for winner in result.winners:
        assert 0.0 <= result.payment(winner.agent) <= winner.amount


@pytest.mark.parametrize(
    ("bid", "match"),
    [
        (BundleBid("a", frozenset(), 1.0), "non-empty"),
        (BundleBid("a", frozenset({"Z"}), 1.0), "unknown items"),
        (BundleBid("a", frozenset({"A"}), 0.0), "must be > 0"),
        (BundleBid("a", frozenset({"A"}), math.nan), "finite"),
    ],
)
def test_invalid_bundle_bids_raise_invalid_bid(bid: BundleBid, match: str) -> None:
    with pytest.raises(InvalidBid, match=match):
        clear_combinatorial([bid], items=["A"])


def test_bad_config_and_items_name_the_argument() -> None:
    with pytest.raises(ValueError, match="max_bids"):
        CombinatorialConfig(max_bids=0)
    with pytest.raises(TypeError, match="items"):
        clear_combinatorial([], items="AB")
    with pytest.raises(TypeError, match="BundleBid"):
        clear_combinatorial([("a", 1.0)], items=["A"])  # type: ignore[list-item]


def test_auction_session_rejects_late_strangers_duplicates_and_bad_answers() -> None:
    auction = CombinatorialAuction(["p", "q", "r", "s"], items=["A", "B"], deadline=5.0)
    assert auction.submit("p", [({"A", "B"}, 8.0), (["A"], 5)], seq=0, now=1.0) != "late"
    assert auction.submit("x", [({"A"}, 9.0)], seq=1, now=1.0) == "not_invited"
    assert auction.submit("p", [({"A"}, 9.0)], seq=2, now=1.0) == "duplicate"
    assert auction.submit("q", [({"B"}, 4.0)], seq=3, now=1.0) == (
        BundleBid("q", frozenset({"B"}), 4.0, 3),
    )
    assert auction.submit("r", [({"C"}, 4.0)], seq=4, now=1.0) == "invalid: unknown items ['C']"
    assert auction.submit("s", "AB", seq=5, now=1.0).startswith("invalid")  # type: ignore[union-attr]
    assert auction.submit("s", [({"B"}, 100.0)], seq=6, now=5.5) == "late"
    result: CombinatorialResult = auction.close()
    assert [(w.agent, sorted(w.items)) for w in result.winners] == [("p", ["A"]), ("q", ["B"])]
    assert result.welfare == 9.0
    # Without p, q alone gets 4 (p imposes nothing); without q, p takes AB for 8.
    assert result.payments == (("p", 0.0), ("q", 3.0))
    assert [agent for agent, _ in result.rejected] == ["x", "p", "r", "s", "s"]
    with pytest.raises(SessionClosed):
        auction.submit("s", [], seq=7, now=1.0)
