"""Phi-accrual failure detection over real links on 127.0.0.1: a peer silenced by the
fault injector is declared down by phi before the fixed ``peer_down_after`` timeout,
and ``ft.cluster.membership_stats()`` reports each peer's phi. Real time, generous
bounds, end states (the verdict's reason says which detector fired)."""

from __future__ import annotations

import math
from typing import Any

import trio
from nodes import NodeHandle, eventually

import foundation_trio as ft
from foundation_trio.cluster.failure import SUSPECTED_EVENT
from foundation_trio.cluster.faults import IN
from foundation_trio.cluster.membership import Membership
from foundation_trio.cluster.remote import NODE_DOWN_EVENT

COOKIE = "phi-live-cookie"
HEARTBEAT = 0.25
PEER_DOWN_AFTER = 40
FIXED_BOUND = HEARTBEAT * PEER_DOWN_AFTER  # 10 s: phi decides in about 1.5 to 3 s


def driver(handle: NodeHandle) -> Membership:
    assert handle.node is not None
    membership = handle.node.find_extension(Membership)
    assert membership is not None
    return membership


async def test_a_blackholed_peer_is_declared_down_by_phi_before_the_fixed_timeout() -> None:
    seeds: list[str] = []
    seen: list[tuple[str, dict[str, Any], dict[str, Any], float]] = []

    def open_one(name: str) -> Any:
        options = ft.Cluster(
            cookie=COOKIE,
            seeds=list(seeds),
            overlay="full_mesh",
            heartbeat_interval=HEARTBEAT,
            peer_down_after=PEER_DOWN_AFTER,
        )
        return ft.open_node(name, cluster=options)

    def record(event: str, measurements: Any, metadata: Any) -> None:
        seen.append((event, dict(measurements), dict(metadata), trio.current_time()))

    async def watch() -> None:
        ft.telemetry.attach("phi-live", [SUSPECTED_EVENT, NODE_DOWN_EVENT], record)

    async def stats() -> dict[str, Any]:
        return ft.cluster.membership_stats()

    async with trio.open_nursery() as nursery:
        a, b = NodeHandle("a"), NodeHandle("b")
        await nursery.start(a._serve, open_one)
        seeds.append(ft_address(a))
        await nursery.start(b._serve, open_one)
        await a.run(watch)

        async def linked_with_history() -> bool:
            return "b" in driver(a).detector.peers and len(driver(a).connected()) == 1

        await eventually(linked_with_history, 30)
        await trio.sleep(8 * HEARTBEAT)  # a few heartbeats of history
        before = await a.run(stats)
        assert set(before["phi"]) == {"b"}
        assert 0 <= before["phi"]["b"] < before["phi_threshold"]
        assert before["phi_threshold"] >= 8.0 and before["suspected"] == 0

        links = driver(a).links
        assert links is not None
        silenced_at = trio.current_time()
        links.faults.blackhole("b", IN)  # a hears nothing from b, heartbeats included

        async def declared_down() -> bool:
            return any(event == NODE_DOWN_EVENT for event, *_ in seen)

        await eventually(declared_down, 3 * FIXED_BOUND)
        downs = [(meta, at) for event, _, meta, at in seen if event == NODE_DOWN_EVENT]
        meta, down_at = downs[0]
        assert meta["peer"] == "b"
        # Phi's verdict, not the watchdog's ("heartbeats missed"): it came first.
        assert meta["reason"].startswith("suspected by the phi detector: phi "), meta
        assert down_at - silenced_at < FIXED_BOUND
        [(measured, suspected_meta)] = [
            (m, meta) for event, m, meta, _ in seen if event == SUSPECTED_EVENT
        ][:1]
        assert suspected_meta["peer"] == "b" and suspected_meta["node"] == "a"
        assert measured["phi"] >= measured["threshold"] >= 8.0
        assert math.isfinite(measured["silence"])
        after = await a.run(stats)
        assert after["suspected"] >= 1

        links.faults.clear()
        # Only slow, never gone: the link comes back and b has a fresh history.
        await eventually(linked_with_history, 30)
        a.stop()
        b.stop()


def ft_address(handle: NodeHandle) -> str:
    links = driver(handle).links
    assert links is not None
    return links.address
