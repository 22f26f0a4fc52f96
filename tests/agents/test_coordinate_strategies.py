"""coordinate(): the "auction" and "negotiation" strategies commit through the variable."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import foundation_trio as ft
from foundation_trio.agents import (
    Agent,
    AgentSpec,
    Choice,
    Composite,
    FloatRange,
    IntRange,
    Refusal,
    ValueBid,
    ValueBidRequest,
    VariableSpec,
)


class Wanter(Agent):
    """Wants ``value`` and bids ``amount`` for it; ``mode`` changes how it answers."""

    async def setup(self, value: Any, amount: Any, mode: str = "ok") -> None:
        self.value = value
        self.amount = amount
        self.mode = mode

    async def bid_for_value(self, request: ValueBidRequest) -> Any:
        if self.mode == "hang":
            await trio.sleep_forever()
        if self.mode == "refuse":
            return Refusal("no opinion")
        if self.mode == "tuple":
            return (self.value, self.amount)
        if self.mode == "garbage":
            return "hot please"
        return ValueBid(self.value, self.amount)

    async def make_offer(self, request: Any) -> Any:
        return self.value

    async def respond_to_offer(self, offer: Any) -> Any:
        low, high = self.amount
        return "accept" if low <= offer.offer <= high else "reject"


async def wanters(**specs: tuple[Any, ...]) -> list[str]:
    for agent_id, args in specs.items():
        await ft.agents.register_agent(AgentSpec(agent_id, Wanter, args=args))
        await ft.agents.start_agent(agent_id)
    return list(specs)


def temperature() -> None:
    ft.agents.define_variable(VariableSpec("temperature", FloatRange(0.0, 2.0), default=0.7))


async def test_auction_commits_the_winners_value_and_records_its_second_price_payment(
    autojump_clock,
):
    async with ft.open_node("t"):
        temperature()
        ids = await wanters(
            poet=(1.3, 5.0),
            analyst=(0.2, 3.0, "tuple"),
            helper=(0.8, 4.0),
            chaos=(2.5, 9.0),
            mute=(0.1, 1.0, "refuse"),
            odd=(0.0, 0.0, "garbage"),
            slow=(1.9, 99.0, "hang"),
        )
        events: list[tuple[str, dict[str, Any]]] = []
        ft.telemetry.attach(
            "rec",
            ["agents.auction.bid_rejected", "agents.auction.cleared"],
            lambda name, m, meta: events.append(
                (name, {k: meta[k] for k in ("agent", "winner", "reason") if k in meta})
            ),
        )
        result = await ft.agents.coordinate("temperature", "auction", ids, timeout=1.0)
        assert result.committed
        assert (result.value, result.version) == (1.3, 1)
        assert ft.agents.get_variable("temperature").value == 1.3
        details = result.details
        assert (details["winner"], details["payment"], details["pricing"]) == (
            "poet",
            4.0,
            "second",
        )
        assert dict(details["bids"]) == {"poet": 5.0, "helper": 4.0, "analyst": 3.0}
        assert sorted(details["rejected"]) == [
            ("chaos", "out_of_domain"),
            ("odd", "not_a_value_bid"),
        ]
        assert ("agents.auction.cleared", {"winner": "poet"}) in events
        wins = ft.telemetry.metrics()["agents_wins_total"]
        assert {(s.labels["protocol"], s.labels["agent"]): s.value for s in wins.samples} == {
            ("coordinate:auction", "poet"): 1.0
        }


async def test_auction_with_first_price_and_a_reserve(autojump_clock):
    async with ft.open_node("t"):
        temperature()
        ids = await wanters(a=(1.0, 5.0), b=(0.5, 2.0))
        result = await ft.agents.coordinate(
            "temperature", "auction", ids, timeout=1.0, pricing="first", reserve=3.0
        )
        assert (result.value, result.details["payment"]) == (1.0, 5.0)
        assert result.details["rejected"] == (("b", "below_reserve"),)


async def test_auction_without_a_valid_bid_commits_nothing(autojump_clock):
    async with ft.open_node("t"):
        temperature()
        ids = await wanters(a=(3.0, 5.0), b=(0.5, 1.0, "refuse"))
        result = await ft.agents.coordinate("temperature", "auction", ids, timeout=1.0)
        assert not result.committed
        assert result.status == "no_decision"
        assert ft.agents.get_variable("temperature").version == 0
        with pytest.raises(ValueError, match="pricing"):
            await ft.agents.coordinate("temperature", "auction", ids, timeout=1.0, pricing="third")


async def test_negotiation_commits_the_agreement(autojump_clock):
    async with ft.open_node("t"):
        temperature()
        ids = await wanters(a=(0.2, (0.9, 1.2)), b=(1.0, (0.0, 1.0)))
        result = await ft.agents.coordinate("temperature", "negotiation", ids, timeout=2.0)
        # a offers 0.2 (b accepts: 0.2 is in b's [0.0, 1.0]).
        assert (result.committed, result.value, result.version) == (True, 0.2, 1)
        assert result.details["rounds"] == 1


async def test_negotiation_over_ints_and_choices(autojump_clock):
    async with ft.open_node("t"):
        ft.agents.define_variable(VariableSpec("workers", IntRange(1, 8), default=2))
        ft.agents.define_variable(
            VariableSpec("model", Choice(("small", "large")), default="small")
        )
        ids = await wanters(a=(4, (3, 5)), b=(5, (4, 6)))
        result = await ft.agents.coordinate("workers", "negotiation", ids, timeout=2.0)
        assert (result.value, result.version) == (4, 1)
        ids = await wanters(c=("large", ("large", "large")), d=("large", ("large", "large")))
        # Choice answers: respond_to_offer compares strings within (low, high) bounds.
        result = await ft.agents.coordinate("model", "negotiation", ids, timeout=2.0)
        assert result.value == "large"


async def test_negotiation_without_agreement_commits_nothing(autojump_clock):
    async with ft.open_node("t"):
        temperature()
        ids = await wanters(a=(0.2, (0.0, 0.5)), b=(1.8, (1.5, 2.0)))
        result = await ft.agents.coordinate(
            "temperature", "negotiation", ids, timeout=2.0, max_rounds=4, round_timeout=0.1
        )
        assert not result.committed
        assert "no agreement in 4 rounds" in result.reason
        assert ft.agents.get_variable("temperature").version == 0


async def test_negotiation_refuses_a_composite_domain(autojump_clock):
    async with ft.open_node("t"):
        ft.agents.define_variable(
            VariableSpec("pair", Composite({"x": FloatRange(0, 1)}), default={"x": 0.5})
        )
        ids = await wanters(a=(0.2, (0, 1)), b=(0.2, (0, 1)))
        with pytest.raises(TypeError, match="no outcome space"):
            await ft.agents.coordinate("pair", "negotiation", ids, timeout=1.0)


async def test_auction_strategy_emits_the_exact_event_sequence(autojump_clock):
    async with ft.open_node("t"):
        temperature()
        ids = await wanters(a=(1.5, 3.0), b=(0.4, 2.0), c=(9.0, 5.0))
        names = [
            "agents.coordinate.started",
            "agents.auction.started",
            "agents.auction.bid_accepted",
            "agents.auction.bid_rejected",
            "agents.auction.cleared",
            "agents.protocol.won",
            "agents.variable.updated",
            "agents.coordinate.committed",
        ]
        events: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        ft.telemetry.attach(
            "rec",
            names,
            lambda name, m, meta: events.append(
                (name, dict(m), {k: v for k, v in meta.items() if k != "context"})
            ),
        )
        await ft.agents.coordinate("temperature", "auction", ids, timeout=1.0)
        auction = {"auction_id": "coordinate:temperature", "kind": "sealed_second_price"}
        assert events == [
            (
                "agents.coordinate.started",
                {"participants": 3, "version": 0},
                {"variable": "temperature", "strategy": "auction"},
            ),
            (
                "agents.auction.started",
                {"participants": 3},
                {**auction, "item": "temperature", "reserve": 0.0},
            ),
            ("agents.auction.bid_accepted", {"amount": 3.0}, {**auction, "agent": "a", "seq": 0}),
            ("agents.auction.bid_accepted", {"amount": 2.0}, {**auction, "agent": "b", "seq": 1}),
            (
                "agents.auction.bid_rejected",
                {},
                {**auction, "agent": "c", "reason": "out_of_domain"},
            ),
            (
                "agents.auction.cleared",
                {"price": 2.0, "bids": 2, "duration": 0.0},
                {**auction, "winner": "a"},
            ),
            (
                "agents.variable.updated",
                {"version": 1},
                {"variable": "temperature", "writer": "coordinate:auction", "value": 1.5},
            ),
            ("agents.protocol.won", {"wins": 1}, {"protocol": "coordinate:auction", "agent": "a"}),
            (
                "agents.coordinate.committed",
                {"version": 1, "duration": 0.0},
                {"variable": "temperature", "strategy": "auction", "value": 1.5},
            ),
        ]
