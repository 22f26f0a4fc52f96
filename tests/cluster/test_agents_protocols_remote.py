"""The protocol drivers (auctions, Contract Net, markets, negotiation) reach agents on
other nodes the same way: over in-memory cluster links, in virtual time, a run with
remote participants gives the result of the same run with every agent local, and a
remote participant whose node is lost is recorded as crashed without stalling it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from memlinks import MemLinks, Network, mem_cluster_boot
from nodes import NodeHandle, open_nodes

import foundation_trio as ft
from foundation_trio.agents import (
    Agent,
    AgentSpec,
    BidRequest,
    CallForProposals,
    Crashed,
    OrderRequest,
    Pricing,
    ProposalAccepted,
    Propose,
    Refusal,
    Responded,
    TimedOut,
    agent_on,
)
from foundation_trio.protocols.auctions import AuctionStatus
from foundation_trio.protocols.contract_net import ContractNetStatus
from foundation_trio.protocols.markets import MarketStatus, Side
from foundation_trio.runtime.node import open_node


class Bidder(Agent):
    """Bids ``amount`` after ``delay`` seconds; confirms an award."""

    async def setup(self, amount: float, delay: float = 0.0) -> None:
        self.amount = amount
        self.delay = delay

    async def bid(self, request: BidRequest) -> float:
        await trio.sleep(self.delay)
        return self.amount

    async def award(self, notice: Any) -> str:
        return f"took {notice.item}"


class ClockBidder(Agent):
    """Stays in an English clock (buys in a Dutch one) while the price is at most
    ``value``; bids ``bundles`` (``[(items, amount), ...]``) in a combinatorial auction."""

    async def setup(self, value: float, bundles: list[tuple[tuple[str, ...], float]]) -> None:
        self.value = value
        self.bundles = bundles

    async def accept_price(self, offer: Any) -> bool:
        await trio.sleep(0.01)
        return self.value >= offer.price

    async def bundle_bids(self, request: Any) -> list[tuple[tuple[str, ...], float]]:
        assert request.items == ("x", "y")
        return self.bundles


class Contractor(Agent):
    """Proposes ``cost`` with a plan (a record holding a frozenset and a tuple);
    performs by returning the task with its own id."""

    async def setup(self, cost: float, delay: float = 0.0) -> None:
        self.cost = cost
        self.delay = delay

    async def propose(self, cfp: CallForProposals) -> Propose:
        await trio.sleep(self.delay)
        return Propose(self.cost, content={"plan": (cfp.task, frozenset({"fast"}))})

    async def perform(self, order: ProposalAccepted) -> Any:
        await trio.sleep(self.delay)
        assert order.content == {"plan": (order.task, frozenset({"fast"}))}
        return ("done", order.task, self.agent_id)


class Trader(Agent):
    """Places ``orders`` (``(side, quantity, limit)`` triples) in a market."""

    async def setup(self, orders: list[tuple[Side, int, float]], delay: float = 0.0) -> None:
        self.planned = orders
        self.delay = delay

    async def orders(self, request: OrderRequest) -> list[tuple[Side, int, float]]:
        await trio.sleep(self.delay)
        return self.planned


Placement = dict[str, tuple[str, type[Agent], tuple[Any, ...]]]


class Cluster:
    def __init__(self) -> None:
        self.network = Network()
        self.boot, self.links = mem_cluster_boot(self.network)

    def open(self, name: str) -> Any:
        return open_node(name, boot=[self.boot])


async def _start(agents: dict[str, tuple[type[Agent], tuple[Any, ...]]]) -> None:
    for agent_id, (cls, args) in agents.items():
        await ft.agents.register_agent(AgentSpec(agent_id, cls, args=args))
        await ft.agents.start_agent(agent_id)


async def _place(nodes: dict[str, NodeHandle], placement: Placement) -> list[Any]:
    """Start each agent on its node; the participants as node ``a`` names them."""
    for node in nodes:
        here = {i: (cls, args) for i, (where, cls, args) in placement.items() if where == node}
        await nodes[node].run(_start, here)
    return [i if where == "a" else agent_on(where, i) for i, (where, _, _) in placement.items()]


def _local(placement: Placement) -> Placement:
    return {i: ("a", cls, args) for i, (_, cls, args) in placement.items()}


async def _run_on_a(
    placement: Placement, driver: Callable[[list[Any]], Awaitable[Any]]
) -> tuple[Any, Cluster]:
    cluster = Cluster()
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.links["a"].connect("mem:b")
        participants = await _place(nodes, placement)
        return await nodes["a"].run(driver, participants), cluster


def _plain(name: str | None) -> str | None:
    """A participant's name with its ``@node`` dropped, to compare with all-local."""
    return None if name is None else name.split("@")[0]


