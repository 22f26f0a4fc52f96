"""Benchmark of a live cluster: up to 256 nodes on 127.0.0.1 over several OS processes.

Run ``python benchmarks/membership.py`` (HyParView at 32, 64, 128 and 256 nodes, and
the full-mesh baseline of 16 nodes; ten to twenty minutes) or ``--quick`` (HyParView at
32 nodes, the baseline at 8). ``--mesh-nodes N`` sets the baseline's size, ``--sizes
64,128`` the HyParView sizes, ``--processes K`` the number of OS processes per cluster.
One JSON object goes to stdout, progress to stderr.

How it runs. For each cluster the parent starts ``K`` worker processes
(``sys.executable`` running this script with ``--worker``); each opens its share of
the nodes in one trio loop with ``ft.open_node(name, cluster=ft.Cluster(overlay=...,
seeds=[one address]))`` and the default timings (heartbeat 1 s, heartbeat digest
every 2 s, shuffle every 10 s). The parent talks to each worker over its stdin and
stdout, one JSON object per line (no pickle, no sockets). The first worker opens one
node; then every worker opens its others at the same time, each node joining through a
random node already open, either that first one or one of the worker's own. ``K``
defaults to one process per 32 HyParView nodes and one per 8 full-mesh nodes (a
full-mesh node keeps a link to every other, so it costs about N/5 times a HyParView
node). The parent's and the workers' clock for delivery times is ``time.monotonic()``,
Linux's ``CLOCK_MONOTONIC``, one clock for every process of the machine, so a send time
taken in one process and a delivery time taken in another are comparable.

Sizes run smallest first; the first one that does not form within ``--deadline``
seconds (120) is reported (``formed: false``) and no larger one is tried.

For each cluster:

``start_s``
    Seconds from the parent's start signal to every worker having opened its nodes.
``formation_s``
    Seconds from the same moment until the overlay is formed, polled every 0.5 s:
    HyParView, every node's active view is non-empty and the graph of active views is
    connected (the criterion: every node can reach every other through the overlay);
    full mesh, every node has every other as a linked neighbour. Null if not formed by
    the deadline, with ``known_member_fraction`` (the share of (node, other node)
    pairs in each other's views) at that point.
``views_full_s``, ``all_reachable_s``
    HyParView only, polled on until 30 s after formation: when every active view
    first held ``active_view_size`` neighbours, and when every node's
    ``ft.cluster.reachable()`` first named every other node (a growing heartbeat
    seen from all). Null if not within those 30 s.
``delivery_ms``
    ``rounds`` broadcasts, one at a time from random nodes, each waited for until
    every node has it (30 s at most). For each (node, broadcast) the time from just
    before ``ft.cluster.broadcast`` in the sender's process to the subscriber in the
    receiver's process having it; p50/p99 over all pairs, the median of each
    broadcast's last delivery, and the deliveries missing.
``frames_per_node_per_s``
    At rest (``rest_s`` seconds, no user broadcast): ``gossip`` counts the frames the
    membership drivers sent plus received (heartbeat digests, IHAVE batches,
    shuffles), ``links`` every websocket frame on every channel of the links that
    lived through the whole window, heartbeats included, sent plus received.
``cpu_per_node_ms_per_s``
    At rest: CPU time (``time.process_time``) of all workers over the window, per
    node per second of wall time. ``busiest_process_cpu`` is the highest share of one
    core a worker used: near or above the share the machine can give it (2 cores
    shared by every process, see ``load_average``), that worker is saturated.
``memory_per_node_kib``
    Per worker: its resident memory (``VmRSS``) after formation and a 2 s settle,
    minus its resident memory before it opened any node (interpreter, imports and
    trio already loaded; both after ``gc.collect()``), divided by its nodes. The
    median over the workers, with the lowest and highest.
``diagnostics``
    Counts from the nodes' log records over the whole run: links up, links down by
    reason, handshakes rejected by reason, failed dials and joins.
``load_average``
    ``os.getloadavg()`` when the cluster started and when it stopped.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import logging
import math
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import foundation_trio as ft
from foundation_trio.cluster.membership import Membership

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import environment, percentile, progress

SCRIPT = str(Path(__file__).resolve())
COOKIE = "membership-benchmark"
TOPIC = "bench"
HYPARVIEW_PER_PROCESS = 32
MESH_PER_PROCESS = 8
STATUS_PERIOD = 0.5
AFTER_FORMATION = 30.0
BROADCAST_WAIT = 30.0


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


# -- worker side ------------------------------------------------------------------------


class LogCounter(logging.Handler):
    """Counts the cluster's log records by kind, numbers and names blanked out."""

    PATTERNS = (
        (re.compile(r"handshake with \S+ rejected \((\w+) side\): (.*)"), "rejected[{0}] {1}"),
        (re.compile(r"link to \S+ down: (.*?)(?: \(\d+ queued messages dropped\))?$"), "down {0}"),
        (re.compile(r"link to \S+ up"), "up"),
        (re.compile(r"dial \S+ failed: (.*)"), "dial failed: {0}"),
        (re.compile(r"join through \S+ failed: (.*)"), "join failed: {0}"),
    )

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for pattern, template in self.PATTERNS:
            match = pattern.search(message)
            if match:
                parts = [
                    re.sub(r"'[^']*'|\d+(?:\.\d+)?(?::\d+)?", "#", g)[:100] for g in match.groups()
                ]
                self.counts["link " + template.format(*parts)] += 1
                return


