"""The membership driver over real websocket links on 127.0.0.1: overlays, broadcast,
members / reachable / connected, overlay switches, leaving and crashing nodes. Real
time (sockets do not run on a mock clock) with generous timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio
from nodes import NodeHandle, eventually

import foundation_trio as ft
from foundation_trio.cluster.links import Channel
from foundation_trio.cluster.membership import Membership
from foundation_trio.runtime.node import Node

COOKIE = "membership-test-cookie"


def driver(handle: NodeHandle) -> Membership:
    assert handle.node is not None
    membership = handle.node.find_extension(Membership)
    assert membership is not None
    return membership


def address(handle: NodeHandle) -> str:
    links = driver(handle).links
    assert links is not None
    return links.address


def opener(
    overlay: str, seeds: Callable[[], list[str]], **options: Any
) -> Callable[[str], AbstractAsyncContextManager[Node]]:
    def open_one(name: str) -> AbstractAsyncContextManager[Node]:
        settings: dict[str, Any] = {
            "alive_interval": 0.3,
            "shuffle_period": 1.0,
            "heartbeat_interval": 0.2,
            "peer_down_after": 5,
        }
        settings.update(options)
        cluster = ft.Cluster(cookie=COOKIE, seeds=seeds(), overlay=overlay, **settings)
        return ft.open_node(name, cluster=cluster)

    return open_one


@asynccontextmanager
async def seeded(
    names: list[str], overlay: str, **options: Any
) -> AsyncIterator[dict[str, NodeHandle]]:
    seeds: list[str] = []
    handles: dict[str, NodeHandle] = {}

    def current_seeds() -> list[str]:
        return list(seeds)

    open_one = opener(overlay, current_seeds, **options)
    async with trio.open_nursery() as nursery:
        for name in names:
            handle = NodeHandle(name)
            await nursery.start(handle._serve, open_one)
            handles[name] = handle
            if not seeds:
                seeds.append(address(handle))
        try:
            yield handles
        finally:
            for handle in handles.values():
                handle.stop()


async def converged(handles: dict[str, NodeHandle], *, timeout: float = 20) -> None:
    """Every live node reaches every other live node."""
    live = {name for name, h in handles.items() if not h.exited.is_set()}

    async def check() -> bool:
        return all(set(driver(handles[name]).reachable()) >= live - {name} for name in live)

    await eventually(check, timeout)


async def broadcast_reaches_all(
    handles: dict[str, NodeHandle], sender: str, payload: object, *, timeout: float = 20
) -> None:
    """``sender`` broadcasts ``payload``; every live node receives it within
    ``timeout`` seconds, or the assertion names the nodes that did not."""
    live = [name for name, h in handles.items() if not h.exited.is_set()]
    channels = {name: driver(handles[name]).subscribe("t", 64) for name in live}
    message_id = driver(handles[sender]).broadcast("t", payload)
    received: dict[str, object] = {}

    async def receive(name: str, channel: trio.MemoryReceiveChannel[Any]) -> None:
        async with channel:
            received[name] = await channel.receive()

    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:
            for name, channel in channels.items():
                nursery.start_soon(receive, name, channel)
    missing = sorted(set(live) - set(received))
    assert not missing, f"{message_id} from {sender} not received within {timeout} s by {missing}"
    for name, message in received.items():
        assert isinstance(message, ft.cluster.BroadcastMessage), (name, message)
        assert message.payload == payload
        assert message.origin == sender
        assert message.message_id == message_id


@pytest.mark.parametrize("overlay", ["full_mesh", "hyparview", "client_server", "auto"])
async def test_small_cluster_converges_and_broadcasts(overlay: str) -> None:
    names = [f"n{i}" for i in range(5)]
    async with seeded(names, overlay) as handles:
        await converged(handles)
        await broadcast_reaches_all(handles, "n3", {"hello": [1, 2, 3]})
        first = driver(handles["n0"])
        expected = "full_mesh" if overlay == "auto" else overlay
        assert first.kind == expected
        if overlay in ("full_mesh", "auto"):
            await eventually(
                lambda: _true(all(len(driver(h).connected()) == 4 for h in handles.values()))
            )
            assert first.members() == ["n1", "n2", "n3", "n4"]
        if overlay == "client_server":
            # every node is a server by default: a full mesh of servers
            assert first.members() == ["n1", "n2", "n3", "n4"]


async def _true(value: bool) -> bool:
    return value


async def test_client_server_clients_link_only_to_servers() -> None:
    seeds: list[str] = []
    roles = {"s0": "server", "s1": "server", "c0": "client", "c1": "client"}

    def open_one(name: str) -> AbstractAsyncContextManager[Node]:
        options = ft.Cluster(
            cookie=COOKIE,
            seeds=list(seeds),
            overlay="client_server",
            role=roles[name],
            alive_interval=0.3,
            shuffle_period=1.0,
        )
        return ft.open_node(name, cluster=options)

    async with trio.open_nursery() as nursery:
        handles: dict[str, NodeHandle] = {}
        for name in roles:
            handle = NodeHandle(name)
            await nursery.start(handle._serve, open_one)
            handles[name] = handle
            if not seeds:
                seeds.append(address(handle))

        async def settled() -> bool:
            return all(
                {n.split("@")[0] for n in driver(handles[c]).core.neighbors} == {"s0", "s1"}
                for c in ("c0", "c1")
            )

        await eventually(settled, 20)
        await broadcast_reaches_all(handles, "c1", "from a client")
        for client in ("c0", "c1"):
            core = driver(handles[client]).core
            assert {n.split("@")[0] for n in core.neighbors} == {"s0", "s1"}
        for handle in handles.values():
            handle.stop()


async def test_hyparview_survives_a_leave_and_a_crash() -> None:
    names = [f"h{i}" for i in range(7)]
    async with seeded(names, "hyparview", active_view_size=3, passive_view_size=6) as handles:
        await converged(handles)
        await broadcast_reaches_all(handles, "h0", 1)
        handles["h5"].stop()  # an orderly leave
        await handles["h5"].exited.wait()
        # a crash: every link of h6 severed at once, and its node stopped
        links6 = driver(handles["h6"]).links
        assert links6 is not None
        for peer in links6.peers():
            links6.faults.sever(peer)
        handles["h6"].stop()
        await handles["h6"].exited.wait()

        async def gone() -> bool:
            return all(not {"h5", "h6"} & set(driver(handles[n]).connected()) for n in names[:5])

        await eventually(gone, 20)
        await broadcast_reaches_all(handles, "h2", 2)
        for name in names[:5]:
            core = driver(handles[name]).core
            assert core.neighbors, f"{name} has no neighbour left"


async def test_overlay_switch_keeps_members_and_an_in_flight_broadcast() -> None:
    names = [f"s{i}" for i in range(5)]
    async with seeded(names, "full_mesh") as handles:
        await converged(handles)
        before = {name: set(driver(h).members()) for name, h in handles.items()}
        channels = {name: driver(h).subscribe("t", 8) for name, h in handles.items()}
        # The broadcast leaves s1, and s1 switches before its peers handled it.
        sender = driver(handles["s1"])
        sender.broadcast("t", "in flight")
        ft_cluster_switch = sender.set_overlay
        ft_cluster_switch("hyparview")
        assert sender.kind == "hyparview"
        with trio.fail_after(20):
            for name, channel in channels.items():
                message = await channel.receive()
                assert isinstance(message, ft.cluster.BroadcastMessage), name
                assert message.payload == "in flight"

        async def all_switched() -> bool:
            return all(driver(h).kind == "hyparview" for h in handles.values())

        await eventually(all_switched, 20)
        for name, h in handles.items():
            d = driver(h)
            assert d.epoch == 1
            # every member known before is still known (active or passive view)
            assert set(d.members()) >= before[name] - {name}, name
        await converged(handles)
        await broadcast_reaches_all(handles, "s4", "after the switch")


async def test_auto_switches_to_hyparview_above_the_mesh_limit() -> None:
    names = [f"a{i}" for i in range(5)]
    async with seeded(names, "auto", mesh_limit=3) as handles:

        async def switched() -> bool:
            return all(driver(h).kind == "hyparview" for h in handles.values())

        await eventually(switched, 20)
        # One switch each, to the epoch the first node to cross the limit started.
        assert {driver(h).epoch for h in handles.values()} == {1}
        await converged(handles)
        await broadcast_reaches_all(handles, "a0", "auto")


async def test_public_functions_and_bad_arguments() -> None:
    names = ["p0", "p1"]
    results: dict[str, Any] = {}

    async def inside() -> None:
        results["members"] = ft.cluster.members()
        results["connected"] = ft.cluster.connected()
        results["reachable"] = ft.cluster.reachable()
        results["overlay"] = ft.cluster.overlay()
        results["stats"] = ft.cluster.membership_stats()
        with pytest.raises(ValueError, match="topic"):
            ft.cluster.broadcast("", 1)
        with pytest.raises(ValueError, match=r"\$"):
            ft.cluster.broadcast("$alive", 1)
        with pytest.raises(TypeError):
            ft.cluster.broadcast("t", object())
        with pytest.raises(ValueError, match="bytes encoded"):
            ft.cluster.broadcast("t", b"x" * 70_000)
        with pytest.raises(ValueError, match="buffer"):
            ft.cluster.subscribe("t", buffer=0)
        with pytest.raises(ValueError, match="kind"):
            ft.cluster.set_overlay("ring")
        with pytest.raises(ft.ConfigError):
            await ft.cluster.join("nowhere")
        channel = ft.cluster.subscribe(None, buffer=1)
        ft.cluster.broadcast("x", 1)
        ft.cluster.broadcast("y", 2)
        ft.cluster.broadcast("z", 3)
        with trio.fail_after(5):
            first = await channel.receive()
            ft.cluster.broadcast("w", 4)
            results["lag"] = (first, await channel.receive(), await channel.receive())

    async with seeded(names, "full_mesh") as handles:
        await converged(handles)
        await eventually(lambda: _true(driver(handles["p0"]).members() == ["p1"]))
        await handles["p0"].run(inside)
    assert results["members"] == ["p1"]
    assert results["connected"] == ["p1"]
    assert results["reachable"] == ["p1"]
    assert results["overlay"] == "full_mesh"
    assert results["stats"]["neighbors"] == 1
    first, lagged, after = results["lag"]
    assert first.payload == 1
    assert lagged == ft.services.subscribers.Lagged(2)
    assert (after.topic, after.payload) == ("w", 4)
    with pytest.raises(ft.ConfigError, match="overlay"):
        ft.Cluster(cookie=COOKIE, overlay="ring")
    with pytest.raises(ft.ConfigError, match="role"):
        ft.Cluster(cookie=COOKIE, role="boss")
    with pytest.raises(ft.NoNodeError):
        ft.cluster.members()


async def test_a_forged_or_malformed_gossip_frame_closes_only_that_link() -> None:
    from foundation_trio.cluster import _gossip_wire as gw

    names = ["f0", "f1", "f2"]
    async with seeded(names, "full_mesh") as handles:
        await converged(handles)
        downs: dict[str, list[str]] = {"f0": [], "f2": []}
        for name, seen in downs.items():
            d = driver(handles[name])
            original = d.peer_down

            def record(
                peer: str, reason: str, seen: list[str] = seen, original: Any = original
            ) -> None:
                seen.append(peer)
                original(peer, reason)

            d.peer_down = record  # type: ignore[method-assign]
        links1 = driver(handles["f1"]).links
        assert links1 is not None
        # f1 claims to be f2 on its own link to f0.
        await links1.send("f0", Channel.GOSSIP, gw.encode(gw.Prune(driver(handles["f2"]).me)))
        await eventually(lambda: _true("f1" in downs["f0"]), 10)
        await links1.send("f2", Channel.GOSSIP, b"\xc1 not msgpack")
        await eventually(lambda: _true("f1" in downs["f2"]), 10)
        assert downs == {"f0": ["f1"], "f2": ["f1"]}
        # the full mesh links f1 again: the links redial, the overlay takes it back
        await converged(handles)
        await broadcast_reaches_all(handles, "f1", "back")


async def test_heartbeat_digests_make_unlinked_nodes_reachable_and_expire() -> None:
    """``reachable()`` counts a node whose heartbeat grows in the digests, without a
    link to it; a restarted node (newer incarnation, heartbeat from 1) counts again;
    a heartbeat that stops growing leaves ``reachable()`` after 4 intervals; a digest
    with entries of the wrong shape closes the link that sent it, and that verdict
    takes the sender out of ``reachable()`` at once."""
    from foundation_trio.cluster import _gossip_wire as gw

    names = ["g0", "g1"]
    async with seeded(names, "full_mesh", alive_interval=0.2) as handles:
        await converged(handles)
        g0, g1 = driver(handles["g0"]), driver(handles["g1"])
        ghost = "ghost@127.0.0.1:9"

        def digest(incarnation: int, heartbeat: int) -> gw.AliveDigest:
            return gw.AliveDigest(g1.me, ((ghost, incarnation, heartbeat),))

        now = trio.current_time()
        g0._merge_digest(digest(5, 3), now)
        assert "ghost" in g0.reachable()
        g0._merge_digest(digest(5, 2), now + 10)  # older: not a sign of life
        g0._merge_digest(digest(4, 99), now + 10)  # older incarnation: neither
        assert g0._alive[ghost] == now
        g0._merge_digest(digest(6, 1), now + 0.1)  # restarted
        assert g0._beats[ghost] == (6, 1)
        # It stops: gone after 4 intervals of 0.2 s (the digests g1 sends carry the
        # ghost only while it is fresh, so it does not come back from there).
        await eventually(lambda: _true("ghost" not in g0.reachable()), 5)
        assert "g1" in g0.reachable()

        downs: list[str] = []
        reachable_after: list[list[str]] = []
        original = g0.peer_down

        def record(peer: str, reason: str) -> None:
            downs.append(peer)
            original(peer, reason)
            reachable_after.append(g0.reachable())

        g0.peer_down = record  # type: ignore[method-assign]
        links1 = g1.links
        assert links1 is not None
        wrong = gw._encoder.encode([40, g1.me, [[ghost, "one", 1]]])
        await links1.send("g0", Channel.GOSSIP, wrong)
        await eventually(lambda: _true("g1" in downs), 10)
        # The link's loss is a verdict: g1 is unreachable until its heartbeat grows
        # again, even though its last one is fresh.
        assert "g1" not in reachable_after[0]
        await converged(handles)


async def test_a_mesh_answer_slower_than_one_handshake_timeout_still_links() -> None:
    # A HELLO's answer crosses two handshakes (control, then the gossip channel) and
    # the queues of a loaded node. d0 holds every gossip frame to d1 for 3.8 s: longer
    # than handshake_timeout (1.5 s) plus LINGER (2 s), shorter than the driver's
    # ANSWER_TIMEOUT_HANDSHAKES * handshake_timeout. A core that gave up on the answer
    # after one handshake_timeout closed the link before the answer came, for ever.
    from foundation_trio.cluster.faults import OUT
    from foundation_trio.cluster.membership import ANSWER_TIMEOUT_HANDSHAKES, LINGER

    timeout, delay = 1.5, 3.8
    assert timeout + LINGER < delay < ANSWER_TIMEOUT_HANDSHAKES * timeout
    seeds: list[str] = []
    open_one = opener("full_mesh", lambda: list(seeds), handshake_timeout=timeout)
    async with trio.open_nursery() as nursery:
        d0, d1 = NodeHandle("d0"), NodeHandle("d1")
        await nursery.start(d0._serve, open_one)
        links = driver(d0).links
        assert links is not None
        links.faults.set("d1", OUT, channels=[Channel.GOSSIP], delay=delay)
        seeds.append(address(d0))
        await nursery.start(d1._serve, open_one)

        async def linked() -> bool:
            one, two = driver(d0), driver(d1)
            return one.core.is_active(two.me) and two.core.is_active(one.me)

        await eventually(linked, 20)
        await trio.sleep(1)
        assert await linked()
        assert driver(d1).members() == ["d0"]
        d0.stop()
        d1.stop()
