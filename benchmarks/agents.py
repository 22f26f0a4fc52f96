"""Benchmark of agent coordination: sealed-bid auctions and votes among supervised agents.

Run ``python benchmarks/agents.py`` (a few minutes) or ``--quick`` (a smoke run with
fewer auctions and rounds). One JSON object goes to stdout, progress to stderr. Every
figure is the median of several runs, reported with the runs. The runs are organised
in rounds; each round runs every case once (a baseline right before the subject it is
compared with), each case in a fresh ``trio.run`` and a fresh node, after a full
``gc.collect()``, with a few untimed auctions first to warm up.

Cases are a table (``CASES``): each is a name, a size and an async function returning
its figures, so other coordination benchmarks are added as rows.

``raw_sealed_bid_<n>``
    Baseline. Plain trio: one nursery starts ``n`` tasks, each calls the bidder's
    answer function directly and stores the bid; the highest two bids are then picked.
    Rounds/s.
``sealed_bid_<n>``
    ``ft.agents.sealed_bid_auction`` (second price) among ``n`` agents, each a
    supervised GenServer process (``register_agent`` / ``start_agent``) answering the
    ``BidRequest`` through its mailbox in its ``bid`` hook, which returns a number at
    once. Rounds/s, and ``outside_answer_share``: the share of the round's wall time
    spent outside the agents' own answer code (1 - time inside the ``bid`` hooks /
    wall time, both by ``time.perf_counter``; the hooks run one at a time on the one
    thread, so their times add up without overlap).
``sealed_bid_busy_<n>``
    The same with a hook that computes a fixed arithmetic loop (tens of us), as
    an agent doing real work would: shows how the share outside the answer code falls
    once answering costs something.
``raw_vote_100``
    Baseline. Plain trio: one nursery starts 100 tasks, each calls the voter's answer
    function directly and stores the ballot; the ballots are then counted (every one
    "yes", so unanimous). Rounds/s.
``vote_unanimous_100``
    ``ft.agents.vote(rule="unanimous")`` among 100 supervised agents answering the
    ``VoteRequest`` through their mailboxes in their ``vote`` hook (which returns
    "yes" at once): every ballot is needed, so the round asks and counts all 100.
    Rounds/s and ``outside_answer_share`` (as above, inside the ``vote`` hooks).
``vote_majority_100``
    The same with ``rule="majority"``: the vote ends as soon as it is fixed (at the
    51st "yes"); the questions still out are cancelled.
``vote_unanimous_busy_100``
    Unanimous with the busy hook.

The ``foundation_trio`` loggers are raised to CRITICAL for the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import trio
from _util import collect_garbage, environment, progress, summary

import foundation_trio as ft
from foundation_trio.agents import Agent, AgentSpec, BidRequest, VoteRequest

Figures = dict[str, float]

BUSY_LOOP = 300
"""Iterations of the busy hook's loop; the time it takes is measured (hook_us_per_answer)."""


def _busy(seed: float) -> float:
    total = seed
    for i in range(BUSY_LOOP):
        total = (total * 1.000001 + i) % 1000.0
    return total


class HookClock:
    """Time spent inside the agents' answer hooks, summed over every agent."""

    inside = 0.0


class Bidder(Agent):
    async def setup(self, value: float, busy: bool) -> None:
        self.value = value
        self.busy = busy

    async def bid(self, request: BidRequest) -> float:
        started = perf_counter()
        value = answer(self.value, self.busy)
        HookClock.inside += perf_counter() - started
        return value


def answer(value: float, busy: bool) -> float:
    """What a bidder computes: its value, after the busy loop for a busy bidder.
    The raw baseline calls it directly, the agents from their ``bid`` hook."""
    if busy:
        _busy(value)
    return value


@dataclass(frozen=True)
class Sizes:
    auctions: dict[int, int]
    """Timed auctions per run, by number of agents."""
    warmup: int
    rounds: int


FULL = Sizes(auctions={10: 400, 100: 60, 1000: 6}, warmup=2, rounds=5)
QUICK = Sizes(auctions={10: 40, 100: 6, 1000: 2}, warmup=1, rounds=2)


async def raw_sealed_bid(n: int, auctions: int, warmup: int, busy: bool = False) -> Figures:
    values = [float(i % 97) for i in range(n)]

    async def one_round() -> tuple[float, float]:
        bids = [0.0] * n

        async def ask(i: int) -> None:
            await trio.lowlevel.checkpoint()
            bids[i] = answer(values[i], busy)

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(ask, i)
        top = sorted(bids)[-2:]
        return top[-1], top[0]

    for _ in range(warmup):
        await one_round()
    started = perf_counter()
    for _ in range(auctions):
        await one_round()
    elapsed = perf_counter() - started
    return {"rounds_per_s": auctions / elapsed}


async def sealed_bid(n: int, auctions: int, warmup: int, busy: bool = False) -> Figures:
    async with ft.open_node("bench"):
        ids = [f"a{i}" for i in range(n)]
        for i, agent_id in enumerate(ids):
            await ft.agents.register_agent(AgentSpec(agent_id, Bidder, args=(float(i % 97), busy)))
            await ft.agents.start_agent(agent_id)
        for _ in range(warmup):
            await ft.agents.sealed_bid_auction(ids, timeout=60.0)
        HookClock.inside = 0.0
        started = perf_counter()
        for _ in range(auctions):
            report = await ft.agents.sealed_bid_auction(ids, timeout=60.0)
            assert report.winner is not None
        elapsed = perf_counter() - started
        inside = HookClock.inside
    return {
        "rounds_per_s": auctions / elapsed,
        "outside_answer_share": 1.0 - inside / elapsed,
        "hook_us_per_answer": inside / (auctions * n) * 1e6,
    }


