"""The bounded send queue of a channel: room, waiting, closing, cancellation, yields."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from foundation_trio.cluster._queue import YIELD_EVERY, SendQueue
from foundation_trio.cluster.errors import NotConnected, SendQueueFull


async def test_put_nowait_and_take() -> None:
    queue = SendQueue("b", "data", 3)
    for message in (b"1", b"22", b"333"):
        queue.put_nowait(message)
    with pytest.raises(SendQueueFull, match="3 messages"):
        queue.put_nowait(b"4")
    # frame limit 8 with 1 byte of overhead each: "1" (2) + "22" (3) fit, "333" would not
    assert queue.take(8, 1, 100) == [b"1", b"22"]
    assert queue.take(100, 1, 100) == [b"333"]
    assert len(queue) == 0


async def test_take_stops_at_a_message_larger_than_max_item() -> None:
    queue = SendQueue("b", "bulk", 10)
    for message in (b"a", b"b", b"x" * 50, b"c"):
        queue.put_nowait(message)
    assert queue.take(1000, 4, 10) == [b"a", b"b"]
    assert queue.take(1000, 4, 10) == [b"x" * 50]  # alone: it goes in chunks
    assert queue.take(1000, 4, 10) == [b"c"]


async def test_put_waits_for_room_in_order() -> None:
    queue = SendQueue("b", "data", 1)
    queue.put_nowait(b"first")
    order: list[bytes] = []

    async def sender(message: bytes) -> None:
        await queue.put(message)
        order.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender, b"second")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(sender, b"third")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(SendQueueFull):
            queue.put_nowait(b"jumps the line")  # others are waiting: no overtaking
        assert order == []
        assert queue.take(100, 0, 100) == [b"first"]
        await trio.testing.wait_all_tasks_blocked()
        assert queue.take(100, 0, 100) == [b"second"]
        await trio.testing.wait_all_tasks_blocked()
        assert queue.take(100, 0, 100) == [b"third"]
    assert order == [b"second", b"third"]


async def test_close_fails_waiting_senders_and_drops_what_is_queued() -> None:
    queue = SendQueue("b", "data", 1)
    queue.put_nowait(b"queued")
    failures: list[NotConnected] = []

    async def sender() -> None:
        try:
            await queue.put(b"waiting")
        except NotConnected as error:
            failures.append(error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert queue.close("link lost") == 1
    assert len(failures) == 2 and "link lost" in str(failures[0])
    assert queue.close("again") == 0
    with pytest.raises(NotConnected):
        queue.put_nowait(b"late")
    with pytest.raises(NotConnected):
        await queue.put(b"late")
    await queue.wait_ready()  # a closed queue never blocks its writer


async def test_cancelled_while_waiting_queues_nothing() -> None:
    queue = SendQueue("b", "data", 1)
    queue.put_nowait(b"full")
    with trio.move_on_after(0.01):
        await queue.put(b"never")
    assert list(queue.items) == [b"full"]
    with trio.CancelScope() as scope:
        scope.cancel()
        queue.take(100, 0, 100)
        with pytest.raises(trio.Cancelled):
            await queue.put(b"cancelled before")
    assert len(queue) == 0


async def test_put_yields_once_every_so_many_sends() -> None:
    queue = SendQueue("b", "data", 10_000)
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        before = ran
        assert before > 0
        for _ in range(YIELD_EVERY - 1):
            await queue.put(b"x")
        assert ran == before  # a burst of sends did not let anyone else run
        await queue.put(b"x")
        await trio.lowlevel.checkpoint()
        assert ran > before
        nursery.cancel_scope.cancel()
