"""Benchmark of partition and re-merge: how long after a heal a split cluster is one again.

Run ``python benchmarks/remerge.py`` (8 nodes, 7 cycles per overlay) or ``--quick`` (8
nodes, 3 cycles); ``--nodes N`` and ``--cycles K`` override (16 nodes run well since the
heartbeat digests replaced the per-node liveness broadcasts; see docs/membership.md).
One JSON object goes to stdout, progress to stderr. All nodes run in this one OS process
(one trio loop) on 127.0.0.1 and find each other through local-host discovery (no
seeds), with short timings so that a cycle takes seconds: discovery every ``interval`` =
1 s (jitter 0.2), heartbeat 0.2 s with ``peer_down_after`` 5 (failure detection 1 s at
most), heartbeat digests every 0.5 s, handshake timeout 2 s, links redialling a lost
peer every 2 s at most (``reconnect_max``: during the split every node redials every
node across, and a shorter pace saturates the one CPU at 16 full-mesh nodes); HyParView
with an active view of 3 (so the overlay is partial even at 8 nodes).

For each overlay (HyParView, then full mesh) one cluster forms, then ``cycles`` times:
the nodes are split into two random halves by the fault injector (a blackhole both
ways between every pair across, which also refuses new links), the split lasts until
each half reaches only itself (``reachable()``) plus 1 s, then the faults are cleared
(the heal). Per cycle it measures, from the heal:

``one_overlay_s``
    until every node reaches every other (``ft.cluster.reachable()``).
``broadcast_all_s``
    until a broadcast sent after the heal has been delivered to every node: one
    node of each half broadcasts a probe every 0.1 s, alternately; the earliest
    completion counts.

and, from the cut, ``split_s``: until each half reaches only itself (failure
detection plus the liveness horizon, ``4 * alive_interval``). ``first_join_s`` is
when discovery first joined a node after the heal, and
``discovery_joins_until_one_overlay`` how many joins it made until ``one_overlay_s``
(a full mesh also re-merges without discovery: its links redial the members they
lost, every ``reconnect_max`` seconds at most).

The baseline, computed from the same run's options, is the documented bound: a
discovery round comes within ``interval * (1 + jitter)`` of the heal and joins within
one handshake (``handshake_timeout`` at most), ``bound_join_s``; the nodes the joiner
does not link to directly become reachable as the heartbeat digests cross (at once
between the new neighbours, then a quarter interval per hop at most), at most
``alive_interval * 1.25`` later across up to 5 hops, ``bound_reachable_s``. Reported:
medians and runs, the worst cycle, and whether the worst stayed within the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import foundation_trio as ft
from foundation_trio.cluster import discovery
from foundation_trio.cluster.discovery import Discovery, LocalHost
from foundation_trio.cluster.faults import IN, OUT
from foundation_trio.cluster.membership import Membership

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import environment, progress, summary, target

COOKIE = "remerge-benchmark"
INTERVAL, JITTER = 1.0, 0.2
PROBE_EVERY = 0.1
RECONNECT_MAX = 2.0

JOINS: list[float] = []
"""When discovery joined a node (``join_found`` returned a name), in trio time."""


def count_joins() -> None:
    """Wrap ``discovery.join_found`` (looked up at call time) to record each join."""
    join_found = discovery.join_found

    async def counted(links: Any, address: str, membership: Any = None) -> str | None:
        name = await join_found(links, address, membership)
        if name is not None:
            JOINS.append(trio.current_time())
        return name

    discovery.join_found = counted


def options(overlay: str, directory: str, rng: random.Random) -> ft.Cluster:
    return ft.Cluster(
        cookie=COOKIE,
        overlay=overlay,
        active_view_size=3,
        passive_view_size=30,
        alive_interval=0.5,
        shuffle_period=1.0,
        heartbeat_interval=0.2,
        peer_down_after=5,
        handshake_timeout=2.0,
        reconnect_max=RECONNECT_MAX,
        rng=random.Random(rng.random()),
        discovery=Discovery(
            LocalHost(directory),
            interval=INTERVAL,
            jitter=JITTER,
            rng=random.Random(rng.random()),
        ),
    )


def reaches(drivers: dict[str, Membership], groups: list[list[str]]) -> bool:
    for group in groups:
        for name in group:
            if set(drivers[name].reachable()) != set(group) - {name}:
                return False
    return True


def cut(drivers: dict[str, Membership], halves: list[list[str]], on: bool) -> None:
    for side, other in (halves, halves[::-1]):
        for name in side:
            links = drivers[name].links
            assert links is not None
            for peer in other:
                if on:
                    links.faults.blackhole(peer, IN)
                    links.faults.blackhole(peer, OUT)
                else:
                    links.faults.clear(peer)


async def wait_until(check: Any, limit: float) -> float | None:
    """Seconds until ``check()`` holds (polled every 10 ms), None after ``limit``."""
    start = trio.current_time()
    with trio.move_on_after(limit):
        while not check():  # noqa: ASYNC110 (state of many nodes, no event to wait on)
            await trio.sleep(0.01)
        return trio.current_time() - start
    return None


async def cycle(drivers: dict[str, Membership], rng: random.Random) -> dict[str, Any]:
    names = sorted(drivers)
    shuffled = rng.sample(names, len(names))
    halves = [sorted(shuffled[: len(names) // 2]), sorted(shuffled[len(names) // 2 :])]
    cut(drivers, halves, True)
    split = await wait_until(lambda: reaches(drivers, halves), 60)
    await trio.sleep(1.0)

    delivered: dict[str, set[str]] = {}
    sent_after_heal: set[str] = set()
    complete = trio.Event()

    async def listen(name: str, channel: Any) -> None:
        async for message in channel:
            if isinstance(message, ft.cluster.BroadcastMessage):
                got = delivered.setdefault(message.message_id, set())
                got.add(name)
                if message.message_id in sent_after_heal and len(got) == len(names):
                    complete.set()

    async def probe() -> None:
        turn = 0
        while True:
            sender = halves[turn % 2][0]
            sent_after_heal.add(drivers[sender].broadcast("probe", turn))
            turn += 1
            await trio.sleep(PROBE_EVERY)

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(listen, name, drivers[name].subscribe("probe", 1024))
        await trio.sleep(0.1)
        cut(drivers, halves, False)
        healed = trio.current_time()
        joins_before = len(JOINS)
        nursery.start_soon(probe)
        one = await wait_until(lambda: reaches(drivers, [names]), 60)
        with trio.move_on_after(60):
            await complete.wait()
        broadcast = trio.current_time() - healed if complete.is_set() else None
        nursery.cancel_scope.cancel()
    merged_at = healed + (one if one is not None else 60)
    joins = [at for at in JOINS[joins_before:] if at <= merged_at]
    return {
        "split_s": split,
        "one_overlay_s": one,
        "broadcast_all_s": broadcast,
        "discovery_joins": len(joins),
        "first_join_s": joins[0] - healed if joins else None,
    }


async def run_overlay(overlay: str, count: int, cycles: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    drivers: dict[str, Membership] = {}
    stop = trio.Event()
    with tempfile.TemporaryDirectory() as directory:
        settings = options(overlay, directory, rng)

        async def node(name: str, task_status: Any) -> None:
            async with ft.open_node(name, cluster=settings) as opened:
                driver = opened.find_extension(Membership)
                assert driver is not None
                task_status.started(driver)
                await stop.wait()

        async with trio.open_nursery() as nursery:
            for index in range(count):
                name = f"{overlay}{index}"
                drivers[name] = await nursery.start(node, name)
            formation = await wait_until(lambda: reaches(drivers, [sorted(drivers)]), 120)
            progress(f"{overlay}: {count} nodes formed in {formation}")
            results = []
            for index in range(cycles):
                result = await cycle(drivers, rng)
                progress(f"{overlay}: cycle {index + 1}/{cycles}: {result}")
                results.append(result)
            stop.set()
    join_bound = INTERVAL * (1 + JITTER) + settings.handshake_timeout
    reach_bound = join_bound + 1.25 * settings.alive_interval
    report: dict[str, Any] = {
        "nodes": count,
        "formation_s": round(formation, 2) if formation is not None else None,
        "cycles": cycles,
        "bound_join_s": join_bound,
        "bound_reachable_s": reach_bound,
    }
    report["discovery_joins_until_one_overlay"] = [r["discovery_joins"] for r in results]
    for key in ("split_s", "first_join_s", "one_overlay_s", "broadcast_all_s"):
        runs = [r[key] for r in results]
        done = [run for run in runs if run is not None]
        report[key] = summary(done, 2) if done else None
        # No first join: the full mesh's links redialled before any discovery round.
        missing = "cycles_without_join" if key == "first_join_s" else "failed_cycles"
        report[f"{key}_{missing}"] = len(runs) - len(done)
        if done:
            report[f"{key}_worst"] = round(max(done), 2)
    worst = max(
        (r[key] for r in results for key in ("one_overlay_s", "broadcast_all_s")),
        key=lambda value: float("inf") if value is None else value,
    )
    report["within_bound"] = target(
        float("inf") if worst is None else worst,
        "<=",
        reach_bound,
        "worst cycle's one_overlay_s and broadcast_all_s within bound_reachable_s",
    )
    return report


async def main(args: argparse.Namespace) -> None:
    nodes = args.nodes or 8
    cycles = args.cycles or (3 if args.quick else 7)
    load = os.getloadavg()
    result: dict[str, Any] = {"benchmark": "remerge", "quick": args.quick}
    result["environment"] = environment("trio", "trio-websocket", "msgspec")
    result["timings"] = {
        "discovery_interval_s": INTERVAL,
        "discovery_jitter": JITTER,
        "heartbeat_interval_s": 0.2,
        "peer_down_after": 5,
        "alive_interval_s": 0.5,
        "handshake_timeout_s": 2.0,
        "reconnect_max_s": RECONNECT_MAX,
        "active_view_size": 3,
    }
    count_joins()
    result["hyparview"] = await run_overlay("hyparview", nodes, cycles, 1)
    result["full_mesh"] = await run_overlay("full_mesh", nodes, cycles, 2)
    result["load_average"] = [round(load[0], 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 cycles instead of 7")
    parser.add_argument("--nodes", type=int, default=0, help="cluster size (default 8)")
    parser.add_argument("--cycles", type=int, default=0, help="partitions per overlay (7)")
    trio.run(main, parser.parse_args())
