"""Remote processes over real websocket links on 127.0.0.1: two to five nodes in one
process, each opened with ``ft.open_node(name, cluster=ft.Cluster(...))`` in its own
task. Real time (sockets do not run on a mock clock), short timeouts."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from nodes import NodeHandle, eventually, open_nodes

import foundation_trio as ft
from foundation_trio.cluster.faults import OUT
from foundation_trio.cluster.links import Channel, Links
from foundation_trio.cluster.options import Cluster
from foundation_trio.cluster.remote import ClusterService

COOKIE = "integration-test-cookie"


class Counter(ft.GenServer):
    async def init(self) -> None:
        self.count = 0

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        if request == "get":
            return self.count
        if request == "who":
            return caller.pid
        if request == "crash":
            raise ZeroDivisionError("asked to crash")
        return None

    async def handle_cast(self, request: Any) -> None:
        self.count += request

    async def handle_info(self, message: Any) -> None:
        self.count += message


class Mesh:
    """Opens nodes whose seeds are every node opened before them."""

    def __init__(self) -> None:
        self.addresses: list[str] = []

    def open(self, name: str) -> Any:
        options = Cluster(
            cookie=COOKIE, seeds=list(self.addresses), heartbeat_interval=0.2, reconnect_max=0.5
        )
        mesh = self

        class _Open:
            async def __aenter__(self) -> ft.Node:
                self._cm = ft.open_node(name, cluster=options)
                node = await self._cm.__aenter__()
                mesh.addresses.append(ft.cluster_address())
                return node

            async def __aexit__(self, *exc: Any) -> Any:
                return await self._cm.__aexit__(*exc)

        return _Open()


def links_of(handle: NodeHandle) -> Links:
    assert handle.node is not None
    service = handle.node.find_extension(ClusterService)
    assert service is not None and service.links is not None
    return service.links


async def wait_connected(nodes: dict[str, NodeHandle], timeout: float = 10) -> None:
    """Until every node has a link to every other."""
    names = set(nodes)

    async def peers() -> set[str]:
        return set(ft.nodes())

    for name, handle in nodes.items():

        async def connected(handle: NodeHandle = handle, name: str = name) -> bool:
            return await handle.run(peers) == names - {name}

        await eventually(connected, timeout)


async def start_counter() -> ft.Pid:
    return await ft.start_server(Counter, name="counter")


async def test_remote_operations_between_three_nodes() -> None:
    async with open_nodes(["a", "b", "c"], Mesh().open) as nodes:
        await wait_connected(nodes)
        counter = await nodes["b"].run(start_counter)

        async def use_it(me: str) -> Any:
            await eventually(_counter_known)
            assert ft.whereis(("counter", "b")) == counter
            await ft.cast(("counter", "b"), 1)
            await ft.send(counter, 10)
            ft.send_nowait(("counter", "b"), 100)
            who = await ft.call(("counter", "b"), "who")
            return who == ft.self_pid(), sorted([me, *ft.nodes()])

        assert await nodes["a"].run(use_it, "a") == (True, ["a", "b", "c"])
        assert await nodes["c"].run(use_it, "c") == (True, ["a", "b", "c"])

        async def get() -> Any:
            return await ft.call(counter, "get")

        assert await nodes["a"].run(get) == 222

        async def crash_it() -> Any:
            ref = ft.monitor(counter)
            ft.trap_exits(True)
            ft.link(("counter", "b"))
            with pytest.raises(ft.ServerExited) as exited:
                await ft.call(counter, "crash")
            down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref, timeout=5)
            signal = await ft.receive(lambda m: isinstance(m, ft.Exit), timeout=5)
            return exited.value.reason, down.reason, signal

        reason, down_reason, signal = await nodes["c"].run(crash_it)
        for got in (reason, down_reason, signal.reason):
            assert isinstance(got, ft.RemoteError)
            assert got.type_name == "ZeroDivisionError"
            assert "asked to crash" in got.message
        assert signal.pid == counter


async def test_a_node_that_exits_is_seen_going_down() -> None:
    events: list[tuple[str, Any]] = []

    async def listen() -> None:
        ft.telemetry.attach(
            "test",
            ["cluster.node.up", "cluster.node.down"],
            lambda e, m, md: events.append((e, md)),
        )

    async with open_nodes(["a", "b"], Mesh().open) as nodes:
        await nodes["a"].run(listen)
        await wait_connected(nodes)
        counter = await nodes["b"].run(start_counter)

        async def watch() -> ft.Ref:
            ft.monitor_node("b")
            ref = ft.monitor(counter)
            # a call behind the monitor on the same channel: b has set it up
            await ft.call(counter, "get")
            return ref

        ref = await nodes["a"].run(watch)
        nodes["b"].stop()
        await nodes["b"].exited.wait()

        async def collect() -> list[Any]:
            return [await ft.receive(timeout=10) for _ in range(2)]

        got = await nodes["a"].run(collect)
        # b stops in order: its processes first (the monitor sees the real reason),
        # then its links (the node monitor sees the node go)
        assert got[0] == ft.Down(ref, counter, ft.SHUTDOWN)
        assert isinstance(got[1], ft.NodeDown) and got[1].node == "b"

        async def after() -> Any:
            with pytest.raises(ft.NodeDown):
                await ft.call(counter, "get")
            return ft.nodes()

        assert await nodes["a"].run(after) == []
        assert [(e, md["peer"]) for e, md in events] == [
            ("cluster.node.up", "b"),
            ("cluster.node.down", "b"),
        ]
        assert events[1][1]["reason"] == "node 'b' stopped"


async def test_a_severed_link_is_detected_and_comes_back() -> None:
    async with open_nodes(["a", "b"], Mesh().open) as nodes:
        await wait_connected(nodes)
        counter = await nodes["b"].run(start_counter)

        async def watch() -> ft.Ref:
            ft.trap_exits(True)
            ft.link(counter)
            ft.monitor_node("b")
            ref = ft.monitor(counter)
            # FIFO per channel: the reply comes after b has taken the link and monitor
            assert await ft.call(counter, "get") == 0
            return ref

        ref = await nodes["a"].run(watch)
        assert links_of(nodes["a"]).faults.sever("b") > 0

        async def collect() -> list[Any]:
            return [await ft.receive(timeout=5) for _ in range(3)]

        got = await nodes["a"].run(collect)
        down = next(m for m in got if isinstance(m, ft.Down))
        assert down.ref == ref and isinstance(down.reason, ft.NodeDown)
        assert any(isinstance(m, ft.Exit) and isinstance(m.reason, ft.NodeDown) for m in got)
        assert any(isinstance(m, ft.NodeDown) and m.node == "b" for m in got)

        # The link crossed the lost connection, so b's counter got the NodeDown
        # exit signal too (as Erlang's noconnection) and ended.
        async def counter_gone() -> bool:
            return ft.whereis("counter") is None

        await eventually(lambda: nodes["b"].run(counter_gone))

        # b dialled a as its seed: it dials again, and calls work once it is back
        await wait_connected(nodes)
        await nodes["b"].run(start_counter)

        async def call_again() -> Any:
            return await ft.call(("counter", "b"), "get", timeout=5)

        assert await nodes["a"].run(call_again) == 0


async def test_calls_during_a_blackhole_time_out_and_the_link_recovers() -> None:
    async with open_nodes(["a", "b"], Mesh().open) as nodes:
        await wait_connected(nodes)
        await nodes["b"].run(start_counter)
        faults = links_of(nodes["a"]).faults
        faults.blackhole("b", OUT, channels=[Channel.DATA])

        async def call(timeout: float) -> Any:
            return await ft.call(("counter", "b"), "get", timeout=timeout)

        start = trio.current_time()
        with pytest.raises(ft.CallTimeout):
            await nodes["a"].run(call, 0.5)
        assert trio.current_time() - start >= 0.5
        faults.clear("b")
        assert await nodes["a"].run(call, 5.0) == 0

        async def still_linked() -> list[str]:
            return ft.nodes()

        assert await nodes["a"].run(still_linked) == ["b"]


async def test_five_nodes_each_call_every_other() -> None:
    names = ["n1", "n2", "n3", "n4", "n5"]
    async with open_nodes(names, Mesh().open) as nodes:
        await wait_connected(nodes, timeout=20)
        for handle in nodes.values():
            await handle.run(start_counter)

        async def call_all(me: str) -> list[Any]:
            await trio.sleep(0.1)  # the names announced by the last node
            return [await ft.call(("counter", other), "who") for other in names if other != me]

        for name, handle in nodes.items():
            shell = await handle.run(_self)
            assert await handle.run(call_all, name) == [shell] * 4


async def _nodes() -> list[str]:
    return ft.nodes()


async def _counter_known() -> bool:
    return ft.whereis(("counter", "b")) is not None


async def _self() -> ft.Pid:
    return ft.self_pid()


async def test_an_undecodable_frame_closes_only_that_link() -> None:
    from foundation_trio.cluster import wire

    async with open_nodes(["a", "b", "c"], Mesh().open) as nodes:
        await wait_connected(nodes)
        await nodes["c"].run(start_counter)
        unknown = wire.encode_envelope(
            wire.Send(("b", 1), "counter", wire.Raw(b"\xd4\x63\x00"))  # extension type 99
        )
        for frame in [b"\x92\x63\xc0", unknown]:  # an unknown envelope tag, then a body
            links_of(nodes["b"]).send_nowait("a", Channel.DATA, frame)

            async def b_gone() -> bool:
                return "b" not in await nodes["a"].run(_nodes)

            await eventually(b_gone)

            async def still_works() -> Any:
                return await ft.call(("counter", "c"), "get", timeout=5)

            assert await nodes["a"].run(still_works) == 0
            await wait_connected(nodes)  # b dials again: a refused the frame, not the node


async def test_connect_node_and_ping_without_seeds() -> None:
    def alone(name: str) -> Any:
        return ft.open_node(name, cluster=Cluster(cookie=COOKIE))

    async with open_nodes(["a", "b"], alone) as nodes:

        async def address() -> str:
            return ft.cluster_address()

        b_address = await nodes["b"].run(address)

        async def on_a() -> Any:
            assert ft.nodes() == []
            with pytest.raises(ft.NodeDown):
                await ft.ping("b")
            name = await ft.connect_node(b_address)
            rtt = await ft.ping("b", timeout=5)
            with pytest.raises(TypeError):
                await ft.connect_node(7)  # type: ignore[arg-type]
            return name, rtt > 0, ft.nodes()

        assert await nodes["a"].run(on_a) == ("b", True, ["b"])


async def test_functions_that_need_a_cluster_say_so() -> None:
    async with ft.open_node("solo"):
        assert ft.nodes() == []
        with pytest.raises(LookupError, match="cluster"):
            ft.cluster_address()
        with pytest.raises(LookupError, match="cluster"):
            await ft.connect_node("127.0.0.1:1")
        with pytest.raises(ft.NoProcess):
            await ft.send(("x", "elsewhere"), "m")  # without a cluster, as before
        await ft.send(ft.Pid("elsewhere", 1), "m")  # dropped
        ft.monitor_node("elsewhere")
        assert await ft.receive(timeout=0) == ft.NodeDown("elsewhere", "not connected")
        with pytest.raises(TypeError, match="Cluster"):
            async with ft.open_node("bad", cluster={"cookie": "x"}):  # type: ignore[arg-type]
                pass
