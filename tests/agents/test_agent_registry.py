"""Agents: specs, lifecycle and statuses, the directory, capability search, health."""

from __future__ import annotations

import math

import pytest
import trio

import foundation_trio as ft
from foundation_trio.agents import (
    Agent,
    AgentAlreadyRunning,
    AgentNotFound,
    AgentNotRunning,
    AgentSpec,
    AgentStatus,
    DuplicateAgent,
    HealthCheck,
    Refusal,
    VoteRequest,
)
from foundation_trio.runtime.node import open_node


class Quiet(Agent):
    pass


class Crashy(Agent):
    async def handle_cast(self, request: object) -> None:
        if request == "crash":
            raise RuntimeError("boom")


class BadSetup(Agent):
    async def setup(self) -> None:
        raise ValueError("cannot start")


class Health(Agent):
    async def setup(self, answers: list[object]) -> None:
        self.answers = answers

    async def health(self, check: HealthCheck) -> bool:
        answer = self.answers.pop(0) if self.answers else True
        if answer == "hang":
            await trio.sleep_forever()
        return answer is True


# -- specs ------------------------------------------------------------------------------


def test_agent_spec_defaults_and_frozen_capabilities():
    spec = AgentSpec("a", Quiet, capabilities=["x", "y"], metadata={"k": 1})
    assert spec.capabilities == frozenset({"x", "y"})
    assert spec.restart is ft.PERMANENT
    assert (spec.max_restarts, spec.max_seconds, spec.health_interval) == (3, 5.0, None)
    with pytest.raises(TypeError):
        spec.metadata["k"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"id": ""}, TypeError, "id"),
        ({"id": 3}, TypeError, "id"),
        ({"agent": int}, TypeError, "agent"),
        ({"capabilities": "search"}, TypeError, "capabilities"),
        ({"capabilities": [1]}, TypeError, "capabilities"),
        ({"restart": "sometimes"}, ValueError, "restart"),
        ({"max_restarts": -1}, ValueError, "max_restarts"),
        ({"max_seconds": 0}, ValueError, "max_seconds"),
        ({"health_interval": math.inf}, ValueError, "health_interval"),
        ({"metadata": [1]}, TypeError, "metadata"),
        ({"shutdown": -1}, ValueError, "shutdown"),
    ],
)
def test_agent_spec_rejects_bad_fields_naming_them(kwargs, error, field):
    args = {"id": "a", "agent": Quiet, **kwargs}
    with pytest.raises(error, match=field):
        AgentSpec(args.pop("id"), args.pop("agent"), **args)


# -- lifecycle --------------------------------------------------------------------------


async def test_register_start_stop_and_typed_lifecycle_errors():
    async with open_node("t"):
        await ft.agents.register_agent(AgentSpec("a", Quiet))
        assert ft.agents.agent_status("a") is AgentStatus.STOPPED
        with pytest.raises(DuplicateAgent, match="'a'"):
            await ft.agents.register_agent(AgentSpec("a", Quiet))
        with pytest.raises(AgentNotRunning):
            await ft.agents.stop_agent("a")
        pid = await ft.agents.start_agent("a")
        assert ft.is_alive(pid)
        assert ft.agents.agent_status("a") is AgentStatus.RUNNING
        assert ft.agents.whereis_agent("a") == pid
        with pytest.raises(AgentAlreadyRunning, match="running"):
            await ft.agents.start_agent("a")
        await ft.agents.stop_agent("a")
        assert not ft.is_alive(pid)
        assert ft.agents.agent_status("a") is AgentStatus.STOPPED
        with pytest.raises(AgentNotRunning, match="stopped"):
            await ft.agents.stop_agent("a")
        # stopped agents start again
        again = await ft.agents.start_agent("a")
        assert again != pid
        with pytest.raises(AgentNotFound):
            await ft.agents.start_agent("nobody")
        with pytest.raises(AgentNotFound):
            ft.agents.agent_status("nobody")
        with pytest.raises(AgentNotFound):
            ft.agents.whereis_agent("nobody")
        await ft.agents.unregister_agent("a")
        assert ft.agents.list_agents() == []
        assert not ft.is_alive(again)


async def test_status_is_starting_while_setup_runs(autojump_clock):
    class Slow(Agent):
        async def setup(self) -> None:
            await trio.sleep(1)

    async with open_node("t"):
        await ft.agents.register_agent(AgentSpec("slow", Slow))
        seen: list[AgentStatus] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ft.agents.start_agent, "slow")
            await trio.sleep(0.5)
            seen.append(ft.agents.agent_status("slow"))
            with pytest.raises(AgentAlreadyRunning, match="starting"):
                await ft.agents.start_agent("slow")
        seen.append(ft.agents.agent_status("slow"))
        assert seen == [AgentStatus.STARTING, AgentStatus.RUNNING]


