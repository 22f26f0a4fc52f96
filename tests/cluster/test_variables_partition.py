"""A universal variable with ``members`` is read-only on the minority side of a
partition: writes need a strict majority of its members in view, reads never do."""

from __future__ import annotations

from typing import Any

import pytest
from memlinks import Network, mem_cluster_boot
from nodes import open_nodes

import foundation_trio as ft
from foundation_trio.agents import (
    Agent,
    AgentSpec,
    FloatRange,
    NotAMember,
    PermissionDenied,
    ReadOnly,
    ValueRequest,
    VariableSpec,
    VariableUpdate,
)
from foundation_trio.runtime.node import open_node


class Proposer(Agent):
    async def preferred_value(self, request: ValueRequest) -> Any:
        return 1.5


class Cluster:
    def __init__(self) -> None:
        self.network = Network()
        self.boot, self.links = mem_cluster_boot(self.network)

    def open(self, name: str) -> Any:
        return open_node(name, boot=[self.boot])


SPEC = VariableSpec("temperature", FloatRange(0.0, 2.0), 0.7, members=("a", "b", "c"))


async def _define() -> None:
    ft.agents.define_variable(SPEC)
    await ft.agents.register_agent(AgentSpec("p", Proposer))
    await ft.agents.start_agent("p")


async def _write(value: float) -> VariableUpdate:
    current = ft.agents.get_variable("temperature")
    return ft.agents.set_variable("temperature", value, expected_version=current.version)


async def _refused_write() -> tuple[ReadOnly, ReadOnly, VariableUpdate, list[str]]:
    with pytest.raises(ReadOnly) as cas:
        await _write(0.1)
    with pytest.raises(ReadOnly) as coordinated:
        await ft.agents.coordinate("temperature", "mean", ["p"], timeout=1)
    return cas.value, coordinated.value, ft.agents.get_variable("temperature"), ft.nodes()


async def test_the_minority_side_of_a_partition_refuses_writes_and_still_reads(
    autojump_clock: Any,
) -> None:
    cluster = Cluster()
    async with open_nodes(["a", "b", "c"], cluster.open) as nodes:
        links = cluster.links["a"]
        await links.connect("mem:b")
        await nodes["a"].run(_define)
        # a sees b: 2 of 3 members is a majority, so a writes (c is not linked yet)
        assert (await nodes["a"].run(_write, 0.9)).version == 1
        await links.connect("mem:c")
        assert (await nodes["a"].run(_write, 1.0)).version == 2
        links.sever("c", "partition")
        assert (await nodes["a"].run(_write, 1.1)).version == 3

        links.sever("b", "partition")
        cas, coordinated, read, seen = await nodes["a"].run(_refused_write)
        assert seen == []
        assert (cas.reachable, cas.needed) == (1, 2)
        assert "reaches 1 of its members, a write needs 2" in str(cas)
        assert isinstance(cas, PermissionDenied) and cas.variable == "temperature"
        assert (coordinated.reachable, coordinated.needed) == (1, 2)
        assert (read.value, read.version) == (1.1, 3)

        await links.connect("mem:c")
        healed = await nodes["a"].run(ft.agents.coordinate, "temperature", "mean", ["p"], 1)
        assert (healed.committed, healed.value, healed.version) == (True, 1.5, 4)
        assert (await nodes["a"].run(_write, 0.2)).version == 5


async def test_a_node_local_variable_writes_without_any_cluster(autojump_clock: Any) -> None:
    async with open_node("solo"):
        ft.agents.define_variable(VariableSpec("x", FloatRange(0.0, 1.0), 0.5))
        assert ft.agents.set_variable("x", 0.6, expected_version=0).version == 1
        # one member, itself: a majority of one with no links at all
        ft.agents.define_variable(VariableSpec("y", FloatRange(0.0, 1.0), 0.5, members=["solo"]))
        assert ft.agents.set_variable("y", 0.6, expected_version=0).version == 1


@pytest.mark.parametrize(
    ("members", "error", "text"),
    [
        ((), ValueError, "at least one node"),
        ("abc", TypeError, "collection of node names"),
        (5, TypeError, "collection of node names"),
        (["a", 3], TypeError, "node names (str)"),
        (["a", ""], TypeError, "node names (str)"),
    ],
)
def test_bad_members_are_rejected_by_type(members: Any, error: type, text: str) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        VariableSpec("x", FloatRange(0.0, 1.0), 0.5, members=members)


async def test_a_variable_must_name_its_own_node_among_its_members() -> None:
    async with open_node("d"):
        with pytest.raises(NotAMember, match="do not include this node 'd'") as caught:
            ft.agents.define_variable(SPEC)
        assert isinstance(caught.value, ValueError)
        with pytest.raises(ft.agents.VariableNotFound):
            ft.agents.get_variable("temperature")
