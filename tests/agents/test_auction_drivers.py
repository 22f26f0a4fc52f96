"""Auctions among real agents: deadlines, late bids, crashes, winner failure, telemetry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio

import foundation_trio as ft
from foundation_trio.agents import Agent, AgentSpec, Crashed, Refusal, TimedOut
from foundation_trio.agents.auctions import (
    AwardNotice,
    BidRequest,
    BundleRequest,
    PriceOffer,
    combinatorial_auction,
    dutch_auction,
    english_auction,
    sealed_bid_auction,
)
from foundation_trio.protocols.auctions import AuctionStatus, FailurePolicy, Pricing
from foundation_trio.protocols.combinatorial import CombinatorialConfig
from foundation_trio.protocols.coordination import InstanceTooLarge


class Bidder(Agent):
    """Values the item at ``value``; bids it truthfully after ``delay`` seconds.

    ``behaviour``: "ok", "hang" (never answers), "crash" (raises), "refuse",
    "refuse_award" (bids, then refuses the award), "silent_clock" (never answers a
    clock offer).
    """

    async def setup(
        self, value: float, behaviour: str = "ok", delay: float = 0.0, bundles: Any = ()
    ) -> None:
        self.value = value
        self.behaviour = behaviour
        self.delay = delay
        self.bundles = bundles
        self.asked: list[Any] = []

    async def _act(self) -> None:
        await trio.sleep(self.delay)
        if self.behaviour == "hang":
            await trio.sleep_forever()
        if self.behaviour == "crash":
            raise RuntimeError(f"{self.agent_id} crashed")

    async def bid(self, request: BidRequest) -> Any:
        self.asked.append(request)
        await self._act()
        if self.behaviour == "refuse":
            return Refusal("not interested")
        return self.value

    async def accept_price(self, offer: PriceOffer) -> bool:
        self.asked.append(offer)
        if self.behaviour == "silent_clock":
            await trio.sleep_forever()
        await self._act()
        return self.value >= offer.price

    async def bundle_bids(self, request: BundleRequest) -> Any:
        await self._act()
        return self.bundles

    async def award(self, notice: AwardNotice) -> Any:
        if self.behaviour == "refuse_award":
            return Refusal("changed my mind")
        if self.behaviour == "crash_award":
            raise RuntimeError("cannot pay")
        return "paid"


async def bidders(**specs: tuple[Any, ...]) -> list[str]:
    for agent_id, args in specs.items():
        await ft.agents.register_agent(AgentSpec(agent_id, Bidder, args=args, max_restarts=100))
        await ft.agents.start_agent(agent_id)
    return list(specs)


@contextmanager
def recorded(
    prefix: str = "agents.",
) -> Iterator[list[tuple[str, dict[str, Any], dict[str, Any]]]]:
    """Collect every protocol event (name, measurements, metadata without context)."""
    events: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    names = [
        "agents.auction.started",
        "agents.auction.bid_accepted",
        "agents.auction.bid_rejected",
        "agents.auction.round",
        "agents.auction.award_failed",
        "agents.auction.cleared",
        "agents.auction.no_sale",
        "agents.protocol.won",
    ]

    def handler(name: str, measurements: Any, metadata: Any) -> None:
        meta = {k: v for k, v in metadata.items() if k != "context"}
        events.append((name, dict(measurements), meta))

    ft.telemetry.attach("recorder", [n for n in names if n.startswith(prefix)], handler)
    try:
        yield events
    finally:
        ft.telemetry.detach("recorder")


# -- sealed bid --------------------------------------------------------------------------


async def test_vickrey_winner_pays_the_second_bid_and_everyone_has_an_outcome(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(10.0,), b=(7.0,), c=(3.0, "refuse"), d=(1.0, "crash"))
        report = await sealed_bid_auction(ids, reserve=2.0, timeout=1.0)
        assert (report.status, report.winner, report.price) == (AuctionStatus.SOLD, "a", 7.0)
        assert report.participants_by_outcome() == {
            "Responded": ["a", "b"],
            "Refused": ["c"],
            "Crashed": ["d"],
        }


async def test_a_hanging_bidder_cannot_hold_the_auction_past_its_deadline(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(10.0,), b=(7.0, "ok", 0.5), slow=(99.0, "hang"))
        start = trio.current_time()
        report = await sealed_bid_auction(ids, timeout=2.0)
        assert trio.current_time() - start == pytest.approx(2.0)
        assert report.finished_at - report.started_at == pytest.approx(2.0)
        assert (report.winner, report.price) == ("a", 7.0)
        assert isinstance(report.rounds[0].outcome("slow"), TimedOut)


async def test_bids_after_the_deadline_never_change_the_result(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(10.0,), b=(7.0,), late=(1000.0, "ok", 1.5))
        with recorded() as events:
            report = await sealed_bid_auction(ids, timeout=1.0, late_grace=1.0, auction_id="x")
        assert (report.winner, report.price) == ("a", 7.0)
        assert [(r.agent, r.reason) for r in report.result.rejected] == [("late", "late")]
        rejected = [e for e in events if e[0] == "agents.auction.bid_rejected"]
        assert rejected == [
            (
                "agents.auction.bid_rejected",
                {},
                {
                    "auction_id": "x",
                    "kind": "sealed_second_price",
                    "agent": "late",
                    "reason": "late",
                },
            )
        ]


async def test_lone_bidder_in_a_vickrey_auction_pays_the_reserve(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(10.0,))
        report = await sealed_bid_auction(ids, reserve=4.0, timeout=1.0)
        assert (report.winner, report.price) == ("a", 4.0)


async def test_no_valid_bid_is_a_no_sale_report(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(1.0,), b=(5.0, "hang"))
        report = await sealed_bid_auction(ids, reserve=2.0, pricing=Pricing.FIRST, timeout=1.0)
        assert report.status is AuctionStatus.NO_SALE
        assert report.winner is None


async def test_winner_failing_after_the_award_goes_to_the_runner_up_at_the_recomputed_price(
    autojump_clock,
):
    async with ft.open_node("t"):
        ids = await bidders(a=(10.0, "refuse_award"), b=(7.0, "crash_award"), c=(5.0,), d=(2.0,))
        with recorded() as events:
            report = await sealed_bid_auction(ids, timeout=1.0, confirm_award=True, auction_id="x")
        assert (report.winner, report.price) == ("c", 2.0)
        assert report.result.excluded == ("a", "b")
        failed = [
            (e[2]["agent"], e[2]["reason"].split(":")[0])
            for e in events
            if e[0] == "agents.auction.award_failed"
        ]
        assert failed == [("a", "refused"), ("b", "crashed")]
        assert [type(r.outcomes[0]).__name__ for r in report.rounds[1:]] == [
            "Refused",
            "Crashed",
            "Responded",
        ]


async def test_winner_failing_under_the_void_policy_voids_the_auction(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(10.0, "refuse_award"), b=(7.0,))
        report = await sealed_bid_auction(
            ids, timeout=1.0, confirm_award=True, on_winner_failure=FailurePolicy.VOID
        )
        assert report.status is AuctionStatus.VOID
        assert report.winner is None


async def test_bad_arguments_raise_before_anyone_is_asked(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(1.0,))
        with pytest.raises(ValueError, match="timeout"):
            await sealed_bid_auction(ids, timeout=0)
        with pytest.raises(TypeError, match="participants"):
            await sealed_bid_auction("a")
        with pytest.raises(ft.agents.AgentNotFound):
            await sealed_bid_auction(["a", "ghost"])
        with pytest.raises(TypeError, match="on_winner_failure"):
            await sealed_bid_auction(ids, on_winner_failure="void")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="increment"):
            await english_auction(ids, increment=0.0)


# -- clocks ------------------------------------------------------------------------------


async def test_english_with_truthful_agents_matches_vickrey(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(10.0,), b=(7.0,), c=(3.0,), d=(50.0, "crash"))
        report = await english_auction(ids, start_price=1.0, increment=1.0, round_timeout=0.5)
        assert (report.winner, report.price) == ("a", 8.0)
        # A crash in round 0 is dropping out; the clock went on without it.
        assert isinstance(report.rounds[0].outcome("d"), Crashed)
        assert "d" not in report.rounds[1].participants()


async def test_the_dutch_clock_is_not_stalled_by_a_silent_bidder(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(6.0,), silent=(100.0, "silent_clock"))
        start = trio.current_time()
        report = await dutch_auction(ids, start_price=10.0, decrement=1.0, step_timeout=0.25)
        # Steps at 10, 9, 8, 7, 6: five steps, each ended by its deadline.
        assert trio.current_time() - start == pytest.approx(5 * 0.25)
        assert (report.winner, report.price, report.result.rounds) == ("a", 6.0, 5)
        assert all(isinstance(r.outcome("silent"), TimedOut) for r in report.rounds)


async def test_dutch_reaching_the_floor_is_no_sale(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(1.0,))
        report = await dutch_auction(
            ids, start_price=3.0, decrement=1.0, floor=2.0, step_timeout=0.1
        )
        assert report.status is AuctionStatus.NO_SALE
        assert len(report.rounds) == 2


# -- combinatorial -----------------------------------------------------------------------


async def test_combinatorial_auction_allocates_optimally_with_vcg_payments(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(
            x=(0.0, "ok", 0.0, [({"A"}, 6.0)]),
            y=(0.0, "ok", 0.0, [({"B"}, 5.0)]),
            z=(0.0, "ok", 0.0, [({"A", "B"}, 10.0)]),
            bad=(0.0, "ok", 0.0, [({"Q"}, 10.0)]),
        )
        report = await combinatorial_auction(ids, items=["A", "B"], timeout=1.0)
        result = report.result
        assert [w.agent for w in result.winners] == ["x", "y"]
        assert result.payments == (("x", 5.0), ("y", 4.0))
        assert [agent for agent, _ in result.rejected] == ["bad"]


async def test_combinatorial_instances_over_the_limit_are_refused(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(
            x=(0.0, "ok", 0.0, [({"A"}, 6.0), ({"B"}, 1.0)]),
            y=(0.0, "ok", 0.0, [({"B"}, 5.0)]),
        )
        with recorded() as events, pytest.raises(InstanceTooLarge):
            await combinatorial_auction(
                ids, items=["A", "B"], timeout=1.0, config=CombinatorialConfig(max_bids=2)
            )
        assert events[-1][0] == "agents.auction.no_sale"
        assert "max_bids=2" in events[-1][2]["reason"]


# -- telemetry: the exact sequence of one deterministic round of each kind --------------


async def test_sealed_bid_emits_the_exact_event_sequence(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(10.0,), b=(7.0, "ok", 0.1), c=(1.0, "ok", 0.2))
        with recorded() as events:
            await sealed_bid_auction(ids, reserve=2.0, timeout=1.0, auction_id="s1")
        meta = {"auction_id": "s1", "kind": "sealed_second_price"}
        assert events == [
            (
                "agents.auction.started",
                {"participants": 3},
                {**meta, "item": "item", "reserve": 2.0},
            ),
            ("agents.auction.bid_accepted", {"amount": 10.0}, {**meta, "agent": "a", "seq": 0}),
            ("agents.auction.bid_accepted", {"amount": 7.0}, {**meta, "agent": "b", "seq": 1}),
            ("agents.auction.bid_rejected", {}, {**meta, "agent": "c", "reason": "below_reserve"}),
            (
                "agents.auction.cleared",
                {"price": 7.0, "bids": 2, "duration": pytest.approx(0.2)},
                {**meta, "winner": "a"},
            ),
            (
                "agents.protocol.won",
                {"wins": 1},
                {"protocol": "sealed_second_price", "agent": "a"},
            ),
        ]


async def test_english_emits_the_exact_event_sequence(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(2.0,), b=(1.0,))
        with recorded() as events:
            await english_auction(
                ids, start_price=0.0, increment=1.0, round_timeout=0.5, auction_id="e1"
            )
        meta = {"auction_id": "e1", "kind": "english"}
        assert events == [
            (
                "agents.auction.started",
                {"participants": 2},
                {**meta, "item": "item", "reserve": 0.0},
            ),
            (
                "agents.auction.round",
                {"round": 0, "price": 0.0, "stayed": 2},
                {**meta, "dropped": ()},
            ),
            (
                "agents.auction.round",
                {"round": 1, "price": 1.0, "stayed": 2},
                {**meta, "dropped": ()},
            ),
            (
                "agents.auction.round",
                {"round": 2, "price": 2.0, "stayed": 1},
                {**meta, "dropped": ("b",)},
            ),
            (
                "agents.auction.cleared",
                {"price": 2.0, "bids": 2, "duration": 0.0},
                {**meta, "winner": "a"},
            ),
            ("agents.protocol.won", {"wins": 1}, {"protocol": "english", "agent": "a"}),
        ]


async def test_dutch_emits_the_exact_event_sequence(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(1.0,))
        with recorded() as events:
            await dutch_auction(
                ids, start_price=2.0, decrement=1.0, step_timeout=0.5, auction_id="d1"
            )
        meta = {"auction_id": "d1", "kind": "dutch"}
        assert events == [
            (
                "agents.auction.started",
                {"participants": 1},
                {**meta, "item": "item", "reserve": 0.0},
            ),
            (
                "agents.auction.round",
                {"round": 0, "price": 2.0, "stayed": 0},
                {**meta, "dropped": ()},
            ),
            (
                "agents.auction.round",
                {"round": 1, "price": 1.0, "stayed": 1},
                {**meta, "dropped": ()},
            ),
            (
                "agents.auction.cleared",
                {"price": 1.0, "bids": 1, "duration": 0.0},
                {**meta, "winner": "a"},
            ),
            ("agents.protocol.won", {"wins": 1}, {"protocol": "dutch", "agent": "a"}),
        ]


async def test_combinatorial_emits_the_exact_event_sequence(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(x=(0.0, "ok", 0.0, [({"A"}, 3.0)]), y=(0.0, "ok", 0.1, [({"A"}, 2.0)]))
        with recorded() as events:
            await combinatorial_auction(ids, items=["A"], timeout=1.0, auction_id="c1")
        meta = {"auction_id": "c1", "kind": "combinatorial"}
        assert events == [
            ("agents.auction.started", {"participants": 2}, {**meta, "items": ("A",)}),
            ("agents.auction.bid_accepted", {"bundles": 1}, {**meta, "agent": "x", "seq": 0}),
            ("agents.auction.bid_accepted", {"bundles": 1}, {**meta, "agent": "y", "seq": 1}),
            (
                "agents.auction.cleared",
                {"welfare": 3.0, "winners": 1, "bids": 2, "duration": pytest.approx(0.1)},
                {**meta, "payments": {"x": 2.0}},
            ),
            ("agents.protocol.won", {"wins": 1}, {"protocol": "combinatorial", "agent": "x"}),
        ]


async def test_no_sale_event(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(1.0, "refuse"))
        with recorded() as events:
            report = await sealed_bid_auction(ids, timeout=1.0, auction_id="n1")
        assert report.status is AuctionStatus.NO_SALE
        assert [e[0] for e in events] == ["agents.auction.started", "agents.auction.no_sale"]
        assert events[-1][2]["reason"] == "no valid bid"


async def test_wins_are_counted_per_agent_and_protocol(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(10.0,), b=(7.0,))
        for _ in range(3):
            await sealed_bid_auction(ids, timeout=1.0)
        await dutch_auction(ids, start_price=10.0, decrement=1.0, step_timeout=0.1)
        metric = ft.telemetry.metrics()["agents_wins_total"]
        counted = {(s.labels["protocol"], s.labels["agent"]): s.value for s in metric.samples}
        assert counted == {("sealed_second_price", "a"): 3.0, ("dutch", "a"): 1.0}


async def test_the_wins_counter_is_declared_once_per_node(autojump_clock, monkeypatch):
    from foundation_trio.agents import _protocol_support
    from foundation_trio.services import telemetry

    declared: list[str] = []
    real_counter = telemetry.counter

    def counting(name: str, *args: Any, **kwargs: Any) -> None:
        declared.append(name)
        real_counter(name, *args, **kwargs)

    monkeypatch.setattr(_protocol_support.telemetry, "counter", counting)
    for node_name in ("t1", "t2"):
        async with ft.open_node(node_name):
            ids = await bidders(a=(10.0,), b=(7.0,))
            for _ in range(3):
                await sealed_bid_auction(ids, timeout=1.0)
            metric = ft.telemetry.metrics()["agents_wins_total"]
            assert [s.value for s in metric.samples] == [3.0]
    # once per node (each node has its own telemetry service), not once per win
    assert declared.count("agents_wins_total") == 2


async def test_same_seed_same_result_when_tied_bids_arrive_together(autojump_clock):
    import random

    async def winner(seed: int) -> tuple[str | None, float | None]:
        report = await sealed_bid_auction(
            ["a", "b", "c", "d"], timeout=1.0, rng=random.Random(seed)
        )
        return report.winner, report.price

    async with ft.open_node("t"):
        await bidders(a=(5.0,), b=(5.0,), c=(5.0,), d=(1.0,))
        # Tied top bids received at the same instant: the receipt order follows the
        # seeded invitation order, so the seed decides, reproducibly.
        firsts = {seed: await winner(seed) for seed in range(8)}
        again = {seed: await winner(seed) for seed in range(8)}
        assert firsts == again
        assert {w for w, _ in firsts.values()} == {"a", "b", "c"}
        assert {p for _, p in firsts.values()} == {5.0}


async def test_a_late_refusal_is_not_recorded_as_a_late_bid(autojump_clock):
    async with ft.open_node("t"):
        ids = await bidders(a=(10.0,), no=(1.0, "refuse", 1.5))
        report = await sealed_bid_auction(ids, timeout=1.0, late_grace=1.0)
        assert report.result.rejected == ()
        assert report.participants_by_outcome() == {"Responded": ["a"], "Late": ["no"]}
