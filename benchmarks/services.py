"""Benchmark of the core services: what telemetry, the request context, the event
store and protection cost per operation.

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
``events``
    The event store, in memory and in SQLite (a fresh database file per round,
    WAL, ``synchronous=NORMAL``), each from the node's shell process; events
    are made before the clock starts. Per store:
    ``store`` (one ``await store(event)`` per event) and ``store_batch_100``
    (``store_batch`` of 100 events), in events per second; against
    ``baseline_call`` (memory: ``ft.call`` of a GenServer that appends the
    event to a list, i.e. the message round trip without the store) and
    ``baseline_raw_insert`` / ``baseline_raw_insert_batch_100`` (SQLite: the
    same rows inserted with plain ``sqlite3`` on the event loop, one
    transaction per row / per 100 rows, no worker thread).
    Then, with ``event_store_size`` events of 10 types, 10 events per
    correlation id: ``query_type_100`` (``query(type=..., limit=100)``),
    ``query_recent_100`` (``query(since=<the newest 1%>, limit=100)``),
    ``correlation_chain`` (10 events) and ``get``, in queries per second;
    against ``baseline_scan_type_100`` (memory: a list comprehension over a
    plain list of the same events, first 100 of the type) and
    ``baseline_raw_query_type_100`` (SQLite: the same SELECT with plain
    ``sqlite3`` on the event loop).
``context``
    ``call`` / ``call_bound``: ``ft.call`` of a trivial GenServer from the shell,
    without and inside ``ft.context.bind(request_id=...)``: the server then
    restores the caller's context around each request (a ``ContextVar`` set and
    reset). ``spawn`` / ``spawn_observed``: ``ft.spawn`` of trivial processes,
    with nothing listening to the runtime's lifecycle events and with a no-op
    handler on ``runtime.process.start`` and ``runtime.process.exit`` (which
    installs the lifecycle hook). Each pair runs A-B-B-A in the round and each
    figure is the mean of its two runs. Operations per second and ratios.
    ``context_read_ns``: one read of the context variable, as every call and cast
    does; ``context_read_share_of_call`` relates it to the duration of a call.
``protection``
    The cost of protecting a call, from the node's shell process, with nothing
    attached to telemetry. ``unprotected``: the baseline, ``await fn()`` of an async
    function that returns at once. ``breaker``: ``await breaker.call(fn)`` through a
    closed ``CircuitBreaker``. ``rate_limiter``: ``limiter.acquire(key)`` then
    ``await fn()``, with a bucket large enough never to refuse (the common path: a
    bucket that is not full). ``execute_protected_plain``: ``execute_protected`` of
    a key configured with nothing (the cost of the keyed lookup and dispatch).
    ``execute_protected``: a key with a rate limit and a breaker, the same
    never-refusing settings. ``pool_checkout``: ``async with pool.checkout() as r:
    await fn(r)`` on a pool of one idle resource, no health check. A checkout, like
    trio's ``Semaphore.acquire``, has a schedule point, so ``checkpoint``, ``await
    fn()`` followed by ``await trio.lowlevel.checkpoint()``, is measured as its
    reference. Nanoseconds per call, ratios to the baseline, and the overhead
    (subject minus baseline, median of per-round differences) per protected call.
    The load average before and after is reported: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from _util import collect_garbage, environment, progress, summary

import foundation_trio as ft
from foundation_trio.runtime.context import request_context

perf_counter = time.perf_counter

Figures = dict[str, float]


@dataclass(frozen=True)
class Sizes:
    """How much work each run does."""

    rounds: int
    executes: int
    calls: int
    spawns: int
    event_writes: int = 2_000
    event_store_size: int = 20_000
    event_queries: int = 500


FULL = Sizes(rounds=7, executes=200_000, calls=20_000, spawns=5_000)
QUICK = Sizes(
    rounds=3,
    executes=20_000,
    calls=2_000,
    spawns=1_000,
    event_writes=300,
    event_store_size=2_000,
    event_queries=100,
)


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


def _context_read_ns(n: int) -> float:
    """Nanoseconds per read of the request context, as each call and cast does it:
    the median of 9 timed loops (one loop is short enough for a preemption on a
    busy machine to dominate it)."""
    read = request_context.get
    for _ in range(max(1000, n // 10)):
        read()
    collect_garbage()
    runs = []
    for _ in range(9):
        started = perf_counter()
        for _ in range(n):
            read()
        runs.append((perf_counter() - started) * 1e9 / n)
    return statistics.median(runs)


async def _context_round(sizes: Sizes) -> Figures:
    # Subject and baseline in A-B-B-A order, each figure the mean of its two runs:
    # whichever runs second in a process tends to run faster (warmer caches, heap).
    figures: Figures = {}
    async with ft.open_node("bench"):
        server = await ft.start_server(_Echo)
        figures["context_read_ns"] = _context_read_ns(sizes.executes)
        plain = [await _call_rate(server, sizes.calls)]
        with ft.context.bind(request_id="bench-1"):
            bound = [await _call_rate(server, sizes.calls)]
            bound.append(await _call_rate(server, sizes.calls))
        plain.append(await _call_rate(server, sizes.calls))
        figures["call"] = statistics.mean(plain)
        figures["call_bound"] = statistics.mean(bound)

        events = [ft.telemetry.PROCESS_START, ft.telemetry.PROCESS_EXIT]
        unobserved = [await _spawn_rate(sizes.spawns)]
        ft.telemetry.attach("observer", events, _noop)
        observed = [await _spawn_rate(sizes.spawns), await _spawn_rate(sizes.spawns)]
        ft.telemetry.detach("observer")
        unobserved.append(await _spawn_rate(sizes.spawns))
        figures["spawn"] = statistics.mean(unobserved)
        figures["spawn_observed"] = statistics.mean(observed)
    return figures


def context_section(sizes: Sizes) -> dict[str, Any]:
    rounds = []
    for i in range(sizes.rounds):
        rounds.append(trio.run(_context_round, sizes))
        shown = ", ".join(f"{k}={v:,.1f}" for k, v in rounds[-1].items())
        progress(f"context round {i + 1}/{sizes.rounds}: per s {shown}")
    return {
        "unit": "operations per second",
        "calls_per_run": sizes.calls,
        "spawns_per_run": sizes.spawns,
        "results": _figures(rounds),
        "ratios": {
            **_ratios(
                rounds,
                {
                    "call_bound_vs_call": ("call_bound", "call"),
                    "spawn_observed_vs_spawn": ("spawn_observed", "spawn"),
                },
            ),
            # What carrying the context adds to an unbound call: one read, as a
            # share of the call's own duration (1 / rate), measured in the same round.
            "context_read_share_of_call": summary(
                [r["context_read_ns"] * r["call"] / 1e9 for r in rounds], digits=4
            ),
        },
    }


# -- the event store ---------------------------------------------------------------------------


class _Append(ft.GenServer):
    async def init(self) -> None:
        self.kept: list[Any] = []

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        self.kept.append(request)
        return request.id


def _make_events(n: int, start: float) -> list[Any]:
    return [
        ft.events.new_event(
            f"bench.type{i % 10}",
            {"i": i, "user": f"u{i % 97}", "amount": i * 0.5},
            correlation_id=f"c{i // 10}",
            timestamp=start + i * 0.001,
        )
        for i in range(n)
    ]


async def _write_rate(events: list[Any], batch: int) -> float:
    store, store_batch = ft.events.store, ft.events.store_batch
    started = perf_counter()
    if batch == 1:
        for event in events:
            await store(event)
    else:
        for at in range(0, len(events), batch):
            await store_batch(events[at : at + batch])
    return len(events) / (perf_counter() - started)


async def _rate(n: int, op: Callable[[int], Any]) -> float:
    for i in range(max(10, n // 10)):
        await op(i)
    collect_garbage()
    started = perf_counter()
    for i in range(n):
        await op(i)
    return n / (perf_counter() - started)


def _raw_rows(events: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (e.id, e.type, e.timestamp, e.correlation_id, e.parent_id, json.dumps(e.data), "{}")
        for e in events
    ]


def _raw_insert_rate(path: str, events: list[Any], batch: int) -> float:
    """Plain sqlite3 on the calling thread, with the store's schema and settings."""
    from foundation_trio.services.events import _COLUMNS, SqliteStore

    SqliteStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    rows = _raw_rows(events)
    insert = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    started = perf_counter()
    for at in range(0, len(rows), batch):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(insert, rows[at : at + batch])
        db.execute("COMMIT")
    rate = len(rows) / (perf_counter() - started)
    db.close()
    return rate


