"""The handshake state machine, without I/O: both directions authenticated, refusals
with reasons, and malformed input never raising."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_trio.cluster import handshake as hs
from foundation_trio.cluster.handshake import (
    ClientHandshake,
    Established,
    Failed,
    Reply,
    ServerHandshake,
    Verified,
)

COOKIE = b"the-cookie"
CHANNELS = frozenset({"control", "gossip", "data", "bulk"})


def client(cookie: bytes = COOKIE, **kw: object) -> ClientHandshake:
    options: dict[str, object] = {
        "cookie": cookie,
        "name": "a",
        "incarnation": 11,
        "address": "127.0.0.1:1",
        "channel": "control",
        "nonce": b"c" * 32,
    }
    options.update(kw)
    return ClientHandshake(**options)  # type: ignore[arg-type]


def server(cookie: bytes = COOKIE, **kw: object) -> ServerHandshake:
    options: dict[str, object] = {
        "cookie": cookie,
        "name": "b",
        "incarnation": 22,
        "address": "127.0.0.1:2",
        "nonce": b"s" * 32,
        "channels": CHANNELS,
    }
    options.update(kw)
    return ServerHandshake(**options)  # type: ignore[arg-type]


def test_both_sides_authenticate_and_learn_each_other() -> None:
    c, s = client(), server()
    challenge = s.receive(c.start())
    assert isinstance(challenge, Reply)
    verified = c.receive(challenge.data)
    assert isinstance(verified, Verified)
    assert verified.peer == hs.PeerIdentity("b", 22, "127.0.0.1:2", "control")
    admitted = s.receive(c.confirm())
    assert isinstance(admitted, Verified)
    assert admitted.peer == hs.PeerIdentity("a", 11, "127.0.0.1:1", "control")
    done = c.receive(s.accept())
    assert done == Established(verified.peer)


def test_a_client_with_the_wrong_cookie_rejects_the_server_first() -> None:
    c, s = client(cookie=b"wrong"), server()
    challenge = s.receive(c.start())
    assert isinstance(challenge, Reply)
    result = c.receive(challenge.data)
    assert isinstance(result, Failed)
    assert "server proof mismatch" in result.reason
    assert result.reply is not None  # the server is told why
    with pytest.raises(RuntimeError):
        c.confirm()


def test_the_server_rejects_a_proof_made_without_the_cookie() -> None:
    s = server()
    s.receive(client().start())
    forged = hs.encode(hs.Proof(b"x" * 32))
    result = s.receive(forged)
    assert isinstance(result, Failed)
    assert "client proof mismatch" in result.reason
    with pytest.raises(RuntimeError):
        s.accept()


def test_the_server_rejects_a_client_with_another_cookie() -> None:
    # A client that skips the server check (as an attacker would) still cannot prove.
    c_good, c_bad, s = client(), client(cookie=b"other"), server()
    challenge = s.receive(c_bad.start())
    assert isinstance(challenge, Reply)
    c_good.start()
    # The attacker uses the real protocol code but its own cookie for the proof:
    c_bad.state = hs._State.VERIFIED
    c_bad.peer = hs.PeerIdentity("b", 22, "127.0.0.1:2", "control")
    c_bad._server_nonce = b"s" * 32
    result = s.receive(c_bad.confirm())
    assert isinstance(result, Failed)


def test_a_proof_cannot_be_replayed_to_another_server_nonce() -> None:
    c, s = client(), server()
    c.receive(s.receive(c.start()).data)  # type: ignore[union-attr]
    proof = c.confirm()
    again = server(nonce=b"t" * 32)
    again.receive(client().start())
    result = again.receive(proof)
    assert isinstance(result, Failed)


def test_the_server_proof_cannot_be_reflected_as_a_client_proof() -> None:
    c, s = client(), server()
    challenge = s.receive(c.start())
    assert isinstance(challenge, Reply)
    server_proof = msgspec.msgpack.decode(challenge.data, type=hs.Challenge).proof
    result = s.receive(hs.encode(hs.Proof(server_proof)))
    assert isinstance(result, Failed)


def test_version_mismatch_is_reported_as_such() -> None:
    result = server().receive(client(version=2).start())
    assert isinstance(result, Failed)
    assert "version mismatch: we speak 1, the peer 2" in result.reason
    c = client()
    c.start()
    other = server(version=3)
    challenge = other.receive(client(version=3).start())
    assert isinstance(challenge, Reply)
    result = c.receive(challenge.data)
    assert isinstance(result, Failed)
    assert "version mismatch" in result.reason


def test_a_future_hello_layout_is_still_a_version_mismatch() -> None:
    future = msgspec.msgpack.encode(["hello", 9, "a", "whatever", {"new": "fields"}])
    result = server().receive(future)
    assert isinstance(result, Failed)
    assert "version mismatch: we speak 1, the peer 9" in result.reason


def test_a_peer_claiming_our_name_is_refused_both_ways() -> None:
    result = server(name="a").receive(client(name="a").start())
    assert isinstance(result, Failed)
    assert "our own node name" in result.reason
    c = client(name="b")
    c.start()
    s = server(name="b")
    # A server with our name answers a (different) client's hello; we refuse it.
    challenge = s.receive(client(name="x").start())
    assert isinstance(challenge, Reply)
    result = c.receive(challenge.data)
    assert isinstance(result, Failed)


def test_the_client_can_expect_a_name() -> None:
    c, s = client(expect="z"), server()
    result = c.receive(s.receive(c.start()).data)  # type: ignore[union-attr]
    assert isinstance(result, Failed)
    assert "expected node 'z'" in result.reason


def test_unknown_channel_and_bad_identity() -> None:
    result = server().receive(client(channel="video").start())
    assert isinstance(result, Failed) and "unknown channel" in result.reason
    bad_name = hs.encode(hs.Hello(1, "a b", 1, "h:1", "control", b"n" * 32))
    result = server().receive(bad_name)
    assert isinstance(result, Failed) and "invalid node name" in result.reason
    short_nonce = hs.encode(hs.Hello(1, "a", 1, "h:1", "control", b"n"))
    result = server().receive(short_nonce)
    assert isinstance(result, Failed) and "nonce" in result.reason


def test_refusals_travel_to_the_other_side() -> None:
    c, s = client(), server()
    c.receive(s.receive(c.start()).data)  # type: ignore[union-attr]
    assert isinstance(s.receive(c.confirm()), Verified)
    result = c.receive(s.refuse("duplicate node name"))
    assert isinstance(result, Failed)
    assert result.reason == "refused by the peer: duplicate node name"
    assert result.reply is None  # nothing to answer to a refusal


def test_messages_out_of_order_fail() -> None:
    s = server()
    result = s.receive(hs.encode(hs.Proof(b"p" * 32)))
    assert isinstance(result, Failed) and "unexpected proof" in result.reason
    c = client()
    c.start()
    assert isinstance(c.receive(hs.encode(hs.Welcome())), Failed)
    # once failed, everything fails
    assert isinstance(c.receive(b"anything"), Failed)


def test_oversized_and_non_binary_messages_fail() -> None:
    result = server().receive(b"\x00" * (hs.MAX_MESSAGE + 1))
    assert isinstance(result, Failed) and "exceeds" in result.reason
    result = server().receive("text")  # type: ignore[arg-type]
    assert isinstance(result, Failed) and "binary" in result.reason


def test_repr_hides_the_cookie() -> None:
    assert "the-cookie" not in repr(client()) + repr(server())


def _valid_messages() -> list[bytes]:
    c, s = client(), server()
    hello = c.start()
    challenge = s.receive(hello)
    assert isinstance(challenge, Reply)
    c.receive(challenge.data)
    return [hello, challenge.data, c.confirm(), hs.encode(hs.Welcome())]


def _mutate(data: bytes, position: int, value: int, cut: int) -> bytes:
    mutated = bytearray(data)
    if mutated:
        mutated[position % len(mutated)] = value
    return bytes(mutated[: max(0, len(mutated) - cut)])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=1200), min_size=1, max_size=4))
def test_random_bytes_never_raise_and_never_authenticate(frames: list[bytes]) -> None:
    s = server()
    for frame in frames:
        result = s.receive(frame)
        assert isinstance(result, Failed | Reply)
        assert not isinstance(result, Verified)
        if isinstance(result, Failed):
            break
    c = client()
    c.start()
    for frame in frames:
        result = c.receive(frame)
        assert isinstance(result, Failed)
        break


@settings(max_examples=400, deadline=None)
@given(
    st.integers(0, 3),
    st.integers(0, 10_000),
    st.integers(0, 255),
    st.integers(0, 8),
)
def test_mutated_messages_never_raise_and_never_forge_a_proof(
    which: int, position: int, value: int, cut: int
) -> None:
    messages = _valid_messages()
    mutated = _mutate(messages[which], position, value, cut)
    c, s = client(), server()
    hello = c.start()
    first = s.receive(mutated if which == 0 else hello)
    if not isinstance(first, Reply):
        assert isinstance(first, Failed)
        return
    challenge = mutated if which == 1 else first.data
    verified = c.receive(challenge)
    if not isinstance(verified, Verified):
        assert isinstance(verified, Failed)
        return
    # A changed challenge can only verify if the change left the proof valid.
    proof = mutated if which == 2 else c.confirm()
    if which == 2:
        c.confirm()
    result = s.receive(proof)
    assert isinstance(result, Verified | Failed)
    if isinstance(result, Verified) and which == 2:
        assert mutated == messages[2] or msgspec.msgpack.decode(
            mutated, type=hs.Proof
        ) == msgspec.msgpack.decode(messages[2], type=hs.Proof)
