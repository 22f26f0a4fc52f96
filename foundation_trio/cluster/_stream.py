"""The TCP stream under a link's websocket, with what the link needs to see of it."""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

import trio
import wsproto.connection
import wsproto.events


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


class DirectWrite:
    """Writes one websocket message of a link from the sending task, synchronously.

    The usual way out is the connection's writer task: the sender queues, the
    writer wakes and calls ``send_message``, which yields twice more. For a lone
    message on an idle connection that is three scheduling steps per direction
    of a call. :meth:`try_write` instead frames the message with the
    connection's wsproto and hands it to the kernel in one non-blocking
    ``send()``, inside the sender's own synchronous step: nothing in it can be
    cancelled, so a cancelled sender can never leave half a frame on the wire.

    Exclusion: trio-websocket serializes everything it writes (our writer's
    messages, its own pongs and close frames) with ``ws._stream_lock``. That lock
    is replaced by a ``trio.Semaphore(1)``, which ``async with`` uses the same
    way but which, unlike a lock, one task may take and another release. A
    direct write takes it with ``acquire_nowait`` (and is refused if it is
    taken); if the kernel accepts only part of the bytes (its send buffer is
    full) the rest is left in :attr:`tail` *with the semaphore still held*, and
    the writer task writes the tail before anything else and then releases it,
    so no other bytes can come between the two parts.

    Used only on plain TCP (under TLS the bytes must go through the
    ``SSLStream``) and only where the trio-websocket internals it relies on are
    present (:meth:`for_connection` returns None otherwise).
    """

    __slots__ = ("_lock", "_message", "_open", "_sock", "_wsproto", "stream", "tail", "ws")

    def __init__(self, ws: Any, stream: TrackedStream, sock: socket.socket) -> None:
        self.ws = ws
        self.stream = stream
        self._sock = sock
        self._wsproto = ws._wsproto
        self._lock = trio.Semaphore(1)
        ws._stream_lock = self._lock
        self._message = wsproto.events.Message
        self._open = wsproto.connection.ConnectionState.OPEN
        self.tail: memoryview | None = None
        """Bytes of a message the kernel did not take all of; the writer owes them."""

    @classmethod
    def for_connection(cls, ws: Any, stream: TrackedStream) -> DirectWrite | None:
        """A direct writer for ``ws`` if it runs unencrypted on ``stream`` and
        trio-websocket is as expected; call it while nothing is being written
        (right after the handshake)."""
        lock = getattr(ws, "_stream_lock", None)
        sock = getattr(stream.inner.socket, "_sock", None)
        if (
            getattr(ws, "_stream", None) is not stream
            or not isinstance(lock, trio.Lock | trio.StrictFIFOLock)
            or lock.locked()
            or not hasattr(ws, "_wsproto")
            or not hasattr(ws, "_close_reason")
            or not isinstance(sock, socket.socket)
        ):
            return None
        return cls(ws, stream, sock)

    def try_write(self, data: bytes) -> int:
        """Write ``data`` as one binary websocket message if nothing else is being
        written. Returns the number of bytes framed (the message is then on its
        way: in the kernel, or partly in :attr:`tail` for the writer task to
        finish), or 0 if it was not taken (the caller queues it instead). Raises
        ``OSError`` if the socket failed: the connection is then broken and must
        be ended; the message is lost with it."""
        ws = self.ws
        if self._lock.value == 0 or ws._close_reason is not None:
            return 0
        if self._wsproto.state is not self._open:
            return 0
        payload: bytes = self._wsproto.send(self._message(data=data))
        self._lock.acquire_nowait()
        try:
            sent = self._sock.send(payload)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lock.release()
            self.stream.ended.set()
            raise
        if sent == len(payload):
            self._lock.release()
        else:
            self.tail = memoryview(payload)[sent:]
        return len(payload)

    async def finish_tail(self) -> None:
        """Write what :meth:`try_write` left over, then let other writers in.
        Raises what ``send_all`` raises (the connection is then broken)."""
        tail = self.tail
        if tail is None:
            return
        try:
            await self.stream.send_all(tail)
        finally:
            self.tail = None
            self._lock.release()