def _raw_query_rate(path: str, n: int) -> float:
    from foundation_trio.services.events import _COLUMNS

    db = sqlite3.connect(path, isolation_level=None)
    sql = (
        f"SELECT {_COLUMNS} FROM events WHERE timestamp >= ? AND type = ? "
        "ORDER BY timestamp ASC, seq ASC LIMIT 100 OFFSET 0"
    )
    for i in range(max(10, n // 10)):
        [json.loads(row[5]) for row in db.execute(sql, (0.0, f"bench.type{i % 10}"))]
    collect_garbage()
    started = perf_counter()
    for i in range(n):
        [json.loads(row[5]) for row in db.execute(sql, (0.0, f"bench.type{i % 10}"))]
    rate = n / (perf_counter() - started)
    db.close()
    return rate


async def _events_round(sizes: Sizes, kind: str, directory: str) -> Figures:
    figures: Figures = {}
    path = os.path.join(directory, f"{kind}.sqlite3")
    settings = {"store": kind, "path": path, "max_events": 10_000_000, "max_age": 1e9}
    async with ft.open_node("bench", config={"events": settings}):
        start = time.time()
        writes = sizes.event_writes
        # warm-up, then the subjects and their baselines, each on fresh events
        await _write_rate(_make_events(100, start - 100), 1)
        if kind == "memory":
            server = await ft.start_server(_Append)
            call = ft.call
            fresh = _make_events(writes, start)
            collect_garbage()
            started = perf_counter()
            for event in fresh:
                await call(server, event)
            figures["baseline_call"] = writes / (perf_counter() - started)
        else:
            raw = os.path.join(directory, "raw.sqlite3")
            figures["baseline_raw_insert"] = _raw_insert_rate(raw, _make_events(writes, start), 1)
        collect_garbage()
        figures["store"] = await _write_rate(_make_events(writes, start), 1)
        batched = _make_events(writes * 10, start + 10)
        if kind == "sqlite":
            raw = os.path.join(directory, "raw_batch.sqlite3")
            figures["baseline_raw_insert_batch_100"] = _raw_insert_rate(raw, batched, 100)
        collect_garbage()
        figures["store_batch_100"] = await _write_rate(batched, 100)

        # queries over a store of event_store_size events
        await ft.events.prune_before(math.inf)
        population = _make_events(sizes.event_store_size, start)
        await _write_rate(population, 1000)
        newest = population[-1].timestamp
        recent = newest - (newest - start) / 100
        queries = sizes.event_queries
        query = ft.events.query
        if kind == "memory":
            plain = list(population)

            async def scan(i: int) -> Any:
                wanted = f"bench.type{i % 10}"
                return [e for e in plain if e.type == wanted][:100]

            figures["baseline_scan_type_100"] = await _rate(queries, scan)
        else:
            figures["baseline_raw_query_type_100"] = await trio.to_thread.run_sync(
                _raw_query_rate, path, queries
            )

        async def by_type(i: int) -> Any:
            return await query(type=f"bench.type{i % 10}", limit=100)

        async def by_time(i: int) -> Any:
            return await query(since=recent, limit=100)

        async def chain(i: int) -> Any:
            return await ft.events.correlation_chain(f"c{(i * 7919) % (len(population) // 10)}")

        async def get(i: int) -> Any:
            return await ft.events.get(population[(i * 7919) % len(population)].id)

        figures["query_type_100"] = await _rate(queries, by_type)
        figures["query_recent_100"] = await _rate(queries, by_time)
        figures["correlation_chain"] = await _rate(queries, chain)
        figures["get"] = await _rate(queries, get)
    return figures


def events_section(sizes: Sizes) -> dict[str, Any]:
    report: dict[str, Any] = {
        "unit": "events per second (writes), queries per second (reads)",
        "writes_per_run": sizes.event_writes,
        "batched_writes_per_run": sizes.event_writes * 10,
        "events_queried": sizes.event_store_size,
        "queries_per_run": sizes.event_queries,
    }
    pairs = {
        "memory": {
            "store_vs_baseline_call": ("store", "baseline_call"),
            "query_type_100_vs_baseline_scan": ("query_type_100", "baseline_scan_type_100"),
        },
        "sqlite": {
            "store_vs_baseline_raw_insert": ("store", "baseline_raw_insert"),
            "store_batch_100_vs_baseline_raw_batch_100": (
                "store_batch_100",
                "baseline_raw_insert_batch_100",
            ),
            "query_type_100_vs_baseline_raw_query": (
                "query_type_100",
                "baseline_raw_query_type_100",
            ),
        },
    }
    for kind in ("memory", "sqlite"):
        rounds = []
        for i in range(sizes.rounds):
            with tempfile.TemporaryDirectory() as directory:
                rounds.append(trio.run(_events_round, sizes, kind, directory))
            shown = ", ".join(f"{k}={v:,.0f}" for k, v in rounds[-1].items())
            progress(f"events {kind} round {i + 1}/{sizes.rounds}: per s {shown}")
        report[kind] = {
            "results": _figures(rounds),
            "ratios": _ratios(rounds, pairs[kind]),
        }
    return report


# -- protection ----------------------------------------------------------------------------------


async def _nothing(*args: Any) -> None:
    return None


def _ns_per_call(started: float, n: int) -> float:
    return (perf_counter() - started) * 1e9 / n


async def _time_unprotected(n: int) -> float:
    fn = _nothing
    for _ in range(max(1000, n // 10)):
        await fn()
    collect_garbage()
    started = perf_counter()
    for _ in range(n):
        await fn()
    return _ns_per_call(started, n)


async def _time_checkpoint(n: int) -> float:
    fn = _nothing
    checkpoint = trio.lowlevel.checkpoint
    for _ in range(max(1000, n // 10)):
        await fn()
        await checkpoint()
    collect_garbage()
    started = perf_counter()
    for _ in range(n):
        await fn()
        await checkpoint()
    return _ns_per_call(started, n)


async def _time_breaker(n: int) -> float:
    fn = _nothing
    call = ft.protection.CircuitBreaker("bench").call
    for _ in range(max(1000, n // 10)):
        await call(fn)
    collect_garbage()
    started = perf_counter()
    for _ in range(n):
        await call(fn)
    return _ns_per_call(started, n)


async def _time_rate_limiter(n: int) -> float:
    fn = _nothing
    # A bucket that never runs dry in this loop, refilling slowly: never full, never
    # refusing, which is the path most admitted calls take.
    acquire = ft.protection.RateLimiter("bench", rate=1.0, burst=4 * n + 10_000).acquire
    for _ in range(max(1000, n // 10)):
        acquire("client")
        await fn()
    collect_garbage()
    started = perf_counter()
    for _ in range(n):
        acquire("client")
        await fn()
    return _ns_per_call(started, n)


async def _time_execute_protected(n: int, key: str) -> float:
    fn = _nothing
    execute = ft.protection.execute_protected
    for _ in range(max(1000, n // 10)):
        await execute(key, fn)
    collect_garbage()
    started = perf_counter()
    for _ in range(n):
        await execute(key, fn)
    return _ns_per_call(started, n)


async def _time_pool(n: int) -> float:
    fn = _nothing

    async def make() -> object:
        return object()

    pool: ft.protection.ResourcePool[object] = ft.protection.ResourcePool(
        "bench", factory=make, size=1
    )
    checkout = pool.checkout
    for _ in range(max(1000, n // 10)):
        async with checkout() as resource:
            await fn(resource)
    collect_garbage()
    started = perf_counter()
    for _ in range(n):
        async with checkout() as resource:
            await fn(resource)
    return _ns_per_call(started, n)


async def _protection_round(sizes: Sizes) -> Figures:
    n = sizes.executes // 4
    never_refuse = {"rate": 1.0, "burst": 4 * n + 10_000}
    figures: Figures = {}
    async with ft.open_node("bench"):
        ft.protection.configure("plain")
        ft.protection.configure("guarded", rate_limit=never_refuse, breaker={})
        figures["unprotected"] = await _time_unprotected(n)
        figures["breaker"] = await _time_breaker(n)
        figures["unprotected_2"] = await _time_unprotected(n)
        figures["rate_limiter"] = await _time_rate_limiter(n)
        figures["unprotected_3"] = await _time_unprotected(n)
        figures["execute_protected_plain"] = await _time_execute_protected(n, "plain")
        figures["unprotected_4"] = await _time_unprotected(n)
        figures["execute_protected"] = await _time_execute_protected(n, "guarded")
        figures["unprotected_5"] = await _time_unprotected(n)
        figures["checkpoint"] = await _time_checkpoint(n)
        figures["unprotected_6"] = await _time_unprotected(n)
        figures["pool_checkout"] = await _time_pool(n)
    # One baseline per round: the median of those measured next to the subjects.
    baselines = [figures.pop(f"unprotected_{i}") for i in range(2, 7)]
    figures["unprotected"] = statistics.median([figures["unprotected"], *baselines])
    return figures


_PROTECTED = (
    "breaker",
    "rate_limiter",
    "execute_protected_plain",
    "execute_protected",
    "checkpoint",
    "pool_checkout",
)


def protection_section(sizes: Sizes) -> dict[str, Any]:
    load_before = os.getloadavg()
    rounds = []
    for i in range(sizes.rounds):
        rounds.append(trio.run(_protection_round, sizes))
        shown = ", ".join(f"{k}={v:,.0f}" for k, v in rounds[-1].items())
        progress(f"protection round {i + 1}/{sizes.rounds}: ns/call {shown}")
    return {
        "unit": "ns per call",
        "calls_per_run": sizes.executes // 4,
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "results": _figures(rounds),
        "ratios_to_unprotected": _ratios(
            rounds, {name: (name, "unprotected") for name in _PROTECTED}
        ),
        "overhead_ns_per_call": {
            name: summary([r[name] - r["unprotected"] for r in rounds]) for name in _PROTECTED
        },
    }


# -- the table of sections -----------------------------------------------------------------------

SECTIONS: dict[str, Callable[[Sizes], dict[str, Any]]] = {
    "telemetry": telemetry_section,
    "context": context_section,
    "events": events_section,
    "protection": protection_section,
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
