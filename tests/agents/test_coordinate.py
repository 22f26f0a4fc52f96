"""coordinate(): strategies, quorum over the electorate, one compare-and-set, conflicts."""

from __future__ import annotations

import statistics

import pytest
import trio
from _helpers import all_tasks
from conftest import start_scripted

from foundation_trio.agents import (
    Choice,
    Composite,
    Decision,
    FloatRange,
    IntRange,
    PermissionDenied,
    StrategyContext,
    StrategyNotFound,
    VariableSpec,
    VersionConflict,
    coordinate,
    define_variable,
    get_variable,
    register_strategy,
    set_variable,
    strategies,
    subscribe_variable,
)
from foundation_trio.runtime.node import open_node


async def test_median_and_mean_are_clamped_to_the_domain(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("temperature", FloatRange(0.0, 2.0), 0.7))
        ids = await start_scripted(a=(0.1, 0.1), b=(5.0, 0.2), c=(1.0, 0.3), d=("hot", 0))
        result = await coordinate("temperature", "median", ids, timeout=1)
        assert result.committed
        assert (result.value, result.version, result.previous_version) == (1.0, 1, 0)
        assert result.details["invalid"] == ("d",)
        assert result.details["proposals"] == (0.1, 2.0, 1.0)
        mean = await coordinate("temperature", "mean", ids, timeout=1)
        assert mean.value == pytest.approx(statistics.fmean([0.1, 2.0, 1.0]))
        assert get_variable("temperature").version == 2


async def test_int_mean_rounds_and_clamps(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("workers", IntRange(1, 8), 2))
        ids = await start_scripted(a=(3, 0), b=(4, 0), c=(100, 0))
        result = await coordinate("workers", "mean", ids, timeout=1)
        assert result.value == 5  # mean of 3, 4, 8 is 5.0
        with pytest.raises(TypeError, match="FloatRange or IntRange"):
            define_variable(VariableSpec("model", Choice(("a", "b")), "a"))
            await coordinate("model", "median", ids, timeout=1)


async def test_majority_counts_the_whole_electorate_and_no_quorum_commits_nothing(
    autojump_clock,
):
    async with open_node("t"):
        define_variable(VariableSpec("model", Choice(("gpt", "claude")), "gpt"))
        ids = await start_scripted(
            a=("claude", 0.1), b=("claude", 0.1), c=("gpt", 0.1), d=("hang", 0), e=("crash", 0)
        )
        updates = subscribe_variable("model")
        result = await coordinate("model", "majority", ids, timeout=1)
        # 2 of 5 for claude: not a majority of the electorate, though 2 of 3 answers
        assert not result.committed and result.status == "no_decision"
        assert get_variable("model").version == 0
        with pytest.raises(trio.WouldBlock):
            updates.receive_nowait()
        assert dict(result.details["tally"]) == {"claude": 2.0, "gpt": 1.0}


async def test_majority_commits_through_exactly_one_compare_and_set(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("model", Choice(("gpt", "claude")), "gpt"))
        ids = await start_scripted(
            a=("claude", 0.1), b=("claude", 0.2), c=("claude", 0.3), d=("hang", 0), e=("gpt", 0)
        )
        updates = subscribe_variable("model")
        start = trio.current_time()
        result = await coordinate("model", "majority", ids, timeout=5)
        assert result.committed and result.value == "claude" and result.version == 1
        # fixed at the third claude: the round did not wait for the hanging member
        assert result.finished_at == pytest.approx(start + 0.3)
        update = updates.receive_nowait()
        assert (update.version, update.value, update.writer) == (
            1,
            "claude",
            "coordinate:majority",
        )
        with pytest.raises(trio.WouldBlock):
            updates.receive_nowait()


async def test_supermajority_option(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 9), 0))
        ids = await start_scripted(a=(1, 0), b=(1, 0), c=(1, 0), d=(2, 0))
        r = await coordinate("n", "majority", ids, timeout=1, supermajority=(4, 5))
        assert r.status == "no_decision"  # 3 of 4 < 4/5
        r = await coordinate("n", "majority", ids, timeout=1, supermajority=(3, 4))
        assert r.committed and r.value == 1


async def test_unanimous_ends_at_the_first_disagreement(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 9), 0))
        ids = await start_scripted(a=(1, 0.1), b=(2, 0.2), c=(1, 3.0))
        start = trio.current_time()
        r = await coordinate("n", "unanimous", ids, timeout=5)
        assert r.status == "no_decision"
        assert trio.current_time() == pytest.approx(start + 0.2)
        ids2 = await start_scripted(x=(4, 0), y=(4, 0))
        assert (await coordinate("n", "unanimous", ids2, timeout=5)).value == 4


