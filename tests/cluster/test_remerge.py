"""Acceptance 4 (live): partition and re-merge. Eight real nodes on 127.0.0.1 find each
other through local-host discovery (no seeds) and form one overlay; the fault injector
cuts them into two halves (a blackhole both ways between every pair across, which also
refuses new links) for longer than failure detection; each half goes on as an overlay
of its own, broadcasts staying inside it; once healed, discovery joins the halves again
and every node reaches every other, broadcasts from either side reaching all. Real
time, generous timeouts: the checks are on end states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from nodes import NodeHandle, eventually, open_nodes
from test_membership import driver

import foundation_trio as ft
from foundation_trio.cluster.discovery import Discovery, LocalHost
from foundation_trio.cluster.errors import NotConnected
from foundation_trio.cluster.faults import IN, OUT
from foundation_trio.cluster.links import Links

COOKIE = "remerge-test-cookie"
NAMES = [f"r{i}" for i in range(8)]
LEFT, RIGHT = NAMES[:4], NAMES[4:]
ACTIVE_VIEW = 3


def cluster(overlay: str, directory: Path) -> ft.Cluster:
    return ft.Cluster(
        cookie=COOKIE,
        overlay=overlay,
        active_view_size=ACTIVE_VIEW,
        passive_view_size=8,
        alive_interval=0.5,
        shuffle_period=1.0,
        heartbeat_interval=0.2,
        peer_down_after=5,
        handshake_timeout=2.0,
        reconnect_max=0.5,
        discovery=Discovery(LocalHost(directory), interval=0.5, jitter=0.2),
    )


def links_of(handle: NodeHandle) -> Links:
    links = driver(handle).links
    assert links is not None
    return links


def cut(handles: dict[str, NodeHandle], on: bool) -> None:
    """Blackhole (or clear) every pair across the halves, both ways, on both sides."""
    for side, other in ((LEFT, RIGHT), (RIGHT, LEFT)):
        for name in side:
            faults = links_of(handles[name]).faults
            for peer in other:
                if on:
                    faults.blackhole(peer, IN)
                    faults.blackhole(peer, OUT)
                else:
                    faults.clear(peer)


async def reach(handles: dict[str, NodeHandle], groups: list[list[str]], timeout: float) -> None:
    """Until every node of each group reaches exactly the rest of its group and is
    linked to nobody outside it."""

    async def check() -> bool:
        for group in groups:
            for name in group:
                membership = driver(handles[name])
                rest = set(group) - {name}
                if set(membership.reachable()) != rest or not set(membership.connected()) <= rest:
                    return False
        return True

    await eventually(check, timeout)


async def deliver(
    handles: dict[str, NodeHandle], topic: str, senders: list[str], groups: list[list[str]]
) -> None:
    """Each sender broadcasts on ``topic``; every node of its group (and only its
    group) receives it."""
    channels = {name: driver(handles[name]).subscribe(topic, 64) for name in NAMES}
    sent = {
        sender: driver(handles[sender]).broadcast(topic, {"from": sender}) for sender in senders
    }
    with trio.fail_after(30):
        for group in groups:
            expected = {sent[s] for s in senders if s in group}
            for name in group:
                got: set[str] = set()
                while got != expected:
                    message = await channels[name].receive()
                    assert isinstance(message, ft.cluster.BroadcastMessage), (name, message)
                    assert message.message_id in expected, (name, message)
                    got.add(message.message_id)
    if len(groups) > 1:
        # Nothing crossed the cut: each node holds nothing beyond its own group's.
        await trio.sleep(1.0)
        for channel in channels.values():
            with pytest.raises(trio.WouldBlock):
                channel.receive_nowait()
    for channel in channels.values():
        channel.close()


@pytest.mark.parametrize("overlay", ["hyparview", "full_mesh"])
async def test_halves_of_a_partition_remerge_through_discovery(
    overlay: str, tmp_path: Path
) -> None:
    options = cluster(overlay, tmp_path)

    def open_node(name: str) -> Any:
        return ft.open_node(name, cluster=options)

    async with open_nodes(NAMES, open_node) as handles:
        await reach(handles, [NAMES], timeout=40)
        if overlay == "hyparview":
            assert all(len(driver(handles[n]).core.neighbors) <= ACTIVE_VIEW for n in NAMES)
        await deliver(handles, "formed", [NAMES[0]], [NAMES])

        cut(handles, True)
        # Held until failure detection took every link across down (phi may do it
        # before the fixed peer_down_after bound) and the heartbeats expired.
        await reach(handles, [LEFT, RIGHT], timeout=40)
        await deliver(handles, "split", [LEFT[0], RIGHT[0]], [LEFT, RIGHT])

        cut(handles, False)
        await reach(handles, [NAMES], timeout=40)
        await deliver(handles, "healed", [LEFT[-1], RIGHT[-1]], [NAMES])
        if overlay == "hyparview":
            assert all(len(driver(handles[n]).core.neighbors) <= ACTIVE_VIEW for n in NAMES)


async def test_join_returns_the_name_or_raises_when_asked(tmp_path: Path) -> None:
    """What discovery relies on: ``Membership.join`` names the node joined, and with
    ``quiet=False`` raises why a dial failed (quietly, it logs and returns None)."""
    options = ft.Cluster(cookie=COOKIE, overlay="hyparview", handshake_timeout=2.0)

    def open_node(name: str) -> Any:
        return ft.open_node(name, cluster=options)

    async with open_nodes(["j0", "j1"], open_node) as handles:
        membership = driver(handles["j0"])
        target = links_of(handles["j1"]).address
        closed = "127.0.0.1:1"  # nothing listens there
        with pytest.raises(TypeError, match="quiet"):
            await membership.join(target, quiet=1)  # type: ignore[arg-type]
        with pytest.raises(ft.ConfigError):
            await membership.join("nowhere", quiet=False)
        with pytest.raises(NotConnected):
            await membership.join(closed, quiet=False)
        assert await membership.join(closed) is None
        assert await membership.join(links_of(handles["j0"]).address) is None  # itself
        assert await membership.join(target, quiet=False) == "j1"

        async def joined() -> bool:
            return "j1" in membership.reachable() and bool(membership.core.neighbors)

        await eventually(joined)
