"""Agents bid for the LLM temperature in a second-price auction; the winner's value is applied.

Four agents share one universal variable, ``llm.temperature`` (a float in [0.0, 2.0],
default 0.7). Each wants a different temperature and bids what it is worth to it.
``coordinate(..., "auction", ...)`` runs a sealed-bid second-price (Vickrey) auction:
the highest bidder's value is committed through one compare-and-set, and it pays the
second-highest bid. A bid for a value outside the domain is rejected. Every agent then
generates with the committed temperature, read from the variable.

Run: ``python examples/temperature.py``
"""

from __future__ import annotations

from typing import Any

import trio

import foundation_trio as ft
from foundation_trio.agents import Agent, AgentSpec, FloatRange, ValueBid, VariableSpec

WANTS = {
    # agent: (preferred temperature, what setting it is worth to the agent)
    "poet": (1.3, 5.0),
    "analyst": (0.2, 3.0),
    "assistant": (0.8, 4.0),
    "chaos": (2.5, 9.0),  # outside [0.0, 2.0]: its bid is rejected
}


class LlmAgent(Agent):
    async def setup(self, preferred: float, worth: float) -> None:
        self.preferred = preferred
        self.worth = worth

    async def bid_for_value(self, request: Any) -> ValueBid:
        # Truthful bidding is the best strategy in a second-price auction.
        return ValueBid(self.preferred, self.worth)

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "generate":
            temperature = ft.agents.get_variable("llm.temperature").value
            return f"{self.agent_id} samples at temperature {temperature}"
        return await super().handle_call(request, caller)


async def main() -> None:
    async with ft.open_node("temperature"):
        ft.agents.define_variable(
            VariableSpec("llm.temperature", FloatRange(0.0, 2.0), default=0.7)
        )
        for name, (preferred, worth) in WANTS.items():
            await ft.agents.register_agent(AgentSpec(name, LlmAgent, args=(preferred, worth)))
            await ft.agents.start_agent(name)
        print("before:", ft.agents.get_variable("llm.temperature").value)

        result = await ft.agents.coordinate(
            "llm.temperature", "auction", list(WANTS), timeout=1.0, pricing="second"
        )
        details = result.details
        print(f"status: {result.status}")
        print(f"winner: {details['winner']} pays {details['payment']} (second price)")
        print(f"rejected: {list(details['rejected'])}")
        print(f"temperature: {result.value} (version {result.version})")
        for name in WANTS:
            print(await ft.call(ft.agents.whereis_agent(name), "generate"))


if __name__ == "__main__":
    trio.run(main)
