"""The voting driver: asks the agents, counts over the electorate, ends when fixed,
losing agents abstain, Byzantine checks, coordinator crashes wake every waiter."""

from __future__ import annotations

import random

import pytest
import trio
from _helpers import all_tasks
from conftest import start_scripted

import foundation_trio as ft
from foundation_trio.agents import (
    CoordinatorCrashed,
    Crashed,
    NotNeeded,
    Refused,
    TimedOut,
    start_vote,
    vote,
)
from foundation_trio.protocols.voting import InsufficientParticipants
from foundation_trio.runtime.node import open_node


async def test_majority_is_decided_as_soon_as_it_is_fixed(autojump_clock):
    async with open_node("t"):
        ids = await start_scripted(
            a=("yes", 0.1), b=("no", 0.2), c=("yes", 0.3), d=("yes", 0.4), e=("hang", 0)
        )
        start = trio.current_time()
        result = await vote("deploy?", ids, options=("yes", "no"), timeout=10)
        assert (result.status, result.choice) == ("decided", "yes")
        assert result.early and result.finished_at == pytest.approx(start + 0.4)
        assert (result.ballots, result.abstentions, result.pending) == (4, 0, 1)
        assert result.round.outcome("e") == NotNeeded("e")
        assert result.tally == (("yes", 3.0), ("no", 1.0))


async def test_thresholds_use_the_electorate_and_the_deadline_closes_the_vote(autojump_clock):
    async with open_node("t"):
        ids = await start_scripted(a=("yes", 0.1), b=("yes", 0.1), c=("hang", 0), d=("hang", 0))
        start = trio.current_time()
        result = await vote("deploy?", ids, timeout=2)
        # 2 of 2 ballots, but 2 of 4 members is not more than half
        assert (result.status, result.choice) == ("no_decision", None)
        assert result.finished_at == pytest.approx(start + 2)
        assert result.round.participants(TimedOut) == ["c", "d"]
        assert "majority" in result.reason


async def test_losing_agents_abstain_and_end_the_vote_once_quorum_is_impossible(autojump_clock):
    async with open_node("t"):
        ids = await start_scripted(
            a=("yes", 0.1), b=("crash", 0.2), c=("crash", 0.3), d=("yes", 9), e=("refuse", 0)
        )
        start = trio.current_time()
        result = await vote("deploy?", ids, quorum=4, timeout=10)
        # e refuses (abstains) at once; when b crashes at 0.2, 1 ballot + 2 pending
        # can no longer reach the quorum of 4: the vote ends there
        assert result.status == "no_quorum"
        assert result.finished_at == pytest.approx(start + 0.2)
        assert isinstance(result.round.outcome("b"), Crashed)
        assert isinstance(result.round.outcome("e"), Refused)
        assert result.round.outcome("c") == NotNeeded("c")
        assert (result.ballots, result.abstentions, result.pending) == (1, 2, 2)


async def test_invalid_ballots_are_rejected_and_count_as_abstentions(autojump_clock):
    async with open_node("t"):
        ids = await start_scripted(a=("maybe", 0.1), b=(["unhashable"], 0.2), c=("yes", 0))
        result = await vote("deploy?", ids, options=("yes", "no"), timeout=1)
        assert result.status == "no_decision"
        assert (result.ballots, result.abstentions) == (1, 2)


async def test_byzantine_mode_refuses_too_few_members_before_asking(autojump_clock):
    async with open_node("t"):
        ids = await start_scripted(a=(1, 0), b=(1, 0), c=(1, 0))
        with pytest.raises(InsufficientParticipants, match="3 participants, at least 4"):
            await vote("x", ids, byzantine_f=1, timeout=1)
        more = await start_scripted(d=(1, 0))
        result = await vote("x", ids + more, byzantine_f=1, timeout=1)
        assert result.decided and result.ballots == 3  # quorum 2f + 1 = 3 reached


async def test_weighted_and_supermajority_rules(autojump_clock):
    async with open_node("t"):
        ids = await start_scripted(a=("x", 0), b=("y", 0), c=("y", 0))
        weighted = await vote(
            "w", ids, rule="weighted", weights={"a": 3, "b": 1, "c": 1}, timeout=1
        )
        assert weighted.choice == "x"
        superm = await vote("s", ids, rule="supermajority", supermajority=(3, 4), timeout=1)
        assert superm.status == "no_decision"


async def test_the_result_does_not_depend_on_the_order_votes_arrive(autojump_clock):
    async with open_node("t"):
        ballots = ["yes", "no", "yes", "no", "yes", "refuse", "yes"]
        outcomes = set()
        for seed in range(6):
            rng = random.Random(seed)
            delays = [rng.random() for _ in ballots]
            ids = await start_scripted(
                **{
                    f"s{seed}m{i}": (b, d)
                    for i, (b, d) in enumerate(zip(ballots, delays, strict=True))
                }
            )
            result = await vote(
                "order", ids, rule="supermajority", supermajority=(4, 7), timeout=5
            )
            outcomes.add((result.status, result.choice))
        assert outcomes == {("decided", "yes")}


async def test_cancelling_a_vote_leaves_no_task_behind(autojump_clock):
    async with open_node("t"):
        ids = await start_scripted(a=("yes", 0.5), b=("hang", 0))
        before = all_tasks()
        with trio.move_on_after(1):
            await vote("x", ids, timeout=100)
        assert all_tasks() == before


async def test_a_crashed_vote_coordinator_wakes_every_waiter(autojump_clock):
    async with open_node("t"):
        ids = await start_scripted(a=("yes", 0.1), b=("hang", 0), c=("hang", 0))
        handle = start_vote("deploy?", ids, timeout=100)
        woken: list[BaseException] = []

        async def waiter() -> None:
            try:
                await handle.result()
            except CoordinatorCrashed as exc:
                woken.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(waiter)
            await trio.sleep(1)
            assert handle.pid is not None
            ft.exit(handle.pid, RuntimeError("coordinator node lost"))
        assert len(woken) == 5
        assert isinstance(woken[0].reason, RuntimeError)  # type: ignore[attr-defined]
        assert trio.current_time() == pytest.approx(1)


async def test_start_vote_hands_every_waiter_the_result(autojump_clock):
    async with open_node("t"):
        ids = await start_scripted(a=("yes", 0.1), b=("yes", 0.2), c=("no", 0.3))
        handle = start_vote("deploy?", ids, timeout=5)
        results = []
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(lambda: _collect(handle, results))
        assert [r.choice for r in results] == ["yes"] * 3


async def _collect(handle, results) -> None:
    results.append(await handle.result())
