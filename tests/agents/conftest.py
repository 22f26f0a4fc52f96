"""Agents used by the agents tests."""

from __future__ import annotations

from typing import Any

import trio

import foundation_trio as ft
from foundation_trio.agents import Agent, AgentSpec, Refusal, ValueRequest, VoteRequest


class Scripted(Agent):
    """Answers votes and value requests with ``answer`` after ``delay`` seconds.
    "hang" never answers, "crash" raises, "refuse" refuses."""

    async def setup(self, answer: Any, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay

    async def _respond(self) -> Any:
        await trio.sleep(self.delay)
        if self.answer == "hang":
            await trio.sleep_forever()
        if self.answer == "crash":
            raise RuntimeError(f"{self.agent_id} crashed")
        if self.answer == "refuse":
            return Refusal("no opinion")
        return self.answer

    async def vote(self, request: VoteRequest) -> Any:
        return await self._respond()

    async def preferred_value(self, request: ValueRequest) -> Any:
        return await self._respond()


async def start_scripted(**agents: tuple[Any, float]) -> list[str]:
    for agent_id, (answer, delay) in agents.items():
        await ft.agents.register_agent(
            AgentSpec(agent_id, Scripted, args=(answer, delay), max_restarts=100)
        )
        await ft.agents.start_agent(agent_id)
    return list(agents)
