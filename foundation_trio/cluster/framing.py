"""Frames: what one websocket message of a link carries, after the handshake.

Pure functions and a small decoder object, no I/O, so they can be fuzzed. Every
frame starts with one byte saying its kind::

    BATCH      0x01  (u32 length, message bytes) repeated, at least once
    CHUNK      0x02  u64 total length, then the first chunk of a large message
    CHUNK_MORE 0x03  the next chunk of the message being reassembled
    HEARTBEAT  0x04  nothing else (control channel only)

Small messages queued together go in one ``BATCH`` (coalescing: the cost of a
websocket message is paid once per batch, not per message). A bulk message
larger than ``chunk_size`` goes as ``CHUNK`` then ``CHUNK_MORE`` frames of
at most ``chunk_size`` bytes (the receiver's), in order and uninterrupted on its
connection, and is
reassembled by :class:`FrameDecoder` up to ``max_message_size`` bytes. Any
violation raises :class:`LinkProtocolError` (or :class:`FrameTooLarge`); the
link that received it is closed. Nothing is ever unpickled.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Final

from .errors import FrameTooLarge, LinkProtocolError

BATCH: Final = 0x01
CHUNK: Final = 0x02
CHUNK_MORE: Final = 0x03
HEARTBEAT: Final = 0x04

HEARTBEAT_FRAME: Final = bytes([HEARTBEAT])
BATCH_HEADER: Final = 1
MESSAGE_HEADER: Final = 4
CHUNK_HEADER: Final = 9

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_BATCH_PREFIX = bytes([BATCH])


def batch_size(sizes: Sequence[int]) -> int:
    """Bytes of a batch frame of messages of these sizes."""
    return BATCH_HEADER + sum(sizes) + MESSAGE_HEADER * len(sizes)


def encode_batch(messages: Sequence[bytes]) -> bytes:
    """One ``BATCH`` frame carrying ``messages`` in order (at least one)."""
    if not messages:
        raise ValueError("a batch carries at least one message")
    parts = [_BATCH_PREFIX]
    pack = _U32.pack
    for message in messages:
        parts.append(pack(len(message)))
        parts.append(message)
    return b"".join(parts)


def chunk_frames(data: bytes, chunk_size: int) -> Iterator[bytes]:
    """The ``CHUNK`` / ``CHUNK_MORE`` frames of ``data``, lazily (the sender
    checkpoints between them)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    view = memoryview(data)
    total = len(view)
    yield bytes([CHUNK]) + _U64.pack(total) + view[:chunk_size]
    more = bytes([CHUNK_MORE])
    for start in range(chunk_size, total, chunk_size):
        yield more + view[start : start + chunk_size]