async def test_a_sealed_bid_auction_with_remote_bidders_matches_all_local(
    autojump_clock: Any,
) -> None:
    placement: Placement = {
        "l1": ("a", Bidder, (5.0, 0.1)),
        "r1": ("b", Bidder, (9.0, 0.3)),
        "r2": ("b", Bidder, (7.0, 0.2)),
    }

    async def auction(participants: list[Any]) -> Any:
        return await ft.agents.sealed_bid_auction(
            participants,
            item="lamp",
            pricing=Pricing.SECOND,
            timeout=5,
            confirm_award=True,
            auction_id="x",
        )

    remote, _ = await _run_on_a(placement, auction)
    local, _ = await _run_on_a(_local(placement), auction)
    assert (local.status, local.winner, local.price) == (AuctionStatus.SOLD, "r1", 7.0)
    assert (remote.status, remote.winner, remote.price) == (AuctionStatus.SOLD, "r1@b", 7.0)
    # the same bids, best first, with the same receipt order (seq), named
    # "<id>@<node>" when remote
    assert [(b.agent, b.amount, b.seq) for b in remote.result.bids] == [
        ("r1@b", 9.0, 2),
        ("r2@b", 7.0, 1),
        ("l1", 5.0, 0),
    ]
    assert [(_plain(b.agent), b.amount, b.seq) for b in remote.result.bids] == [
        (b.agent, b.amount, b.seq) for b in local.result.bids
    ]
    assert remote.participants_by_outcome() == {"Responded": ["l1", "r1@b", "r2@b"]}
    # the award notice crossed to b and its answer came back
    confirmation = remote.rounds[1].outcome("r1@b")
    assert isinstance(confirmation, Responded) and confirmation.value == "took lamp"


async def test_a_remote_bidder_on_a_lost_node_is_crashed_and_never_stalls_the_auction(
    autojump_clock: Any,
) -> None:
    placement: Placement = {
        "l1": ("a", Bidder, (5.0, 0.1)),
        "l2": ("a", Bidder, (4.0, 0.1)),
        "slow": ("b", Bidder, (99.0, 50.0)),
    }
    cluster = Cluster()
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.links["a"].connect("mem:b")
        participants = await _place(nodes, placement)

        async def on_a() -> tuple[Any, float]:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sever_later, cluster.links["a"], "b", 1.0)
                start = trio.current_time()
                report = await ft.agents.sealed_bid_auction(participants, timeout=100)
                return report, trio.current_time() - start

        report, took = await nodes["a"].run(on_a)
    # b is lost at 1 s: its bidder is crashed with NodeDown at once, the auction ends
    # there (not at its 100 s deadline) and the local bids decide it
    assert took == pytest.approx(1.0)
    lost = report.rounds[0].outcome("slow@b")
    assert isinstance(lost, Crashed) and isinstance(lost.error, ft.NodeDown)
    assert (report.winner, report.price) == ("l1", 4.0)
    assert report.participants_by_outcome() == {"Responded": ["l1", "l2"], "Crashed": ["slow@b"]}


async def test_a_silent_remote_bidder_times_out_at_the_deadline(autojump_clock: Any) -> None:
    placement: Placement = {
        "l1": ("a", Bidder, (5.0, 0.1)),
        "mute": ("b", Bidder, (99.0, 50.0)),
    }

    async def auction(participants: list[Any]) -> tuple[Any, float]:
        start = trio.current_time()
        report = await ft.agents.sealed_bid_auction(participants, timeout=2)
        return report, trio.current_time() - start

    (report, took), _ = await _run_on_a(placement, auction)
    assert took == pytest.approx(2.0)
    assert isinstance(report.rounds[0].outcome("mute@b"), TimedOut)
    assert (report.winner, report.price) == ("l1", 0.0)


