"""Benchmark of remote processes between two OS processes on loopback.

Run ``python benchmarks/cluster.py`` (a few minutes) or ``--quick`` (a smoke run:
fewer messages, fewer rounds, a 10 MB payload instead of 50 MB). One JSON object
goes to stdout, progress to stderr. Every figure is the median of several rounds,
reported with the rounds.

This process opens node ``a``; it starts a second Python process (this script with
``--child node``) that opens node ``b`` with ``a`` as its seed, and a third (``--child
ws``) that serves plain trio-websocket for the baselines. Each round measures, in
this order, the two latency figures and the two throughput figures each in
alternating blocks (baseline, subject, baseline, ...; six of each), so that noise
that comes and goes weighs on both alike:

``raw_ws_ping_pong`` (baseline)
    One trio-websocket connection to the ``ws`` child; a 64-byte message is sent
    and its echo awaited, one at a time. p50/p99 of the round trip (us).
``call_rtt``
    ``await ft.call(("echo", "b"), payload)`` with a 64-byte ``bytes`` payload to a
    GenServer on node b that returns it. p50/p99 of the round trip (us).
``raw_ws_throughput`` (baseline)
    64-byte messages, each its own websocket message (``await send_message``), to
    the ``ws`` child, which counts them and answers once it has them all; msgs/s
    from the first send to that answer.
``send_throughput``
    ``await ft.send(sink, payload)`` of 64-byte ``bytes`` to a GenServer on b that
    counts them in ``handle_info``, then one ``ft.call(sink, "count")``, which the
    data channel's order puts behind every message; msgs/s from the first send to
    that reply.
``head_of_line``
    Node a sends one ``bytes`` payload of 50 MB to a process on b, which answers
    when it has it; meanwhile a process on a pings node b on the ``control``
    channel every 2 ms (``ft.ping``). p50/p99/max of the pings sent during the
    transfer (ms), the transfer time, and the largest event-loop stall seen on each
    node meanwhile, measured two ways. ``stall_a_ms``/``stall_b_ms``: a process on
    each node waits 1 ms in a loop (``ft.receive`` with a 1 ms timeout) and records
    how late it wakes (wall clock, so it includes the time the OS ran other
    processes). ``step_a_ms``/``step_b_ms``: the longest single task step of each
    node's event loop in thread CPU time (a trio instrument), i.e. how long the
    code held the loop, whatever else the machine was doing. ``stall_idle_ms`` and
    ``step_idle_ms`` are the same over a quiet second before the transfer.
``payload_join``
    Context, no target: the time this process takes to join the payload's 64 KiB
    chunks into one ``bytes`` object in one synchronous step (fresh pages and one
    copy), which is what reassembling a chunked message costs a receiver that does
    it on the event loop: compare it with ``stall_b_ms``.

Targets (from the issue): call RTT p50 <= 1.5x raw ping-pong p50; send throughput
>= 3x raw one-message-per-ws-message; control ping p99 during the transfer
<= 10 ms; no event-loop stall > 20 ms on either node.

The nodes log at CRITICAL only; the machine is shared, so absolute figures drift and
the ratios are the medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket
from _util import environment, percentile, progress, summary, target

import foundation_trio as ft
from foundation_trio.cluster.options import Cluster

perf_counter = time.perf_counter
PAYLOAD = b"x" * 64
COOKIE_ENV = "FT_BENCH_COOKIE"


@dataclass(frozen=True)
class Sizes:
    rounds: int
    calls: int
    messages: int
    big: int


FULL = Sizes(rounds=5, calls=3_000, messages=60_000, big=50 * 1024 * 1024)
QUICK = Sizes(rounds=2, calls=600, messages=12_000, big=10 * 1024 * 1024)


# -- the child processes -----------------------------------------------------------------


async def _ws_child() -> None:
    """Serve trio-websocket: echo messages starting with P; count the others and
    answer the count when a message is exactly END."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        count = 0
        try:
            while True:
                message = await ws.get_message()
                if message[:1] == b"P":
                    await ws.send_message(message)
                elif message == b"END":
                    await ws.send_message(str(count).encode())
                    count = 0
                else:
                    count += 1
        except trio_websocket.ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        print(server.port, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin
        nursery.cancel_scope.cancel()


class Echo(ft.GenServer):
    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        return request


class Sink(ft.GenServer):
    async def init(self) -> None:
        self.count = 0

    async def handle_info(self, message: Any) -> None:
        self.count += 1

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        count, self.count = self.count, 0
        return count


async def _big_receiver() -> None:
    """Answer ``("got", size)`` to the sender of each ``(reply_to, payload)``."""
    while True:
        message = await ft.receive()
        if isinstance(message, bytes):
            await ft.send(("hol", "a"), ("got", len(message)))


class StepTimer(trio.abc.Instrument):
    """The longest single task step of this thread's event loop, in thread CPU time:
    how long one task held the loop, without the time the OS gave to other
    processes (which the wall-clock lateness includes on a shared machine)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._start = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._start = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.worst = max(self.worst, time.thread_time() - self._start)


async def stall_monitor() -> None:
    """Wait 1 ms in a loop and keep the worst lateness, and time every task step
    with a :class:`StepTimer`; ``("read", pid)`` sends ``("stall", lateness, step)``
    back and starts afresh."""
    worst = 0.0
    steps = StepTimer()
    trio.lowlevel.add_instrument(steps)
    try:
        while True:
            start = trio.current_time()
            try:
                message = await ft.receive(timeout=0.001)
            except ft.ReceiveTimeout:
                worst = max(worst, trio.current_time() - start - 0.001)
                continue
            if isinstance(message, tuple) and message[0] == "read":
                await ft.send(message[1], ("stall", worst, steps.worst))
                worst = steps.worst = 0.0
    finally:
        trio.lowlevel.remove_instrument(steps)


async def _node_child(seed: str) -> None:
    cookie = os.environ[COOKIE_ENV]
    async with ft.open_node("b", cluster=Cluster(cookie=cookie, seeds=[seed])):
        await ft.start_server(Echo, name="echo")
        await ft.start_server(Sink, name="sink")
        ft.spawn(_big_receiver, name="big")
        ft.spawn(stall_monitor, name="stall")
        await trio.to_thread.run_sync(sys.stdin.read)


# -- measurements in the parent -----------------------------------------------------------------


def _latencies(samples: list[float]) -> dict[str, float]:
    return {
        "p50_us": percentile(samples, 0.50) * 1e6,
        "p99_us": percentile(samples, 0.99) * 1e6,
    }


BLOCKS = 6
"""Each round alternates the baseline and the subject in this many blocks, so that
the machine's noise, which comes and goes, weighs on both alike."""


async def _raw_round_trips(ws: trio_websocket.WebSocketConnection, n: int) -> list[float]:
    message = b"P" + PAYLOAD[1:]
    samples = []
    for _ in range(n):
        start = perf_counter()
        await ws.send_message(message)
        await ws.get_message()
        samples.append(perf_counter() - start)
    return samples


async def _call_round_trips(n: int) -> list[float]:
    echo = ("echo", "b")
    samples = []
    for _ in range(n):
        start = perf_counter()
        await ft.call(echo, PAYLOAD)
        samples.append(perf_counter() - start)
    return samples


async def round_trips(port: int, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """``(raw ping-pong, ft.call)`` latency figures, measured in alternating blocks."""
    async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
        await _raw_round_trips(ws, max(100, n // 10))  # warm-up
        await _call_round_trips(max(100, n // 10))
        raw: list[float] = []
        calls: list[float] = []
        for _ in range(BLOCKS):
            raw += await _raw_round_trips(ws, n // BLOCKS)
            calls += await _call_round_trips(n // BLOCKS)
    return _latencies(raw), _latencies(calls)


async def _raw_stream(ws: trio_websocket.WebSocketConnection, n: int) -> float:
    start = perf_counter()
    for _ in range(n):
        await ws.send_message(PAYLOAD)
    await ws.send_message(b"END")
    count = int(await ws.get_message())
    elapsed = perf_counter() - start
    if count != n:
        raise RuntimeError(f"the ws child counted {count} of {n} messages")
    return elapsed


async def _send_stream(sink: ft.Pid, n: int) -> float:
    start = perf_counter()
    for _ in range(n):
        await ft.send(sink, PAYLOAD)
    count = await ft.call(sink, "count", timeout=120)
    elapsed = perf_counter() - start
    if count != n:
        raise RuntimeError(f"the sink counted {count} of {n} messages")
    return elapsed


async def throughputs(port: int, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """``(raw one message per ws message, ft.send)`` rates, in alternating blocks."""
    sink = ft.whereis(("sink", "b"))
    assert sink is not None
    await ft.call(sink, "count")
    per_block = n // BLOCKS
    raw_time = send_time = 0.0
    async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
        for _ in range(BLOCKS):
            raw_time += await _raw_stream(ws, per_block)
            send_time += await _send_stream(sink, per_block)
    total = per_block * BLOCKS
    return {"rate_per_s": total / raw_time}, {"rate_per_s": total / send_time}


async def _read_stall(where: Any) -> tuple[float, float]:
    """``(worst lateness, longest task step)`` in seconds since the last read."""
    await ft.send(where, ("read", ft.self_pid()))
    message = await ft.receive(lambda m: isinstance(m, tuple) and m[0] == "stall", timeout=10)
    return float(message[1]), float(message[2])


async def head_of_line(size: int) -> dict[str, float]:
    payload = b"y" * size
    local_stall = ft.whereis("stall")
    big = ft.whereis(("big", "b"))
    assert big is not None
    assert local_stall is not None
    # the machine's own noise over a quiet second
    await _read_stall(local_stall)
    await _read_stall(("stall", "b"))
    await trio.sleep(1.0)
    idle_a = await _read_stall(local_stall)
    idle_b = await _read_stall(("stall", "b"))
    pings: list[float] = []
    done = trio.Event()

    async def pinger() -> None:
        while not done.is_set():
            pings.append(await ft.ping("b", timeout=30))
            await trio.sleep(0.002)

    start = perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pinger)
        await ft.send(big, payload)
        got = await ft.receive(lambda m: isinstance(m, tuple) and m[0] == "got", timeout=120)
        transfer = perf_counter() - start
        done.set()
    if got[1] != size:
        raise RuntimeError(f"node b got {got[1]} bytes of {size}")
    stall_a = await _read_stall(local_stall)
    stall_b = await _read_stall(("stall", "b"))
    return {
        "ping_p50_ms": percentile(pings, 0.50) * 1e3,
        "ping_p99_ms": percentile(pings, 0.99) * 1e3,
        "ping_max_ms": max(pings) * 1e3,
        "pings": len(pings),
        "transfer_s": transfer,
        "stall_a_ms": stall_a[0] * 1e3,
        "stall_b_ms": stall_b[0] * 1e3,
        "stall_idle_ms": max(idle_a[0], idle_b[0]) * 1e3,
        "step_a_ms": stall_a[1] * 1e3,
        "step_b_ms": stall_b[1] * 1e3,
        "step_idle_ms": max(idle_a[1], idle_b[1]) * 1e3,
    }


def payload_join_ms(size: int) -> float:
    chunk = 64 * 1024
    parts = [bytes(chunk) for _ in range(size // chunk)]
    start = perf_counter()
    joined = b"".join(parts)
    elapsed = perf_counter() - start
    del joined
    return elapsed * 1e3


# -- running -------------------------------------------------------------------------------


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )


async def _parent(sizes: Sizes, quick: bool) -> dict[str, Any]:
    load_before = os.getloadavg()
    cookie = secrets.token_urlsafe(24)
    ws_child = _spawn("ws")
    assert ws_child.stdout is not None
    assert ws_child.stdin is not None
    port = int(await trio.to_thread.run_sync(ws_child.stdout.readline))
    rounds: list[dict[str, dict[str, float]]] = []
    node_child: subprocess.Popen[bytes] | None = None
    try:
        async with ft.open_node("a", cluster=Cluster(cookie=cookie)):
            ft.register("hol")
            ft.spawn(stall_monitor, name="stall")
            node_child = _spawn(
                "node", ft.cluster_address(), env={**os.environ, COOKIE_ENV: cookie}
            )
            await _wait_for_node_b()
            progress("node b is up")
            for index in range(sizes.rounds):
                label = f"round {index + 1}/{sizes.rounds}"
                figures: dict[str, dict[str, float]] = {}
                raw_rtt, call_rtt = await round_trips(port, sizes.calls)
                figures["raw_ws_ping_pong"] = raw_rtt
                figures["call_rtt"] = call_rtt
                raw_rate, send_rate = await throughputs(port, sizes.messages)
                figures["raw_ws_throughput"] = raw_rate
                figures["send_throughput"] = send_rate
                figures["head_of_line"] = await head_of_line(sizes.big)
                figures["payload_join"] = {"ms": payload_join_ms(sizes.big)}
                progress(f"{label}: {json.dumps(figures)}")
                rounds.append(figures)
    finally:
        for child in (ws_child, node_child):
            if child is not None and child.stdin is not None:
                child.stdin.close()
                child.wait(timeout=30)
    report = _report(rounds, sizes, quick)
    # The machine is shared: its load says how much the figures are worth.
    report["method"]["load_average_1m_before_after"] = [
        round(load_before[0], 2),
        round(os.getloadavg()[0], 2),
    ]
    return report


async def _wait_for_node_b() -> None:
    """Until node b has linked to this one and announced its processes' names."""
    with trio.fail_after(30):
        while True:
            if ft.whereis(("stall", "b")) is not None:
                return
            await trio.sleep(0.05)


def _figure(rounds: list[dict[str, dict[str, float]]], name: str, key: str) -> list[float]:
    return [r[name][key] for r in rounds]


def _report(
    rounds: list[dict[str, dict[str, float]]], sizes: Sizes, quick: bool
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in rounds[0]:
        results[name] = {
            key: summary(_figure(rounds, name, key), 1 if "rate" not in key else 0)
            for key in rounds[0][name]
        }
    rtt_ratio = [r["call_rtt"]["p50_us"] / r["raw_ws_ping_pong"]["p50_us"] for r in rounds]
    throughput_ratio = [
        r["send_throughput"]["rate_per_s"] / r["raw_ws_throughput"]["rate_per_s"] for r in rounds
    ]
    ratios = {
        "call_rtt_p50_vs_raw_ping_pong": summary(rtt_ratio, 3),
        "send_throughput_vs_raw_ws": summary(throughput_ratio, 3),
    }
    hol = results["head_of_line"]
    worst_step = max(
        statistics.median(_figure(rounds, "head_of_line", "step_a_ms")),
        statistics.median(_figure(rounds, "head_of_line", "step_b_ms")),
    )
    worst_stall = max(
        statistics.median(_figure(rounds, "head_of_line", "stall_a_ms")),
        statistics.median(_figure(rounds, "head_of_line", "stall_b_ms")),
    )
    targets = {
        "call_rtt": target(
            ratios["call_rtt_p50_vs_raw_ping_pong"]["median"],
            "<=",
            1.5,
            "ft.call RTT p50 <= 1.5x raw trio-websocket ping-pong p50",
        ),
        "send_throughput": target(
            ratios["send_throughput_vs_raw_ws"]["median"],
            ">=",
            3.0,
            "one-way ft.send throughput >= 3x raw one-message-per-ws-message",
        ),
        "control_p99": target(
            hol["ping_p99_ms"]["median"],
            "<=",
            10.0,
            f"control ping p99 <= 10 ms while {sizes.big // (1024 * 1024)} MB is sent",
        ),
        "loop_stall": target(
            worst_stall,
            "<=",
            20.0,
            "no event-loop stall > 20 ms on either node (wall-clock lateness, median)",
        ),
        "loop_step": target(
            worst_step,
            "<=",
            20.0,
            "no task step holds either node's event loop > 20 ms (CPU time, median)",
        ),
    }
    return {
        "benchmark": "cluster",
        "quick": quick,
        "environment": environment("trio", "trio-websocket", "wsproto", "msgspec"),
        "method": {
            "rounds": sizes.rounds,
            "calls": sizes.calls,
            "messages": sizes.messages,
            "payload_bytes": len(PAYLOAD),
            "big_payload_bytes": sizes.big,
        },
        "results": results,
        "ratios": ratios,
        "targets": targets,
        "all_targets_pass": all(t["pass"] for t in targets.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.getLogger("foundation_trio").setLevel(logging.CRITICAL)
    if args.child:
        if args.child[0] == "ws":
            trio.run(_ws_child)
        else:
            trio.run(_node_child, args.child[1])
        return 0
    started = perf_counter()
    report = trio.run(_parent, QUICK if args.quick else FULL, args.quick)
    report["duration_s"] = round(perf_counter() - started, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