class FrameDecoder:
    """Decodes the frames of one connection, in order, into whole messages.

    ``chunks`` says whether the channel may carry chunked messages (bulk only),
    ``heartbeats`` whether it may carry heartbeats (control only). It holds at
    most one message under reassembly, of at most ``max_message_size`` bytes.
    """

    def __init__(
        self,
        *,
        max_frame_size: int,
        chunk_size: int,
        max_message_size: int,
        chunks: bool,
        heartbeats: bool,
    ) -> None:
        self.max_frame_size = max_frame_size
        self.chunk_size = chunk_size
        self.max_message_size = max_message_size
        self.chunks = chunks
        self.heartbeats = heartbeats
        self._parts: list[bytes] = []
        self._have = 0
        self._total = 0
        self.completed: list[bytes] | None = None
        """Set when a frame completed a chunked message: see :meth:`take_completed`."""

    @property
    def reassembling(self) -> int:
        """Bytes of the message under reassembly received so far (0 if none)."""
        return self._have

    def feed(self, frame: object) -> list[bytes]:
        """The messages of a ``BATCH`` frame, in order; ``[]`` for the other kinds.
        A ``CHUNK_MORE`` that completes a chunked message sets :attr:`completed`.

        Raises :class:`LinkProtocolError` for anything malformed and
        :class:`FrameTooLarge` for a frame or message over its limit; the
        decoder must not be used after it raised.
        """
        if not isinstance(frame, bytes):
            raise LinkProtocolError(f"expected a binary frame, got {type(frame).__name__}")
        size = len(frame)
        if size > self.max_frame_size:
            raise FrameTooLarge(size, self.max_frame_size, "frame")
        if size == 0:
            raise LinkProtocolError("empty frame")
        kind = frame[0]
        if self.completed is not None:
            raise RuntimeError("take_completed() the finished chunked message first")
        if self._total and kind != CHUNK_MORE:
            raise LinkProtocolError(
                f"frame of kind {kind:#04x} in the middle of a chunked message"
            )
        if kind == BATCH:
            return self._batch(frame)
        if kind == CHUNK_MORE:
            return self._more(frame)
        if kind == CHUNK:
            return self._first(frame)
        if kind == HEARTBEAT:
            if not self.heartbeats:
                raise LinkProtocolError("heartbeat on a channel other than control")
            if size != 1:
                raise LinkProtocolError("heartbeat frame with a payload")
            return []
        raise LinkProtocolError(f"unknown frame kind {kind:#04x}")

    def _batch(self, frame: bytes) -> list[bytes]:
        # Check the whole frame before returning anything: a malformed batch
        # delivers none of its messages.
        end = len(frame)
        offset = BATCH_HEADER
        spans: list[tuple[int, int]] = []
        unpack = _U32.unpack_from
        limit = self.chunk_size
        while offset < end:
            if offset + MESSAGE_HEADER > end:
                raise LinkProtocolError("batch frame ends inside a length prefix")
            (length,) = unpack(frame, offset)
            offset += MESSAGE_HEADER
            if length > limit:
                raise FrameTooLarge(length, limit, "message in a batch")
            if offset + length > end:
                raise LinkProtocolError(
                    f"batch message of {length} bytes runs past the end of the frame"
                )
            spans.append((offset, offset + length))
            offset += length
        if not spans:
            raise LinkProtocolError("batch frame with no message")
        return [frame[start:stop] for start, stop in spans]

    def _first(self, frame: bytes) -> list[bytes]:
        if not self.chunks:
            raise LinkProtocolError("chunked message on a channel other than bulk")
        if len(frame) < CHUNK_HEADER + 1:
            raise LinkProtocolError("chunk frame too short")
        (total,) = _U64.unpack_from(frame, 1)
        if total > self.max_message_size:
            raise FrameTooLarge(total, self.max_message_size, "chunked message")
        chunk = frame[CHUNK_HEADER:]
        if len(chunk) > self.chunk_size:
            raise FrameTooLarge(len(chunk), self.chunk_size, "chunk")
        if len(chunk) >= total:
            raise LinkProtocolError(
                f"chunked message of {total} bytes with a first chunk of {len(chunk)}: "
                "a message that fits in one chunk is sent in a batch"
            )
        self._total = total
        self._parts = [chunk]
        self._have = len(chunk)
        return []

    def _more(self, frame: bytes) -> list[bytes]:
        if not self._total:
            raise LinkProtocolError("chunk continuation without a chunked message")
        chunk = frame[1:]
        left = self._total - self._have
        if not chunk or len(chunk) > min(left, self.chunk_size):
            raise LinkProtocolError(
                f"chunk of {len(chunk)} bytes with {left} of {self._total} left "
                f"(chunks are 1 to {self.chunk_size} bytes)"
            )
        self._parts.append(chunk)
        self._have += len(chunk)
        if self._have < self._total:
            return []
        self.completed = self._parts
        self._parts = []
        self._have = 0
        self._total = 0
        return []

    def take_completed(self) -> list[bytes]:
        """The chunks of the chunked message the last frame completed, in order
        (joining them is left to the caller: for a large message a single
        ``b"".join`` stalls the event loop, so the links do it in a thread)."""
        parts = self.completed
        if parts is None:
            raise RuntimeError("no chunked message is complete")
        self.completed = None
        return parts