async def test_clock_and_combinatorial_auctions_with_remote_bidders_match_all_local(
    autojump_clock: Any,
) -> None:
    placement: Placement = {
        "l1": ("a", ClockBidder, (6.0, [(("x",), 4.0)])),
        "r1": ("b", ClockBidder, (9.0, [(("x", "y"), 7.0)])),
        "r2": ("b", ClockBidder, (4.0, [(("y",), 5.0)])),
    }

    async def auctions(participants: list[Any]) -> tuple[Any, Any, Any]:
        english = await ft.agents.english_auction(participants, increment=1.0)
        dutch = await ft.agents.dutch_auction(participants, start_price=12.0, decrement=1.0)
        bundles = await ft.agents.combinatorial_auction(participants, items=["x", "y"])
        return english, dutch, bundles

    remote, _ = await _run_on_a(placement, auctions)
    local, _ = await _run_on_a(_local(placement), auctions)
    for remote_report, local_report in zip(remote[:2], local[:2], strict=True):
        assert remote_report.winner == "r1@b" and local_report.winner == "r1"
        assert (remote_report.status, remote_report.price) == (
            local_report.status,
            local_report.price,
        )
    # welfare 9 = l1's x (4) + r2's y (5) beats r1's bundle (7); winners named by node
    remote_won = {(w.agent, w.items, w.amount) for w in remote[2].result.winners}
    assert remote_won == {("l1", frozenset({"x"}), 4.0), ("r2@b", frozenset({"y"}), 5.0)}
    assert {(_plain(a), i, m) for a, i, m in remote_won} == {
        (w.agent, w.items, w.amount) for w in local[2].result.winners
    }
    assert dict(remote[2].result.payments) == {"l1": 2.0, "r2@b": 3.0}


async def test_a_contract_net_round_with_remote_contractors_matches_all_local(
    autojump_clock: Any,
) -> None:
    placement: Placement = {
        "l1": ("a", Contractor, (8.0, 0.1)),
        "r1": ("b", Contractor, (3.0, 0.2)),
        "r2": ("b", Contractor, (5.0, 0.1)),
    }

    async def cfp(participants: list[Any]) -> Any:
        return await ft.agents.contract_net(participants, ("paint", 3), timeout=5, cfp_id="c")

    remote, _ = await _run_on_a(placement, cfp)
    local, _ = await _run_on_a(_local(placement), cfp)
    assert local.status is ContractNetStatus.COMPLETED
    assert local.result.result == ("done", ("paint", 3), "r1")
    assert remote.status is ContractNetStatus.COMPLETED
    assert remote.contractor == "r1@b"
    # the task, the proposal's content and the result crossed with their exact types
    assert remote.result.result == ("done", ("paint", 3), "r1")
    assert sorted(remote.notified) == [
        ("l1", "reject-proposal"),
        ("r1@b", "accept-proposal"),
        ("r2@b", "reject-proposal"),
    ]
    assert sorted((_plain(a), what) for a, what in remote.notified) == sorted(local.notified)


async def test_a_remote_contractor_lost_while_performing_is_replaced_by_the_standby(
    autojump_clock: Any,
) -> None:
    placement: Placement = {
        "l1": ("a", Contractor, (8.0, 0.1)),
        "r1": ("b", Contractor, (3.0, 5.0)),
    }
    cluster = Cluster()
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.links["a"].connect("mem:b")
        participants = await _place(nodes, placement)

        async def on_a() -> tuple[Any, float]:
            async with trio.open_nursery() as nursery:
                # r1 proposes at 5 s and wins; b is lost at 6 s, while r1 performs
                nursery.start_soon(_sever_later, cluster.links["a"], "b", 6.0)
                start = trio.current_time()
                report = await ft.agents.contract_net(
                    participants, "job", timeout=10, execution_timeout=100
                )
                return report, trio.current_time() - start

        report, took = await nodes["a"].run(on_a)
    assert report.status is ContractNetStatus.COMPLETED
    assert report.contractor == "l1"
    assert report.result.result == ("done", "job", "l1")
    # r1 proposed at 5 s (the last proposal: the call ends there), b was lost at 6 s
    # and the standby l1 performed in 0.1 s: nothing waited for a deadline
    assert took == pytest.approx(6.1)
    performed = [r for r in report.rounds if r.participants() == ["r1@b"]][-1]
    lost = performed.outcome("r1@b")
    assert isinstance(lost, Crashed) and isinstance(lost.error, ft.NodeDown)


