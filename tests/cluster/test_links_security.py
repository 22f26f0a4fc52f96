"""Security of the links (acceptance 2 of the cluster issue): who gets in, who is
thrown out, how fast, and that nothing a peer sends is ever unpickled."""

from __future__ import annotations

import pickle
from collections.abc import Mapping

import pytest
import trio
import trio_websocket
from _links_helpers import (
    COOKIE,
    Recorder,
    start,
    wait_channels,
    wait_linked,
    wait_rejected,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import foundation_trio as ft
from foundation_trio.cluster import framing
from foundation_trio.cluster import handshake as hs
from foundation_trio.cluster.errors import HandshakeFailed
from foundation_trio.cluster.links import WS_PATH, Channel, Links
from foundation_trio.cluster.options import parse_address

TIMEOUT = 0.5  # handshake timeout of the nodes under attack


async def closed_within(ws: trio_websocket.WebSocketConnection, seconds: float) -> str:
    """Wait until the node closes ``ws``; the close reason, as the client saw it."""
    with trio.fail_after(seconds):
        while True:
            try:
                await ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                return repr(closed.reason)


def raw_client(links: Links) -> trio_websocket._impl.WebSocketConnection:
    host, port = parse_address(links.address)
    return trio_websocket.open_websocket(host, port, WS_PATH, use_ssl=False)


async def test_a_wrong_cookie_is_rejected_in_both_directions(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    a, ra = await start(nursery, "a", cookie="right")
    b, rb = await start(nursery, "b", cookie="wrong")
    with pytest.raises(HandshakeFailed, match="does not know the cookie"):
        await b.connect(a.address)
    with pytest.raises(HandshakeFailed, match="does not know the cookie"):
        await a.connect(b.address)
    await wait_rejected(a)
    await wait_rejected(b)
    assert a.peers() == b.peers() == []
    assert ra.ups == rb.ups == []
    assert "right" not in caplog.text and "wrong" not in caplog.text.replace("wrong cookie", "")


async def test_a_forged_proof_is_rejected(nursery: trio.Nursery) -> None:
    a, ra = await start(nursery, "a", handshake_timeout=TIMEOUT)
    async with raw_client(a) as ws:
        hello = hs.Hello(1, "mallory", 5, "127.0.0.1:9", "control", b"n" * 32)
        await ws.send_message(hs.encode(hello))
        challenge = hs._decoder.decode(await ws.get_message())
        assert isinstance(challenge, hs.Challenge) and challenge.name == "a"
        await ws.send_message(hs.encode(hs.Proof(b"\x00" * 32)))
        refusal = hs._decoder.decode(await ws.get_message())
        assert isinstance(refusal, hs.Reject) and "client proof mismatch" in refusal.reason
        await closed_within(ws, 2 * TIMEOUT)
    await wait_rejected(a)
    assert ra.messages == [] and ra.ups == []


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (b"\xff\x00garbage", "malformed handshake message"),
        (framing.encode_batch([b"a valid-looking envelope"]), "malformed handshake message"),
        (pickle.dumps({"call": "get"}), "malformed handshake message"),
        ("a text message", "text message during the handshake"),
        (hs.encode(hs.Hello(2, "x", 1, "h:1", "control", b"n" * 32)), "version mismatch"),
        (hs.encode(hs.Hello(1, "a", 1, "h:1", "control", b"n" * 32)), "our own node name"),
        (hs.encode(hs.Hello(1, "x", 1, "h:1", "video", b"n" * 32)), "unknown channel"),
    ],
)
async def test_a_bad_first_message_closes_the_connection(
    nursery: trio.Nursery, first: bytes | str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, ra = await start(nursery, "a", handshake_timeout=TIMEOUT)
    async with raw_client(a) as ws:
        await ws.send_message(first)
        refusal = hs._decoder.decode(await ws.get_message())
        assert isinstance(refusal, hs.Reject) and reason in refusal.reason
        await closed_within(ws, 2 * TIMEOUT)
    await wait_rejected(a)
    assert reason in caplog.text
    assert ra.messages == [] and ra.ups == []


async def test_a_huge_frame_before_the_handshake_is_cut_off(nursery: trio.Nursery) -> None:
    a, ra = await start(nursery, "a", handshake_timeout=TIMEOUT)
    async with raw_client(a) as ws:
        try:
            await ws.send_message(b"\x01" + b"x" * (4 * 1024 * 1024))
        except trio_websocket.ConnectionClosed:
            pass  # closed while we were still sending: just as good
        reason = await closed_within(ws, 2 * TIMEOUT)
    await wait_rejected(a)
    assert "1009" in reason or "MESSAGE_TOO_BIG" in reason or "1006" in reason
    assert ra.messages == []


async def test_a_websocket_client_that_never_speaks_is_closed(nursery: trio.Nursery) -> None:
    a, ra = await start(nursery, "a", handshake_timeout=TIMEOUT)
    before = trio.current_time()
    async with raw_client(a) as ws:
        await closed_within(ws, 4 * TIMEOUT)
    assert trio.current_time() - before < 4 * TIMEOUT
    await wait_rejected(a)
    assert ra.ups == []


async def test_a_silent_tcp_client_is_closed(nursery: trio.Nursery) -> None:
    a, _ = await start(nursery, "a", handshake_timeout=TIMEOUT)
    host, port = parse_address(a.address)
    stream = await trio.open_tcp_stream(host, port)
    with trio.fail_after(4 * TIMEOUT):
        assert await stream.receive_some() == b""
    await stream.aclose()
    await wait_rejected(a)


async def test_a_plain_http_request_is_refused_at_once(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = await start(nursery, "a", handshake_timeout=30)
    host, port = parse_address(a.address)
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    response = b""
    with trio.fail_after(5):  # far less than the 30 s handshake timeout
        while chunk := await stream.receive_some():
            response += chunk
        await wait_rejected(a)
    assert response.startswith(b"HTTP/1.1 400")
    assert "not a websocket client" in caplog.text
    await stream.aclose()


async def test_a_websocket_upgrade_to_another_path_gets_404(nursery: trio.Nursery) -> None:
    a, _ = await start(nursery, "a", handshake_timeout=TIMEOUT)
    host, port = parse_address(a.address)
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with trio_websocket.open_websocket(host, port, "/other", use_ssl=False):
            pass
    assert info.value.status_code == 404
    await wait_rejected(a)


async def test_duplicate_node_names_are_refused(nursery: trio.Nursery) -> None:
    a, ra = await start(nursery, "a")
    b, rb = await start(nursery, "b", seeds=[a.address])
    await wait_linked((a, ra), (b, rb))
    impostor, _ = await start(nursery, "b")
    with pytest.raises(HandshakeFailed, match="duplicate node name"):
        await impostor.connect(a.address)
    with pytest.raises(HandshakeFailed, match="duplicate node name"):
        await a.connect(impostor.address)
    twin, _ = await start(nursery, "a")
    with pytest.raises(HandshakeFailed, match="our own node name"):
        await twin.connect(a.address)
    assert a.peers() == ["b"] and ra.ups == ["b"]


async def test_rejections_are_counted_in_telemetry() -> None:
    seen: list[tuple[str, Mapping[str, float], Mapping[str, object]]] = []
    async with ft.open_node("a"):
        ft.telemetry.attach("test", "cluster.handshake.rejected", lambda *e: seen.append(e))
        links = Links("a", ft.Cluster(cookie=COOKIE, handshake_timeout=TIMEOUT), Recorder())
        async with trio.open_nursery() as nursery:
            await nursery.start(links.run)
            async with raw_client(links) as ws:
                await ws.send_message(b"garbage")
                await closed_within(ws, 2 * TIMEOUT)
            await wait_rejected(links)
            nursery.cancel_scope.cancel()
    assert len(seen) == 1
    name, measurements, metadata = seen[0]
    assert name == "cluster.handshake.rejected"
    assert measurements == {"count": 1}
    assert "malformed handshake message" in str(metadata["reason"])
    assert str(metadata["remote"]).startswith("127.0.0.1:")
    assert metadata["side"] == "server"


async def test_bad_frames_from_an_authenticated_peer_close_only_its_link(
    nursery: trio.Nursery,
) -> None:
    a, ra = await start(nursery, "a")
    b, rb = await start(nursery, "b", seeds=[a.address])
    c, rc = await start(nursery, "c", seeds=[a.address])
    await wait_linked((a, ra), (b, rb))
    await wait_linked((a, ra), (c, rc))
    await wait_channels(b, "a")
    # b misbehaves below the API: an unknown frame kind on data
    await b._links["a"].conns[Channel.DATA].ws.send_message(b"\x09nonsense")
    await ra.wait_for(lambda: bool(ra.downs))
    assert ra.downs[0][0] == "b"
    assert "protocol error on data: unknown frame kind 0x09" in ra.downs[0][1]
    # the node and its other link carry on
    await c.send("a", Channel.DATA, b"still here")
    await ra.wait_for(lambda: ra.received() == [b"still here"])
    assert "c" in a.peers()
    # b reconnects (a is its seed), and an oversized frame is cut off the same way
    await wait_linked((a, ra), (b, rb))
    await wait_channels(b, "a")
    oversized = b"\x01" + b"x" * (a.options.data.max_frame_size + 1)
    await b._links["a"].conns[Channel.DATA].ws.send_message(oversized)
    await ra.wait_for(lambda: len(ra.downs) == 2)
    assert "1009" in ra.downs[1][1]
    assert ra.received() == [b"still here"]


async def test_a_handler_raising_link_protocol_error_closes_the_link(
    nursery: trio.Nursery,
) -> None:
    a, ra = await start(nursery, "a")
    b, rb = await start(nursery, "b", seeds=[a.address])
    await wait_linked((a, ra), (b, rb))
    ra.raise_on = b"undecodable"
    await b.send("a", Channel.CONTROL, b"undecodable")
    await ra.wait_for(lambda: bool(ra.downs))
    assert "the test's handler refuses this message" in ra.downs[0][1]
    await wait_linked((a, ra), (b, rb))


async def test_nothing_is_ever_unpickled(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> object:
        raise AssertionError("the cluster transport unpickled something")

    class Forbidden(pickle.Unpickler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            forbidden()

    payload = pickle.dumps({"evil": "payload"})
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", Forbidden)
    a, ra = await start(nursery, "a", handshake_timeout=TIMEOUT)
    b, rb = await start(nursery, "b", seeds=[a.address])
    await wait_linked((a, ra), (b, rb))
    await wait_channels(b, "a")
    for channel in Channel:
        await b.send("a", channel, payload)
    await b.send("a", Channel.BULK, payload * 20_000)  # chunked
    await ra.wait_for(lambda: len(ra.messages) == 5)
    assert ra.received(Channel.DATA) == [payload]  # delivered as the bytes they are
    async with raw_client(a) as ws:
        await ws.send_message(payload)
        await closed_within(ws, 2 * TIMEOUT)
    await wait_rejected(a)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(frames=st.lists(st.binary(max_size=3000), min_size=1, max_size=3))
async def test_random_frames_before_the_handshake_never_get_in(frames: list[bytes]) -> None:
    async with trio.open_nursery() as nursery:
        a, ra = await start(nursery, "a", handshake_timeout=TIMEOUT)
        async with raw_client(a) as ws:
            try:
                for frame in frames:
                    await ws.send_message(frame)
            except trio_websocket.ConnectionClosed:
                pass
            await closed_within(ws, 4 * TIMEOUT)
        assert ra.ups == [] and ra.messages == []
        # the node still takes a real peer
        b, rb = await start(nursery, "b", seeds=[a.address])
        await wait_linked((a, ra), (b, rb))
        nursery.cancel_scope.cancel()


async def test_handshakes_in_progress_are_limited(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    a, ra = await start(nursery, "a", handshake_timeout=30, max_handshakes=2)
    host, port = parse_address(a.address)
    silent = [await trio.open_tcp_stream(host, port) for _ in range(2)]
    with trio.fail_after(5):
        while True:
            if a._handshaking == 2:
                break
            await trio.sleep(0.005)
    third = await trio.open_tcp_stream(host, port)
    with trio.fail_after(5):  # far less than the 30 s handshake timeout
        assert await third.receive_some() == b""
    await wait_rejected(a)
    assert "2 handshakes already in progress" in caplog.text
    assert a._handshaking == 2
    for stream in [*silent, third]:
        await stream.aclose()
    b, rb = await start(nursery, "b", seeds=[a.address])
    await wait_linked((a, ra), (b, rb))
