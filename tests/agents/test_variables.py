"""Universal variables: domains, compare-and-set, access, history, ordered subscriptions."""

from __future__ import annotations

import math

import pytest
import trio

import foundation_trio as ft
from foundation_trio.agents import (
    Agent,
    AgentSpec,
    Choice,
    Composite,
    DuplicateVariable,
    FloatRange,
    IntRange,
    Lagged,
    OutOfDomain,
    PermissionDenied,
    VariableNotFound,
    VariableSpec,
    VersionConflict,
    define_variable,
    get_variable,
    set_variable,
    subscribe_variable,
    variable_history,
)
from foundation_trio.agents.variables import variable_store
from foundation_trio.runtime.node import open_node

TEMPERATURE = VariableSpec("temperature", FloatRange(0.0, 2.0), 0.7)


@pytest.mark.parametrize(
    ("domain", "good", "bad"),
    [
        (FloatRange(0.0, 2.0), [0, 0.0, 1.5, 2], [-0.1, 2.01, math.nan, math.inf, "1", True]),
        (IntRange(1, 5), [1, 3, 5], [0, 6, 2.0, True, "2"]),
        (Choice(("gpt", "claude")), ["gpt", "claude"], ["x", None, ["gpt"]]),
        (
            Composite({"model": Choice(("a", "b")), "tokens": IntRange(1, 10)}),
            [{"model": "a", "tokens": 3}],
            [{"model": "a"}, {"model": "c", "tokens": 3}, {"model": "a", "tokens": 3, "x": 1}, 3],
        ),
    ],
)
async def test_writes_outside_the_domain_are_rejected(domain, good, bad):
    async with open_node("t"):
        define_variable(VariableSpec("v", domain, good[0]))
        for value in good:
            version = get_variable("v").version
            assert set_variable("v", value, expected_version=version).version == version + 1
        committed = get_variable("v")
        for value in bad:
            with pytest.raises(OutOfDomain, match="'v'"):
                set_variable("v", value, expected_version=committed.version)
        assert get_variable("v") == committed


def test_specs_validate_their_fields():
    with pytest.raises(OutOfDomain, match="default"):
        VariableSpec("v", IntRange(0, 3), 9)
    with pytest.raises(ValueError, match="low <= high"):
        FloatRange(2.0, 1.0)
    with pytest.raises(TypeError, match="domain"):
        VariableSpec("v", (0, 1), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="writers"):
        VariableSpec("v", IntRange(0, 3), 0, writers="agent")
    with pytest.raises(ValueError, match="history"):
        VariableSpec("v", IntRange(0, 3), 0, history=0)
    with pytest.raises(ValueError, match="distinct"):
        Choice(("a", "a"))


async def test_compare_and_set_rises_the_version_by_one_and_refuses_stale_writes():
    async with open_node("t"):
        assert define_variable(TEMPERATURE).version == 0
        with pytest.raises(DuplicateVariable):
            define_variable(TEMPERATURE)
        first = set_variable("temperature", 0.9, expected_version=0)
        assert (first.value, first.version) == (0.9, 1)
        with pytest.raises(VersionConflict) as info:
            set_variable("temperature", 1.1, expected_version=0)
        assert (info.value.expected, info.value.actual) == (0, 1)
        assert get_variable("temperature").value == 0.9
        with pytest.raises(TypeError, match="expected_version"):
            set_variable("temperature", 1.0, expected_version=-1)
        with pytest.raises(VariableNotFound):
            get_variable("pressure")


async def test_only_listed_agents_may_write():
    class Writer(Agent):
        async def handle_call(self, request, caller):
            if isinstance(request, tuple):
                name, value, version = request
                try:
                    return set_variable(name, value, expected_version=version).writer
                except PermissionDenied as exc:
                    return exc
            return await super().handle_call(request, caller)

    async with open_node("t"):
        define_variable(VariableSpec("locked", IntRange(0, 9), 0, writers={"alice"}))
        for agent_id in ("alice", "bob"):
            await ft.agents.register_agent(AgentSpec(agent_id, Writer))
            await ft.agents.start_agent(agent_id)
        refused = await ft.call(ft.agents.whereis_agent("bob"), ("locked", 1, 0))
        assert isinstance(refused, PermissionDenied)
        assert "'bob'" in str(refused)
        assert await ft.call(ft.agents.whereis_agent("alice"), ("locked", 1, 0)) == "alice"
        with pytest.raises(PermissionDenied):  # the shell is no agent
            set_variable("locked", 2, expected_version=1)
        assert get_variable("locked").version == 1


async def test_history_is_bounded_and_in_order():
    async with open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 100), 0, history=3))
        for i in range(1, 6):
            set_variable("n", i, expected_version=i - 1)
        assert [(u.version, u.value) for u in variable_history("n")] == [(3, 3), (4, 4), (5, 5)]


async def test_subscribers_get_every_version_once_in_order_or_a_lagged_marker():
    async with open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 100), 0))
        fast = subscribe_variable("n", buffer=100)
        slow = subscribe_variable("n", buffer=2)
        for i in range(1, 8):
            set_variable("n", i, expected_version=i - 1)
        got_fast = [fast.receive_nowait() for _ in range(7)]
        assert [u.version for u in got_fast] == list(range(1, 8))
        with pytest.raises(trio.WouldBlock):
            fast.receive_nowait()
        assert [slow.receive_nowait().version for _ in range(2)] == [1, 2]
        set_variable("n", 8, expected_version=7)
        assert slow.receive_nowait() == Lagged(5)  # versions 3..7 were dropped
        assert slow.receive_nowait().version == 8


async def test_closed_subscribers_are_dropped_and_a_dead_agents_subscriptions_released():
    class Subscriber(Agent):
        async def setup(self) -> None:
            self.channel = subscribe_variable("n")

    async with open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 100), 0))
        subscribers = variable_store().get("n").subscribers
        mine = subscribe_variable("n")
        await ft.agents.register_agent(AgentSpec("s", Subscriber, restart=ft.TEMPORARY))
        pid = await ft.agents.start_agent("s")
        assert len(subscribers) == 2
        mine.close()
        set_variable("n", 1, expected_version=0)
        assert len(subscribers) == 1
        ft.exit(pid, ft.KILLED)
        await trio.sleep(0.01)
        set_variable("n", 2, expected_version=1)
        assert len(subscribers) == 0


async def test_version_rises_by_exactly_one_per_commit_under_concurrent_writers(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 10_000), 0))
        channel = subscribe_variable("n", buffer=10_000)
        commits = conflicts = 0

        async def writer(k: int) -> None:
            nonlocal commits, conflicts
            for _ in range(50):
                current = get_variable("n")
                await trio.sleep(0.001 * k)
                try:
                    set_variable("n", current.value + 1, expected_version=current.version)
                    commits += 1
                except VersionConflict:
                    conflicts += 1

        async with trio.open_nursery() as nursery:
            for k in range(1, 6):
                nursery.start_soon(writer, k)
        final = get_variable("n")
        assert final.version == commits == final.value
        assert conflicts > 0
        versions = [channel.receive_nowait().version for _ in range(commits)]
        assert versions == list(range(1, commits + 1))
