"""Benchmark of failure detection: how soon a silent peer is declared down by the
phi-accrual detector, against the fixed ``peer_down_after`` timeout, and whether a
stall of the node's own event loop makes false suspicions.

Run ``python benchmarks/failure_detection.py`` (about 2 minutes) or ``--quick`` (about
40 s: shorter warm-up, two rounds). One JSON object goes to stdout, progress to stderr.

Two nodes, ``a`` and ``b``, in this process on 127.0.0.1 with the default timings
(heartbeat every 1 s, ``peer_down_after`` 5). Each round, for each detector:

``detection``
    After ``warmup`` seconds of heartbeats, ``a``'s fault injector blackholes
    everything from ``b`` (``faults.blackhole("b", IN)``, heartbeats included): the
    seconds until ``a`` takes the link down, and which detector's reason it gave.
    ``phi`` runs the defaults (``phi_threshold=8``); ``fixed``, the baseline measured
    in the same round, runs ``phi_threshold=None`` (phi reported, never acting), so
    the links' watchdog decides.
``false_suspicions``
    Links taken down during the warm-up, when nothing was silenced (should be 0).
``stall``
    With the phi detector on, the event loop is blocked for ``stall`` seconds
    (``time.sleep`` in a task: both nodes stall, as when a callback hogs the CPU),
    then runs for 5 s more: links lost meanwhile (should be 0), and the local-health
    score ``a`` reports right after. The baseline, measured in the same round, is the
    same detector without the stall handling (``naive``: every round judges as of the
    moment it runs, and local health is not fed), which sees every peer 3 s late when
    the loop runs again.

Figures are medians of the rounds, with every run listed. Target: the phi
detector's median detection time below the fixed timeout's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _util import environment, progress, summary, target

import foundation_trio as ft
from foundation_trio.cluster import failure
from foundation_trio.cluster.faults import IN
from foundation_trio.cluster.membership import Membership
from foundation_trio.cluster.remote import NODE_DOWN_EVENT

COOKIE = "benchmark-cookie-not-secret"


class Pair:
    """Nodes ``a`` and ``b`` linked in this process; ``downs`` are ``a``'s link losses."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.downs: list[tuple[float, str]] = []
        self.down = trio.Event()
        self.a: Membership | None = None
        self.b_stop = trio.Event()
        self.a_stop = trio.Event()
        self.health_after_stall = -1

    async def node(self, name: str, seeds: list[str], task_status: Any) -> None:
        cluster = ft.Cluster(cookie=COOKIE, seeds=seeds, overlay="full_mesh", **self.options)
        async with ft.open_node(name, cluster=cluster) as node:
            membership = node.find_extension(Membership)
            assert membership is not None
            if name == "a":
                self.a = membership

                def record(event: str, _: Any, metadata: Any) -> None:
                    self.downs.append((trio.current_time(), str(metadata["reason"])))
                    self.down.set()

                ft.telemetry.attach("bench-downs", [NODE_DOWN_EVENT], record)
            task_status.started(ft.cluster_address())
            await (self.a_stop if name == "a" else self.b_stop).wait()

    def stats(self) -> dict[str, Any]:
        # membership_stats() reads the current node; this runs outside any node.
        assert self.a is not None
        now = trio.current_time()
        return {
            "phi": self.a.detector.phis(now),
            "local_health": self.a.detector.health.score(now),
        }


async def linked(pair: Pair) -> None:
    with trio.fail_after(30):
        # No event marks a link up: poll.
        while pair.a is None or pair.a.connected() != ["b"]:  # noqa: ASYNC110
            await trio.sleep(0.05)


async def detection_round(warmup: float, **options: Any) -> dict[str, Any]:
    pair = Pair(**options)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(pair.node, "a", [])
        await nursery.start(pair.node, "b", [address])
        await linked(pair)
        await trio.sleep(warmup)
        false_suspicions = len(pair.downs)
        assert pair.a is not None
        assert pair.a.links is not None
        pair.down = trio.Event()
        silenced = trio.current_time()
        pair.a.links.faults.blackhole("b", IN)
        with trio.fail_after(60):
            await pair.down.wait()
        at, reason = pair.downs[false_suspicions]
        pair.a.links.faults.clear()
        pair.a_stop.set()
        pair.b_stop.set()
    return {
        "seconds": at - silenced,
        "by": "phi" if reason.startswith("suspected by the phi detector") else "fixed",
        "reason": reason,
        "false_suspicions": false_suspicions,
    }