class Worker:
    def __init__(self, overlay: str, first: int, seed: int) -> None:
        self.overlay = overlay
        self.first = first
        self.rng = random.Random(seed)
        self.drivers: list[Membership] = []
        self.received: dict[str, list[float]] = {}
        self.stop = trio.Event()
        self.lags: list[float] = []
        self.counter = LogCounter()
        self.window: dict[str, Any] = {}
        for name in ("foundation_trio.cluster", "foundation_trio.cluster.membership"):
            logger = logging.getLogger(name)
            logger.addHandler(self.counter)
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
        gc.collect()
        self.baseline_kib = rss_kib()

    async def lag_meter(self) -> None:
        while True:
            before = time.monotonic()
            await trio.sleep(0.1)
            self.lags.append(time.monotonic() - before - 0.1)

    async def node(self, name: str, seeds: list[str], task_status: Any) -> None:
        options = ft.Cluster(
            cookie=COOKIE,
            seeds=seeds,
            overlay=self.overlay,
            rng=random.Random(self.rng.random()),
        )
        async with ft.open_node(name, cluster=options) as opened:
            driver = opened.find_extension(Membership)
            assert driver is not None
            channel = driver.subscribe(TOPIC, 4096)
            task_status.started(driver)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.listen, channel)
                await self.stop.wait()
                nursery.cancel_scope.cancel()

    async def listen(self, channel: trio.MemoryReceiveChannel[Any]) -> None:
        async for message in channel:
            if isinstance(message, ft.cluster.BroadcastMessage):
                self.received.setdefault(message.message_id, []).append(time.monotonic())

    async def handle(self, nursery: trio.Nursery, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "open":
            seeds: list[str] = list(command["seeds"])
            opened = []
            for _ in range(command["count"]):
                own = [d.links.address for d in self.drivers if d.links is not None]
                contacts = seeds + own
                chosen = [self.rng.choice(contacts)] if contacts else []
                name = f"{self.overlay}{self.first + len(self.drivers)}"
                driver = await nursery.start(self.node, name, chosen)
                assert driver.links is not None
                self.drivers.append(driver)
                opened.append(driver.links.address)
            return {"addresses": opened}
        if op == "status":
            lags, self.lags = self.lags, []
            return {
                "nodes": [
                    {
                        "id": d.me,
                        "neighbors": list(d.core.neighbors),
                        "members": len(d.member_ids()),
                        "reachable": len(d.reachable()),
                    }
                    for d in self.drivers
                ],
                "loop_lag_max_s": round(max(lags), 3) if lags else None,
            }
        if op == "memory":
            gc.collect()
            return {"rss_kib": rss_kib(), "baseline_kib": self.baseline_kib}
        if op == "broadcast":
            driver = self.drivers[command["node"]]
            sent = time.monotonic()
            message_id = driver.broadcast(TOPIC, command["tag"])
            return {"id": message_id, "sent": sent}
        if op == "count":
            return {"n": len(self.received.get(command["id"], ()))}
        if op == "deliveries":
            return {"deliveries": self.received}
        if op in ("window_start", "window_end"):
            links: dict[str, int] = {}
            for driver in self.drivers:
                if driver.links is None:
                    continue
                for peer in driver.links.peers():
                    try:
                        stats = driver.links.stats(peer)
                    except ft.NotConnected:
                        continue
                    frames = sum(
                        s.frames_sent + s.frames_received for s in stats.channels.values()
                    )
                    links[f"{driver.me}>{peer}"] = frames
            sample = {
                "gossip": sum(d.frames_sent + d.frames_received for d in self.drivers),
                "links": links,
                "cpu": time.process_time(),
                "wall": time.monotonic(),
            }
            if op == "window_start":
                self.window = sample
                return {}
            start = self.window
            common = sample["links"].keys() & start["links"].keys()
            return {
                "gossip": sample["gossip"] - start["gossip"],
                "links": sum(sample["links"][k] - start["links"][k] for k in common),
                "cpu": sample["cpu"] - start["cpu"],
                "wall": sample["wall"] - start["wall"],
            }
        if op == "diagnostics":
            return {"counts": dict(self.counter.counts)}
        if op == "stop":
            self.stop.set()
            return {}
        raise ValueError(f"unknown command {op!r}")


async def worker_main(args: argparse.Namespace) -> None:
    worker = Worker(args.overlay, args.first, args.seed)
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    lines = LineReader(stdin)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.lag_meter)
        print(json.dumps({"baseline_kib": worker.baseline_kib}), flush=True)
        while True:
            line = await lines.readline()
            if line is None:
                break
            command = json.loads(line)
            reply = await worker.handle(nursery, command)
            print(json.dumps(reply), flush=True)
            if command["op"] == "stop":
                break
        # The nodes close (their links say goodbye) before the loop ends.
        with trio.move_on_after(30):
            while any(d.links is not None for d in worker.drivers):  # noqa: ASYNC110
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()


