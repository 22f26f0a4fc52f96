"""Benchmark of the local runtime: calls, casts, restarts, spawns and idle memory.

Run ``python benchmarks/local.py`` (about 2 minutes) or ``--quick`` (a smoke run
with fewer iterations and rounds). One JSON object goes to stdout, progress to
stderr. Every figure is the median of several runs, reported with the runs.

The runs are organised in rounds; each round runs every benchmark once, a
baseline right before the subject it is compared with (baseline, subject,
baseline, subject, ...), so drift on this noisy machine affects both alike.
Ratios are the median of the per-round ratios. Each run is a fresh ``trio.run``
(and a fresh node), warms up before it starts the clock, and is preceded by a
full ``gc.collect()``. The garbage collector stays enabled while timing: its
pauses are part of what a user sees. One unrecorded round warms up first.

Figures (wall clock from ``time.perf_counter``):

``raw_event_request_reply``
    Baseline. One client task sends a request object over a trio memory channel
    (buffer 1024) to one server task, which writes the reply into the request's
    slot and sets the request's ``trio.Event``; the client waits on the event.
    Calls/s, and p50/p99 latency (us) of one round trip.
``call``
    ``await ft.call(pid, i)`` from the node's shell process to a trivial
    GenServer that returns ``i + 1``, with the default timeout. Calls/s, p50/p99 us.
``call_no_timeout``
    Diagnostic, no target: the same with ``timeout=None``, which shows what the
    per-call deadline costs.
``call_16_callers``
    16 processes (``ft.spawn``) call one trivial GenServer concurrently, default
    timeout; total calls/s from releasing them together to the last one finishing.
``call_16_callers_no_timeout``
    Diagnostic, no target: the same with ``timeout=None``.
``raw_channel_loop``
    Baseline. One producer task ``await send``-s ints on a trio memory channel
    (buffer 1024) to one consumer task that ``await receive``-s them; msgs/s until
    the consumer has received the last one.
``cast``
    One process ``await ft.cast``-s to a GenServer that counts them; casts/s
    until a final ``ft.call`` returns (so the server has handled them all).
``restart``
    A one-for-one supervisor (max_restarts 1,000,000 per second, so intensity
    never trips) with one permanent GenServer child. The bench casts ``crash`` to
    the child, whose ``handle_cast`` records the time and raises; the successor's
    ``init`` records the time. Latency p50/p99 (us) from just before the raise to
    the successor's ``init`` running, over many crashes per run.
``raw_spawn`` / ``spawn``
    Tasks/s to start N trivial tasks and have them all finish: trio
    ``nursery.start_soon`` (baseline, informational) against ``ft.spawn``. Each
    task decrements a countdown; the clock stops when the spawner wakes after the
    last one.
``memory_bare_task`` / ``memory_idle_genserver``
    Bytes per object, by ``tracemalloc``: traced growth (after ``gc.collect()``
    and once all tasks are blocked) divided by N, for N tasks running
    ``trio.sleep_forever`` in a nursery (baseline) and for N idle GenServers
    started with ``ft.start_server`` (unsupervised, in the node's spawn nursery;
    no supervisor involved). N is 10,000 in a full run. 100 of each are started
    before tracing begins, so one-time allocations are not counted.

Targets: call rate >= 0.75x raw Event request/reply; cast rate >= 0.8x raw
channel loop; 16-caller call rate >= 2x single-caller call rate; restart
latency p99 < 1 ms; idle GenServer memory <= 3x a bare sleeping task.

The ``foundation_trio`` loggers are raised to CRITICAL for the run: each crash
would otherwise format and print a traceback, which measures the log handler
rather than the runtime.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing
from _util import collect_garbage, environment, percentile, progress, summary, target

import foundation_trio as ft

perf_counter = time.perf_counter

Figures = dict[str, float]
"""One run's figures, by name (rate_per_s, p50_us, p99_us, bytes, ...)."""


@dataclass(frozen=True)
class Sizes:
    """How much work each run does."""

    rounds: int
    calls: int
    calls_16: int
    casts: int
    restarts: int
    spawns: int
    idle: int


FULL = Sizes(
    rounds=9,
    calls=20_000,
    calls_16=48_000,
    casts=60_000,
    restarts=1_000,
    spawns=10_000,
    idle=10_000,
)
QUICK = Sizes(
    rounds=3, calls=2_000, calls_16=4_800, casts=5_000, restarts=100, spawns=1_000, idle=1_000
)
WARMUP_ROUND = Sizes(
    rounds=1, calls=2_000, calls_16=4_800, casts=5_000, restarts=100, spawns=1_000, idle=500
)
CALLERS = 16
MAX_RESTARTS = 1_000_000
MEMORY_PRELOAD = 100
"""Objects started before tracing begins, so one-time allocations are not counted."""


