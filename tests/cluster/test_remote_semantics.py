"""Remote processes over in-memory links, in virtual time: the semantics of send,
call, cast, monitor, link, exit, whereis and node monitors across nodes, and what
happens when a link is lost, blackholed or fed garbage. (``test_cluster_integration``
checks the same over real websocket links.)"""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
import trio
from memlinks import MemLinks, Network, mem_cluster_boot
from nodes import open_nodes

import foundation_trio as ft
from foundation_trio.cluster import wire
from foundation_trio.cluster.options import Channel
from foundation_trio.runtime.node import open_node


class Counter(ft.GenServer):
    async def init(self, start: int = 0) -> None:
        self.count = start

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        match request:
            case "get":
                return self.count
            case ("add", n):
                self.count += n
                return self.count
            case "crash":
                raise ValueError("asked to crash")
            case "slow":
                await trio.sleep(100)
                return "late"
            case "caller":
                return caller.pid
            case "unsendable":
                return object()
        return None

    async def handle_cast(self, request: Any) -> None:
        if request == "reset":
            self.count = 0

    async def handle_info(self, message: Any) -> None:
        self.count += 1000


@attrs.frozen
class Order:
    item: str
    qty: int
    by: ft.Pid


wire.register(Order, name="tests.Order")


class Cluster:
    """Nodes on one in-memory network; ``links[name]`` are each node's links."""

    def __init__(self) -> None:
        self.network = Network()
        self.boot, self.links = mem_cluster_boot(self.network)

    def open(self, name: str) -> Any:
        return open_node(name, boot=[self.boot])

    async def connect(self, a: str, b: str) -> None:
        await self.links[a].connect(f"mem:{b}")


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


async def start_counter(name: str = "counter", start: int = 0) -> ft.Pid:
    return await ft.start_server(Counter, start, name=name)


async def test_call_cast_and_send_by_name_and_pid(cluster: Cluster, autojump_clock: Any) -> None:
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        pid = await nodes["b"].run(start_counter)

        async def on_a() -> list[Any]:
            got = [await ft.call(("counter", "b"), ("add", 2))]
            got.append(await ft.call(pid, ("add", 3)))
            await ft.cast(("counter", "b"), "reset")
            got.append(await ft.call(pid, "get"))
            await ft.send(pid, "info")
            ft.send_nowait(("counter", "b"), "info")
            got.append(await ft.call(pid, "get"))
            got.append(await ft.call(pid, "caller") == ft.self_pid())
            return got

        assert await nodes["a"].run(on_a) == [2, 5, 0, 2000, True]


async def test_messages_keep_their_types_and_order(cluster: Cluster, autojump_clock: Any) -> None:
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        b_shell = await nodes["b"].run(_self)

        async def send_all() -> ft.Pid:
            me = ft.self_pid()
            for i in range(300):
                await ft.send(b_shell, ("n", i, me))
            await ft.send(b_shell, Order("tea", 2, me))
            return me

        sender = await nodes["a"].run(send_all)

        async def receive_all() -> list[Any]:
            return [await ft.receive(timeout=5) for _ in range(301)]

        got = await nodes["b"].run(receive_all)
        assert got[:300] == [("n", i, sender) for i in range(300)]
        assert got[300] == Order("tea", 2, sender)


async def _self() -> ft.Pid:
    return ft.self_pid()


async def test_call_errors(cluster: Cluster, autojump_clock: Any) -> None:
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        pid = await nodes["b"].run(start_counter)

        async def on_a() -> None:
            with pytest.raises(ft.NoProcess):
                await ft.call(("nobody", "b"), "get")
            with pytest.raises(ft.NoProcess):
                await ft.call(ft.Pid("b", 9999), "get")
            with pytest.raises(ft.NodeDown) as info:
                await ft.call(("counter", "c"), "get")
            assert info.value.node == "c"
            with pytest.raises(wire.RemoteError, match="cannot be sent"):
                await ft.call(pid, "unsendable")
            with pytest.raises(TypeError, match="cannot send"):
                await ft.call(pid, object())
            start = trio.current_time()
            with pytest.raises(ft.CallTimeout):
                await ft.call(pid, "slow", timeout=2)
            assert trio.current_time() - start == pytest.approx(2)
            # The server is busy with "slow"; the crash request waits behind it and
            # the caller learns at once when the server exits.
            with pytest.raises(ft.ServerExited) as exited:
                await ft.call(pid, "crash", timeout=math.inf)
            assert exited.value.pid == pid
            reason = exited.value.reason
            assert isinstance(reason, wire.RemoteError)
            assert reason.type_name == "ValueError"
            assert reason.message == "asked to crash"
            assert "handle_call" in reason.traceback

        await nodes["a"].run(on_a)