async def test_setup_failure_marks_the_agent_failed():
    async with open_node("t"):
        await ft.agents.register_agent(AgentSpec("bad", BadSetup))
        with pytest.raises(ft.StartError, match="cannot start"):
            await ft.agents.start_agent("bad")
        assert ft.agents.agent_status("bad") is AgentStatus.FAILED
        assert ft.agents.find_agents() == []


async def test_a_stuck_agent_holds_up_its_stop_no_longer_than_its_shutdown_time(
    autojump_clock,
):
    class Stuck(Agent):
        async def handle_cast(self, request: object) -> None:
            await trio.sleep_forever()

    async with open_node("t"):
        await ft.agents.register_agent(AgentSpec("s", Stuck, shutdown=0.5))
        await ft.cast(await ft.agents.start_agent("s"), "hang")
        start = trio.current_time()
        await ft.agents.stop_agent("s")
        assert trio.current_time() == pytest.approx(start + 0.5)
        assert ft.agents.agent_status("s") is AgentStatus.STOPPED


async def test_crashed_agent_is_restarted_and_counted(autojump_clock):
    async with open_node("t"):
        await ft.agents.register_agent(AgentSpec("c", Crashy))
        first = await ft.agents.start_agent("c")
        await ft.cast(first, "crash")
        await trio.sleep(0.1)
        info = ft.agents.agent_info("c")
        assert info.status is AgentStatus.RUNNING
        assert info.pid is not None and info.pid != first
        assert info.restarts == 1
        assert isinstance(info.last_exit, RuntimeError)


async def test_crash_storm_escalates_instead_of_retrying_for_ever(autojump_clock):
    async with open_node("t"):
        spec = AgentSpec("storm", Crashy, max_restarts=2, max_seconds=10)
        await ft.agents.register_agent(spec)
        await ft.agents.register_agent(AgentSpec("bystander", Quiet))
        bystander = await ft.agents.start_agent("bystander")
        await ft.agents.start_agent("storm")
        crashes = 0
        while ft.agents.agent_status("storm") is not AgentStatus.FAILED:
            pid = ft.agents.whereis_agent("storm")
            await ft.cast(pid, "crash")
            crashes += 1
            await trio.sleep(0.01)
            assert crashes <= 3, "the agent was restarted past its restart intensity"
        assert crashes == 3  # max_restarts=2: the third crash within the window gives up
        assert ft.agents.agent_info("storm").restarts == 2
        with pytest.raises(AgentNotFound, match="not running"):
            ft.agents.whereis_agent("storm")
        # its own supervisor is gone, the agents supervisor and the other agent are not
        await trio.sleep(1)
        assert ft.agents.agent_status("storm") is AgentStatus.FAILED
        assert ft.agents.whereis_agent("bystander") == bystander
        with pytest.raises(AgentNotRunning, match="failed"):
            await ft.agents.stop_agent("storm")
        # a failed agent can be started again by hand
        await ft.agents.start_agent("storm")
        assert ft.agents.agent_status("storm") is AgentStatus.RUNNING


async def test_temporary_agent_that_crashes_is_failed_and_transient_normal_exit_stopped(
    autojump_clock,
):
    class Quits(Agent):
        async def handle_cast(self, request: object) -> None:
            if request == "crash":
                raise RuntimeError("x")
            self.stop()

    async with open_node("t"):
        await ft.agents.register_agent(AgentSpec("tmp", Quits, restart=ft.TEMPORARY))
        await ft.agents.register_agent(AgentSpec("tr", Quits, restart=ft.TRANSIENT))
        await ft.cast(await ft.agents.start_agent("tmp"), "crash")
        await ft.cast(await ft.agents.start_agent("tr"), "quit")
        await trio.sleep(0.1)
        assert ft.agents.agent_status("tmp") is AgentStatus.FAILED
        assert ft.agents.agent_status("tr") is AgentStatus.STOPPED
        assert ft.agents.find_agents() == []


# -- the directory ------------------------------------------------------------------------


async def test_capability_search_returns_the_intersection():
    async with open_node("t"):
        for agent_id, caps in [("a", {"x", "y"}), ("b", {"y"}), ("c", {"x", "y", "z"})]:
            await ft.agents.register_agent(AgentSpec(agent_id, Quiet, capabilities=caps))
            await ft.agents.start_agent(agent_id)
        await ft.agents.register_agent(AgentSpec("idle", Quiet, capabilities={"x", "y"}))
        assert ft.agents.find_agents(["x", "y"]) == ["a", "c"]
        assert ft.agents.find_agents("y") == ["a", "b", "c"]
        assert ft.agents.find_agents(["x", "z"]) == ["c"]
        assert ft.agents.find_agents(["w"]) == []
        assert ft.agents.find_agents() == ["a", "b", "c"]  # "idle" is not running
        with pytest.raises(TypeError):
            ft.agents.find_agents([1])  # type: ignore[list-item]


