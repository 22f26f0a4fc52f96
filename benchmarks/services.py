"""Benchmark of the core services: what telemetry, the request context and (as they
land) the event store and protection cost per operation.

Run ``python benchmarks/services.py`` (about a minute) or ``--quick`` (a smoke run),
optionally ``--section NAME`` (repeatable) to run only some sections. One JSON
object goes to stdout, progress to stderr.

Each section is a function registered in :data:`SECTIONS`; it runs its own rounds
and returns its part of the report. Within a round, every subject is measured
right after its baseline, in one ``trio.run`` and one node, so drift on this
noisy machine affects both alike; figures are medians of the rounds, ratios the
medians of per-round ratios. Each timed loop is preceded by a warm-up loop and a
full ``gc.collect()``; the garbage collector stays enabled while timing. Clock:
``time.perf_counter``.

Sections:

``telemetry``
    ``baseline_call``: a call of an empty Python function with the three
    arguments ``execute`` takes, in the same loop shape. ``execute_0``,
    ``execute_1``, ``execute_10``: ``ft.telemetry.execute`` of an event with
    0, 1 and 10 no-op handlers attached (one measurement, small metadata), from
    the node's shell process. ``execute_metric``: an event feeding one counter,
    no handler. ``span``: a sync ``span`` with one handler on start and stop.
    Nanoseconds per operation, and ratios to the baseline.
``context``
    ``call`` / ``call_bound``: ``ft.call`` of a trivial GenServer from the shell,
    without and inside ``ft.context.bind(request_id=...)``: the server then
    restores the caller's context around each request (a ``ContextVar`` set and
    reset). ``spawn`` / ``spawn_observed``: ``ft.spawn`` of trivial processes,
    with nothing listening to the runtime's lifecycle events and with a no-op
    handler on ``runtime.process.start`` and ``runtime.process.exit`` (which
    installs the lifecycle hook). Operations per second and ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from _util import collect_garbage, environment, progress, summary

import foundation_trio as ft

perf_counter = time.perf_counter

Figures = dict[str, float]


@dataclass(frozen=True)
class Sizes:
    """How much work each run does."""

    rounds: int
    executes: int
    calls: int
    spawns: int


FULL = Sizes(rounds=7, executes=200_000, calls=20_000, spawns=5_000)
QUICK = Sizes(rounds=3, executes=20_000, calls=2_000, spawns=1_000)


def _ratios(rounds: list[Figures], pairs: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Median of per-round ratios ``subject / baseline`` for each named pair."""
    return {
        name: summary([r[subject] / r[baseline] for r in rounds], digits=3)
        for name, (subject, baseline) in pairs.items()
    }


def _figures(rounds: list[Figures]) -> dict[str, Any]:
    return {name: summary([r[name] for r in rounds]) for name in rounds[0]}


# -- telemetry ------------------------------------------------------------------------------


def _noop(event_name: str, measurements: Any, metadata: Any) -> None:
    pass