async def test_call_fails_fast_when_the_link_is_lost(
    cluster: Cluster, autojump_clock: Any
) -> None:
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        pid = await nodes["b"].run(start_counter)

        async def on_a() -> float:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sever_later, cluster.links["a"], "b", 1.0)
                start = trio.current_time()
                with pytest.raises(ft.NodeDown) as info:
                    await ft.call(pid, "slow", timeout=60)
                assert info.value.node == "b"
                return trio.current_time() - start

        assert await nodes["a"].run(on_a) == pytest.approx(1.0)


async def _sever_later(links: MemLinks, peer: str, delay: float) -> None:
    await trio.sleep(delay)
    links.sever(peer, "severed by the test")


async def test_blackholed_call_times_out_and_the_link_recovers(
    cluster: Cluster, autojump_clock: Any
) -> None:
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        pid = await nodes["b"].run(start_counter)
        cluster.links["a"].blackhole("b")

        async def call(timeout: float) -> Any:
            return await ft.call(pid, ("add", 1), timeout=timeout)

        with pytest.raises(ft.CallTimeout):
            await nodes["a"].run(call, 1.0)
        cluster.links["a"].blackhole("b", False)
        assert await nodes["a"].run(call, 1.0) == 1


async def test_remote_monitor_gets_the_real_reason(cluster: Cluster, autojump_clock: Any) -> None:
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        pid = await nodes["b"].run(start_counter)
        other = await nodes["b"].run(start_counter, "other")

        async def on_a() -> None:
            ref = ft.monitor(("counter", "b"))
            quiet = ft.monitor(other)
            missing = ft.monitor(("nobody", "b"))
            down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == missing)
            assert isinstance(down.reason, ft.NoProcess)
            assert ft.demonitor(quiet) is True
            with pytest.raises(ft.ServerExited):
                await ft.call(pid, "crash")
            down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref, timeout=5)
            assert down.pid == pid
            assert isinstance(down.reason, wire.RemoteError)
            assert down.reason.type_name == "ValueError"
            with pytest.raises(ft.ReceiveTimeout):
                await ft.receive(lambda m: isinstance(m, ft.Down), timeout=1)

        await nodes["a"].run(on_a)

        async def stop_other() -> None:
            await ft.stop(other)

        await nodes["b"].run(stop_other)

        async def nothing_more() -> None:
            with pytest.raises(ft.ReceiveTimeout):
                await ft.receive(lambda m: isinstance(m, ft.Down), timeout=1)

        await nodes["a"].run(nothing_more)


async def test_monitors_and_links_fire_with_nodedown_when_the_link_is_lost(
    cluster: Cluster, autojump_clock: Any
) -> None:
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        pid = await nodes["b"].run(start_counter)

        async def watch() -> ft.Ref:
            ft.trap_exits(True)
            ft.link(pid)
            ft.monitor_node("b")
            return ft.monitor(pid)

        ref = await nodes["a"].run(watch)
        cluster.links["b"].sever("a", "cable cut")

        async def collect() -> list[Any]:
            return [await ft.receive(timeout=5) for _ in range(3)]

        got = await nodes["a"].run(collect)
        down = next(m for m in got if isinstance(m, ft.Down))
        assert down.ref == ref and down.reason == ft.NodeDown("b", "cable cut")
        exit_ = next(m for m in got if isinstance(m, ft.Exit))
        assert exit_.pid == pid and exit_.reason == ft.NodeDown("b", "cable cut")
        assert ft.NodeDown("b", "cable cut") in got

        async def after() -> Any:
            return ft.nodes(), ft.whereis(("counter", "b"))

        assert await nodes["a"].run(after) == ([], None)


