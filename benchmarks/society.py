"""Benchmark of process societies: what routing a job through a society costs, and how
long a CPU-heavy job holds up a GenServer's calls with each way of running it.

Run ``python benchmarks/society.py`` (about half a minute) or ``--quick`` (a smoke run).
One JSON object goes to stdout, progress to stderr. Clock: ``time.perf_counter``.

``throughput``
    Jobs per second of a trivial job (``async def work(job): return job``), one
    submitter after another (``sequential``) and from 32 concurrent submitters
    (``concurrent``), through a society of 4 workers with each routing, against two
    baselines measured in the same round and node: ``direct`` (``await work(job)``
    in the submitting task: no process at all) and ``genserver_call`` (``ft.call``
    of one GenServer doing the same work: the usual alternative to a pool). Each
    round measures every subject right after the baselines; figures are medians of
    the rounds, ratios medians of per-round ratios.
``stall``
    A GenServer is called every 10 ms while a society worker runs ``seconds`` of
    pure-Python work (a busy loop): ``blocking`` (the loop runs in the event loop:
    what not to do, the baseline), ``run_cpu_thread``, ``run_cpu_process`` and
    ``cooperative`` (0.5 ms steps, ``max_slice`` 5 ms). For each: the longest a call
    was held up (from when it was due, the previous reply plus 10 ms, to its reply)
    and the 99th percentile, in milliseconds, and how many calls completed while
    the job ran. Medians of the rounds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from _util import collect_garbage, environment, percentile, progress, summary, target

import foundation_trio as ft

perf_counter = time.perf_counter


@dataclass(frozen=True)
class Sizes:
    rounds: int
    jobs: int
    stall_seconds: float
    stall_rounds: int


FULL = Sizes(rounds=5, jobs=5_000, stall_seconds=1.0, stall_rounds=3)
QUICK = Sizes(rounds=2, jobs=500, stall_seconds=0.2, stall_rounds=1)
CONCURRENCY = 32
WORKERS = 4
PERIOD = 0.01


# -- throughput ------------------------------------------------------------------------


async def work(job: object) -> object:
    return job


class Server(ft.GenServer):
    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        return await work(request)


async def _rate(submit: Callable[[int], Awaitable[object]], jobs: int, concurrent: bool) -> float:
    """Jobs per second of ``submit`` over ``jobs`` jobs (after a warm-up)."""
    for index in range(min(200, jobs)):
        await submit(index)
    collect_garbage()
    started = perf_counter()
    if concurrent:
        per_task = jobs // CONCURRENCY

        async def submitter() -> None:
            for index in range(per_task):
                await submit(index)

        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENCY):
                nursery.start_soon(submitter)
        done = per_task * CONCURRENCY
    else:
        for index in range(jobs):
            await submit(index)
        done = jobs
    return done / (perf_counter() - started)


async def _throughput_round(sizes: Sizes, concurrent: bool) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with ft.open_node("bench"):
        server = await ft.start_server(Server)

        async def via_call(job: int) -> object:
            return await ft.call(server, job)

        figures["direct"] = await _rate(work, sizes.jobs, concurrent)
        figures["genserver_call"] = await _rate(via_call, sizes.jobs, concurrent)
        for routing in ("round_robin", "least_loaded", "hash", "broadcast"):
            society = await ft.society.start(
                ft.society.pool("p", work, count=WORKERS, routing=routing)
            )
            if routing == "hash":

                async def submit(job: int, society: ft.society.Society = society) -> object:
                    return await society.submit(job, key=job)

            else:

                async def submit(job: int, society: ft.society.Society = society) -> object:
                    return await society.submit(job)

            figures[routing] = await _rate(submit, sizes.jobs, concurrent)
            await society.stop()
    return figures


def throughput_section(sizes: Sizes) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for mode in ("sequential", "concurrent"):
        rounds = []
        for number in range(sizes.rounds):
            progress(f"throughput {mode} round {number + 1}/{sizes.rounds}")
            rounds.append(trio.run(_throughput_round, sizes, mode == "concurrent"))
        subjects = list(rounds[0])
        report[mode] = {
            "jobs_per_s": {name: summary([r[name] for r in rounds], 0) for name in subjects},
            "ratio_to_genserver_call": {
                name: round(statistics.median(r[name] / r["genserver_call"] for r in rounds), 3)
                for name in subjects
                if name not in ("direct", "genserver_call")
            },
            "overhead_us_over_direct": {
                name: round(
                    statistics.median(1e6 / r[name] - 1e6 / r["direct"] for r in rounds), 1
                )
                for name in subjects
                if name != "direct"
            },
        }
    report["note"] = (
        "broadcast runs each job on all 4 workers, so its jobs/s counts submissions, "
        "each of which is 4 executions"
    )
    return report


# -- stall -------------------------------------------------------------------------------


def spin(seconds: float) -> int:
    end = perf_counter() + seconds
    turns = 0
    while perf_counter() < end:
        turns += 1
    return turns


async def blocking(seconds: float) -> int:
    return spin(seconds)


async def run_cpu_thread(seconds: float) -> int:
    return await ft.society.run_cpu(spin, seconds)


async def run_cpu_process(seconds: float) -> int:
    return await ft.society.run_cpu(spin, seconds, mode="process")


async def cooperative(seconds: float) -> int:
    end = perf_counter() + seconds
    steps = itertools.takewhile(lambda _: perf_counter() < end, itertools.count())
    return sum(await ft.society.cooperative(steps, lambda _: spin(0.0005), max_slice=0.005))


class Echo(ft.GenServer):
    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        return request


async def _stall_round(
    worker: Callable[[float], Awaitable[int]], seconds: float
) -> dict[str, float]:
    async with ft.open_node("bench"):
        server = await ft.start_server(Echo)
        society = await ft.society.start(ft.society.pool("heavy", worker, count=1))
        if worker is run_cpu_process:
            await society.submit(0.0)  # start the worker process outside the measurement
        replies: list[float] = []

        async def caller() -> None:
            while True:
                await ft.call(server, "ping")
                replies.append(perf_counter())
                await trio.sleep(PERIOD)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await trio.sleep(0.05)
            started = perf_counter()
            await society.submit(seconds)
            ended = perf_counter()
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    held = [
        (later - earlier - PERIOD) * 1000
        for earlier, later in itertools.pairwise(replies)
        if later >= started and earlier <= ended
    ]
    return {
        "worst_ms": max(held),
        "p99_ms": percentile(held, 0.99),
        "calls": float(len(held)),
        "job_s": ended - started,
    }


def stall_section(sizes: Sizes) -> dict[str, Any]:
    report: dict[str, Any] = {"job_seconds": sizes.stall_seconds, "call_period_ms": PERIOD * 1000}
    for worker in (blocking, run_cpu_thread, run_cpu_process, cooperative):
        rounds = []
        for number in range(sizes.stall_rounds):
            progress(f"stall {worker.__name__} round {number + 1}/{sizes.stall_rounds}")
            rounds.append(trio.run(_stall_round, worker, sizes.stall_seconds))
        report[worker.__name__] = {
            name: summary([r[name] for r in rounds], 2) for name in ("worst_ms", "p99_ms", "calls")
        }
    report["targets"] = [
        target(
            report[name]["worst_ms"]["median"],
            "<",
            200.0,
            f"{name}: no call held up 200 ms or more while the job runs",
        )
        for name in ("run_cpu_thread", "run_cpu_process", "cooperative")
    ]
    return report


SECTIONS: dict[str, Callable[[Sizes], dict[str, Any]]] = {
    "throughput": throughput_section,
    "stall": stall_section,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument(
        "--section", action="append", choices=sorted(SECTIONS), help="run only this section"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    logging.getLogger("foundation_trio").setLevel(logging.CRITICAL)
    started = perf_counter()
    report: dict[str, Any] = {
        "benchmark": "society",
        "quick": args.quick,
        "environment": environment("trio", "anyio", "foundation-trio"),
        "method": {
            "rounds": sizes.rounds,
            "stall_rounds": sizes.stall_rounds,
            "statistic": "median of rounds; ratios are medians of per-round ratios",
            "gc_enabled_while_timing": True,
        },
        "sections": {},
    }
    for name in args.section or list(SECTIONS):
        progress(f"section {name}")
        report["sections"][name] = SECTIONS[name](sizes)
    report["duration_s"] = round(perf_counter() - started, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
