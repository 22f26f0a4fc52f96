"""The bounded send queue of one channel of one link."""

from __future__ import annotations

from collections import deque

import trio

from .errors import NotConnected, SendQueueFull

YIELD_EVERY = 64
"""``put`` with room yields to the scheduler once every this many calls."""


class SendQueue:
    """Messages waiting for the channel's writer, at most ``capacity`` of them.

    ``put`` waits for room (senders are served first come, first served);
    ``put_nowait`` raises :class:`SendQueueFull`. ``close`` wakes every waiting
    sender with :class:`NotConnected` and discards what is queued: those
    messages were accepted but never written, which is the at-most-once loss a
    link allows when it goes down.
    """

    def __init__(self, peer: str, channel: str, capacity: int) -> None:
        self.peer = peer
        self.channel = channel
        self.capacity = capacity
        self.items: deque[bytes] = deque()
        self._room = trio.lowlevel.ParkingLot()
        self._ready = trio.Event()
        self.closed: str | None = None
        self._unyielded = 0
        self.writing = False
        """Set by the writer task from :meth:`take` until those messages are
        written: a direct write then must not start (it would overtake them)."""

    def __len__(self) -> int:
        return len(self.items)

    def _check_open(self) -> None:
        if self.closed is not None:
            raise NotConnected(self.peer, self.closed)

    def put_nowait(self, data: bytes) -> None:
        self._check_open()
        if len(self.items) >= self.capacity or self._room.statistics().tasks_waiting:
            raise SendQueueFull(self.peer, self.channel, self.capacity)
        self.items.append(data)
        self._ready.set()

    async def put(self, data: bytes) -> None:
        """Queue ``data``, waiting for room. Raises :class:`NotConnected` if the
        queue is (or gets) closed. Cancellation while waiting queues nothing.

        A cancellation point every time; a scheduling point when it waits for room
        and otherwise once every :data:`YIELD_EVERY` calls."""
        self._check_open()
        if len(self.items) >= self.capacity or self._room.statistics().tasks_waiting:
            while True:
                await self._room.park()
                self._check_open()
                if len(self.items) < self.capacity:
                    break
            self.items.append(data)
            self._ready.set()
            return
        # Room at once. Always a cancellation point, but a scheduling point only
        # every YIELD_EVERY sends: a burst of sends then lands in the queue
        # together and leaves as one frame, instead of the writer waking for each
        # message (the same trade as the GenServer loop, which yields every 64).
        await trio.lowlevel.checkpoint_if_cancelled()
        self.items.append(data)
        self._ready.set()
        await self.yield_sometimes()

    async def yield_sometimes(self) -> None:
        """A scheduling point once every :data:`YIELD_EVERY` calls (of this and of
        ``put`` with room), not a cancellation point."""
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_ready(self) -> None:
        """Wait until something is queued or the queue is closed."""
        if not self.items and self.closed is None:
            await self._ready.wait()

    def wake(self) -> None:
        """Make :meth:`wait_ready` return even with nothing queued (the writer
        has other work: the tail of a direct write)."""
        self._ready.set()

    def settle(self) -> None:
        """After a :meth:`wake` with nothing queued: wait again next time."""
        if not self.items and self.closed is None:
            self._ready = trio.Event()

    def take(self, limit_bytes: int, overhead: int, max_item: int) -> list[bytes]:
        """Pop the oldest message, and after it (if it is at most ``max_item``
        bytes) the following ones of at most ``max_item`` bytes while their sizes
        plus ``overhead`` each add up to at most ``limit_bytes``. Wakes senders
        waiting for the room freed."""
        items = self.items
        taken = [items.popleft()]
        used = len(taken[0]) + overhead
        if used - overhead > max_item:
            limit_bytes = 0
        while (
            items and len(items[0]) <= max_item and used + len(items[0]) + overhead <= limit_bytes
        ):
            message = items.popleft()
            used += len(message) + overhead
            taken.append(message)
        if not items:
            self._ready = trio.Event()
        self.writing = True
        self._room.unpark(count=len(taken))
        return taken

    def close(self, reason: str) -> int:
        """Close for ``reason``; returns how many queued messages were discarded."""
        if self.closed is not None:
            return 0
        self.closed = reason
        dropped = len(self.items)
        self.items.clear()
        self._ready.set()
        self._room.unpark_all()
        return dropped