class Voter(Agent):
    async def setup(self, busy: bool) -> None:
        self.busy = busy

    async def vote(self, request: VoteRequest) -> str:
        started = perf_counter()
        ballot = cast_ballot(self.busy)
        HookClock.inside += perf_counter() - started
        return ballot


def cast_ballot(busy: bool) -> str:
    """What a voter computes: "yes", after the busy loop for a busy voter."""
    if busy:
        _busy(1.0)
    return "yes"


async def raw_vote(n: int, rounds: int, warmup: int, busy: bool = False) -> Figures:
    async def one_round() -> bool:
        ballots = [""] * n

        async def ask(i: int) -> None:
            await trio.lowlevel.checkpoint()
            ballots[i] = cast_ballot(busy)

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(ask, i)
        return ballots.count("yes") == n

    for _ in range(warmup):
        await one_round()
    started = perf_counter()
    for _ in range(rounds):
        assert await one_round()
    elapsed = perf_counter() - started
    return {"rounds_per_s": rounds / elapsed}


async def vote(n: int, rounds: int, warmup: int, rule: str, busy: bool = False) -> Figures:
    async with ft.open_node("bench"):
        ids = [f"v{i}" for i in range(n)]
        for agent_id in ids:
            await ft.agents.register_agent(AgentSpec(agent_id, Voter, args=(busy,)))
            await ft.agents.start_agent(agent_id)
        for _ in range(warmup):
            await ft.agents.vote("bench", ids, rule=rule, timeout=60.0)
        HookClock.inside = 0.0
        started = perf_counter()
        for _ in range(rounds):
            result = await ft.agents.vote("bench", ids, rule=rule, timeout=60.0)
            assert result.choice == "yes"
        elapsed = perf_counter() - started
        inside = HookClock.inside
    return {
        "rounds_per_s": rounds / elapsed,
        "outside_answer_share": 1.0 - inside / elapsed,
    }


@dataclass(frozen=True)
class Case:
    name: str
    agents: int
    run: Callable[[int, int, int], Awaitable[Figures]]


def _cases() -> list[Case]:
    cases: list[Case] = []
    for n in (10, 100, 1000):
        cases.append(Case(f"raw_sealed_bid_{n}", n, raw_sealed_bid))
        cases.append(Case(f"sealed_bid_{n}", n, sealed_bid))
        cases.append(
            Case(f"sealed_bid_busy_{n}", n, lambda n, a, w: sealed_bid(n, a, w, busy=True))
        )
    cases.append(Case("raw_vote_100", 100, raw_vote))
    cases.append(Case("vote_unanimous_100", 100, lambda n, r, w: vote(n, r, w, "unanimous")))
    cases.append(Case("vote_majority_100", 100, lambda n, r, w: vote(n, r, w, "majority")))
    cases.append(
        Case(
            "vote_unanimous_busy_100",
            100,
            lambda n, r, w: vote(n, r, w, "unanimous", busy=True),
        )
    )
    return cases


CASES = _cases()
"""Every benchmark case, in run order. Add rows here for other coordination protocols."""

RATIOS: dict[str, tuple[str, str, str]] = {
    f"sealed_bid_{n}_vs_raw": (f"sealed_bid_{n}", f"raw_sealed_bid_{n}", "rounds_per_s")
    for n in (10, 100, 1000)
}
RATIOS["vote_unanimous_100_vs_raw"] = ("vote_unanimous_100", "raw_vote_100", "rounds_per_s")
"""Ratio name: (subject, baseline, figure), computed per round."""


def _run_round(sizes: Sizes, label: str) -> dict[str, Figures]:
    results: dict[str, Figures] = {}
    for case in CASES:
        collect_garbage()
        auctions = sizes.auctions[case.agents]
        results[case.name] = trio.run(case.run, case.agents, auctions, sizes.warmup)
        shown = ", ".join(f"{k}={v:,.3f}" for k, v in results[case.name].items())
        progress(f"{label} {case.name}: {shown}")
    return results


def _report(rounds: list[dict[str, Figures]], sizes: Sizes, quick: bool) -> dict[str, Any]:
    figures: dict[str, dict[str, Any]] = {}
    for case in CASES:
        names = rounds[0][case.name]
        figures[case.name] = {
            figure: summary([r[case.name][figure] for r in rounds], digits=3) for figure in names
        }
    ratios = {
        name: summary([r[subject][figure] / r[baseline][figure] for r in rounds], digits=4)
        for name, (subject, baseline, figure) in RATIOS.items()
    }
    return {
        "benchmark": "agents",
        "quick": quick,
        "environment": environment("trio", "foundation-trio", "attrs"),
        "method": {
            "rounds": sizes.rounds,
            "auctions_per_run": {str(n): a for n, a in sizes.auctions.items()},
            "votes_per_run": sizes.auctions[100],
            "voting": 'ballots "yes" from every agent; one deadline 60 s away (never reached)',
            "statistic": "median of rounds; ratios are medians of per-round ratios",
            "pricing": "second price, reserve 0, one deadline 60 s away (never reached)",
            "agents": "supervised GenServer processes started with ft.agents.start_agent",
            "telemetry": "ft.open_node's service, no handler attached; wins counted",
            "foundation_trio_logging": "CRITICAL (silenced)",
        },
        "results": figures,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run: fewer auctions and rounds"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    logging.getLogger("foundation_trio").setLevel(logging.CRITICAL)
    started = perf_counter()
    rounds = [_run_round(sizes, f"round {i + 1}/{sizes.rounds}") for i in range(sizes.rounds)]
    report = _report(rounds, sizes, args.quick)
    report["duration_s"] = round(perf_counter() - started, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
