"""Links between real sockets on 127.0.0.1: channels, order, coalescing, chunking,
queues, link loss and reconnection, deduplication of simultaneous dials."""

from __future__ import annotations

import pytest
import trio
from _links_helpers import Recorder, start, wait_channels, wait_linked

from foundation_trio.cluster.errors import (
    FrameTooLarge,
    HandshakeFailed,
    NotConnected,
    SendQueueFull,
)
from foundation_trio.cluster.faults import IN, OUT
from foundation_trio.cluster.links import Channel, Links
from foundation_trio.cluster.options import ChannelOptions


async def pair(
    nursery: trio.Nursery, **options: object
) -> tuple[tuple[Links, Recorder], tuple[Links, Recorder]]:
    a = await start(nursery, "a", **options)
    b = await start(nursery, "b", seeds=[a[0].address], **options)
    await wait_linked(a, b)
    await wait_channels(a[0], "b")
    await wait_channels(b[0], "a")
    return a, b


async def test_two_nodes_exchange_messages_on_every_channel(nursery: trio.Nursery) -> None:
    (a, ra), (b, rb) = await pair(nursery)
    assert a.peers() == ["b"] and b.peers() == ["a"]
    assert ra.ups == ["b"] and rb.ups == ["a"]
    assert a.address.startswith("127.0.0.1:") and not a.address.endswith(":0")
    for channel in Channel:
        await a.send("b", channel, f"to b on {channel.value}".encode())
        b.send_nowait("a", channel, f"to a on {channel.value}".encode())
    await ra.wait_for(lambda: len(ra.messages) == 4)
    await rb.wait_for(lambda: len(rb.messages) == 4)
    assert set(rb.messages) == {("a", c, f"to b on {c.value}".encode()) for c in Channel}
    assert set(ra.messages) == {("b", c, f"to a on {c.value}".encode()) for c in Channel}
    # the dialler of control dialled every channel: one connection per channel each side
    for links, peer in ((a, "b"), (b, "a")):
        link = links._links[peer]
        assert {conn.dialer for conn in link.conns.values()} == {"b"}


async def test_per_sender_fifo_per_channel(nursery: trio.Nursery) -> None:
    (_a, ra), (b, _rb) = await pair(nursery)

    async def sender(tag: bytes, channel: Channel) -> None:
        for i in range(1500):
            await b.send("a", channel, tag + i.to_bytes(4, "big"))

    async with trio.open_nursery() as senders:
        senders.start_soon(sender, b"x", Channel.DATA)
        senders.start_soon(sender, b"y", Channel.DATA)
        senders.start_soon(sender, b"z", Channel.GOSSIP)
    await ra.wait_for(lambda: len(ra.messages) == 4500)
    for tag, channel in ((b"x", Channel.DATA), (b"y", Channel.DATA), (b"z", Channel.GOSSIP)):
        seen = [int.from_bytes(d[1:], "big") for d in ra.received(channel) if d[:1] == tag]
        assert seen == list(range(1500))


async def test_small_messages_queued_together_are_coalesced(nursery: trio.Nursery) -> None:
    (a, ra), (b, _rb) = await pair(nursery)
    for i in range(1000):
        b.send_nowait("a", Channel.DATA, i.to_bytes(8, "big") * 8)  # 64-byte messages
    await ra.wait_for(lambda: len(ra.messages) == 1000)
    sent = b.stats("a").channels[Channel.DATA]
    received = a.stats("b").channels[Channel.DATA]
    assert sent.messages_sent == received.messages_received == 1000
    assert sent.frames_sent == received.frames_received
    # 1000 queued at once fit in a handful of 256 KiB frames
    assert sent.frames_sent <= 5
    assert [int.from_bytes(d[:8], "big") for d in ra.received()] == list(range(1000))


async def test_a_5_mb_bulk_message_is_chunked_and_reassembled(nursery: trio.Nursery) -> None:
    (_a, ra), (b, _rb) = await pair(nursery)
    payload = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    pings_before = 0

    async def ping() -> None:
        nonlocal pings_before
        for i in range(20):
            await b.send("a", Channel.CONTROL, b"ping%d" % i)
            await trio.sleep(0.001)

    async with trio.open_nursery() as inner:
        inner.start_soon(ping)
        await b.send("a", Channel.BULK, payload)
        await b.send("a", Channel.BULK, b"after")
    await ra.wait_for(lambda: len(ra.received(Channel.BULK)) == 2)
    assert ra.received(Channel.BULK) == [payload, b"after"]
    stats = b.stats("a").channels[Channel.BULK]
    assert stats.frames_sent == 5 * 16 + 1  # 80 chunks of 64 KiB, then a batch
    await ra.wait_for(lambda: len(ra.received(Channel.CONTROL)) == 20)


