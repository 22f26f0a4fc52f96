"""Bounded subscriptions that never block the publisher, shared by the services.

A subscriber gets a trio receive channel. The publisher never waits for it: each
subscription buffers at most ``buffer`` items, and what arrives while the buffer
is full is dropped and counted. The next item the subscriber does get (the
first published after it made room) is preceded by one :class:`Lagged` record
saying how many items it missed. So a subscriber that stops reading costs a bounded amount of
memory and is told exactly what it lost; the others are not affected.

A subscription ends when its receiver closes the channel (``async with channel``
or ``channel.close()``); the publisher notices on its next publish and forgets
it. When the publishing service stops, every channel is closed, so subscribers
see ``trio.EndOfChannel`` (an ``async for`` loop ends).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

import attrs
import trio

logger = logging.getLogger("foundation_trio.services")

T = TypeVar("T")

DEFAULT_BUFFER = 256
"""Items a subscription holds before it starts dropping (and counting) them."""


@attrs.frozen
class Lagged:
    """In a subscription channel: the subscriber fell behind and ``missed`` items
    were dropped at this point of the stream."""

    missed: int


def check_buffer(buffer: object, what: str) -> int:
    """``buffer`` as a subscription size, or a :class:`ValueError` naming ``what``."""
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise ValueError(f"{what}: buffer must be an int of at least 1, got {buffer!r}")
    return buffer


class _Subscription(Generic[T]):
    __slots__ = ("accepts", "buffer", "missed", "send_channel")

    def __init__(
        self,
        send_channel: trio.MemorySendChannel[T | Lagged],
        buffer: int,
        accepts: Callable[[T], bool] | None,
    ) -> None:
        self.send_channel = send_channel
        self.buffer = buffer
        self.accepts = accepts
        self.missed = 0


class Subscribers(Generic[T]):
    """The subscriptions of one publisher. Synchronous; use from trio tasks only."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._subscriptions: list[_Subscription[T]] = []
        self.lagged_total = 0
        """Items dropped across all subscriptions since the start."""

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(
        self, buffer: int = DEFAULT_BUFFER, accepts: Callable[[T], bool] | None = None
    ) -> trio.MemoryReceiveChannel[T | Lagged]:
        """A new subscription receiving the items ``accepts`` returns true for (all
        items if ``accepts`` is None), published from now on."""
        # One slot more than the buffer: the Lagged marker and the item after it
        # go in together when the subscriber has made room for one item.
        send_channel, receive_channel = trio.open_memory_channel[T | Lagged](buffer + 1)
        self._subscriptions.append(_Subscription(send_channel, buffer, accepts))
        return receive_channel

    def publish(self, item: T) -> None:
        """Offer ``item`` to every subscription without waiting.

        A subscription whose channel is full drops it and counts it; one whose
        receiver is closed is removed. A filter (``accepts``) that raises is logged
        and its subscription removed (and closed): a misbehaving subscriber never
        breaks the publisher.
        """
        closed: list[_Subscription[T]] = []
        for sub in self._subscriptions:
            if sub.accepts is not None:
                try:
                    wanted = sub.accepts(item)
                except Exception:
                    logger.exception("a %s subscription filter raised; it is removed", self._what)
                    closed.append(sub)
                    continue
                if not wanted:
                    continue
            channel = sub.send_channel
            try:
                if channel.statistics().current_buffer_used >= sub.buffer:
                    if sub.missed == 0:
                        logger.warning(
                            "a subscriber of %s is not keeping up; dropping items for it",
                            self._what,
                        )
                    sub.missed += 1
                    self.lagged_total += 1
                    continue
                if sub.missed:
                    channel.send_nowait(Lagged(sub.missed))
                    sub.missed = 0
                channel.send_nowait(item)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                closed.append(sub)
        for sub in closed:
            self._subscriptions.remove(sub)
            sub.send_channel.close()

    def close(self) -> None:
        """End every subscription: their receivers see ``trio.EndOfChannel``."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for sub in subscriptions:
            sub.send_channel.close()


__all__ = ["DEFAULT_BUFFER", "Lagged", "Subscribers", "check_buffer"]