def _warmup(n: int) -> int:
    return max(200, n // 10)


class _Countdown:
    """Counts finished work items; ``done`` is set when the last one ticks."""

    __slots__ = ("count", "done")

    def __init__(self, count: int) -> None:
        self.count = count
        self.done = trio.Event()

    def tick(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.done.set()


def _latency_figures(start: float, stamps: list[float]) -> Figures:
    """Rate and p50/p99 latency from the end time of each of a run's sequential calls."""
    gaps = [stamps[0] - start] + [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "rate_per_s": len(stamps) / (stamps[-1] - start),
        "p50_us": percentile(gaps, 0.50) * 1e6,
        "p99_us": percentile(gaps, 0.99) * 1e6,
    }


# -- request/reply ------------------------------------------------------------------


class _Request:
    __slots__ = ("done", "reply", "value")

    def __init__(self, value: int) -> None:
        self.value = value
        self.reply = 0
        self.done = trio.Event()


async def _raw_event_request_reply(n: int) -> Figures:
    send, receive = trio.open_memory_channel[_Request](1024)

    async def server() -> None:
        async for request in receive:
            request.reply = request.value + 1
            request.done.set()

    async def one(value: int) -> int:
        request = _Request(value)
        await send.send(request)
        await request.done.wait()
        return request.reply

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        for i in range(_warmup(n)):
            await one(i)
        stamps = [0.0] * n
        start = perf_counter()
        for i in range(n):
            await one(i)
            stamps[i] = perf_counter()
        await send.aclose()
    return _latency_figures(start, stamps)


class Echo(ft.GenServer):
    """A trivial server: replies ``request + 1``; counts casts."""

    casts = 0

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        if request == "casts":
            return self.casts
        return request + 1

    async def handle_cast(self, request: Any) -> None:
        self.casts += 1


async def _call(n: int, timeout: float | None) -> Figures:
    async with ft.open_node("bench"):
        pid = await ft.start_server(Echo)
        for i in range(_warmup(n)):
            await ft.call(pid, i, timeout)
        stamps = [0.0] * n
        start = perf_counter()
        for i in range(n):
            await ft.call(pid, i, timeout)
            stamps[i] = perf_counter()
        return _latency_figures(start, stamps)


async def _call_default_timeout(n: int) -> Figures:
    return await _call(n, ft.DEFAULT_CALL_TIMEOUT)


async def _call_no_timeout(n: int) -> Figures:
    return await _call(n, None)


async def _call_16(n: int, timeout: float | None) -> Figures:
    per_caller = n // CALLERS
    async with ft.open_node("bench"):
        pid = await ft.start_server(Echo)
        warm = _Countdown(CALLERS)
        finished = _Countdown(CALLERS)
        go = trio.Event()

        async def caller() -> None:
            for i in range(_warmup(per_caller)):
                await ft.call(pid, i, timeout)
            warm.tick()
            await go.wait()
            for i in range(per_caller):
                await ft.call(pid, i, timeout)
            finished.tick()

        for _ in range(CALLERS):
            ft.spawn(caller)
        await warm.done.wait()
        start = perf_counter()
        go.set()
        await finished.done.wait()
        elapsed = perf_counter() - start
    return {"rate_per_s": per_caller * CALLERS / elapsed}


async def _call_16_callers(n: int) -> Figures:
    return await _call_16(n, ft.DEFAULT_CALL_TIMEOUT)


async def _call_16_callers_no_timeout(n: int) -> Figures:
    return await _call_16(n, None)


# -- one-way messages ------------------------------------------------------------------


async def _raw_channel_loop(n: int) -> Figures:
    send, receive = trio.open_memory_channel[int](1024)

    async def consumer(count: int, received: _Countdown) -> None:
        for _ in range(count):
            await receive.receive()
            received.tick()

    async with trio.open_nursery() as nursery:
        for count, timed in ((_warmup(n), False), (n, True)):
            received = _Countdown(count)
            nursery.start_soon(consumer, count, received)
            start = perf_counter()
            for i in range(count):
                await send.send(i)
            await received.done.wait()
            elapsed = perf_counter() - start
            if timed:
                return {"rate_per_s": n / elapsed}
    raise AssertionError("unreachable")


async def _cast(n: int) -> Figures:
    async with ft.open_node("bench"):
        pid = await ft.start_server(Echo)
        warmup = _warmup(n)
        for i in range(warmup):
            await ft.cast(pid, i)
        await ft.call(pid, "casts")
        start = perf_counter()
        for i in range(n):
            await ft.cast(pid, i)
        handled = await ft.call(pid, "casts")
        elapsed = perf_counter() - start
    if handled != warmup + n:
        raise RuntimeError(f"the server handled {handled} casts, expected {warmup + n}")
    return {"rate_per_s": n / elapsed}


# -- supervisor restarts ------------------------------------------------------------------


class _Crash(Exception):
    """Raised by the benchmark's victim on purpose."""


class _RestartProbe:
    """Where the victim records when it crashed and when its successor started."""

    def __init__(self) -> None:
        self.crashed_at = 0.0
        self.started_at = 0.0
        self.started = trio.Event()

    def arm(self) -> None:
        self.started = trio.Event()


class Victim(ft.GenServer):
    """A supervised server that crashes on any cast."""

    probe: _RestartProbe

    async def init(self, probe: _RestartProbe) -> None:
        probe.started_at = perf_counter()
        probe.started.set()
        self.probe = probe

    async def handle_cast(self, request: Any) -> None:
        self.probe.crashed_at = perf_counter()
        raise _Crash(request)


async def _restart(n: int) -> Figures:
    probe = _RestartProbe()
    # mypy cannot infer ChildSpec.args through attrs' converter=tuple.
    spec = ft.ChildSpec("victim", Victim, args=(probe,), name="victim")  # type: ignore[arg-type]
    async with ft.open_node("bench"):
        await ft.start_supervisor([spec], max_restarts=MAX_RESTARTS, max_seconds=1.0)
        latencies: list[float] = []
        for i in range(_warmup(n) + n):
            probe.arm()
            await ft.cast("victim", "crash")
            await probe.started.wait()
            if i >= _warmup(n):
                latencies.append(probe.started_at - probe.crashed_at)
    return {
        "p50_us": percentile(latencies, 0.50) * 1e6,
        "p99_us": percentile(latencies, 0.99) * 1e6,
        "max_us": max(latencies) * 1e6,
    }


# -- spawning ---------------------------------------------------------------------------------


async def _trivial(countdown: _Countdown) -> None:
    countdown.tick()


async def _raw_spawn(n: int) -> Figures:
    async with trio.open_nursery() as nursery:
        for count, timed in ((_warmup(n), False), (n, True)):
            countdown = _Countdown(count)
            start = perf_counter()
            for _ in range(count):
                nursery.start_soon(_trivial, countdown)
            await countdown.done.wait()
            elapsed = perf_counter() - start
            if timed:
                return {"rate_per_s": n / elapsed}
    raise AssertionError("unreachable")


async def _spawn(n: int) -> Figures:
    async with ft.open_node("bench"):
        for count, timed in ((_warmup(n), False), (n, True)):
            countdown = _Countdown(count)
            start = perf_counter()
            for _ in range(count):
                ft.spawn(_trivial, countdown)
            await countdown.done.wait()
            elapsed = perf_counter() - start
            if timed:
                return {"rate_per_s": n / elapsed}
    raise AssertionError("unreachable")


# -- memory -----------------------------------------------------------------------------------


class Idle(ft.GenServer):
    """A server with no state that never receives anything."""


async def _traced_growth(n: int, start_one: Callable[[], Awaitable[None]]) -> Figures:
    """Bytes per object that ``start_one`` starts, by tracemalloc, once all are idle."""
    for _ in range(MEMORY_PRELOAD):
        await start_one()
    await trio.testing.wait_all_tasks_blocked()
    collect_garbage()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            await start_one()
        await trio.testing.wait_all_tasks_blocked()
        collect_garbage()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {"bytes": (after - before) / n}


async def _memory_bare_task(n: int) -> Figures:
    async with trio.open_nursery() as nursery:

        async def start_one() -> None:
            nursery.start_soon(trio.sleep_forever)

        figures = await _traced_growth(n, start_one)
        nursery.cancel_scope.cancel()
    return figures


async def _memory_idle_genserver(n: int) -> Figures:
    async with ft.open_node("bench"):

        async def start_one() -> None:
            await ft.start_server(Idle)

        return await _traced_growth(n, start_one)


# -- the schedule ------------------------------------------------------------------------------

Bench = Callable[[int], Awaitable[Figures]]


@dataclass(frozen=True)
class Case:
    """One benchmark: its name, its async function and which size it runs at."""

    name: str
    run: Bench
    size: Callable[[Sizes], int]


CASES = [
    Case("raw_event_request_reply", _raw_event_request_reply, lambda s: s.calls),
    Case("call", _call_default_timeout, lambda s: s.calls),
    Case("call_no_timeout", _call_no_timeout, lambda s: s.calls),
    Case("call_16_callers", _call_16_callers, lambda s: s.calls_16),
    Case("call_16_callers_no_timeout", _call_16_callers_no_timeout, lambda s: s.calls_16),
    Case("raw_channel_loop", _raw_channel_loop, lambda s: s.casts),
    Case("cast", _cast, lambda s: s.casts),
    Case("restart", _restart, lambda s: s.restarts),
    Case("raw_spawn", _raw_spawn, lambda s: s.spawns),
    Case("spawn", _spawn, lambda s: s.spawns),
    Case("memory_bare_task", _memory_bare_task, lambda s: s.idle),
    Case("memory_idle_genserver", _memory_idle_genserver, lambda s: s.idle),
]
"""In run order within a round: each baseline right before its subject."""

RATIOS = {
    "call_vs_raw_event": ("call", "raw_event_request_reply", "rate_per_s"),
    "call_no_timeout_vs_raw_event": ("call_no_timeout", "raw_event_request_reply", "rate_per_s"),
    "call_16_vs_call": ("call_16_callers", "call", "rate_per_s"),
    "call_16_no_timeout_vs_call_no_timeout": (
        "call_16_callers_no_timeout",
        "call_no_timeout",
        "rate_per_s",
    ),
    "cast_vs_raw_channel": ("cast", "raw_channel_loop", "rate_per_s"),
    "spawn_vs_raw_spawn": ("spawn", "raw_spawn", "rate_per_s"),
    "idle_genserver_vs_bare_task_memory": ("memory_idle_genserver", "memory_bare_task", "bytes"),
}
"""Ratio name: (subject, baseline, figure), computed per round."""


def _run_round(sizes: Sizes, label: str) -> dict[str, Figures]:
    results: dict[str, Figures] = {}
    for case in CASES:
        collect_garbage()
        results[case.name] = trio.run(case.run, case.size(sizes))
        shown = ", ".join(f"{k}={v:,.1f}" for k, v in results[case.name].items())
        progress(f"{label} {case.name}: {shown}")
    return results


def _report(rounds: list[dict[str, Figures]], sizes: Sizes, quick: bool) -> dict[str, Any]:
    figures: dict[str, dict[str, Any]] = {}
    for case in CASES:
        names = rounds[0][case.name]
        figures[case.name] = {
            figure: summary([r[case.name][figure] for r in rounds]) for figure in names
        }
    ratios: dict[str, dict[str, Any]] = {}
    for name, (subject, baseline, figure) in RATIOS.items():
        runs = [r[subject][figure] / r[baseline][figure] for r in rounds]
        ratios[name] = summary(runs, digits=3)

    def ratio(name: str) -> float:
        value: float = ratios[name]["median"]
        return value

    restart_p99 = statistics.median(r["restart"]["p99_us"] for r in rounds)
    targets = {
        "call_rate": target(
            ratio("call_vs_raw_event"), ">=", 0.75, "call rate >= 0.75x raw Event request/reply"
        ),
        "cast_rate": target(
            ratio("cast_vs_raw_channel"), ">=", 0.8, "cast rate >= 0.8x raw channel loop"
        ),
        "call_16_callers": target(
            ratio("call_16_vs_call"), ">=", 2.0, "16-caller call rate >= 2x single-caller"
        ),
        "restart_p99": target(restart_p99, "<", 1000.0, "restart latency p99 < 1000 us"),
        "idle_memory": target(
            ratio("idle_genserver_vs_bare_task_memory"),
            "<=",
            3.0,
            "idle GenServer memory <= 3x bare sleeping task",
        ),
    }
    return {
        "benchmark": "local",
        "quick": quick,
        "environment": environment("trio", "foundation-trio", "outcome", "attrs"),
        "method": {
            "rounds": sizes.rounds,
            "statistic": "median of rounds; ratios are medians of per-round ratios",
            "sizes": {
                "calls": sizes.calls,
                "calls_16_callers": sizes.calls_16,
                "callers": CALLERS,
                "casts": sizes.casts,
                "restarts": sizes.restarts,
                "spawns": sizes.spawns,
                "idle_objects": sizes.idle,
            },
            "memory_genservers_started_with": "ft.start_server (unsupervised)",
            "gc_enabled_while_timing": True,
            "foundation_trio_logging": "CRITICAL (silenced)",
        },
        "results": figures,
        "ratios": ratios,
        "targets": targets,
        "all_targets_pass": all(t["pass"] for t in targets.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run: fewer iterations and rounds"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    logging.getLogger("foundation_trio").setLevel(logging.CRITICAL)
    started = perf_counter()
    progress("warm-up round (not recorded)")
    _run_round(WARMUP_ROUND if not args.quick else QUICK, "warm-up")
    rounds = [_run_round(sizes, f"round {i + 1}/{sizes.rounds}") for i in range(sizes.rounds)]
    report = _report(rounds, sizes, args.quick)
    report["duration_s"] = round(perf_counter() - started, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
