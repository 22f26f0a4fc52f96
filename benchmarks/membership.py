"""Benchmark of a live cluster: many nodes on 127.0.0.1 running the membership overlay.

Run ``python benchmarks/membership.py`` (256 HyParView nodes, several minutes) or
``--quick`` (32 nodes); ``--nodes N`` overrides the size. One JSON object goes to
stdout, progress to stderr. All nodes run in this one OS process (one trio loop), each
opened with ``ft.open_node(name, cluster=ft.Cluster(overlay=..., seeds=[an earlier
node]))`` with the default timings (heartbeat 1 s, liveness broadcast every 2 s,
shuffle every 10 s), so the figures include every node's share of one CPU.

For the HyParView cluster of N nodes and, as the baseline measured in the same run, a
full mesh of ``min(N, 32)`` nodes (the ``auto`` overlay's limit), it reports:

``start_s``
    Seconds to open every node (sequentially; each listens before the next starts).
``formation_s``
    Seconds from the first node's start until every node's active view is non-empty
    and the graph of active views is connected (full mesh: every node knows every
    other); ``formed`` is false (and ``formation_s`` null) if that did not happen
    within 120 s, with ``known_member_fraction`` the share of (node, member) pairs
    known by then.
``delivery_ms``
    ``rounds`` broadcasts, one at a time from random nodes; for each node, the time
    from ``ft.cluster.broadcast`` to the subscriber receiving it. p50/p99 over all
    (node, broadcast) pairs, and the median of each broadcast's last delivery.
``messages_per_node_per_s``
    Gossip frames sent plus received per node per second over ``rest_s`` seconds
    with no user broadcast (liveness broadcasts, shuffles, heartbeats excluded: the
    heartbeats are link-level control frames).
``memory_per_node_kib``
    Growth of this process's resident memory from before the first node to after
    formation, divided by N. The HyParView cluster runs first; the baseline's figure
    comes after it (freed memory stays resident), so it is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import foundation_trio as ft
from foundation_trio.cluster.membership import Membership

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import environment, percentile, progress

COOKIE = "membership-benchmark"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def connected_graph(drivers: list[Membership]) -> bool:
    names = {d.node.name for d in drivers}
    graph = {d.node.name: {p.split("@")[0] for p in d.core.neighbors} & names for d in drivers}
    if any(not peers for peers in graph.values()):
        return False
    start = next(iter(names))
    seen, todo = {start}, [start]
    while todo:
        for peer in graph[todo.pop()]:
            if peer not in seen:
                seen.add(peer)
                todo.append(peer)
    return seen == names


async def run_cluster(
    overlay: str, count: int, rounds: int, rest: float, seed: int, formation_limit: float = 120
) -> dict[str, Any]:
    rng = random.Random(seed)
    drivers: list[Membership] = []
    stop = trio.Event()
    before = rss_kib()

    async def node(name: str, seeds: list[str], task_status: Any) -> None:
        options = ft.Cluster(
            cookie=COOKIE, seeds=seeds, overlay=overlay, rng=random.Random(rng.random())
        )
        async with ft.open_node(name, cluster=options) as opened:
            driver = opened.find_extension(Membership)
            assert driver is not None
            task_status.started(driver)
            await stop.wait()

    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for index in range(count):
            seeds = []
            if drivers:
                contact = drivers[rng.randrange(len(drivers))].links
                assert contact is not None
                seeds = [contact.address]
            drivers.append(await nursery.start(node, f"{overlay}{index}", seeds))
        started = trio.current_time() - t0
        progress(f"{overlay}: {count} nodes started in {started:.1f}s")
        formed = False
        with trio.move_on_after(formation_limit):
            while True:
                if overlay == "full_mesh":
                    done = all(len(d.member_ids()) == count - 1 for d in drivers)
                else:
                    done = connected_graph(drivers)
                if done:
                    formed = True
                    break
                await trio.sleep(0.1)
        formation = trio.current_time() - t0
        known = sum(len(d.member_ids()) for d in drivers) / (count * (count - 1))
        progress(f"{overlay}: formed in {formation:.1f}s")
        await trio.sleep(2)
        memory = (rss_kib() - before) / count

        received: dict[str, list[float]] = {}

        async def listen(driver: Membership) -> None:
            channel = driver.subscribe("bench", 1024)
            async for message in channel:
                if isinstance(message, ft.cluster.BroadcastMessage):
                    received.setdefault(message.message_id, []).append(trio.current_time())

        listeners = trio.CancelScope()

        async def listen_all() -> None:
            with listeners:
                async with trio.open_nursery() as inner:
                    for driver in drivers:
                        inner.start_soon(listen, driver)

        nursery.start_soon(listen_all)
        await trio.sleep(0.5)
        latencies: list[float] = []
        last: list[float] = []
        missing = 0
        for index in range(rounds):
            sender = drivers[rng.randrange(count)]
            sent_at = trio.current_time()
            message_id = sender.broadcast("bench", index)
            with trio.move_on_after(30):
                while len(received.get(message_id, ())) < count:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            times = received.get(message_id, [])
            missing += count - len(times)
            latencies.extend((t - sent_at) * 1000 for t in times)
            if times:
                last.append((max(times) - sent_at) * 1000)
        progress(f"{overlay}: {rounds} broadcasts, {missing} deliveries missing")

        frames_before = sum(d.frames_sent + d.frames_received for d in drivers)
        rest_start = trio.current_time()
        await trio.sleep(rest)
        elapsed = trio.current_time() - rest_start
        frames = sum(d.frames_sent + d.frames_received for d in drivers) - frames_before
        listeners.cancel()
        stop.set()
    return {
        "nodes": count,
        "start_s": round(started, 2),
        "formed": formed,
        "formation_s": round(formation, 2) if formed else None,
        "known_member_fraction": round(known, 3),
        "delivery_ms": {
            "p50": round(percentile(latencies, 0.5), 2) if latencies else None,
            "p99": round(percentile(latencies, 0.99), 2) if latencies else None,
            "last_delivery_median": round(statistics.median(last), 2) if last else None,
            "rounds": rounds,
            "missing_deliveries": missing,
        },
        "messages_per_node_per_s": round(frames / count / elapsed, 2),
        "rest_s": round(elapsed, 1),
        "memory_per_node_kib": round(memory, 1),
    }


async def main(args: argparse.Namespace) -> None:
    nodes = args.nodes or (32 if args.quick else 256)
    rounds = 10 if args.quick else 30
    rest = 5.0 if args.quick else 20.0
    result: dict[str, Any] = {"benchmark": "membership", "quick": args.quick}
    result["environment"] = environment("trio", "trio-websocket", "msgspec")
    # HyParView first: resident memory rarely shrinks, so only the first cluster's
    # memory figure is clean (the baseline's is marked as such).
    result["hyparview"] = await run_cluster("hyparview", nodes, rounds, rest, 2)
    baseline = await run_cluster("full_mesh", min(nodes, 32), rounds, rest, 1)
    baseline["memory_per_node_kib_note"] = "measured after the HyParView run: a lower bound"
    result["baseline_full_mesh"] = baseline
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 nodes, fewer rounds")
    parser.add_argument("--nodes", type=int, default=0, help="cluster size (default 256)")
    trio.run(main, parser.parse_args())
