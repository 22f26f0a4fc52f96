"""Benchmark of the cluster links (the transport), two OS processes on loopback.

Run ``python benchmarks/links.py`` (about 2 minutes) or ``--quick`` (a smoke run:
fewer messages and rounds, a 5 MB instead of a 50 MB payload). One JSON object
goes to stdout, progress to stderr.

This script starts a second Python process (``--child raw`` or ``--child links``)
that echoes and counts what it is sent; the parent measures. Each round runs the
raw trio-websocket baseline right before the ``Links`` figure it is compared with,
each in a fresh pair of processes, so drift on this noisy machine affects both
alike; every figure is the median of the rounds, ratios the median of the
per-round ratios. 64-byte messages throughout.

Figures:

``raw_ws_pingpong`` / ``links_pingpong``
    Round trip of one 64-byte message and its echo: a bare trio-websocket
    connection (one ws message each way), against ``Links.send`` on the data
    channel to a peer whose ``message_received`` sends it back. p50/p99 us.
``raw_ws_one_per_message`` / ``links_throughput``
    One-way rate: the sender ``await``-s one send per 64-byte message, the
    receiver counts them; messages/s until the receiver has the last one (it
    answers an end marker with its count). Raw: one websocket message per
    message. Links: ``await links.send(...)`` on the data channel, which
    coalesces whatever is queued into one frame.
``head_of_line``
    A ping every 2 ms on the control channel (``Links``), with its echo, while a
    payload of ``payload_mb`` MB is sent on the bulk channel to the same peer:
    p50/p99/max of the pings sent during the transfer, the transfer time, and the
    longest event-loop stall on either side (a task sleeping 1 ms in a loop
    records how late it wakes). ``idle_p99_ms`` and ``idle_stall_ms`` are the same
    measures over one second with no transfer, just before it: what the machine
    itself adds (on a shared, loaded machine, a lot). ``raw_head_of_line`` is the
    baseline: the same pings and payload on one bare trio-websocket connection, the
    payload as one websocket message.

Targets (issue "Cluster links", acceptance 3, the links' share): links one-way
throughput >= 3x raw one-message-per-ws-message; control p99 during the bulk
transfer <= 10 ms; no event-loop stall > 20 ms on either side. Links ping-pong
is reported against raw ping-pong without a target here (the call RTT target is
``benchmarks/cluster.py``'s).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any

import attrs
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _util import environment, percentile, progress, summary, target

from foundation_trio.cluster.links import Channel, Links
from foundation_trio.cluster.options import Cluster

COOKIE = "benchmark-cookie-not-secret"
MSG = b"x" * 63
BIG_LIMIT = 80 * 1024 * 1024


@attrs.define
class Sizes:
    rounds: int
    pings: int
    messages: int
    payload_mb: int


FULL = Sizes(rounds=5, pings=2000, messages=100_000, payload_mb=50)
QUICK = Sizes(rounds=2, pings=300, messages=10_000, payload_mb=5)


# -- loop stall monitor, in both processes -------------------------------------------


@attrs.define
class Stall:
    worst: float = 0.0

    async def watch(self) -> None:
        while True:
            started = perf_counter()
            await trio.sleep(0.001)
            self.worst = max(self.worst, perf_counter() - started - 0.001)


# -- the child processes ---------------------------------------------------------------


async def child_raw() -> None:
    stall = Stall()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        count = 0
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            assert isinstance(message, bytes)
            kind = message[:1]
            if kind == b"P":
                await ws.send_message(message)
            elif kind == b"D":
                count += 1
            elif kind == b"E":
                await ws.send_message(b"C%d" % count)
                count = 0
            elif kind == b"S":
                await ws.send_message(b"S%f" % stall.worst)
            elif kind == b"R":
                stall.worst = 0.0
            else:
                await ws.send_message(b"G%d" % len(message))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stall.watch)
        serve = partial(trio_websocket.serve_websocket, max_message_size=BIG_LIMIT)
        server = await nursery.start(serve, handler, "127.0.0.1", 0, None)
        print(f"127.0.0.1:{server.port}", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin
        nursery.cancel_scope.cancel()


class ChildEvents:
    def __init__(self) -> None:
        self.links: Links
        self.count = 0
        self.stall = Stall()

    async def message_received(self, peer: str, channel: Channel, data: bytes) -> None:
        kind = data[:1]
        if channel is Channel.BULK:
            await self.links.send(peer, Channel.CONTROL, b"G%d" % len(data))
        elif kind == b"P":
            await self.links.send(peer, channel, data)
        elif kind == b"D":
            self.count += 1
        elif kind == b"E":
            await self.links.send(peer, channel, b"C%d" % self.count)
            self.count = 0
        elif kind == b"S":
            await self.links.send(peer, channel, b"S%f" % self.stall.worst)
        elif kind == b"R":
            self.stall.worst = 0.0

    def peer_up(self, peer: str) -> None:
        pass

    def peer_down(self, peer: str, reason: str) -> None:
        pass


async def child_links() -> None:
    events = ChildEvents()
    links = Links("child", Cluster(cookie=COOKIE, max_message_size=BIG_LIMIT), events)
    events.links = links
    async with trio.open_nursery() as nursery:
        nursery.start_soon(events.stall.watch)
        await nursery.start(links.run)
        print(links.address, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


# -- the parent side ----------------------------------------------------------------------


class Child:
    """A child process of one role; its address is read from its first line."""

    def __init__(self, role: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", role],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.address = self.process.stdout.readline().strip()
        host, port = self.address.rsplit(":", 1)
        self.host, self.port = host, int(port)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def rtt_figures(samples: list[float]) -> dict[str, float]:
    micros = [s * 1e6 for s in samples]
    return {
        "p50_us": round(percentile(micros, 0.5), 1),
        "p99_us": round(percentile(micros, 0.99), 1),
    }


async def raw_pingpong(child: Child, pings: int) -> dict[str, float]:
    async with trio_websocket.open_websocket(child.host, child.port, "/", use_ssl=False) as ws:
        samples = []
        for i in range(pings + 50):
            started = perf_counter()
            await ws.send_message(b"P" + MSG)
            await ws.get_message()
            if i >= 50:
                samples.append(perf_counter() - started)
    return rtt_figures(samples)


async def raw_throughput(child: Child, messages: int) -> float:
    async with trio_websocket.open_websocket(child.host, child.port, "/", use_ssl=False) as ws:
        message = b"D" + MSG
        started = perf_counter()
        for _ in range(messages):
            await ws.send_message(message)
        await ws.send_message(b"E")
        reply = await ws.get_message()
        elapsed = perf_counter() - started
    assert reply == b"C%d" % messages, reply
    return messages / elapsed


class ParentEvents:
    def __init__(self) -> None:
        self.replies: dict[Channel, trio.MemorySendChannel[bytes]] = {}
        self.receivers: dict[Channel, trio.MemoryReceiveChannel[bytes]] = {}
        for channel in Channel:
            send, receive = trio.open_memory_channel[bytes](1000)
            self.replies[channel] = send
            self.receivers[channel] = receive

    async def message_received(self, peer: str, channel: Channel, data: bytes) -> None:
        await self.replies[channel].send(data)

    def peer_up(self, peer: str) -> None:
        pass

    def peer_down(self, peer: str, reason: str) -> None:
        pass


async def with_links(child: Child, work: Any) -> Any:
    events = ParentEvents()
    links = Links("parent", Cluster(cookie=COOKIE, max_message_size=BIG_LIMIT), events)
    async with trio.open_nursery() as nursery:
        await nursery.start(links.run)
        peer = await links.connect(child.address)
        with trio.fail_after(10):  # sends would queue meanwhile; keep setup out of timing
            while True:
                if len(links._links[peer].conns) == len(Channel):
                    break
                await trio.sleep(0.01)
        result = await work(links, peer, events)
        nursery.cancel_scope.cancel()
    return result


async def links_pingpong(links: Links, peer: str, events: ParentEvents, pings: int) -> Any:
    replies = events.receivers[Channel.DATA]
    samples = []
    for i in range(pings + 50):
        started = perf_counter()
        await links.send(peer, Channel.DATA, b"P" + MSG)
        await replies.receive()
        if i >= 50:
            samples.append(perf_counter() - started)
    return rtt_figures(samples)


async def links_throughput(links: Links, peer: str, events: ParentEvents, messages: int) -> Any:
    message = b"D" + MSG
    started = perf_counter()
    for _ in range(messages):
        await links.send(peer, Channel.DATA, message)
    await links.send(peer, Channel.DATA, b"E")
    reply = await events.receivers[Channel.DATA].receive()
    elapsed = perf_counter() - started
    assert reply == b"C%d" % messages, reply
    return messages / elapsed


async def links_head_of_line(
    links: Links, peer: str, events: ParentEvents, payload_mb: int
) -> Any:
    """The pings and stalls of one second with no transfer (the machine's own noise,
    measured the same way), then those during the transfer."""
    control = events.receivers[Channel.CONTROL]
    payload = b"B" * (payload_mb * 1024 * 1024)

    async def child_stall() -> float:
        await links.send(peer, Channel.CONTROL, b"S")
        while True:
            reply = await control.receive()
            if reply[:1] == b"S":
                return float(reply[1:])

    async def phase(transfer: bool) -> tuple[list[float], float, float, float]:
        stall = Stall()
        pings: list[float] = []
        done = trio.Event()

        async def pinger() -> None:
            while not done.is_set():
                started = perf_counter()
                await links.send(peer, Channel.CONTROL, b"P" + MSG)
                while True:
                    reply = await control.receive()
                    if reply[:1] == b"P":
                        break
                    assert reply == b"G%d" % len(payload), reply[:20]
                    done.set()
                pings.append(perf_counter() - started)
                await trio.sleep(0.002)

        await links.send(peer, Channel.CONTROL, b"R")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stall.watch)
            await trio.sleep(0.05)
            stall.worst = 0.0
            nursery.start_soon(pinger)
            started = perf_counter()
            if transfer:
                await links.send(peer, Channel.BULK, payload)
                await done.wait()
            else:
                await trio.sleep(1.0)
                done.set()
            elapsed = perf_counter() - started
            nursery.cancel_scope.cancel()
        return pings, elapsed, stall.worst, await child_stall()

    idle_pings, _, idle_stall, idle_child_stall = await phase(transfer=False)
    pings, transfer, stall, receiver_stall = await phase(transfer=True)
    figures = head_of_line_figures(pings, transfer, stall, receiver_stall)
    idle = [p * 1e3 for p in idle_pings]
    figures["idle_p99_ms"] = round(percentile(idle, 0.99), 2)
    figures["idle_stall_ms"] = round(max(idle_stall, idle_child_stall) * 1e3, 2)
    return figures


def head_of_line_figures(
    pings: list[float], transfer: float, stall: float, child_stall: float
) -> dict[str, float]:
    millis = [p * 1e3 for p in pings]
    return {
        "pings": len(millis),
        "p50_ms": round(percentile(millis, 0.5), 2),
        "p99_ms": round(percentile(millis, 0.99), 2),
        "max_ms": round(max(millis), 2),
        "transfer_s": round(transfer, 3),
        "sender_stall_ms": round(stall * 1e3, 2),
        "receiver_stall_ms": round(child_stall * 1e3, 2),
    }


async def raw_head_of_line(child: Child, payload_mb: int) -> dict[str, float]:
    stall = Stall()
    payload = b"B" * (payload_mb * 1024 * 1024)
    pings: list[float] = []
    done = trio.Event()
    async with trio_websocket.open_websocket(
        child.host, child.port, "/", use_ssl=False, max_message_size=BIG_LIMIT
    ) as ws:
        await ws.send_message(b"R")
        replies_send, replies = trio.open_memory_channel[bytes](100)

        async def reader() -> None:
            while True:
                message = await ws.get_message()
                assert isinstance(message, bytes)
                if message[:1] == b"G":
                    done.set()
                else:
                    await replies_send.send(message)

        async def pinger() -> None:
            while not done.is_set():
                started = perf_counter()
                await ws.send_message(b"P" + MSG)
                with trio.move_on_after(30):
                    await replies.receive()
                pings.append(perf_counter() - started)
                await trio.sleep(0.002)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            nursery.start_soon(stall.watch)
            await trio.sleep(0.05)
            stall.worst = 0.0
            nursery.start_soon(pinger)
            started = perf_counter()
            await ws.send_message(payload)
            await done.wait()
            transfer = perf_counter() - started
            await ws.send_message(b"S")
            child_stall = float((await replies.receive())[1:])
            nursery.cancel_scope.cancel()
    return head_of_line_figures(pings, transfer, stall.worst, child_stall)


def run_in(role: str, work: Any, *args: Any) -> Any:
    child = Child(role)
    try:
        return trio.run(work, child, *args)
    finally:
        child.close()


def run_links(work: Any, *args: Any) -> Any:
    async def go(child: Child) -> Any:
        return await with_links(
            child, lambda links, peer, events: work(links, peer, events, *args)
        )

    return run_in("links", go)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--child", choices=["raw", "links"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.getLogger("foundation_trio").setLevel(logging.CRITICAL)
    if args.child == "raw":
        trio.run(child_raw)
        return 0
    if args.child == "links":
        trio.run(child_links)
        return 0
    sizes = QUICK if args.quick else FULL
    started = perf_counter()
    rounds: dict[str, list[Any]] = {
        k: []
        for k in (
            "raw_ws_pingpong",
            "links_pingpong",
            "raw_ws_one_per_message",
            "links_throughput",
            "raw_head_of_line",
            "head_of_line",
        )
    }
    for index in range(sizes.rounds):
        progress(f"round {index + 1}/{sizes.rounds}: ping-pong")
        rounds["raw_ws_pingpong"].append(run_in("raw", raw_pingpong, sizes.pings))
        rounds["links_pingpong"].append(run_links(links_pingpong, sizes.pings))
        progress(f"round {index + 1}/{sizes.rounds}: throughput")
        rounds["raw_ws_one_per_message"].append(run_in("raw", raw_throughput, sizes.messages))
        rounds["links_throughput"].append(run_links(links_throughput, sizes.messages))
        progress(f"round {index + 1}/{sizes.rounds}: head of line ({sizes.payload_mb} MB)")
        rounds["raw_head_of_line"].append(run_in("raw", raw_head_of_line, sizes.payload_mb))
        rounds["head_of_line"].append(run_links(links_head_of_line, sizes.payload_mb))

    def median_of(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in rounds[name]))

    def figures(name: str) -> dict[str, Any]:
        keys = rounds[name][0].keys()
        return {key: summary([r[key] for r in rounds[name]], 2) for key in keys}

    throughput_ratio = statistics.median(
        links / raw
        for links, raw in zip(
            rounds["links_throughput"], rounds["raw_ws_one_per_message"], strict=True
        )
    )
    pingpong_ratio = statistics.median(
        links["p50_us"] / raw["p50_us"]
        for links, raw in zip(rounds["links_pingpong"], rounds["raw_ws_pingpong"], strict=True)
    )
    worst_stall = max(
        max(r["sender_stall_ms"], r["receiver_stall_ms"]) for r in rounds["head_of_line"]
    )
    report: dict[str, Any] = {
        "benchmark": "links",
        "quick": args.quick,
        "environment": environment("trio", "trio-websocket", "wsproto", "foundation-trio"),
        "method": {
            "rounds": sizes.rounds,
            "pings": sizes.pings,
            "messages": sizes.messages,
            "payload_mb": sizes.payload_mb,
            "message_bytes": 64,
            "processes": "two OS processes on 127.0.0.1, a fresh pair per figure and round",
            "statistic": "median of rounds; ratios are medians of per-round ratios",
        },
        "figures": {
            "raw_ws_pingpong": figures("raw_ws_pingpong"),
            "links_pingpong": figures("links_pingpong"),
            "links_pingpong_p50_over_raw": round(pingpong_ratio, 2),
            "raw_ws_one_per_message_msgs_per_s": summary(rounds["raw_ws_one_per_message"], 0),
            "links_throughput_msgs_per_s": summary(rounds["links_throughput"], 0),
            "links_throughput_over_raw": round(throughput_ratio, 2),
            "raw_head_of_line": figures("raw_head_of_line"),
            "head_of_line": figures("head_of_line"),
        },
        "targets": [
            target(throughput_ratio, ">=", 3.0, "links one-way throughput / raw one-per-message"),
            target(
                median_of("head_of_line", "p99_ms"),
                "<=",
                10.0,
                f"control ping p99 (ms) during a {sizes.payload_mb} MB bulk transfer",
            ),
            target(worst_stall, "<=", 20.0, "longest event-loop stall (ms), either side"),
        ],
        "duration_s": round(perf_counter() - started, 1),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