def _time_loop(n: int, fn: Callable[[str, Any, Any], None], *args: Any) -> float:
    """Nanoseconds per call of ``fn(*args)`` over ``n`` calls, after a warm-up."""
    for _ in range(max(1000, n // 10)):
        fn(*args)
    collect_garbage()
    started = perf_counter()
    for _ in range(n):
        fn(*args)
    return (perf_counter() - started) * 1e9 / n


def _time_span(n: int) -> float:
    span = ft.telemetry.span
    for _ in range(max(1000, n // 10)):
        with span("bench.span"):
            pass
    collect_garbage()
    started = perf_counter()
    for _ in range(n):
        with span("bench.span"):
            pass
    return (perf_counter() - started) * 1e9 / n


async def _telemetry_round(sizes: Sizes) -> Figures:
    n = sizes.executes
    measurements = {"value": 1.0}
    metadata = {"key": "k"}
    figures: Figures = {}
    async with ft.open_node("bench"):
        execute = ft.telemetry.execute
        for count, name in ((0, "bench.zero"), (1, "bench.one"), (10, "bench.ten")):
            for i in range(count):
                ft.telemetry.attach(f"{name}.{i}", name, _noop)
        ft.telemetry.counter("bench_total", event="bench.metric")
        ft.telemetry.attach("span", ["bench.span.start", "bench.span.stop"], _noop)

        figures["baseline_call"] = _time_loop(n, _noop, "bench.zero", measurements, metadata)
        figures["execute_0"] = _time_loop(n, execute, "bench.zero", measurements, metadata)
        figures["baseline_call_2"] = _time_loop(n, _noop, "bench.one", measurements, metadata)
        figures["execute_1"] = _time_loop(n, execute, "bench.one", measurements, metadata)
        figures["baseline_call_3"] = _time_loop(n, _noop, "bench.ten", measurements, metadata)
        figures["execute_10"] = _time_loop(n, execute, "bench.ten", measurements, metadata)
        figures["execute_metric"] = _time_loop(n, execute, "bench.metric", measurements, metadata)
        figures["span"] = _time_span(n // 2)
    # One baseline figure per round: the median of the three measured next to the subjects.
    baselines = [figures.pop("baseline_call_2"), figures.pop("baseline_call_3")]
    figures["baseline_call"] = statistics.median([figures["baseline_call"], *baselines])
    return figures


def telemetry_section(sizes: Sizes) -> dict[str, Any]:
    rounds = []
    for i in range(sizes.rounds):
        rounds.append(trio.run(_telemetry_round, sizes))
        shown = ", ".join(f"{k}={v:,.0f}" for k, v in rounds[-1].items())
        progress(f"telemetry round {i + 1}/{sizes.rounds}: ns/op {shown}")
    return {
        "unit": "ns per operation",
        "operations_per_run": sizes.executes,
        "results": _figures(rounds),
        "ratios_to_baseline_call": _ratios(
            rounds,
            {
                "execute_0": ("execute_0", "baseline_call"),
                "execute_1": ("execute_1", "baseline_call"),
                "execute_10": ("execute_10", "baseline_call"),
                "execute_metric": ("execute_metric", "baseline_call"),
                "span": ("span", "baseline_call"),
            },
        ),
    }


# -- context and lifecycle events ----------------------------------------------------------------


class _Echo(ft.GenServer):
    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        return request


async def _call_rate(server: ft.Pid, n: int) -> float:
    call = ft.call
    for i in range(max(200, n // 10)):
        await call(server, i)
    collect_garbage()
    started = perf_counter()
    for i in range(n):
        await call(server, i)
    return n / (perf_counter() - started)


async def _trivial(done: list[int], target: int, event: trio.Event) -> None:
    done[0] += 1
    if done[0] == target:
        event.set()


async def _spawn_rate(n: int) -> float:
    async def batch(count: int) -> float:
        done = [0]
        finished = trio.Event()
        started = perf_counter()
        for _ in range(count):
            ft.spawn(_trivial, done, count, finished)
        await finished.wait()
        return count / (perf_counter() - started)

    await batch(max(200, n // 10))
    collect_garbage()
    return await batch(n)


async def _context_round(sizes: Sizes) -> Figures:
    figures: Figures = {}
    async with ft.open_node("bench"):
        server = await ft.start_server(_Echo)
        figures["call"] = await _call_rate(server, sizes.calls)
        with ft.context.bind(request_id="bench-1"):
            figures["call_bound"] = await _call_rate(server, sizes.calls)
        figures["spawn"] = await _spawn_rate(sizes.spawns)
        ft.telemetry.attach(
            "observer", [ft.telemetry.PROCESS_START, ft.telemetry.PROCESS_EXIT], _noop
        )
        figures["spawn_observed"] = await _spawn_rate(sizes.spawns)
    return figures


def context_section(sizes: Sizes) -> dict[str, Any]:
    rounds = []
    for i in range(sizes.rounds):
        rounds.append(trio.run(_context_round, sizes))
        shown = ", ".join(f"{k}={v:,.0f}" for k, v in rounds[-1].items())
        progress(f"context round {i + 1}/{sizes.rounds}: per s {shown}")
    return {
        "unit": "operations per second",
        "calls_per_run": sizes.calls,
        "spawns_per_run": sizes.spawns,
        "results": _figures(rounds),
        "ratios": _ratios(
            rounds,
            {
                "call_bound_vs_call": ("call_bound", "call"),
                "spawn_observed_vs_spawn": ("spawn_observed", "spawn"),
            },
        ),
    }


# -- the table of sections -----------------------------------------------------------------------

SECTIONS: dict[str, Callable[[Sizes], dict[str, Any]]] = {
    "telemetry": telemetry_section,
    "context": context_section,
}
"""Section name -> its function. Each service adds its own here."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run: fewer iterations and rounds"
    )
    parser.add_argument(
        "--section",
        action="append",
        choices=sorted(SECTIONS),
        help="run only this section (repeatable; default: all)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    logging.getLogger("foundation_trio").setLevel(logging.CRITICAL)
    started = perf_counter()
    report: dict[str, Any] = {
        "benchmark": "services",
        "quick": args.quick,
        "environment": environment("trio", "foundation-trio"),
        "method": {
            "rounds": sizes.rounds,
            "statistic": "median of rounds; ratios are medians of per-round ratios",
            "gc_enabled_while_timing": True,
            "foundation_trio_logging": "CRITICAL (silenced)",
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