async def stall_round(warmup: float, stall: float) -> dict[str, Any]:
    pair = Pair()
    async with trio.open_nursery() as nursery:
        address = await nursery.start(pair.node, "a", [])
        await nursery.start(pair.node, "b", [address])
        await linked(pair)
        await trio.sleep(warmup)
        before = len(pair.downs)
        time.sleep(stall)  # noqa: ASYNC251 - the point: the whole event loop stalls
        await trio.sleep(0.5)
        health = pair.stats()["local_health"]
        await trio.sleep(4.5)
        lost = len(pair.downs) - before
        pair.a_stop.set()
        pair.b_stop.set()
    return {"links_lost": lost, "local_health_after": health}


async def naive_run(
    self: failure.FailureDetector, links: failure.DetectorLinks, emit: failure.Emit
) -> None:
    """``FailureDetector.run`` without the stall handling: the baseline."""
    due = trio.current_time() + self.check_interval
    while True:
        await trio.sleep_until(due)
        now = trio.current_time()
        self.judge(links, now, emit)
        due = now + self.check_interval


async def naive_stall_round(warmup: float, stall: float) -> dict[str, Any]:
    handled = failure.FailureDetector.run
    failure.FailureDetector.run = naive_run  # type: ignore[method-assign]
    try:
        return await stall_round(warmup, stall)
    finally:
        failure.FailureDetector.run = handled  # type: ignore[method-assign]


async def main(quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 4
    warmup = 4.0 if quick else 10.0
    stall = 3.0
    phi_runs: list[dict[str, Any]] = []
    fixed_runs: list[dict[str, Any]] = []
    stall_runs: list[dict[str, Any]] = []
    naive_runs: list[dict[str, Any]] = []
    for index in range(rounds):
        progress(f"round {index + 1}/{rounds}: phi")
        phi_runs.append(await detection_round(warmup))
        progress(f"  phi: {phi_runs[-1]['seconds']:.2f} s ({phi_runs[-1]['by']}); fixed")
        fixed_runs.append(await detection_round(warmup, phi_threshold=None))
        progress(f"  fixed: {fixed_runs[-1]['seconds']:.2f} s; a {stall:g} s stall")
        stall_runs.append(await stall_round(warmup, stall))
        progress(f"  stall: {stall_runs[-1]}; the same without the stall handling")
        naive_runs.append(await naive_stall_round(warmup, stall))
        progress(f"  naive: {naive_runs[-1]}")
    phi_seconds = [run["seconds"] for run in phi_runs]
    fixed_seconds = [run["seconds"] for run in fixed_runs]
    phi_summary = summary(phi_seconds, 2)
    fixed_summary = summary(fixed_seconds, 2)
    defaults = ft.Cluster(cookie=COOKIE)
    return {
        "benchmark": "failure_detection",
        "quick": quick,
        "settings": {
            "heartbeat_interval": defaults.heartbeat_interval,
            "peer_down_after": defaults.peer_down_after,
            "phi_threshold": defaults.phi_threshold,
            "phi_acceptable_pause": defaults.phi_acceptable_pause,
            "phi_min_std": defaults.phi_min_std,
            "warmup_s": warmup,
            "stall_s": stall,
            "rounds": rounds,
        },
        "detection_s": {
            "phi": {**phi_summary, "decided_by": [run["by"] for run in phi_runs]},
            "fixed": {**fixed_summary, "decided_by": [run["by"] for run in fixed_runs]},
        },
        "phi_reasons": [run["reason"] for run in phi_runs],
        "false_suspicions_during_warmup": sum(
            run["false_suspicions"] for run in [*phi_runs, *fixed_runs]
        ),
        "stall": {
            "links_lost": [run["links_lost"] for run in stall_runs],
            "local_health_after": [run["local_health_after"] for run in stall_runs],
            "naive_links_lost": [run["links_lost"] for run in naive_runs],
        },
        "targets": [
            target(
                phi_summary["median"],
                "<",
                fixed_summary["median"],
                "phi detection median below the fixed timeout's (same run)",
            ),
            target(
                sum(run["links_lost"] for run in stall_runs),
                "<=",
                0,
                f"no link lost to a {stall:g} s stall of the node's own loop",
            ),
        ],
        "environment": environment("trio", "trio-websocket"),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(trio.run(main, arguments.quick)))
