"""Acceptance 3 (live): 32 real nodes on 127.0.0.1 in this process, HyParView over
websocket links; broadcasts reach every node; a quarter of the nodes crash at once and
the survivors stay connected and keep receiving broadcasts."""

from __future__ import annotations

import random

import trio
from nodes import eventually
from test_membership import broadcast_reaches_all, driver, seeded

NODES = 32


def overlay_connected(handles: dict, names: list[str]) -> bool:
    """Whether the survivors' active views form one connected graph."""
    alive = set(names)
    graph = {
        name: {p.split("@")[0] for p in driver(handles[name]).core.neighbors} & alive
        for name in names
    }
    seen = {names[0]}
    todo = [names[0]]
    while todo:
        for peer in graph[todo.pop()]:
            if peer not in seen:
                seen.add(peer)
                todo.append(peer)
    return seen == alive


async def _true(value: bool) -> bool:
    return value


async def test_32_nodes_hyparview_broadcast_and_a_quarter_crash() -> None:
    names = [f"live{i}" for i in range(NODES)]
    async with seeded(names, "hyparview", alive_interval=1.0, heartbeat_interval=0.5) as handles:
        await eventually(lambda: _true(overlay_connected(handles, names)), 60)
        assert all(len(driver(handles[n]).core.neighbors) <= 5 for n in names)
        await broadcast_reaches_all(handles, "live7", "everyone", timeout=30)

        rng = random.Random(5)
        crashed = rng.sample(names[1:], NODES // 4)
        for name in crashed:
            links = driver(handles[name]).links
            assert links is not None
            for peer in links.peers():
                links.faults.sever(peer)
            handles[name].stop()
        for name in crashed:
            await handles[name].exited.wait()
        survivors = [n for n in names if n not in crashed]
        await eventually(lambda: _true(overlay_connected(handles, survivors)), 60)
        for name in survivors:
            assert not set(crashed) & set(driver(handles[name]).connected()), name
        await broadcast_reaches_all(handles, survivors[-1], "after the crash", timeout=30)
        with trio.fail_after(30):
            await broadcast_reaches_all(handles, survivors[3], {"n": 2}, timeout=30)