async def test_message_size_rules(nursery: trio.Nursery) -> None:
    (_a, ra), (b, _rb) = await pair(nursery, max_message_size=1024 * 1024)
    with pytest.raises(ValueError, match="bulk"):
        await b.send("a", Channel.DATA, b"x" * (64 * 1024 + 1))
    with pytest.raises(FrameTooLarge, match="bulk message of 1048577 bytes"):
        await b.send("a", Channel.BULK, b"x" * (1024 * 1024 + 1))
    await b.send("a", Channel.DATA, b"x" * (64 * 1024))  # exactly the limit is fine
    await ra.wait_for(lambda: len(ra.messages) == 1)
    with pytest.raises(TypeError, match="channel"):
        await b.send("a", "data", b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        await b.send("a", Channel.DATA, "text")  # type: ignore[arg-type]


async def test_sending_to_an_unknown_peer(nursery: trio.Nursery) -> None:
    a, _ = await start(nursery, "a")
    with pytest.raises(NotConnected, match="'nobody'"):
        await a.send("nobody", Channel.DATA, b"x")
    with pytest.raises(NotConnected):
        a.send_nowait("nobody", Channel.DATA, b"x")


async def test_a_full_queue_raises_or_waits(nursery: trio.Nursery) -> None:
    (_a, ra), (b, _rb) = await pair(nursery, data=ChannelOptions(send_queue_size=2))
    # The writer holds each batch 0.2 s: the queue fills behind it.
    b.faults.set("a", OUT, channels=[Channel.DATA], delay=0.2)
    b.send_nowait("a", Channel.DATA, b"1")
    b.send_nowait("a", Channel.DATA, b"2")
    with pytest.raises(SendQueueFull, match="send_queue_size"):
        b.send_nowait("a", Channel.DATA, b"3")
    with trio.fail_after(5):
        await b.send("a", Channel.DATA, b"3")  # waits for room, then queues
        await b.send("a", Channel.DATA, b"4")
    await ra.wait_for(lambda: len(ra.messages) == 4)
    assert ra.received() == [b"1", b"2", b"3", b"4"]


async def test_waiting_senders_get_not_connected_when_the_link_goes_down(
    nursery: trio.Nursery,
) -> None:
    (_a, ra), (b, rb) = await pair(nursery, data=ChannelOptions(send_queue_size=1))
    b.faults.set("a", OUT, channels=[Channel.DATA], delay=30)
    b.send_nowait("a", Channel.DATA, b"taken by the writer")
    await trio.sleep(0.05)
    b.send_nowait("a", Channel.DATA, b"queued")
    failures: list[BaseException] = []

    async def waiting_sender() -> None:
        try:
            await b.send("a", Channel.DATA, b"waits for room")
        except NotConnected as error:
            failures.append(error)

    async with trio.open_nursery() as inner:
        inner.start_soon(waiting_sender)
        await trio.sleep(0.05)
        assert not failures
        b.disconnect("a", "test is over")
    assert len(failures) == 1
    assert "disconnected: test is over" in str(failures[0])
    await ra.wait_for(lambda: bool(ra.downs))
    assert ra.downs[0][0] == "b"
    assert "disconnected: test is over" in ra.downs[0][1]
    assert rb.downs == [("a", "disconnected: test is over")]
    assert ra.messages == []


async def test_reconnection_after_a_severed_link(nursery: trio.Nursery) -> None:
    (a, ra), (b, rb) = await pair(nursery)
    assert b.faults.sever("a") == 4
    await ra.wait_for(lambda: len(ra.downs) == 1)
    assert rb.downs == [("a", "severed (fault injection)")]
    assert "connection closed" in ra.downs[0][1]
    # b has a as a seed: it dials again
    await wait_linked((a, ra), (b, rb))
    await wait_channels(b, "a")
    assert ra.ups == ["b", "b"] and rb.ups == ["a", "a"]
    await b.send("a", Channel.DATA, b"after the cut")
    await ra.wait_for(lambda: ra.received() == [b"after the cut"])


async def test_a_stopped_node_is_seen_going_away(nursery: trio.Nursery) -> None:
    a, ra = await start(nursery, "a")
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            b, rb = await start(inner, "b", seeds=[a.address])
            await wait_linked((a, ra), (b, rb))
            scope.cancel()
    await ra.wait_for(lambda: bool(ra.downs))
    assert ra.downs[0][0] == "b"
    assert "1001" in ra.downs[0][1] and "node shutting down" in ra.downs[0][1]
    assert rb.downs == [("a", "node shutting down")]
    assert a.peers() == []


async def test_a_blackhole_loses_messages_and_the_link_recovers(nursery: trio.Nursery) -> None:
    (_a, ra), (b, _rb) = await pair(nursery)
    b.faults.blackhole("a", OUT)
    for i in range(5):
        await b.send("a", Channel.DATA, b"lost %d" % i)
    await trio.sleep(0.3)
    assert ra.messages == []
    assert b.peers() == ["a"]  # shorter than peer_down_after heartbeats: still up
    b.faults.clear("a")
    await b.send("a", Channel.DATA, b"arrives")
    await ra.wait_for(lambda: ra.received() == [b"arrives"])
    assert b.faults.counts.blackholed >= 5


async def test_missed_heartbeats_take_the_link_down_then_it_recovers(
    nursery: trio.Nursery,
) -> None:
    options = {"heartbeat_interval": 0.05, "peer_down_after": 3, "reconnect_min": 0.05}
    (a, ra), (b, rb) = await pair(nursery, **options)
    b.faults.blackhole("a", IN)  # b hears nothing from a, heartbeats included
    await rb.wait_for(lambda: bool(rb.downs))
    assert rb.downs[0][0] == "a"
    assert "heartbeats missed" in rb.downs[0][1]
    b.faults.clear()
    await wait_linked((a, ra), (b, rb))
    assert rb.ups == ["a", "a"]


async def test_a_control_blackhole_refuses_new_links_on_either_side(
    nursery: trio.Nursery,
) -> None:
    a, ra = await start(nursery, "a")
    b, rb = await start(nursery, "b")
    b.faults.blackhole("a", IN)  # the dialler's rule
    with pytest.raises(NotConnected, match="blackholed by the fault injector"):
        await b.connect(a.address)
    b.faults.clear()
    a.faults.blackhole("b", OUT)  # the acceptor's rule
    with pytest.raises(HandshakeFailed, match="blackholed by the fault injector"):
        await b.connect(a.address)
    assert a.peers() == b.peers() == [] and ra.ups == rb.ups == []
    assert a.rejected == 0  # an injected fault, not a rejection to count
    # A blackhole on other channels leaves new links alone.
    a.faults.clear()
    a.faults.blackhole("b", OUT, channels=[Channel.DATA])
    assert await b.connect(a.address) == "a"
    await wait_linked((a, ra), (b, rb))


async def test_simultaneous_dials_leave_one_connection(nursery: trio.Nursery) -> None:
    for round_ in range(6):
        names = (f"p{round_}", f"q{round_}")
        a, ra = await start(nursery, names[0])
        b, rb = await start(nursery, names[1])
        async with trio.open_nursery() as both:
            both.start_soon(a.connect, b.address)
            both.start_soon(b.connect, a.address)
        await wait_linked((a, ra), (b, rb))
        await wait_channels(a, names[1])
        await wait_channels(b, names[0])
        await trio.sleep(0.05)  # let any losing connection finish closing
        for channel in Channel:
            mine = a._links[names[1]].conns[channel].stream.inner.socket
            theirs = b._links[names[0]].conns[channel].stream.inner.socket
            assert mine.getsockname() == theirs.getpeername()
        assert ra.ups == [names[1]] and rb.ups == [names[0]]
        assert ra.downs == [] and rb.downs == []
        await b.send(names[0], Channel.DATA, b"one link")
        await ra.wait_for(lambda r=ra: r.received() == [b"one link"])


async def test_connect_to_a_node_already_linked_returns_its_name(nursery: trio.Nursery) -> None:
    (a, ra), (b, _rb) = await pair(nursery)
    assert await a.connect(b.address) == "b"
    assert await b.connect(a.address) == "a"
    assert ra.ups == ["b"]


async def test_connect_failures(nursery: trio.Nursery) -> None:
    a, _ = await start(nursery, "a", handshake_timeout=2)
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NotConnected, match="could not connect"):
        await a.connect(f"127.0.0.1:{port}")
    links = Links("x", a.options, Recorder())
    with pytest.raises(RuntimeError, match="run"):
        await links.connect(a.address)


