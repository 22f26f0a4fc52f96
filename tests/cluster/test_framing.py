"""Frames: batches, chunks, heartbeats; every malformed frame is a LinkProtocolError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_trio.cluster import framing
from foundation_trio.cluster.errors import FrameTooLarge, LinkProtocolError

CHUNK = 1024


def decoder(*, chunks: bool = True, heartbeats: bool = True, max_message: int = 64 * CHUNK):
    return framing.FrameDecoder(
        max_frame_size=4 * CHUNK,
        chunk_size=CHUNK,
        max_message_size=max_message,
        chunks=chunks,
        heartbeats=heartbeats,
    )


def feed(d: framing.FrameDecoder, frame: object) -> list[bytes]:
    """What the links do: a batch's messages, or a chunked message once complete."""
    messages = d.feed(frame)
    if d.completed is not None:
        return [b"".join(d.take_completed())]
    return messages


def test_a_batch_carries_messages_in_order() -> None:
    messages = [b"one", b"", b"three" * 10]
    frame = framing.encode_batch(messages)
    assert len(frame) == framing.batch_size([len(m) for m in messages])
    assert decoder().feed(frame) == messages


def test_an_empty_batch_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="at least one"):
        framing.encode_batch([])


def test_chunks_reassemble_and_the_decoder_is_reusable() -> None:
    d = decoder()
    data = bytes(range(256)) * 20  # 5120 bytes: 5 chunks of 1024
    frames = list(framing.chunk_frames(data, CHUNK))
    assert len(frames) == 5
    assert all(len(f) <= CHUNK + framing.CHUNK_HEADER for f in frames)
    out: list[bytes] = []
    for frame in frames[:-1]:
        out += feed(d, frame)
        assert d.reassembling > 0
    assert d.feed(frames[-1]) == []
    assert d.completed is not None and b"".join(d.completed) == data
    with pytest.raises(RuntimeError, match="take_completed"):
        d.feed(framing.encode_batch([b"too early"]))
    assert b"".join(d.take_completed()) == data
    assert d.completed is None
    assert d.reassembling == 0
    assert d.feed(framing.encode_batch([b"after"])) == [b"after"]
    with pytest.raises(RuntimeError, match="no chunked message"):
        d.take_completed()


def test_heartbeats_carry_nothing() -> None:
    assert decoder().feed(framing.HEARTBEAT_FRAME) == []


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (b"", "empty frame"),
        (b"\x09abc", "unknown frame kind 0x09"),
        (b"\x01", "batch frame with no message"),
        (b"\x01\x00\x00", "inside a length prefix"),
        (b"\x01\x00\x00\x00\x05abc", "runs past the end"),
        (b"\x04x", "heartbeat frame with a payload"),
        (b"\x03abc", "continuation without a chunked message"),
        (b"\x02\x00\x00\x00\x00\x00\x00\x00\x05", "chunk frame too short"),
        (b"\x02" + struct.pack(">Q", 3) + b"abc", "fits in one chunk"),
    ],
)
def test_malformed_frames(frame: bytes, match: str) -> None:
    with pytest.raises(LinkProtocolError, match=match):
        decoder().feed(frame)


def test_text_frames_are_refused() -> None:
    with pytest.raises(LinkProtocolError, match="binary"):
        decoder().feed("text")


def test_limits() -> None:
    with pytest.raises(FrameTooLarge, match="frame of 4097 bytes"):
        decoder().feed(b"\x01" + b"x" * 4096)
    big_message = framing.encode_batch([b"x" * (CHUNK + 1)])
    with pytest.raises(FrameTooLarge, match="message in a batch"):
        decoder().feed(big_message)
    huge = b"\x02" + struct.pack(">Q", 10**12) + b"x" * CHUNK
    with pytest.raises(FrameTooLarge, match="chunked message of 1000000000000 bytes"):
        decoder().feed(huge)
    oversized_chunk = b"\x02" + struct.pack(">Q", 5000) + b"x" * (CHUNK + 1)
    with pytest.raises(FrameTooLarge, match="chunk of 1025 bytes"):
        decoder().feed(oversized_chunk)


def test_channel_rules() -> None:
    with pytest.raises(LinkProtocolError, match="other than bulk"):
        decoder(chunks=False).feed(next(framing.chunk_frames(b"x" * 5000, CHUNK)))
    with pytest.raises(LinkProtocolError, match="other than control"):
        decoder(heartbeats=False).feed(framing.HEARTBEAT_FRAME)


def test_chunks_must_not_be_interrupted_or_overrun() -> None:
    frames = list(framing.chunk_frames(b"y" * 3000, CHUNK))
    d = decoder()
    d.feed(frames[0])
    with pytest.raises(LinkProtocolError, match="middle of a chunked message"):
        d.feed(framing.encode_batch([b"x"]))
    d = decoder()
    d.feed(frames[0])
    d.feed(frames[1])
    with pytest.raises(LinkProtocolError, match="left"):
        d.feed(b"\x03" + b"z" * 1000)  # 952 bytes are left


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=6))
def test_random_frames_only_raise_link_protocol_errors(frames: list[bytes]) -> None:
    d = decoder()
    for frame in frames:
        try:
            out = feed(d, frame)
        except LinkProtocolError:
            return
        assert all(isinstance(m, bytes) for m in out)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    st.binary(min_size=1, max_size=6000),
    st.integers(0, 10_000),
    st.integers(0, 255),
    st.integers(0, 4),
)
def test_mutated_frames_only_raise_link_protocol_errors(
    batch: list[bytes], big: bytes, position: int, value: int, cut: int
) -> None:
    valid = [framing.encode_batch(batch)]
    if len(big) > CHUNK:
        valid += list(framing.chunk_frames(big, CHUNK))
    index = position % len(valid)
    mutated = bytearray(valid[index])
    mutated[position % len(mutated)] = value
    valid[index] = bytes(mutated[: len(mutated) - cut if cut < len(mutated) else 1])
    d = decoder()
    delivered: list[bytes] = []
    try:
        for frame in valid:
            delivered += feed(d, frame)
    except LinkProtocolError:
        return
    total = sum(len(m) for m in delivered)
    assert total <= sum(len(f) for f in valid)


@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=10))
def test_round_trip(messages: list[bytes]) -> None:
    d = decoder()
    out: list[bytes] = []
    small = [m for m in messages if len(m) <= CHUNK]
    if small:
        out += feed(d, framing.encode_batch(small))
    for message in messages:
        if len(message) > CHUNK:
            for frame in framing.chunk_frames(message, CHUNK):
                out += feed(d, frame)
    assert out == small + [m for m in messages if len(m) > CHUNK]
