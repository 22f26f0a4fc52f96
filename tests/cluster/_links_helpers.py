"""Helpers for the link tests: an event recorder and running ``Links`` objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from foundation_trio.cluster.links import Channel, Links
from foundation_trio.cluster.options import Cluster

COOKIE = "test-cookie-0123456789"


class Recorder:
    """A ``LinkEvents`` that records everything, and lets a test wait for it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Channel, bytes]] = []
        self.ups: list[str] = []
        self.downs: list[tuple[str, str]] = []
        self.hold: trio.Event | None = None
        self.raise_on: bytes | None = None
        self._changed = trio.Event()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def message_received(self, peer: str, channel: Channel, data: bytes) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.raise_on is not None and data == self.raise_on:
            from foundation_trio.cluster.errors import LinkProtocolError

            raise LinkProtocolError("the test's handler refuses this message")
        self.messages.append((peer, channel, data))
        self._poke()

    def peer_up(self, peer: str) -> None:
        self.ups.append(peer)
        self._poke()

    def peer_down(self, peer: str, reason: str) -> None:
        self.downs.append((peer, reason))
        self._poke()

    def received(self, channel: Channel | None = None) -> list[bytes]:
        return [d for _, c, d in self.messages if channel is None or c is channel]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()


async def start(nursery: trio.Nursery, name: str, **options: Any) -> tuple[Links, Recorder]:
    """Start ``Links`` for ``name`` in ``nursery``; it runs until the nursery ends."""
    options.setdefault("cookie", COOKIE)
    recorder = Recorder()
    links = Links(name, Cluster(**options), recorder)
    await nursery.start(links.run)
    return links, recorder


async def wait_linked(*pairs: tuple[Links, Recorder], timeout: float = 10.0) -> None:
    """Wait until every one of ``pairs`` has a link to every other one."""
    names = {links.name for links, _ in pairs}
    for links, recorder in pairs:
        want = names - {links.name}
        await recorder.wait_for(lambda lk=links, w=want: w <= set(lk.peers()), timeout)


async def wait_channels(links: Links, peer: str, timeout: float = 10.0) -> None:
    """Wait until all four channel connections of the link to ``peer`` are up."""
    with trio.fail_after(timeout):
        while True:
            link = links._links.get(peer)
            if link is not None and len(link.conns) == len(Channel):
                return
            await trio.sleep(0.01)


async def wait_rejected(links: Links, count: int = 1, timeout: float = 5.0) -> None:
    """Wait until ``links`` has refused ``count`` incoming handshakes."""
    with trio.fail_after(timeout):
        while True:
            if links.rejected >= count:
                return
            await trio.sleep(0.005)
