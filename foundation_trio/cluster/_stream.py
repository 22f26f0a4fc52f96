"""The TCP stream under a link's websocket, with what the link needs to see of it."""

from __future__ import annotations

import contextlib
import socket
import struct

import trio


class TrackedStream(trio.abc.HalfCloseableStream):
    """A ``trio.SocketStream`` that says when it has ended and can be severed.

    ``ended`` is set once the peer closed it (end of file), it broke, or it was
    closed here: the accept path waits on it alongside the websocket upgrade, so
    a client that is not a websocket client (whose request the websocket layer
    refuses and closes) is noticed at once rather than at the handshake timeout.
    ``sever()`` closes the socket abruptly (a TCP reset, no websocket close), as
    a crashed peer or a cut cable would.
    """

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.ended = trio.Event()
        self.bytes_received = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.ended.set()
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.ended.set()
            raise
        if not data:
            self.ended.set()
        self.bytes_received += len(data)
        return data

    async def aclose(self) -> None:
        self.ended.set()
        await self.inner.aclose()

    def sever(self) -> None:
        """Reset the connection now: SO_LINGER 0 makes close() send a RST."""
        self.ended.set()
        sock = self.inner.socket
        with contextlib.suppress(OSError):  # already closed: nothing left to sever
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
