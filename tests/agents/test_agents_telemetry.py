"""The agents layer's telemetry: the exact event sequences of one deterministic round."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from conftest import start_scripted

import foundation_trio as ft
from foundation_trio.agents import (
    Agent,
    AgentSpec,
    IntRange,
    VariableSpec,
    coordinate,
    define_variable,
    vote,
)
from foundation_trio.agents.telemetry import EVENTS

Event = tuple[str, dict[str, float], dict[str, Any]]


def recorder() -> tuple[list[Event], Any]:
    seen: list[Event] = []

    def handler(name: str, measurements: Any, metadata: Any) -> None:
        meta = {k: v for k, v in metadata.items() if k != "context"}
        seen.append((name, dict(measurements), meta))

    return seen, handler


async def test_exact_event_sequence_of_one_voting_round(autojump_clock):
    async with ft.open_node("t"):
        ids = await start_scripted(a=("yes", 0.1), b=("yes", 0.2), c=("no", 0.3))
        seen, handler = recorder()
        ft.telemetry.attach("test", EVENTS, handler)
        await vote("deploy?", ids, options=("yes", "no"), timeout=1, session="s1")
        answered = {"round": "s1", "outcome": "responded"}
        assert seen == [
            (
                "agents.consensus.started",
                {"electorate": 3, "quorum": 0},
                {"session": "s1", "topic": "deploy?", "rule": "majority"},
            ),
            ("agents.round.started", {"participants": 3, "timeout": 1.0}, {"round": "s1"}),
            ("agents.round.answered", {"latency": 0.1}, {**answered, "agent": "a"}),
            ("agents.vote.cast", {}, {"session": "s1", "agent": "a", "choice": "yes"}),
            ("agents.round.answered", {"latency": 0.2}, {**answered, "agent": "b"}),
            ("agents.vote.cast", {}, {"session": "s1", "agent": "b", "choice": "yes"}),
            (
                "agents.round.stopped",
                {
                    "duration": 0.2,
                    "responded": 2,
                    "refused": 0,
                    "timed_out": 0,
                    "crashed": 0,
                    "late": 0,
                    "not_needed": 1,
                },
                {"round": "s1", "ended_early": True},
            ),
            ("agents.protocol.won", {"wins": 1}, {"protocol": "vote", "agent": "a"}),
            ("agents.protocol.won", {"wins": 1}, {"protocol": "vote", "agent": "b"}),
            (
                "agents.consensus.reached",
                {"ballots": 2, "duration": 0.2},
                {"session": "s1", "topic": "deploy?", "choice": "yes"},
            ),
        ]


async def test_exact_event_sequence_of_a_vote_that_times_out(autojump_clock):
    async with ft.open_node("t"):
        ids = await start_scripted(a=("yes", 0.1), h=("hang", 0))
        seen, handler = recorder()
        ft.telemetry.attach("test", EVENTS, handler)
        await vote("deploy?", ids, timeout=1, session="s2")
        assert [name for name, _, _ in seen] == [
            "agents.consensus.started",
            "agents.round.started",
            "agents.round.answered",
            "agents.vote.cast",
            "agents.round.timed_out",
            "agents.round.stopped",
            "agents.consensus.timeout",
            "agents.consensus.failed",
        ]
        assert seen[4][2] == {"round": "s2", "agent": "h"}
        assert seen[-1][2]["status"] == "no_decision"


async def test_exact_event_sequence_of_one_coordinate_round(autojump_clock):
    async with ft.open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 9), 0))
        ids = await start_scripted(a=(1, 0.1), b=(5, 0.2), c=(3, 0.3))
        seen, handler = recorder()
        ft.telemetry.attach("test", EVENTS, handler)
        await coordinate("n", "median", ids, timeout=1)
        answered = {"round": "coordinate:n", "outcome": "responded"}
        assert seen == [
            (
                "agents.coordinate.started",
                {"participants": 3, "version": 0},
                {"variable": "n", "strategy": "median"},
            ),
            (
                "agents.round.started",
                {"participants": 3, "timeout": 1.0},
                {"round": "coordinate:n"},
            ),
            ("agents.round.answered", {"latency": 0.1}, {**answered, "agent": "a"}),
            ("agents.round.answered", {"latency": 0.2}, {**answered, "agent": "b"}),
            (
                "agents.round.answered",
                {"latency": pytest.approx(0.3)},
                {**answered, "agent": "c"},
            ),
            (
                "agents.round.stopped",
                {
                    "duration": pytest.approx(0.3),
                    "responded": 3,
                    "refused": 0,
                    "timed_out": 0,
                    "crashed": 0,
                    "late": 0,
                    "not_needed": 0,
                },
                {"round": "coordinate:n", "ended_early": False},
            ),
            (
                "agents.variable.updated",
                {"version": 1},
                {"variable": "n", "writer": "coordinate:median", "value": 3},
            ),
            (
                "agents.coordinate.committed",
                {"version": 1, "duration": pytest.approx(0.3)},
                {"variable": "n", "strategy": "median", "value": 3},
            ),
        ]


async def test_agent_lifecycle_events(autojump_clock):
    class Crashy(Agent):
        async def handle_cast(self, request: object) -> None:
            raise RuntimeError("boom")

    async with ft.open_node("t"):
        seen, handler = recorder()
        ft.telemetry.attach("test", EVENTS, handler)
        await ft.agents.register_agent(AgentSpec("c", Crashy, max_restarts=1))
        pid = await ft.agents.start_agent("c")
        await ft.cast(pid, "crash")
        await trio.sleep(0.1)
        await ft.cast(ft.agents.whereis_agent("c"), "crash")
        await trio.sleep(0.1)
        await ft.agents.start_agent("c")
        await ft.agents.stop_agent("c")
        names = [(name, meta["agent"]) for name, _, meta in seen]
        assert names == [
            ("agents.agent.started", "c"),
            ("agents.agent.crashed", "c"),
            ("agents.agent.restarted", "c"),
            ("agents.agent.crashed", "c"),
            ("agents.agent.failed", "c"),
            ("agents.agent.started", "c"),
            ("agents.agent.stopped", "c"),
        ]
        assert isinstance(seen[1][2]["reason"], RuntimeError)
        assert seen[2][1] == {"restarts": 1}


async def test_per_agent_latency_timeout_and_win_counts_are_metrics(autojump_clock):
    async with ft.open_node("t"):
        ids = await start_scripted(a=("yes", 0.1), b=("yes", 0.2), c=("no", 0.3), h=("hang", 0))
        for _ in range(2):
            await vote("x", ids, timeout=1)
        found = ft.telemetry.metrics()

        def by_agent(name: str) -> dict[str, Any]:
            return {s.labels["agent"]: s for s in found[name].samples}

        latency = by_agent("agents_answer_latency_seconds")
        assert {k: v.count for k, v in latency.items()} == {"a": 2, "b": 2, "c": 2}
        assert latency["b"].sum == pytest.approx(0.4)
        assert {k: v.value for k, v in by_agent("agents_timeouts_total").items()} == {"h": 2}
        # a and b voted yes, but only 2 of 4: no majority, so nobody won
        assert "agents_wins_total" not in found
        won = await vote("y", ["a", "b", "c"], timeout=1)
        assert won.decided
        wins = {
            (s.labels["protocol"], s.labels["agent"]): s.value
            for s in ft.telemetry.metrics()["agents_wins_total"].samples
        }
        assert wins == {("vote", "a"): 1, ("vote", "b"): 1}
