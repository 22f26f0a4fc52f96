"""Agents on another node are reached the same way: rounds and votes across in-memory
cluster links, in virtual time; losing the node turns its agents into abstentions."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from memlinks import MemLinks, Network, mem_cluster_boot
from nodes import open_nodes

import foundation_trio as ft
from foundation_trio.agents import (
    Agent,
    AgentSpec,
    Crashed,
    Refused,
    Responded,
    VoteRequest,
    agent_on,
)
from foundation_trio.runtime.node import open_node


class Voter(Agent):
    async def setup(self, ballot: Any, delay: float = 0.0) -> None:
        self.ballot = ballot
        self.delay = delay

    async def vote(self, request: VoteRequest) -> Any:
        await trio.sleep(self.delay)
        if self.ballot == "crash":
            raise RuntimeError("remote voter crashed")
        return self.ballot


class Cluster:
    def __init__(self) -> None:
        self.network = Network()
        self.boot, self.links = mem_cluster_boot(self.network)

    def open(self, name: str) -> Any:
        return open_node(name, boot=[self.boot])


async def start_voters(voters: dict[str, tuple[Any, float]]) -> None:
    for agent_id, (ballot, delay) in voters.items():
        await ft.agents.register_agent(AgentSpec(agent_id, Voter, args=(ballot, delay)))
        await ft.agents.start_agent(agent_id)


async def test_a_round_reaches_agents_on_another_node_the_same_way(autojump_clock: Any) -> None:
    cluster = Cluster()
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.links["a"].connect("mem:b")
        await nodes["b"].run(
            start_voters, {"r1": ("yes", 0.1), "r2": ("no", 0.2), "r3": ("crash", 0.0)}
        )
        await nodes["a"].run(start_voters, {"l1": ("yes", 0.3)})

        async def on_a() -> Any:
            participants = ["l1", agent_on("b", "r1"), agent_on("b", "r2"), agent_on("b", "r3")]
            result = await ft.agents.run_round(
                participants, VoteRequest(topic="t"), deadline=trio.current_time() + 1
            )
            return result

        result = await nodes["a"].run(on_a)
        assert result.participants() == ["l1", "r1@b", "r2@b", "r3@b"]
        assert result.outcome("r1@b") == Responded("r1@b", "yes", pytest.approx(0.1), 0)
        assert isinstance(result.outcome("r2@b"), Responded)
        assert isinstance(result.outcome("l1"), Responded)
        crashed = result.outcome("r3@b")
        assert isinstance(crashed, Crashed)
        assert isinstance(crashed.error, ft.RemoteError)
        assert "remote voter crashed" in crashed.error.message

        async def start_mute() -> None:
            await ft.agents.register_agent(AgentSpec("mute", Agent))
            await ft.agents.start_agent("mute")

        await nodes["b"].run(start_mute)

        async def more() -> Any:
            return await ft.agents.run_round(
                [agent_on("b", "mute"), agent_on("b", "ghost")],
                VoteRequest(topic="t"),
                deadline=trio.current_time() + 1,
            )

        second = await nodes["a"].run(more)
        # a remote agent's refusal arrives as a typed Refusal; an unknown one is no process
        refused = second.outcome("mute@b")
        assert isinstance(refused, Refused) and "does not vote" in refused.reason
        ghost = second.outcome("ghost@b")
        assert isinstance(ghost, Crashed) and isinstance(ghost.error, ft.NoProcess)


async def test_losing_a_node_turns_its_agents_into_abstentions_at_once(
    autojump_clock: Any,
) -> None:
    cluster = Cluster()
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.links["a"].connect("mem:b")
        await nodes["b"].run(start_voters, {f"r{i}": ("yes", 50.0) for i in range(3)})
        await nodes["a"].run(start_voters, {"l1": ("yes", 0.1), "l2": ("yes", 0.1)})

        async def on_a() -> tuple[Any, float]:
            electorate = ["l1", "l2", *(agent_on("b", f"r{i}") for i in range(3))]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sever_later, cluster.links["a"], "b", 1.0)
                start = trio.current_time()
                result = await ft.agents.vote("ship?", electorate, quorum=3, timeout=100)
                return result, trio.current_time() - start

        result, took = await nodes["a"].run(on_a)
        # the link is lost at 1 s: b's three agents abstain, 2 ballots cannot reach a
        # quorum of 3, and the vote ends there instead of waiting for its deadline
        assert took == pytest.approx(1.0)
        assert result.status == "no_quorum"
        assert (result.ballots, result.abstentions, result.pending) == (2, 3, 0)
        for i in range(3):
            outcome = result.round.outcome(f"r{i}@b")
            assert isinstance(outcome, Crashed) and isinstance(outcome.error, ft.NodeDown)


async def _sever_later(links: MemLinks, peer: str, delay: float) -> None:
    await trio.sleep(delay)
    links.sever(peer, "severed by the test")
