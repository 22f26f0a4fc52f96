"""The round runner: outcomes, one deadline, isolation, early end, cancellation, coordinators."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
import trio
from _helpers import all_tasks

import foundation_trio as ft
from foundation_trio.agents import (
    Agent,
    AgentNotFound,
    AgentSpec,
    CoordinatorCrashed,
    Crashed,
    Late,
    NotNeeded,
    Refusal,
    Refused,
    Responded,
    TimedOut,
    VoteRequest,
    ranked,
    run_round,
    start_round,
)
from foundation_trio.runtime.node import open_node


class Answerer(Agent):
    """Votes ``value`` after ``delay`` seconds; "hang" never answers, "crash" raises,
    "refuse" refuses."""

    async def setup(self, value: Any, delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay
        self.asked: list[VoteRequest] = []

    async def vote(self, request: VoteRequest) -> Any:
        self.asked.append(request)
        await trio.sleep(self.delay)
        if self.value == "hang":
            await trio.sleep_forever()
        if self.value == "crash":
            raise RuntimeError(f"{self.agent_id} crashed")
        if self.value == "refuse":
            return Refusal("not today")
        return self.value


async def start(**agents: tuple[Any, float]) -> None:
    for agent_id, (value, delay) in agents.items():
        await ft.agents.register_agent(
            AgentSpec(agent_id, Answerer, args=(value, delay), max_restarts=100)
        )
        await ft.agents.start_agent(agent_id)


async def test_every_participant_gets_exactly_one_outcome(autojump_clock):
    async with open_node("t"):
        await start(a=(1, 0.2), b=(2, 0.1), r=("refuse", 0.0), h=("hang", 0.0), c=("crash", 0.3))
        await ft.agents.register_agent(AgentSpec("off", Answerer, args=(9,)))
        now = trio.current_time()
        result = await run_round(
            ["a", "b", "r", "h", "c", "off"], VoteRequest(topic="x"), deadline=now + 1.0
        )
        assert result.participants() == ["a", "b", "r", "h", "c", "off"]
        assert result.outcome("a") == Responded("a", 1, now + 0.2, 2)
        assert result.outcome("b") == Responded("b", 2, now + 0.1, 1)
        assert result.outcome("r") == Refused("r", "not today", now, 0)
        assert result.outcome("h") == TimedOut("h")
        crashed = result.outcome("c")
        assert isinstance(crashed, Crashed) and "c crashed" in str(crashed.error)
        off = result.outcome("off")
        assert isinstance(off, Crashed) and isinstance(off.error, AgentNotFound)
        assert [r.participant for r in result.responses()] == ["b", "a"]
        assert result.counts() == {"Responded": 2, "Refused": 1, "TimedOut": 1, "Crashed": 2}
        # the hanging participant held the round exactly until the deadline, no longer
        assert result.finished_at == now + 1.0
        assert (result.started_at, result.deadline, result.ended_early) == (now, now + 1, False)


async def test_every_question_carries_the_one_absolute_deadline(autojump_clock):
    async with open_node("t"):
        await start(a=(1, 0.0), b=(2, 0.5))
        deadline = trio.current_time() + 3
        await run_round(["a", "b"], VoteRequest(topic="x"), deadline=deadline)
        for agent_id in ("a", "b"):
            pid = ft.agents.whereis_agent(agent_id)
            process = ft.current_node().processes[pid.id]
            (asked,) = process.behaviour.asked  # type: ignore[union-attr]
            assert asked.deadline == deadline
            assert asked.topic == "x"


async def test_a_crash_does_not_cancel_the_others(autojump_clock):
    async with open_node("t"):
        await start(c=("crash", 0.0), slow=(7, 0.9))
        result = await run_round(
            ["c", "slow"], VoteRequest(topic="x"), deadline=trio.current_time() + 1
        )
        assert isinstance(result.outcome("c"), Crashed)
        assert isinstance(result.outcome("slow"), Responded)
        # the crashed agent was restarted by its supervisor meanwhile
        await trio.sleep(0.1)
        assert ft.agents.agent_info("c").restarts == 1


async def test_late_answers_are_recorded_and_never_counted(autojump_clock):
    async with open_node("t"):
        await start(on_time=(1, 0.5), late=(2, 1.5), too_late=(3, 5.0))
        now = trio.current_time()
        result = await run_round(
            ["on_time", "late", "too_late"],
            VoteRequest(topic="x"),
            deadline=now + 1,
            late_grace=2,
        )
        assert result.outcome("late") == Late("late", 2, now + 1.5)
        assert result.outcome("too_late") == TimedOut("too_late")
        assert [r.participant for r in result.responses()] == ["on_time"]
        assert result.finished_at == now + 3


async def test_until_ends_the_round_early_and_pending_participants_are_not_needed(
    autojump_clock,
):
    async with open_node("t"):
        await start(a=("yes", 0.1), b=("yes", 0.2), c=("no", 0.5), h=("hang", 0))
        now = trio.current_time()
        seen: list[int] = []

        def two_yes(outcomes: Any) -> bool:
            seen.append(len(outcomes))
            return sum(isinstance(o, Responded) and o.value == "yes" for o in outcomes) >= 2

        before = all_tasks()
        result = await run_round(
            ["a", "b", "c", "h"], VoteRequest(topic="x"), deadline=now + 10, until=two_yes
        )
        assert result.ended_early
        assert result.finished_at == now + 0.2
        assert result.outcome("c") == NotNeeded("c")
        assert result.outcome("h") == NotNeeded("h")
        assert seen == [1, 2]
        assert all_tasks() == before


async def test_cancelling_the_caller_leaves_no_task_behind(autojump_clock):
    async with open_node("t"):
        await start(a=(1, 0.1), h=("hang", 0), s=(2, 5))
        before = all_tasks()
        with trio.move_on_after(1) as scope:
            await run_round(["a", "h", "s"], VoteRequest(topic="x"), deadline=100.0)
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(1.0)
        assert all_tasks() == before


async def test_an_exception_from_until_propagates_after_every_question_is_cancelled(
    autojump_clock,
):
    async with open_node("t"):
        await start(a=(1, 0.1), h=("hang", 0))
        before = all_tasks()

        def broken(outcomes: Any) -> bool:
            raise KeyError("bad callback")

        with pytest.raises(KeyError, match="bad callback"):
            await run_round(["a", "h"], VoteRequest(topic="x"), deadline=100.0, until=broken)
        assert trio.current_time() == pytest.approx(0.1)
        assert all_tasks() == before


async def test_answers_at_the_same_instant_are_sequenced_by_invitation_order(autojump_clock):
    async with open_node("t"):
        await start(a=(5, 0.1), b=(5, 0.1), c=(5, 0.1), d=(9, 0.2))
        for _ in range(5):
            result = await run_round(
                ["c", "a", "b", "d"], VoteRequest(topic="x"), deadline=trio.current_time() + 1
            )
            assert [(r.participant, r.seq) for r in result.responses()] == [
                ("c", 0),
                ("a", 1),
                ("b", 2),
                ("d", 3),
            ]


async def test_a_seeded_rng_shuffles_the_invitation_order_reproducibly(autojump_clock):
    async with open_node("t"):
        ids = [f"a{i}" for i in range(8)]
        await start(**{i: (1, 0.1) for i in ids})

        async def order(seed: int) -> list[str]:
            result = await run_round(
                ids,
                VoteRequest(topic="x"),
                deadline=trio.current_time() + 1,
                rng=random.Random(seed),
            )
            return [r.participant for r in result.responses()]

        assert await order(7) == await order(7)
        assert await order(7) != await order(8)
        assert sorted(await order(7)) == sorted(ids)


def test_ranked_breaks_ties_by_amount_then_seq_then_participant():
    responses = [
        Responded("b", 10.0, 0.0, 3),
        Responded("a", 10.0, 0.0, 3),
        Responded("c", 10.0, 0.0, 1),
        Responded("d", 12.0, 0.0, 9),
        Responded("e", 1.0, 0.0, 0),
    ]
    assert [r.participant for r in ranked(responses)] == ["d", "c", "a", "b", "e"]
    low = ranked(responses, higher_is_better=False)
    assert [r.participant for r in low] == ["e", "c", "a", "b", "d"]


async def test_participants_may_be_pids_or_a_mapping_of_targets(autojump_clock):
    async with open_node("t"):
        await start(a=(1, 0), b=(2, 0))
        pid_a = ft.agents.whereis_agent("a")
        pid_b = ft.agents.whereis_agent("b")
        ft.register("bee", pid_b)
        by_pid = await run_round([pid_a], VoteRequest(topic="x"), deadline=trio.current_time() + 1)
        assert by_pid.outcome(str(pid_a)) == Responded(str(pid_a), 1, trio.current_time(), 0)
        mapped = await run_round(
            {"first": pid_a, "second": "bee"},
            lambda pid: VoteRequest(topic=pid),
            deadline=trio.current_time() + 1,
        )
        assert [r.value for r in mapped.responses()] == [1, 2]
        remote = await run_round(
            [("bee", "elsewhere")], VoteRequest(topic="x"), deadline=trio.current_time() + 1
        )
        assert isinstance(remote.outcome("bee@elsewhere"), Crashed)


async def test_bad_arguments_raise_typed_errors_before_anyone_is_asked():
    async with open_node("t"):
        await start(a=(1, 0))
        now = trio.current_time()
        q = VoteRequest(topic="x")
        with pytest.raises(AgentNotFound):
            await run_round(["a", "ghost"], q, deadline=now + 1)
        with pytest.raises(ValueError, match="twice"):
            await run_round(["a", "a"], q, deadline=now + 1)
        with pytest.raises(TypeError, match="deadline"):
            await run_round(["a"], q, deadline="soon")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="deadline"):
            await run_round(["a"], q, deadline=float("nan"))
        with pytest.raises(ValueError, match="late_grace"):
            await run_round(["a"], q, deadline=now + 1, late_grace=-1)
        with pytest.raises(TypeError, match="question"):
            await run_round(["a"], "vote?", deadline=now + 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="participant"):
            await run_round([3.5], q, deadline=now + 1)  # type: ignore[list-item]
        with pytest.raises(TypeError, match="rng"):
            await run_round(["a"], q, deadline=now + 1, rng=7)  # type: ignore[arg-type]
        pid = ft.agents.whereis_agent("a")
        assert ft.current_node().processes[pid.id].behaviour.asked == []  # type: ignore[union-attr]


async def test_run_round_outside_a_node_raises_no_node_error():
    with pytest.raises(ft.NoNodeError):
        await run_round([], VoteRequest(topic="x"), deadline=1.0)


# -- coordinators ------------------------------------------------------------------------


async def test_every_waiter_gets_the_coordinated_result(autojump_clock):
    async with open_node("t"):
        await start(a=(1, 0.5), b=(2, 0.1))
        job = functools.partial(
            run_round, ["a", "b"], VoteRequest(topic="x"), deadline=trio.current_time() + 1
        )
        handle = start_round(job, what="the test round")
        results: list[Any] = []

        async def wait() -> None:
            results.append(await handle.result())

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(wait)
        assert len(results) == 3
        assert all(r is results[0] for r in results)
        assert [r.value for r in results[0].responses()] == [2, 1]
        assert handle.done


@pytest.mark.parametrize("how", ["raises", "killed", "cancelled"])
async def test_a_crashed_coordinator_wakes_every_waiter_with_a_typed_error(autojump_clock, how):
    async with open_node("t"):
        await start(h=("hang", 0))

        async def job() -> Any:
            def until(outcomes: Any) -> bool:
                raise RuntimeError("coordinator bug")

            if how == "raises":
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep, 0.5)
                raise RuntimeError("coordinator bug")
            return await run_round(["h"], VoteRequest(topic="x"), deadline=100.0)

        handle = start_round(job, what="the doomed round")
        errors: list[BaseException] = []

        async def wait() -> None:
            try:
                await handle.result()
            except CoordinatorCrashed as exc:
                errors.append(exc)

        before = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(wait)
            await trio.sleep(1)
            if how == "killed":
                assert handle.pid is not None
                ft.exit(handle.pid, ft.KILLED)
            elif how == "cancelled":
                handle.cancel()
        assert len(errors) == 4
        assert "the doomed round" in str(errors[0])
        if how == "raises":
            assert isinstance(errors[0].reason, RuntimeError)  # type: ignore[attr-defined]
            assert trio.current_time() == pytest.approx(before + 1)
        elif how == "killed":
            assert errors[0].reason == ft.KILLED  # type: ignore[attr-defined]
        assert handle.pid is not None and not ft.is_alive(handle.pid)
