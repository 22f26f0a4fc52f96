"""Random sequences of agent lifecycle operations against a model of what each must do.

Each example runs in one trio run under a MockClock: register, start, stop, crash,
unregister and waiting, on three agents, and after every step the directory, the
statuses, the typed errors and the process count agree with the model.
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

import foundation_trio as ft
from foundation_trio.agents import (
    Agent,
    AgentAlreadyRunning,
    AgentNotFound,
    AgentNotRunning,
    AgentSpec,
    AgentStatus,
    DuplicateAgent,
)
from foundation_trio.runtime.node import open_node

IDS = ("a", "b")
MAX_RESTARTS = 2
WINDOW = 10.0


class Fragile(Agent):
    async def handle_cast(self, request: object) -> None:
        raise RuntimeError("crash on request")


operations = st.lists(
    st.tuples(
        # crashes weigh more, so that crash storms (three within the window) happen
        st.sampled_from(
            ["register", "start", "stop", "crash", "crash", "crash", "unregister", "wait"]
        ),
        st.sampled_from(IDS),
    ),
    min_size=8,
    max_size=30,
)


class Model:
    """What the agent system must say: status per registered id, and crash times of the
    current incarnation of each agent's supervisor (its restart-intensity window)."""

    def __init__(self) -> None:
        self.status: dict[str, AgentStatus] = {}
        self.crashes: dict[str, list[float]] = {}


async def run(ops: list[tuple[str, str]]) -> None:
    async with open_node("m"):
        model = Model()
        baseline: int | None = None
        for op, agent_id in ops:
            now = trio.current_time()
            known = agent_id in model.status
            status = model.status.get(agent_id)
            if op == "register":
                if known:
                    try:
                        await ft.agents.register_agent(AgentSpec(agent_id, Fragile))
                    except DuplicateAgent:
                        pass
                    else:
                        raise AssertionError("duplicate register accepted")
                else:
                    await ft.agents.register_agent(
                        AgentSpec(agent_id, Fragile, max_restarts=MAX_RESTARTS, max_seconds=WINDOW)
                    )
                    model.status[agent_id] = AgentStatus.STOPPED
                    if baseline is None:
                        baseline = len(ft.processes())
            elif op == "start":
                try:
                    await ft.agents.start_agent(agent_id)
                except AgentNotFound:
                    assert not known
                except AgentAlreadyRunning:
                    assert status is AgentStatus.RUNNING
                else:
                    assert status in (AgentStatus.STOPPED, AgentStatus.FAILED)
                    model.status[agent_id] = AgentStatus.RUNNING
                    model.crashes[agent_id] = []
            elif op == "stop":
                try:
                    await ft.agents.stop_agent(agent_id)
                except AgentNotFound:
                    assert not known
                except AgentNotRunning:
                    assert status in (AgentStatus.STOPPED, AgentStatus.FAILED)
                else:
                    assert status is AgentStatus.RUNNING
                    model.status[agent_id] = AgentStatus.STOPPED
            elif op == "unregister":
                try:
                    await ft.agents.unregister_agent(agent_id)
                except AgentNotFound:
                    assert not known
                else:
                    del model.status[agent_id]
            elif op == "crash" and status is AgentStatus.RUNNING:
                await ft.cast(ft.agents.whereis_agent(agent_id), "crash")
                window = [t for t in model.crashes[agent_id] if now - t < WINDOW]
                window.append(now)
                model.crashes[agent_id] = window
                if len(window) > MAX_RESTARTS:
                    model.status[agent_id] = AgentStatus.FAILED
            elif op == "wait":
                await trio.sleep(4.0)
            await trio.sleep(0.01)  # let supervisors react
            check(model, baseline)


def check(model: Model, baseline: int | None) -> None:
    assert ft.agents.list_agents() == list(model.status)  # registration order
    running = sorted(i for i, s in model.status.items() if s is AgentStatus.RUNNING)
    assert sorted(ft.agents.find_agents()) == running
    for agent_id in IDS:
        if agent_id not in model.status:
            try:
                ft.agents.agent_status(agent_id)
            except AgentNotFound:
                continue
            raise AssertionError(f"{agent_id} should be unknown")
        assert ft.agents.agent_status(agent_id) is model.status[agent_id], agent_id
        if model.status[agent_id] is AgentStatus.RUNNING:
            assert ft.is_alive(ft.agents.whereis_agent(agent_id))
    if baseline is not None:
        # each running agent is two processes (itself and its own supervisor); nothing leaks
        assert len(ft.processes()) == baseline + 2 * len(running)


@settings(max_examples=120, deadline=None)
@example(
    # a crash storm, a restart by hand, crashes spread past the window
    ops=[
        *[("register", "a"), ("start", "a"), ("crash", "a"), ("crash", "a"), ("crash", "a")],
        *[("start", "a"), ("crash", "a"), ("wait", "a"), ("wait", "a"), ("crash", "a")],
        *[("wait", "a"), ("wait", "a"), ("crash", "a"), ("stop", "a"), ("unregister", "a")],
    ]
)
@given(ops=operations)
def test_agent_lifecycle_matches_the_model(ops):
    trio.run(run, ops, clock=trio.testing.MockClock(autojump_threshold=0))
