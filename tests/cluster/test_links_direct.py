"""The direct write: a lone message on an idle connection is written by its sender
(``ChannelStats.direct_frames_sent``), anything else goes through the writer task;
order, coalescing and the integrity of the stream hold either way. Real sockets on
127.0.0.1."""

from __future__ import annotations

import random
import socket

import pytest
import trio
from _links_helpers import Recorder, start, wait_channels, wait_linked

from foundation_trio.cluster import links as links_module
from foundation_trio.cluster.links import Channel, Links


async def pair(nursery: trio.Nursery) -> tuple[tuple[Links, Recorder], tuple[Links, Recorder]]:
    a = await start(nursery, "a")
    b = await start(nursery, "b", seeds=[a[0].address])
    await wait_linked(a, b)
    await wait_channels(a[0], "b")
    await wait_channels(b[0], "a")
    return a, b


def data_stats(links: Links, peer: str) -> links_module.ChannelStats:
    return links.stats(peer).channels[Channel.DATA]


@pytest.fixture
def always_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """No idle time required: every message sent while nothing is queued or being
    written goes direct, which makes the choice deterministic for a test."""
    monkeypatch.setattr(links_module, "DIRECT_AFTER_IDLE", 0.0)


async def test_a_lone_message_goes_direct_and_a_burst_is_coalesced(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 ms rather than 100 us: a busy test machine may pause this task that long
    monkeypatch.setattr(links_module, "DIRECT_AFTER_IDLE", 0.005)
    (_a, ra), (b, _rb) = await pair(nursery)
    await trio.sleep(0.02)  # the connection has been idle
    await b.send("a", Channel.DATA, b"lone")
    await ra.wait_for(lambda: len(ra.messages) == 1)
    assert data_stats(b, "a").direct_frames_sent == 1
    await trio.sleep(0.02)
    burst = [i.to_bytes(8, "big") * 8 for i in range(500)]
    for message in burst:
        b.send_nowait("a", Channel.DATA, message)
    await ra.wait_for(lambda: len(ra.messages) == 501)
    stats = data_stats(b, "a")
    # the first of the burst may go direct; the rest leave coalesced
    assert stats.direct_frames_sent == 2
    assert stats.frames_sent <= 2 + 3
    assert ra.received() == [b"lone", *burst]


async def test_not_direct_behind_a_queued_message(
    nursery: trio.Nursery, always_direct: None
) -> None:
    (_a, ra), (b, _rb) = await pair(nursery)
    queue = b._links["a"].queues[Channel.DATA]
    queue.put_nowait(b"queued first")
    b.send_nowait("a", Channel.DATA, b"sent second")
    await b.send("a", Channel.DATA, b"sent third")
    await ra.wait_for(lambda: len(ra.messages) == 3)
    assert ra.received() == [b"queued first", b"sent second", b"sent third"]
    assert data_stats(b, "a").direct_frames_sent == 0
    # idle again: the next one goes direct
    await trio.sleep(0.01)
    b.send_nowait("a", Channel.DATA, b"fourth")
    await ra.wait_for(lambda: len(ra.messages) == 4)
    assert data_stats(b, "a").direct_frames_sent == 1


async def test_fifo_per_sender_under_a_mix_of_direct_and_queued(
    nursery: trio.Nursery, always_direct: None
) -> None:
    (_a, ra), (b, _rb) = await pair(nursery)
    rng = random.Random(4)

    async def sender(tag: bytes, pauses: list[int]) -> None:
        for i, pause in enumerate(pauses):
            message = tag + i.to_bytes(4, "big") + b"." * rng.choice((0, 100, 5000, 60000))
            if pause == 0:
                b.send_nowait("a", Channel.DATA, message)
            else:
                await b.send("a", Channel.DATA, message)
                if pause == 2:
                    await trio.sleep(0.0005)

    plans = {tag: [rng.choice((0, 1, 1, 2)) for _ in range(300)] for tag in (b"x", b"y", b"z")}
    async with trio.open_nursery() as senders:
        for tag, pauses in plans.items():
            senders.start_soon(sender, tag, pauses)
    await ra.wait_for(lambda: len(ra.messages) == 900)
    for tag in plans:
        seen = [int.from_bytes(d[1:5], "big") for d in ra.received() if d[:1] == tag]
        assert seen == list(range(300))
    stats = data_stats(b, "a")
    assert 0 < stats.direct_frames_sent < stats.frames_sent


async def test_a_partial_direct_write_is_finished_before_anything_else(
    nursery: trio.Nursery, always_direct: None
) -> None:
    (_a, ra), (b, _rb) = await pair(nursery)
    conn = b._links["a"].conns[Channel.DATA]
    assert conn.direct is not None
    conn.stream.inner.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ra.hold = trio.Event()  # a stops reading: the socket buffers fill up
    sent: list[bytes] = []
    tails = 0
    with trio.fail_after(10):
        while tails < 3:
            message = len(sent).to_bytes(4, "big") * (16 * 1024)  # 64 KiB
            b.send_nowait("a", Channel.DATA, message)
            sent.append(message)
            if conn.direct.tail is not None:
                tails += 1
                # the rest of that frame is owed: what follows is queued behind it
                before = data_stats(b, "a").direct_frames_sent
                follow = b"after tail %d" % tails
                b.send_nowait("a", Channel.DATA, follow)
                sent.append(follow)
                assert data_stats(b, "a").direct_frames_sent == before
                ra.hold.set()
                await ra.wait_for(lambda: len(ra.messages) == len(sent))
                ra.hold = trio.Event()
            await trio.lowlevel.checkpoint()
    ra.hold.set()
    await ra.wait_for(lambda: len(ra.messages) == len(sent))
    assert ra.received() == sent
    assert b.peers() == ["a"]


async def test_a_cancelled_sender_writes_nothing_and_the_link_carries_on(
    nursery: trio.Nursery, always_direct: None
) -> None:
    (_a, ra), (b, _rb) = await pair(nursery)
    with trio.CancelScope() as scope:
        scope.cancel()
        await b.send("a", Channel.DATA, b"never")
    assert scope.cancelled_caught
    # cancelled at random points of a stream of sends
    rng = random.Random(7)
    sent = 0
    for _ in range(50):
        with trio.move_on_after(rng.random() * 0.002):
            while True:
                await b.send("a", Channel.DATA, sent.to_bytes(4, "big") * 100)
                sent += 1
                await trio.sleep(rng.random() * 0.0005)
    await b.send("a", Channel.DATA, b"last")
    await ra.wait_for(lambda: len(ra.messages) == sent + 1)
    assert ra.received()[:-1] == [i.to_bytes(4, "big") * 100 for i in range(sent)]
    assert b.peers() == ["a"]


async def test_a_failed_direct_write_takes_the_link_down(
    nursery: trio.Nursery, always_direct: None
) -> None:
    (_a, _ra), (b, rb) = await pair(nursery)
    conn = b._links["a"].conns[Channel.DATA]
    conn.stream.inner.socket.shutdown(socket.SHUT_WR)  # the next send fails (EPIPE)
    b.send_nowait("a", Channel.DATA, b"lost")  # at most once: no error here
    await rb.wait_for(lambda: bool(rb.downs))
    assert rb.downs[0][0] == "a"
    assert "connection lost" in rb.downs[0][1]