async def test_dead_agent_is_never_handed_out_even_before_its_supervisor_reacts():
    async with open_node("t"):
        await ft.agents.register_agent(
            AgentSpec("a", Quiet, capabilities={"x"}, max_restarts=1000)
        )
        for _ in range(20):
            pid = ft.agents.whereis_agent("a") if ft.agents.find_agents("x") else None
            if pid is None:
                pid = (
                    await ft.agents.start_agent("a")
                    if ft.agents.agent_status("a") is AgentStatus.STOPPED
                    else None
                )
                await trio.lowlevel.checkpoint()
                continue
            ref = ft.monitor(pid)
            ft.exit(pid, ft.KILLED)
            # Down arrives in the same step as the exit, in a batch where the agent's
            # supervisor may or may not have run yet: either way the dead pid is gone.
            await ft.receive(lambda m, ref=ref: isinstance(m, ft.Down) and m.ref == ref)
            assert not ft.is_alive(pid)
            assert ft.agents.agent_status("a") in (AgentStatus.RESTARTING, AgentStatus.RUNNING)
            try:
                handed = ft.agents.whereis_agent("a")
            except AgentNotFound:
                assert ft.agents.find_agents("x") == []
                assert ft.agents.agent_info("a").pid is None
            else:
                assert handed != pid and ft.is_alive(handed)
            await trio.sleep(0.001)
        # and once restarted, the new incarnation is handed out
        new = ft.agents.whereis_agent("a")
        assert ft.is_alive(new)
        assert ft.agents.agent_info("a").restarts >= 19


async def test_agent_answers_questions_by_double_dispatch_and_refuses_by_default():
    class Voter(Agent):
        async def vote(self, request: VoteRequest) -> str:
            return f"{self.agent_id}:{request.topic}"

    async with open_node("t"):
        await ft.agents.register_agent(AgentSpec("v", Voter))
        await ft.agents.register_agent(AgentSpec("q", Quiet))
        v = await ft.agents.start_agent("v")
        q = await ft.agents.start_agent("q")
        assert await ft.call(v, VoteRequest(topic="lunch")) == "v:lunch"
        refusal = await ft.call(q, VoteRequest(topic="lunch"))
        assert isinstance(refusal, Refusal)
        assert "does not vote" in refusal.reason


# -- health -----------------------------------------------------------------------------


async def test_health_checks_run_every_interval_and_record_failures(autojump_clock):
    async with open_node("t"):
        answers: list[object] = [True, False, True, "hang"]
        spec = AgentSpec("h", Health, health_interval=10, args=(answers,))
        await ft.agents.register_agent(spec)
        start = trio.current_time()
        await ft.agents.start_agent("h")
        assert ft.agents.agent_info("h").health.healthy is None
        await trio.sleep(10.5)
        health = ft.agents.agent_info("h").health
        assert health.healthy is True
        assert health.checked_at == pytest.approx(start + 10)
        await trio.sleep(10)
        health = ft.agents.agent_info("h").health
        assert (health.healthy, health.consecutive_failures) == (False, 1)
        assert "False" in health.detail
        await trio.sleep(10)
        health = ft.agents.agent_info("h").health
        assert (health.healthy, health.consecutive_failures) == (True, 0)
        # a hanging check times out after one interval; the stuck agent stays unhealthy
        await trio.sleep(20)
        health = ft.agents.agent_info("h").health
        assert (health.healthy, health.consecutive_failures) == (False, 1)
        assert "no answer within 10 s" in health.detail
        assert health.checked_at == pytest.approx(start + 50)
        await trio.sleep(10)
        assert ft.agents.agent_info("h").health.consecutive_failures == 2


async def test_the_agent_system_adds_no_node_wide_hooks_and_ignores_foreign_incarnations():
    async with open_node("t"):
        await ft.agents.register_agent(AgentSpec("a", Quiet))
        await ft.agents.start_agent("a")
        # statuses come from the agents and from exit hooks: nothing slows down
        # every other process start and exit on the node
        assert ft.current_node().lifecycle_hooks == []
        await ft.agents.register_agent(AgentSpec("b", Quiet))
        # the same class started by hand, outside the agent system, is not agent "b"
        stray = await ft.start_server(Quiet, AgentSpec("b", Quiet))
        assert ft.agents.agent_status("b") is AgentStatus.STOPPED
        with pytest.raises(AgentNotFound):
            ft.agents.whereis_agent("b")
        await ft.stop(stray)
        assert ft.agents.agent_status("b") is AgentStatus.STOPPED
