"""Markets, Contract Net and alternating offers among real agents, with their telemetry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio

import foundation_trio as ft
from foundation_trio.agents import Agent, AgentSpec, Refusal
from foundation_trio.agents.markets import OrderRequest, call_market, continuous_double_auction
from foundation_trio.agents.negotiation import (
    CallForProposals,
    CancelTask,
    EndNegotiation,
    NotUnderstood,
    OfferRequest,
    OfferResponse,
    ProposalAccepted,
    ProposalRejected,
    Propose,
    contract_net,
    negotiate,
)
from foundation_trio.protocols.contract_net import ContractNetStatus
from foundation_trio.protocols.markets import MarketStatus, Side
from foundation_trio.protocols.negotiation import Choices, Interval, NegotiationStatus

EVENTS = [
    "agents.market.started",
    "agents.market.order_rejected",
    "agents.market.trade",
    "agents.market.cleared",
    "agents.market.no_trade",
    "agents.contract_net.started",
    "agents.contract_net.proposed",
    "agents.contract_net.refused",
    "agents.contract_net.accepted",
    "agents.contract_net.rejected",
    "agents.contract_net.contractor_failed",
    "agents.contract_net.completed",
    "agents.contract_net.failed",
    "agents.negotiation.started",
    "agents.negotiation.offer",
    "agents.negotiation.agreed",
    "agents.negotiation.broken",
    "agents.negotiation.timed_out",
    "agents.protocol.won",
]


@contextmanager
def recorded() -> Iterator[list[tuple[str, dict[str, Any], dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def handler(name: str, measurements: Any, metadata: Any) -> None:
        events.append(
            (name, dict(measurements), {k: v for k, v in metadata.items() if k != "context"})
        )

    ft.telemetry.attach("recorder", EVENTS, handler)
    try:
        yield events
    finally:
        ft.telemetry.detach("recorder")


class Trader(Agent):
    """Places ``plan[round]`` (a list of orders) after ``delay``; "hang" never answers."""

    async def setup(self, plan: Any, delay: float = 0.0) -> None:
        self.plan = plan
        self.delay = delay
        self.seen: list[OrderRequest] = []

    async def orders(self, request: OrderRequest) -> Any:
        self.seen.append(request)
        await trio.sleep(self.delay)
        if self.plan == "hang":
            await trio.sleep_forever()
        return self.plan[request.round] if request.round < len(self.plan) else []


HEARD: dict[str, list[str]] = {}
"""What each contractor's hooks received: accept, reject, cancel (reset per test)."""


@pytest.fixture(autouse=True)
def _reset_heard() -> None:
    HEARD.clear()


class Contractor(Agent):
    """Proposes ``cost``; ``mode`` says how it answers and performs."""

    async def setup(self, cost: Any, mode: str = "ok", delay: float = 0.0) -> None:
        self.cost = cost
        self.mode = mode
        self.delay = delay

    async def propose(self, cfp: CallForProposals) -> Any:
        await trio.sleep(self.delay)
        if self.mode == "refuse":
            return Refusal("too busy")
        if self.mode == "confused":
            return NotUnderstood("what task?")
        return Propose(self.cost, {"by": self.agent_id}) if self.mode == "content" else self.cost

    async def perform(self, order: ProposalAccepted) -> Any:
        HEARD.setdefault(self.agent_id, []).append("accept")
        if self.mode == "fail":
            return Refusal("could not do it")
        if self.mode == "crash":
            raise RuntimeError("broke down")
        if self.mode == "slow":
            await trio.sleep(100)
        if self.mode == "busy":
            await trio.sleep(2)
        return f"{order.task} done by {self.agent_id}"

    async def proposal_rejected(self, notice: ProposalRejected) -> None:
        HEARD.setdefault(self.agent_id, []).append("reject")

    async def cancel_task(self, notice: CancelTask) -> None:
        HEARD.setdefault(self.agent_id, []).append("cancel")