# -- parent side -----------------------------------------------------------------------


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def readline(self) -> str | None:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                return None
            self.buffer += data
        index = self.buffer.index(b"\n")
        line = bytes(self.buffer[:index])
        del self.buffer[: index + 1]
        return line.decode()


class WorkerProcess:
    def __init__(self, process: trio.Process, nodes: int, first: int) -> None:
        self.process = process
        self.nodes = nodes
        self.first = first
        assert process.stdout is not None
        self.lines = LineReader(process.stdout)
        self.lock = trio.Lock()

    async def reply(self) -> dict[str, Any]:
        line = await self.lines.readline()
        if line is None:
            raise RuntimeError(f"worker {self.process.pid} ended (exit {self.process.returncode})")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        async with self.lock:
            assert self.process.stdin is not None
            await self.process.stdin.send_all((json.dumps({"op": op, **fields}) + "\n").encode())
            return await self.reply()


async def ask_all(workers: list[WorkerProcess], op: str, **fields: Any) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = [{} for _ in workers]

    async def one(index: int) -> None:
        results[index] = await workers[index].ask(op, **fields)

    async with trio.open_nursery() as nursery:
        for index in range(len(workers)):
            nursery.start_soon(one, index)
    return results


def overlay_state(statuses: list[dict[str, Any]], overlay: str, count: int) -> dict[str, bool]:
    nodes = [node for status in statuses for node in status["nodes"]]
    ids = {node["id"] for node in nodes}
    graph = {node["id"]: set(node["neighbors"]) & ids for node in nodes}
    if overlay == "full_mesh":
        formed = all(len(peers) == count - 1 for peers in graph.values())
    elif any(not peers for peers in graph.values()):
        formed = False
    else:
        # Connected as an undirected graph: a link is usable both ways.
        undirected: dict[str, set[str]] = {node: set() for node in graph}
        for node, peers in graph.items():
            for peer in peers:
                undirected[node].add(peer)
                undirected[peer].add(node)
        start = next(iter(undirected))
        seen, todo = {start}, [start]
        while todo:
            for peer in undirected[todo.pop()]:
                if peer not in seen:
                    seen.add(peer)
                    todo.append(peer)
        formed = seen == ids
    active = min(ft.Cluster(cookie=COOKIE).active_view_size, count - 1)
    return {
        "formed": formed,
        "views_full": all(len(node["neighbors"]) >= active for node in nodes),
        "all_reachable": all(node["reachable"] >= count - 1 for node in nodes),
    }


def known_fraction(statuses: list[dict[str, Any]], count: int) -> float:
    known = sum(node["members"] for status in statuses for node in status["nodes"])
    return known / (count * (count - 1))