async def test_links_propagate_exits_both_ways(cluster: Cluster, autojump_clock: Any) -> None:
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")

        async def worker() -> None:
            await trio.sleep_forever()

        async def spawn_worker() -> ft.Pid:
            return ft.spawn(worker)

        remote = await nodes["b"].run(spawn_worker)

        async def crasher(target: ft.Pid) -> None:
            ft.link(target)
            await trio.sleep(1)
            raise RuntimeError("boom")

        async def on_a() -> None:
            local = ft.spawn(crasher, remote)
            ref = ft.monitor(remote)
            down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref, timeout=5)
            assert isinstance(down.reason, wire.RemoteError)
            assert down.reason.type_name == "RuntimeError"
            assert not ft.is_alive(local)

        await nodes["a"].run(on_a)

        # and from b to a: a trapping process gets the Exit; unlink stops it
        async def link_and_trap(target: ft.Pid) -> None:
            ft.trap_exits(True)
            ft.link(target)

        victim = await nodes["b"].run(spawn_worker)
        spared = await nodes["b"].run(spawn_worker)

        async def on_a2() -> None:
            await link_and_trap(victim)
            ft.link(spared)
            ft.unlink(spared)
            await trio.sleep(0.1)

        await nodes["a"].run(on_a2)

        async def kill_both() -> None:
            ft.exit(victim, ft.KILLED)
            ft.exit(spared, ft.KILLED)

        await nodes["b"].run(kill_both)

        async def collect() -> list[Any]:
            got = [await ft.receive(timeout=5)]
            with pytest.raises(ft.ReceiveTimeout):
                await ft.receive(timeout=1)
            return got

        assert await nodes["a"].run(collect) == [ft.Exit(victim, ft.KILLED)]


async def test_exit_signal_and_link_to_missing_process(
    cluster: Cluster, autojump_clock: Any
) -> None:
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        pid = await nodes["b"].run(start_counter)

        async def on_a() -> None:
            ref = ft.monitor(pid)
            ft.exit(pid, ft.Shutdown("bye"))
            down = await ft.receive(lambda m: isinstance(m, ft.Down), timeout=5)
            assert down.ref == ref and down.reason == ft.Shutdown("bye")
            ft.trap_exits(True)
            ft.link(pid)  # it is gone: the link ends with an exit signal
            signal = await ft.receive(timeout=5)
            assert isinstance(signal, ft.Exit) and signal.pid == pid
            assert isinstance(signal.reason, ft.NoProcess)
            ft.trap_exits(False)
            with pytest.raises(ft.NoProcess):
                ft.link(("nobody", "b"))
            with pytest.raises(ft.NodeDown):
                ft.link(("nobody", "zz"))

        await nodes["a"].run(on_a)


async def test_whereis_follows_the_names_a_node_announces(
    cluster: Cluster, autojump_clock: Any
) -> None:
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        early = await nodes["b"].run(start_counter, "early")
        await cluster.connect("a", "b")
        late = await nodes["b"].run(start_counter, "late")

        async def lookup() -> Any:
            await trio.sleep(0.1)
            return [ft.whereis(("early", "b")), ft.whereis(("late", "b")), ft.nodes()]

        assert await nodes["a"].run(lookup) == [early, late, ["b"]]

        async def unregister() -> None:
            ft.unregister("early")
            await ft.stop(late)

        await nodes["b"].run(unregister)
        assert await nodes["a"].run(lookup) == [None, None, ["b"]]


async def test_unconnected_nodes(cluster: Cluster, autojump_clock: Any) -> None:
    async with open_nodes(["a"], cluster.open) as nodes:

        async def on_a() -> None:
            await ft.send(ft.Pid("zz", 1), "dropped")  # like a dead pid: no error
            ft.send_nowait(ft.Pid("zz", 1), "dropped")
            await ft.cast(("x", "zz"), "dropped")
            with pytest.raises(ft.NodeDown):
                await ft.send(("x", "zz"), "m")
            with pytest.raises(ft.NodeDown):
                await ft.call(ft.Pid("zz", 1), "m")
            with pytest.raises(ft.NodeDown):
                await ft.ping("zz")
            ref = ft.monitor(ft.Pid("zz", 1))
            down = await ft.receive(timeout=0)
            assert down == ft.Down(ref, ft.Pid("zz", 1), ft.NodeDown("zz", "not connected"))
            ft.monitor_node("zz")
            assert await ft.receive(timeout=0) == ft.NodeDown("zz", "not connected")
            assert ft.demonitor_node("zz") is False
            assert ft.whereis(("x", "zz")) is None
            with pytest.raises(TypeError):
                ft.monitor_node(3)  # type: ignore[arg-type]

        await nodes["a"].run(on_a)