class Haggler(Agent):
    """Offers ``offers`` in turn; accepts any offer within ``[low, high]``."""

    async def setup(self, offers: list[Any], low: float, high: float, mode: str = "ok") -> None:
        self.offers = list(offers)
        self.low = low
        self.high = high
        self.mode = mode

    async def make_offer(self, request: OfferRequest) -> Any:
        if self.mode == "end":
            return EndNegotiation("no deal")
        if self.mode == "silent":
            await trio.sleep_forever()
        return self.offers.pop(0) if self.offers else self.high

    async def respond_to_offer(self, offer: OfferResponse) -> Any:
        if self.mode == "crash_on_respond":
            raise ValueError("cannot decide")
        return "accept" if self.low <= offer.offer <= self.high else "reject"


async def start(cls: type[Agent], **specs: tuple[Any, ...]) -> list[str]:
    for agent_id, args in specs.items():
        await ft.agents.register_agent(AgentSpec(agent_id, cls, args=args, max_restarts=100))
        await ft.agents.start_agent(agent_id)
    return list(specs)


# -- markets -----------------------------------------------------------------------------


async def test_call_market_crosses_the_agents_orders_with_conservation(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(
            Trader,
            b1=([[("buy", 5, 10.0)]],),
            b2=([[("buy", 5, 8.0), ("buy", 1, -3.0)]],),
            s1=([[(Side.SELL, 5, 4.0)]],),
            s2=([[("sell", 5, 9.0), ("hold", 1, 1.0)]],),
            slow=("hang",),
        )
        report = await call_market(ids, timeout=1.0)
        assert (report.status, report.price, report.volume) == (MarketStatus.CLEARED, 7.0, 5)
        assert [(t.buyer, t.seller, t.quantity) for t in report.trades] == [("b1", "s1", 5)]
        assert sorted(a for a, _ in report.rejected) == ["b2", "s2"]
        assert report.participants_by_outcome()["TimedOut"] == ["slow"]


async def test_call_market_without_a_crossing_is_no_trade(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Trader, b=([[("buy", 1, 3.0)]],), s=([[("sell", 1, 5.0)]],))
        with recorded() as events:
            report = await call_market(ids, timeout=1.0, market_id="m0")
        assert report.status is MarketStatus.NO_TRADE and report.trades == ()
        assert events[-1] == (
            "agents.market.no_trade",
            {"orders": 2, "duration": 0.0},
            {"market_id": "m0", "kind": "call", "reason": "no crossing"},
        )


async def test_continuous_market_trades_at_the_resting_price_over_rounds(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(
            Trader,
            s=([[("sell", 3, 5.0)], []],),
            b=([[], [("buy", 2, 6.0)]], 0.1),
        )
        report = await continuous_double_auction(ids, rounds=2, round_timeout=0.5)
        assert [(t.buyer, t.seller, t.price, t.quantity) for t in report.trades] == [
            ("b", "s", 5.0, 2)
        ]
        assert report.resting == ((0, "s", Side.SELL, 5.0, 1),)
        assert report.volume == 2


async def test_market_emits_the_exact_event_sequence(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(
            Trader, b=([[("buy", 2, 10.0)]],), s=([[("sell", 2, 6.0), ("sell", 0, 1.0)]], 0.1)
        )
        with recorded() as events:
            await call_market(ids, timeout=1.0, market_id="m1")
        meta = {"market_id": "m1", "kind": "call"}
        assert events == [
            ("agents.market.started", {"participants": 2}, meta),
            (
                "agents.market.order_rejected",
                {},
                {**meta, "agent": "s", "reason": "order from 's': quantity must be >= 1, got 0"},
            ),
            (
                "agents.market.trade",
                {"price": 8.0, "quantity": 2},
                {**meta, "buyer": "b", "seller": "s"},
            ),
            (
                "agents.market.cleared",
                {"volume": 2, "trades": 1, "duration": pytest.approx(0.1), "price": 8.0},
                meta,
            ),
        ]


# -- Contract Net ------------------------------------------------------------------------


async def test_contract_net_awards_the_cheapest_and_rejects_every_other_proposer(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(
            Contractor,
            a=(5.0,),
            b=(3.0, "content"),
            c=(4.0,),
            d=(1.0, "refuse"),
            e=(1.0, "confused"),
            late=(0.5, "ok", 2.0),
        )
        report = await contract_net(ids, "paint", timeout=1.0, late_grace=2.0, standby=1)
        assert report.status is ContractNetStatus.COMPLETED
        assert (report.contractor, report.result.result) == ("b", "paint done by b")
        assert report.result.proposals[0].content == {"by": "b"}
        assert report.result.late == ("late",)
        answered = Counter(
            agent
            for agent, kind in report.notified
            if kind in ("accept-proposal", "reject-proposal")
        )
        assert answered == {"a": 1, "b": 1, "c": 1, "late": 1}
        # What each agent's hooks actually received.
        assert HEARD == {"a": ["reject"], "b": ["accept"], "c": ["reject"], "late": ["reject"]}


async def test_a_failed_contractor_is_replaced_by_the_next_best_proposal(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Contractor, a=(1.0, "crash"), b=(2.0, "fail"), c=(3.0,), d=(4.0,))
        with recorded() as events:
            report = await contract_net(ids, "haul", timeout=1.0, standby=2, cfp_id="k")
        assert (report.status, report.contractor) == (ContractNetStatus.COMPLETED, "c")
        assert [a for a, _ in report.result.failures] == ["a", "b"]
        failed = [
            e[2]["reason"].split(":")[0]
            for e in events
            if e[0] == "agents.contract_net.contractor_failed"
        ]
        assert failed == ["crashed", "failure"]
        # d was held in reserve the whole time and got exactly one reject at the end.
        assert [kind for agent, kind in report.notified if agent == "d"] == ["reject-proposal"]


async def test_a_contractor_running_past_its_execution_timeout_is_replaced(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Contractor, a=(1.0, "slow"), b=(2.0,))
        start_time = trio.current_time()
        report = await contract_net(ids, "x", timeout=1.0, execution_timeout=5.0)
        assert report.contractor == "b"
        assert report.result.failures == (("a", "timed out"),)
        # Both proposals arrive at once (the cfp round ends then); a runs 5 s, b none.
        assert trio.current_time() - start_time == pytest.approx(5.0)


async def test_no_proposal_and_every_contractor_failing_are_failed_results(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Contractor, a=(1.0, "refuse"), b=(1.0, "confused"))
        report = await contract_net(ids, "x", timeout=1.0)
        assert report.status is ContractNetStatus.NO_PROPOSALS
        ids = await start(Contractor, c=(1.0, "fail"))
        report = await contract_net(ids, "x", timeout=1.0, standby=0)
        assert report.status is ContractNetStatus.FAILED


async def test_cancelling_the_manager_sends_cancel_to_the_contractor(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Contractor, a=(1.0, "busy"), b=(2.0,))
        with recorded() as events, trio.move_on_after(1.5) as scope:
            await contract_net(ids, "x", timeout=1.0, notify_timeout=5.0, cfp_id="q")
        assert scope.cancelled_caught
        # An agent answers one question at a time: a takes the cancel once its
        # perform hook (2 s) has returned, within the notify timeout.
        assert HEARD == {"a": ["accept", "cancel"], "b": ["reject"]}
        assert trio.current_time() == pytest.approx(2.0)
        assert [(e[0], e[2].get("agent")) for e in events][-2:] == [
            ("agents.contract_net.rejected", "b"),
            ("agents.contract_net.failed", None),
        ]
        assert events[-1][2]["status"] == "cancelled"


async def test_contract_net_emits_the_exact_event_sequence(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Contractor, a=(2.0,), b=(1.0, "ok", 0.1), c=(0.0, "refuse", 0.2))
        with recorded() as events:
            await contract_net(ids, "job", timeout=1.0, standby=0, cfp_id="n1")
        meta = {"cfp_id": "n1"}
        assert events == [
            ("agents.contract_net.started", {"participants": 3}, {**meta, "task": "'job'"}),
            ("agents.contract_net.proposed", {"value": 2.0}, {**meta, "agent": "a", "seq": 0}),
            ("agents.contract_net.proposed", {"value": 1.0}, {**meta, "agent": "b", "seq": 1}),
            (
                "agents.contract_net.refused",
                {},
                {**meta, "agent": "c", "reason": "refuse: too busy"},
            ),
            ("agents.contract_net.accepted", {"value": 1.0}, {**meta, "agent": "b"}),
            ("agents.contract_net.rejected", {}, {**meta, "agent": "a", "reason": "not selected"}),
            (
                "agents.contract_net.completed",
                {"duration": pytest.approx(0.2)},
                {**meta, "contractor": "b"},
            ),
            ("agents.protocol.won", {"wins": 1}, {"protocol": "contract_net", "agent": "b"}),
        ]


# -- alternating offers ------------------------------------------------------------------


async def test_negotiation_reaches_an_agreement_accepted_by_all(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Haggler, buyer=([0.2, 0.6], 0.0, 0.7), seller=([1.5, 0.9], 0.6, 2.0))
        report = await negotiate(ids, Interval(0.0, 2.0), round_timeout=0.5)
        # buyer offers 0.2 (rejected), seller 1.5 (rejected), buyer 0.6 (accepted).
        assert (report.status, report.agreement, report.result.rounds) == (
            NegotiationStatus.AGREED,
            0.6,
            3,
        )


async def test_end_by_anyone_breaks_the_negotiation(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Haggler, a=([], 0, 1, "end"), b=([], 0, 1))
        report = await negotiate(ids, Choices((0, 1)), round_timeout=0.5)
        assert (report.status, report.result.ended_by) == (NegotiationStatus.BROKEN, "a")


async def test_a_crashed_party_breaks_the_negotiation_with_the_error_recorded(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Haggler, a=([0.5], 0, 1), b=([], 0, 1, "crash_on_respond"))
        report = await negotiate(ids, Interval(0, 1), round_timeout=0.5)
        assert report.status is NegotiationStatus.BROKEN
        assert report.result.errors[0][0] == "b"
        assert "cannot decide" in report.result.errors[0][1]


async def test_limits_give_a_timeout_result_and_silence_loses_the_turn(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Haggler, a=([], 5, 6, "silent"), b=([0.1, 0.1], 5, 6))
        start_time = trio.current_time()
        report = await negotiate(ids, Interval(0, 1), round_timeout=0.5, max_rounds=4)
        assert report.status is NegotiationStatus.TIMED_OUT
        assert [r.note for r in report.result.history] == ["timedout", None, "timedout", None]
        report = await negotiate(ids, Interval(0, 1), round_timeout=0.5, timeout=0.75)
        assert report.status is NegotiationStatus.TIMED_OUT
        assert trio.current_time() - start_time < 5.0


async def test_negotiation_emits_the_exact_event_sequence(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Haggler, a=([3], 1, 1), b=([1], 1, 1))
        with recorded() as events:
            await negotiate(ids, Choices((1, 2, 3)), round_timeout=0.5, negotiation_id="g1")
        meta = {"negotiation_id": "g1"}
        assert events == [
            ("agents.negotiation.started", {"parties": 2}, meta),
            ("agents.negotiation.offer", {"round": 0}, {**meta, "proposer": "a", "offer": 3}),
            ("agents.negotiation.offer", {"round": 1}, {**meta, "proposer": "b", "offer": 1}),
            (
                "agents.negotiation.agreed",
                {"rounds": 2, "duration": 0.0},
                {**meta, "agreement": 1},
            ),
        ]


async def test_continuous_market_emits_the_exact_event_sequence(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Trader, s=([[("sell", 2, 5.0)]],), b=([[("buy", 3, 6.0)]], 0.1))
        with recorded() as events:
            await continuous_double_auction(ids, rounds=1, round_timeout=0.5, market_id="c1")
        meta = {"market_id": "c1", "kind": "continuous"}
        assert events == [
            ("agents.market.started", {"participants": 2}, meta),
            (
                "agents.market.trade",
                {"price": 5.0, "quantity": 2},
                {**meta, "buyer": "b", "seller": "s"},
            ),
            (
                "agents.market.cleared",
                {"volume": 2, "trades": 1, "duration": pytest.approx(0.1)},
                meta,
            ),
        ]


async def test_a_late_refusal_gets_no_reject_proposal(autojump_clock):
    async with ft.open_node("t"):
        ids = await start(Contractor, a=(1.0,), no=(1.0, "refuse", 1.5))
        report = await contract_net(ids, "x", timeout=1.0, late_grace=1.0)
        assert report.contractor == "a"
        assert report.result.late == ()
        assert HEARD == {"a": ["accept"]}