async def test_plurality_needs_a_quorum_of_the_electorate(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("m", Choice(("a", "b", "c")), "a"))
        ids = await start_scripted(
            p=("b", 0.2), q=("c", 0.1), r=("b", 0.3), s=("c", 0.4), t=("hang", 0)
        )
        r = await coordinate("m", "plurality", ids, timeout=1)
        # b and c tie 2-2: the value proposed first (c at 0.1) wins
        assert r.committed and r.value == "c"
        assert dict(r.details["shares"]) == {"b": 0.4, "c": 0.4}
        r = await coordinate("m", "plurality", ids, timeout=1, quorum=1.0)
        assert r.status == "no_quorum" and "4 valid proposals of 5" in r.reason


async def test_weighted_with_a_cap_per_agent(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("m", Choice(("x", "y")), "x"))
        ids = await start_scripted(a=("x", 0), b=("y", 0), c=("y", 0), d=("y", 0))
        weights = {"a": 10, "b": 1, "c": 1, "d": 1}
        r = await coordinate("m", "weighted", ids, timeout=1, weights=weights)
        assert r.value == "x"  # 10 of 13
        r = await coordinate("m", "weighted", ids, timeout=1, weights=weights, cap=2)
        assert r.value == "y"  # a capped at 2: y has 3 of 5


async def test_leader_strategy(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 9), 0))
        ids = await start_scripted(a=(3, 0), b=("hang", 0), c=(99, 0))
        assert (await coordinate("n", "leader", ids, timeout=1)).value == 3
        r = await coordinate("n", "leader", ids, timeout=1, leader="b")
        assert r.status == "no_decision" and "did not answer" in r.reason
        r = await coordinate("n", "leader", ids, timeout=1, leader="c")
        assert r.status == "no_decision" and "outside the domain" in r.reason
        assert [len(x.outcomes) for x in r.rounds] == [1]


async def test_a_concurrent_write_ends_the_round_with_a_version_conflict(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 9), 0))
        ids = await start_scripted(a=(1, 1.0), b=(1, 1.0), c=(1, 1.0))
        start = trio.current_time()
        before = all_tasks()
        async with trio.open_nursery() as nursery:

            async def interfere() -> None:
                await trio.sleep(0.5)
                set_variable("n", 7, expected_version=0)

            nursery.start_soon(interfere)
            with pytest.raises(VersionConflict) as info:
                await coordinate("n", "majority", ids, timeout=5)
        assert trio.current_time() == pytest.approx(start + 0.5)
        assert (info.value.expected, info.value.actual) == (0, 1)
        assert get_variable("n").value == 7 and get_variable("n").version == 1
        assert all_tasks() == before


async def test_cancelling_coordinate_commits_nothing_and_leaves_no_task(autojump_clock):
    async with open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 9), 0))
        ids = await start_scripted(a=(1, 1.0), b=(1, 2.0))
        before = all_tasks()
        with trio.move_on_after(1.5):
            await coordinate("n", "mean", ids, timeout=5)
        assert get_variable("n").version == 0
        assert all_tasks() == before


async def test_composite_values_can_be_agreed_on(autojump_clock):
    async with open_node("t"):
        domain = Composite({"model": Choice(("a", "b")), "tokens": IntRange(1, 100)})
        define_variable(VariableSpec("cfg", domain, {"model": "a", "tokens": 10}))
        want = {"model": "b", "tokens": 50}
        ids = await start_scripted(x=(want, 0), y=(want, 0), z=({"model": "a", "tokens": 1}, 0))
        r = await coordinate("cfg", "majority", ids, timeout=1)
        assert r.committed and dict(r.value) == want


async def test_registering_a_strategy_and_typed_errors(autojump_clock):
    async def first_answer(ctx: StrategyContext) -> Decision:
        result = await ctx.ask(ctx.value_request())
        responses = result.responses()
        if not responses:
            return Decision.no("no_quorum", "nobody answered")
        return Decision(True, responses[0].value, details={"by": responses[0].participant})

    register_strategy("first_answer", first_answer)
    with pytest.raises(ValueError, match="already"):
        register_strategy("first_answer", first_answer)
    assert {"unanimous", "majority", "plurality", "weighted", "leader", "mean", "median"} <= set(
        strategies()
    )
    async with open_node("t"):
        define_variable(VariableSpec("n", IntRange(0, 9), 0))
        define_variable(VariableSpec("fixed", IntRange(0, 9), 0, coordinated=False))
        ids = await start_scripted(a=(2, 0.2), b=(3, 0.1))
        r = await coordinate("n", "first_answer", ids, timeout=1)
        assert (r.value, r.details["by"]) == (3, "b")
        with pytest.raises(StrategyNotFound, match="first_answer"):
            await coordinate("n", "auction?", ids, timeout=1)
        with pytest.raises(TypeError, match="takes options"):
            await coordinate("n", "median", ids, timeout=1, weights={})
        with pytest.raises(PermissionDenied):
            await coordinate("fixed", "median", ids, timeout=1)
        with pytest.raises(ValueError, match="timeout"):
            await coordinate("n", "median", ids, timeout=-1)