async def test_ping_and_node_monitor(cluster: Cluster, autojump_clock: Any) -> None:
    async with open_nodes(["a", "b", "c"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        await cluster.connect("a", "c")

        async def on_a() -> Any:
            rtt = await ft.ping("b")
            ft.monitor_node("b")
            ft.monitor_node("c")
            assert ft.demonitor_node("c") is True
            return rtt, ft.nodes()

        rtt, peers = await nodes["a"].run(on_a)
        assert rtt >= 0 and peers == ["b", "c"]
        nodes["b"].stop()
        await nodes["b"].exited.wait()
        nodes["c"].stop()
        await nodes["c"].exited.wait()

        async def collect() -> list[Any]:
            got = [await ft.receive(timeout=5)]
            with pytest.raises(ft.ReceiveTimeout):
                await ft.receive(timeout=1)
            return got

        [message] = await nodes["a"].run(collect)
        assert isinstance(message, ft.NodeDown) and message.node == "b"


async def test_garbage_closes_only_that_link(cluster: Cluster, autojump_clock: Any) -> None:
    async with open_nodes(["a", "b", "c"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        await cluster.connect("a", "c")
        pid = await nodes["c"].run(start_counter)
        unknown = wire.encode_envelope(
            wire.Send(("b", 1), "counter", wire.Raw(b"\xd4\x06\x00"))  # record ext of junk
        )

        @attrs.frozen
        class Unregistered:
            x: int

        wire.register(Unregistered, name="tests.Unregistered")
        body = wire.encode_body(Unregistered(1))
        wire.unregister(Unregistered)
        unregistered = wire.encode_envelope(wire.Send(("b", 1), "counter", wire.Raw(body)))
        for frame in [b"\xc1garbage", unknown, unregistered]:
            await cluster.connect("b", "a")
            cluster.links["b"].send_nowait("a", Channel.DATA, frame)
            await trio.sleep(0.1)
            assert "b" not in cluster.links["a"].peers()
        assert len(cluster.network.errors) == 3
        assert "not registered" in cluster.network.errors[2]

        async def still_fine() -> Any:
            return await ft.call(pid, ("add", 1)), ft.nodes()

        assert await nodes["a"].run(still_fine) == (1, ["c"])


async def test_remote_call_carries_the_request_context(
    cluster: Cluster, autojump_clock: Any
) -> None:
    from foundation_trio.runtime.context import request_context

    class Echo(ft.GenServer):
        async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
            return dict(request_context.get())

    async def start_echo() -> ft.Pid:
        return await ft.start_server(Echo, name="echo")

    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        await nodes["b"].run(start_echo)

        async def on_a() -> Any:
            with ft.context.bind(request_id="r1", user=7):
                return await ft.call(("echo", "b"), "ctx")

        assert await nodes["a"].run(on_a) == {"request_id": "r1", "user": 7}


async def test_large_messages_go_on_bulk_and_arrive_whole(autojump_clock: Any) -> None:
    cluster = Cluster()
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        b_shell = await nodes["b"].run(_self)
        big = bytes(range(256)) * 1024  # 256 KiB: a BulkSend and the raw bytes
        big_list = [big[:100_000], 7]  # encoded as one envelope, over the threshold

        async def send_big() -> None:
            await ft.send(b_shell, big)
            ft.send_nowait(b_shell, big)
            await ft.send(b_shell, big_list)

        await nodes["a"].run(send_big)

        async def receive_big() -> list[Any]:
            return [await ft.receive(timeout=5) for _ in range(3)]

        got = await nodes["b"].run(receive_big)
        assert got == [big, big, big_list]
        assert type(got[0]) is bytes


async def test_a_full_link_holds_messages_back_in_order(autojump_clock: Any) -> None:
    from foundation_trio.cluster.errors import SendQueueFull
    from foundation_trio.cluster.remote import BACKLOG_LIMIT

    cluster = Cluster()
    cluster.network.queue_size = 2
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")

        async def start_slow() -> ft.Pid:
            return ft.spawn(_hold_then_collect, ft.self_pid(), name="slow", mailbox_size=4)

        await nodes["b"].run(start_slow)

        async def flood() -> int:
            sent = 0
            with pytest.raises(SendQueueFull):
                while True:
                    ft.send_nowait(("slow", "b"), sent)
                    sent += 1
            return sent

        sent = await nodes["a"].run(flood)
        # the mailbox, the frame being delivered, the link's queue and the backlog
        assert BACKLOG_LIMIT < sent <= BACKLOG_LIMIT + 4 + 1 + 2 + 1

        async def more() -> float:
            # ``send`` waits for room instead; it gets it once b drains (at t=10)
            for i in range(sent, sent + 100):
                await ft.send(("slow", "b"), i)
            await ft.send(("slow", "b"), "stop")
            return trio.current_time()

        assert await nodes["a"].run(more) >= 10

        async def collect() -> Any:
            return await ft.receive(timeout=60)

        assert await nodes["b"].run(collect) == list(range(sent + 100))


async def _hold_then_collect(reply_to: ft.Pid) -> None:
    await trio.sleep(10)
    got = []
    while (message := await ft.receive()) != "stop":
        got.append(message)
    await ft.send(reply_to, got)


async def test_a_cancelled_call_drops_its_late_reply(
    cluster: Cluster, autojump_clock: Any
) -> None:
    from foundation_trio.cluster.remote import ClusterService

    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        pid = await nodes["b"].run(start_counter)

        async def on_a() -> Any:
            with trio.move_on_after(1):
                await ft.call(pid, "slow", timeout=math.inf)
            service = ft.current_node().find_extension(ClusterService)
            assert service is not None
            waiting = len(service.pending)
            await trio.sleep(200)  # "slow" replies at t=100, to nobody
            return waiting, len(service.pending), await ft.call(pid, ("add", 1))

        assert await nodes["a"].run(on_a) == (0, 0, 1)


async def test_casts_carry_the_request_context(cluster: Cluster, autojump_clock: Any) -> None:
    from foundation_trio.runtime.context import request_context

    class Recorder(ft.GenServer):
        async def init(self) -> None:
            self.seen: list[Any] = []

        async def handle_cast(self, request: Any) -> None:
            self.seen.append((request, dict(request_context.get())))

        async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
            return self.seen

    async def start_recorder() -> ft.Pid:
        return await ft.start_server(Recorder, name="recorder")

    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        await nodes["b"].run(start_recorder)

        async def on_a() -> Any:
            with ft.context.bind(trace="t-9"):
                await ft.cast(("recorder", "b"), 1)
            await ft.cast(("recorder", "b"), 2)
            return await ft.call(("recorder", "b"), "seen")

        assert await nodes["a"].run(on_a) == [(1, {"trace": "t-9"}), (2, {})]


async def test_a_cancelled_stream_is_dropped_and_streams_are_bounded(
    autojump_clock: Any,
) -> None:
    from foundation_trio.cluster.remote import BULK_PIECE, ClusterService

    cluster = Cluster()
    cluster.network.queue_size = 4
    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        b_shell = await nodes["b"].run(_self)
        big = b"z" * (BULK_PIECE * 40)

        async def cancelled_send() -> None:
            cluster.links["a"].blackhole("b")  # nothing drains: the send waits for room
            with trio.move_on_after(1):
                await ft.send(b_shell, big)
            cluster.links["a"].blackhole("b", False)
            await ft.send(b_shell, b"after")

        await nodes["a"].run(cancelled_send)

        async def receive_all() -> Any:
            service = ft.current_node().find_extension(ClusterService)
            assert service is not None
            got = await ft.receive(timeout=5)
            with pytest.raises(ft.ReceiveTimeout):
                await ft.receive(timeout=1)
            return got, len(service._streams)

        assert await nodes["b"].run(receive_all) == (b"after", 0)

        # a peer streaming more than max_message_size bytes is cut off
        async def too_big() -> None:
            service = ft.current_node().find_extension(ClusterService)
            assert service is not None
            service.max_message_size = BULK_PIECE * 3

        await nodes["b"].run(too_big)
        await nodes["a"].run(ft.send, b_shell, big)
        await trio.sleep(1)
        assert "b" not in cluster.links["a"].peers()
        assert "larger than" in cluster.network.errors[-1]


async def test_stop_a_remote_server(cluster: Cluster, autojump_clock: Any) -> None:
    stopped: list[Any] = []

    class Stoppable(Counter):
        async def terminate(self, reason: ft.ExitReason) -> None:
            stopped.append(reason)

    async def start(name: str) -> ft.Pid:
        return await ft.start_server(Stoppable, name=name)

    async with open_nodes(["a", "b"], cluster.open) as nodes:
        await cluster.connect("a", "b")
        await nodes["b"].run(start, "quick")
        busy = await nodes["b"].run(start, "busy")

        async def on_a() -> Any:
            ref = ft.monitor(("quick", "b"))
            await ft.stop(("quick", "b"), ft.Shutdown("bye"))
            down = await ft.receive(lambda m: isinstance(m, ft.Down), timeout=0)
            with pytest.raises(ft.NoProcess):
                await ft.stop(("quick", "b"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_ignore_errors, ft.call, busy, "slow", math.inf)
                await trio.sleep(1)
                with pytest.raises(ft.CallTimeout):
                    await ft.stop(busy, timeout=5)  # it finishes "slow" (t=101) first
                await ft.stop(busy)  # waits for it this time
            with pytest.raises(ft.NodeDown):
                await ft.stop(("x", "nowhere"))
            return down.ref == ref, down.reason

        assert await nodes["a"].run(on_a) == (True, ft.Shutdown("bye"))
        assert stopped == [ft.Shutdown("bye"), ft.NORMAL]


async def _ignore_errors(fn: Any, *args: Any) -> None:
    try:
        await fn(*args)
    except ft.FoundationError:
        pass