async def run_cluster(
    overlay: str,
    count: int,
    processes: int,
    rounds: int,
    rest: float,
    deadline: float,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    load_before = os.getloadavg()
    shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    shares = [share for share in shares if share]
    workers: list[WorkerProcess] = []
    first = 0
    stopped = False
    try:
        for index, share in enumerate(shares):
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    SCRIPT,
                    "--worker",
                    "--overlay",
                    overlay,
                    "--first",
                    str(first),
                    "--seed",
                    str(seed * 1000 + index),
                ],
                stdin=-1,
                stdout=-1,
            )
            workers.append(WorkerProcess(process, share, first))
            first += share
        baselines = [await w.reply() for w in workers]
        progress(f"{overlay} x{count}: {len(workers)} workers ready ({shares} nodes)")

        t0 = time.monotonic()
        bootstrap = (await workers[0].ask("open", count=1, seeds=[]))["addresses"]

        async def open_rest(worker: WorkerProcess) -> None:
            rest_count = worker.nodes - (1 if worker is workers[0] else 0)
            if rest_count:
                await worker.ask("open", count=rest_count, seeds=bootstrap)

        async with trio.open_nursery() as nursery:
            for worker in workers:
                nursery.start_soon(open_rest, worker)
        started = time.monotonic() - t0
        progress(f"{overlay} x{count}: nodes opened in {started:.1f}s")

        marks: dict[str, float | None] = {
            "formed": None,
            "views_full": None,
            "all_reachable": None,
        }
        lag_max = 0.0
        statuses: list[dict[str, Any]] = []
        while True:
            statuses = await ask_all(workers, "status")
            now = time.monotonic() - t0
            lag_max = max([lag_max, *(s["loop_lag_max_s"] or 0 for s in statuses)])
            for key, value in overlay_state(statuses, overlay, count).items():
                if value and marks[key] is None:
                    marks[key] = now
            formed_at = marks["formed"]
            if formed_at is None and now > deadline:
                break
            if formed_at is not None and (
                overlay == "full_mesh" or all(marks.values()) or now > formed_at + AFTER_FORMATION
            ):
                break
            await trio.sleep(STATUS_PERIOD)
        known = known_fraction(statuses, count)
        formed = marks["formed"] is not None
        progress(
            f"{overlay} x{count}: "
            + (f"formed in {marks['formed']:.1f}s" if formed else f"not formed in {deadline}s")
        )
        result: dict[str, Any] = {
            "nodes": count,
            "processes": len(workers),
            "nodes_per_process": shares,
            "start_s": round(started, 2),
            "formed": formed,
            "formation_s": round(marks["formed"], 2) if marks["formed"] is not None else None,
            "known_member_fraction": round(known, 3),
        }
        if overlay != "full_mesh":
            for key in ("views_full", "all_reachable"):
                mark = marks[key]
                result[f"{key}_s"] = round(mark, 2) if mark is not None else None
        if formed:
            await trio.sleep(2)
            memory = await ask_all(workers, "memory")
            per_node = [
                (m["rss_kib"] - m["baseline_kib"]) / w.nodes
                for m, w in zip(memory, workers, strict=True)
            ]
            result["memory_per_node_kib"] = {
                "median": round(statistics.median(per_node), 1),
                "min": round(min(per_node), 1),
                "max": round(max(per_node), 1),
                "process_baseline_kib": round(
                    statistics.median(b["baseline_kib"] for b in baselines)
                ),
            }
            result["delivery_ms"] = await broadcasts(workers, count, rounds, rng)
            await ask_all(workers, "window_start")
            await trio.sleep(rest)
            windows = await ask_all(workers, "window_end")
            wall = statistics.median(w["wall"] for w in windows)
            result["rest_s"] = round(wall, 1)
            result["frames_per_node_per_s"] = {
                "gossip": round(sum(w["gossip"] for w in windows) / count / wall, 1),
                "links": round(sum(w["links"] for w in windows) / count / wall, 1),
            }
            result["cpu_per_node_ms_per_s"] = round(
                sum(w["cpu"] for w in windows) * 1000 / count / wall, 2
            )
            result["busiest_process_cpu"] = round(max(w["cpu"] / w["wall"] for w in windows), 2)
        result["loop_lag_max_s"] = round(lag_max, 2)
        diagnostics: collections.Counter[str] = collections.Counter()
        for reply in await ask_all(workers, "diagnostics"):
            diagnostics.update(reply["counts"])
        result["diagnostics"] = dict(diagnostics.most_common())
        await ask_all(workers, "stop")
        stopped = True
    finally:
        # After "stop" the nodes close their links in an orderly way; after an
        # error the workers are killed at once.
        with trio.move_on_after(60 if stopped else 0):
            for worker in workers:
                await worker.process.wait()
        for worker in workers:
            if worker.process.returncode is None:
                worker.process.kill()
            for stream in (worker.process.stdin, worker.process.stdout):
                if stream is not None:
                    await stream.aclose()
    result["load_average"] = {
        "start": [round(x, 2) for x in load_before],
        "end": [round(x, 2) for x in os.getloadavg()],
    }
    return result