def test_channels_of_a_peer_listening_everywhere_are_dialled_where_control_was() -> None:
    from foundation_trio.cluster.links import _dial_back_address

    assert _dial_back_address("0.0.0.0:7400", "10.0.0.5") == "10.0.0.5:7400"
    assert _dial_back_address("[::]:7400", "fe80::1") == "[fe80::1]:7400"
    assert _dial_back_address("10.0.0.6:7400", "10.0.0.5") == "10.0.0.6:7400"
    assert _dial_back_address("0.0.0.0:7400", None) == "0.0.0.0:7400"


async def test_connect_during_a_dial_to_the_same_peer_returns_the_link_it_brings(
    nursery: trio.Nursery,
) -> None:
    # A node dials its seeds as its links start; the membership driver joins through
    # the same seed at once. That connect() used to fail with "already dialling this
    # peer", and the join waited for the next liveness round (about 2 s).
    a, _ = await start(nursery, "a")
    for round_ in range(4):
        b, rb = await start(nursery, f"b{round_}", seeds=[a.address])
        names: list[str] = []

        async def connect(links: Links = b, names: list[str] = names) -> None:
            names.append(await links.connect(a.address))

        async with trio.open_nursery() as both:
            both.start_soon(connect)
            both.start_soon(connect)
        assert names == ["a", "a"]
        assert rb.ups == ["a"]