async def test_a_call_market_with_remote_traders_matches_all_local(autojump_clock: Any) -> None:
    placement: Placement = {
        "buyer": ("a", Trader, ([(Side.BUY, 10, 12.0)], 0.1)),
        "seller1": ("b", Trader, ([(Side.SELL, 6, 9.0)], 0.2)),
        "seller2": ("b", Trader, ([("sell", 6, 11.0)], 0.3)),
        "cheap": ("a", Trader, ([(Side.BUY, 2, 8.0)], 0.4)),
    }

    async def market(participants: list[Any]) -> Any:
        return await ft.agents.call_market(participants, timeout=5, market_id="m")

    remote, _ = await _run_on_a(placement, market)
    local, _ = await _run_on_a(_local(placement), market)
    assert local.status is MarketStatus.CLEARED
    assert (remote.status, remote.price, remote.volume) == (
        local.status,
        local.price,
        local.volume,
    )
    assert {(t.buyer, t.seller, t.quantity) for t in remote.trades} == {
        ("buyer", "seller1@b", 6),
        ("buyer", "seller2@b", 4),
    }
    remote_trades = sorted((t.buyer, _plain(t.seller), t.price, t.quantity) for t in remote.trades)
    assert remote_trades == sorted((t.buyer, t.seller, t.price, t.quantity) for t in local.trades)
    assert remote.rejected == local.rejected == ()


async def test_a_negotiation_with_a_remote_party_reaches_the_same_agreement(
    autojump_clock: Any,
) -> None:
    placement: Placement = {
        "seller": ("a", Haggler, ([12.0, 10.0], 9.0, 20.0)),
        "buyer": ("b", Haggler, ([6.0, 9.5], 5.0, 10.0)),
    }
    space = ft.agents.Interval(0.0, 20.0)

    async def talk(participants: list[Any]) -> Any:
        return await ft.agents.negotiate(participants, space, round_timeout=1)

    remote, _ = await _run_on_a(placement, talk)
    local, _ = await _run_on_a(_local(placement), talk)
    assert local.agreement == remote.agreement == 10.0
    assert [(_plain(h.proposer), h.offer) for h in remote.result.history] == [
        (h.proposer, h.offer) for h in local.result.history
    ]
    assert remote.result.history[-1].proposer == "seller"


class Haggler(Agent):
    """Offers ``offers`` in turn; accepts an offer within ``[low, high]``."""

    async def setup(self, offers: list[float], low: float, high: float) -> None:
        self.offers = list(offers)
        self.low = low
        self.high = high

    async def make_offer(self, request: Any) -> Any:
        assert isinstance(request.space, ft.agents.Interval)
        return self.offers.pop(0) if self.offers else Refusal("no more offers")

    async def respond_to_offer(self, offer: Any) -> bool:
        return bool(self.low <= offer.offer <= self.high)


async def test_drivers_check_their_participants() -> None:
    async with ft.open_node("t"):
        with pytest.raises(TypeError, match="agent id"):
            await ft.agents.sealed_bid_auction([3.5])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="collection"):
            await ft.agents.call_market("a1")
        with pytest.raises(ValueError, match="twice"):
            await ft.agents.contract_net(["a1", agent_on("b", "x"), "a1"], "t")
        with pytest.raises(ValueError, match="at least one"):
            await ft.agents.english_auction([])
        with pytest.raises(ft.agents.AgentNotFound):
            await ft.agents.dutch_auction(["ghost"], start_price=10, decrement=1)
        # agent_on this very node is reached through the node's names, as any other
        with pytest.raises(ft.agents.AgentNotFound):
            await ft.agents.call_market([agent_on("t", "ghost"), "ghost"])


async def _sever_later(links: MemLinks, peer: str, delay: float) -> None:
    await trio.sleep(delay)
    links.sever(peer, "severed by the test")