async def broadcasts(
    workers: list[WorkerProcess], count: int, rounds: int, rng: random.Random
) -> dict[str, Any]:
    latencies: list[float] = []
    last: list[float] = []
    missing = 0
    for tag in range(rounds):
        target = rng.randrange(count)
        worker = next(w for w in workers if w.first <= target < w.first + w.nodes)
        sent = await worker.ask("broadcast", node=target - worker.first, tag=tag)
        with trio.move_on_after(BROADCAST_WAIT):
            # The deliveries happen in other processes: poll them.
            while True:
                replies = await ask_all(workers, "count", id=sent["id"])
                if sum(reply["n"] for reply in replies) >= count:
                    break
                await trio.sleep(0.02)
        times = [
            t
            for reply in await ask_all(workers, "deliveries")
            for t in reply["deliveries"].get(sent["id"], [])
        ]
        missing += count - len(times)
        latencies.extend((t - sent["sent"]) * 1000 for t in times)
        if times:
            last.append((max(times) - sent["sent"]) * 1000)
    progress(f"  {rounds} broadcasts, {missing} deliveries missing")
    return {
        "p50": round(percentile(latencies, 0.5), 2) if latencies else None,
        "p99": round(percentile(latencies, 0.99), 2) if latencies else None,
        "last_delivery_median": round(statistics.median(last), 2) if last else None,
        "rounds": rounds,
        "missing_deliveries": missing,
    }


def processes_for(overlay: str, count: int, requested: int) -> int:
    if requested:
        return min(requested, count)
    per = MESH_PER_PROCESS if overlay == "full_mesh" else HYPARVIEW_PER_PROCESS
    return math.ceil(count / per)


async def main(args: argparse.Namespace) -> None:
    if args.sizes:
        sizes = [int(size) for size in args.sizes.split(",")]
    else:
        sizes = [32] if args.quick else [32, 64, 128, 256]
    mesh_nodes = args.mesh_nodes or (8 if args.quick else 16)
    rounds = 10 if args.quick else 20
    rest = 5.0 if args.quick else 15.0
    deadline = args.deadline
    result: dict[str, Any] = {
        "benchmark": "membership",
        "quick": args.quick,
        "environment": environment("trio", "trio-websocket", "msgspec"),
        "clock": "time.monotonic (CLOCK_MONOTONIC, shared by every process of the machine)",
        "deadline_s": deadline,
    }
    result["baseline_full_mesh"] = await run_cluster(
        "full_mesh",
        mesh_nodes,
        processes_for("full_mesh", mesh_nodes, args.processes),
        rounds,
        rest,
        deadline,
        1,
    )
    runs = []
    for size in sizes:
        run = await run_cluster(
            "hyparview",
            size,
            processes_for("hyparview", size, args.processes),
            rounds,
            rest,
            deadline,
            2,
        )
        runs.append(run)
        if not run["formed"]:
            progress(f"hyparview x{size} did not form within {deadline}s: stopping")
            break
    result["hyparview"] = runs
    result["largest_formed"] = max((r["nodes"] for r in runs if r["formed"]), default=None)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 HyParView nodes, 8 in mesh")
    parser.add_argument("--sizes", default="", help="HyParView sizes, e.g. 32,64,128,256")
    parser.add_argument("--mesh-nodes", type=int, default=0, help="full-mesh baseline size")
    parser.add_argument("--processes", type=int, default=0, help="OS processes per cluster")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds to form")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--overlay", default="hyparview", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    trio.run(worker_main if arguments.worker else main, arguments)
