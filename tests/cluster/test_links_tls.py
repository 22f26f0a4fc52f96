"""Links over TLS, with certificates made in the test by trustme."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme
from _links_helpers import start, wait_channels, wait_linked, wait_rejected

from foundation_trio.cluster.errors import HandshakeFailed
from foundation_trio.cluster.links import Channel
from foundation_trio.cluster.options import ClusterTLS


def tls_for(ca: trustme.CA, *, mutual: bool = True) -> ClusterTLS:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    if mutual:
        ca.configure_trust(server)
        server.verify_mode = ssl.CERT_REQUIRED
        cert.configure_cert(client)
    return ClusterTLS(server=server, client=client)


async def test_nodes_link_over_mutual_tls(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    a, ra = await start(nursery, "a", tls=tls_for(ca))
    b, rb = await start(nursery, "b", tls=tls_for(ca), seeds=[a.address])
    await wait_linked((a, ra), (b, rb))
    await wait_channels(b, "a")
    for conn in a._links["b"].conns.values():
        assert isinstance(conn.ws._stream, trio.SSLStream)
    payload = b"z" * (200 * 1024)
    await b.send("a", Channel.DATA, b"over tls")
    await b.send("a", Channel.BULK, payload)
    await ra.wait_for(lambda: len(ra.messages) == 2)
    assert ra.received(Channel.DATA) == [b"over tls"]
    assert ra.received(Channel.BULK) == [payload]


async def test_from_files_builds_mutual_contexts(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = {}
    for name in ("a", "b"):
        cert = ca.issue_cert("127.0.0.1")
        path = tmp_path / f"{name}.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(path))
        tls[name] = ClusterTLS.from_files(certfile=str(path), cafile=str(ca_file))
        assert tls[name].server.verify_mode == ssl.CERT_REQUIRED
    a, ra = await start(nursery, "a", tls=tls["a"])
    b, rb = await start(nursery, "b", tls=tls["b"], seeds=[a.address])
    await wait_linked((a, ra), (b, rb))


async def test_a_plain_node_cannot_reach_a_tls_node(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    a, ra = await start(nursery, "a", tls=tls_for(ca), handshake_timeout=10)
    plain, _ = await start(nursery, "plain", handshake_timeout=10)
    with trio.fail_after(5), pytest.raises(HandshakeFailed, match="before the websocket upgrade"):
        await plain.connect(a.address)
    await wait_rejected(a)
    assert a.peers() == [] and ra.ups == []


async def test_a_certificate_from_another_ca_is_refused(nursery: trio.Nursery) -> None:
    a, ra = await start(nursery, "a", tls=tls_for(trustme.CA()), handshake_timeout=1)
    stranger, _ = await start(nursery, "s", tls=tls_for(trustme.CA()), handshake_timeout=1)
    with pytest.raises(HandshakeFailed, match="TLS"):
        await stranger.connect(a.address)
    assert a.peers() == [] and ra.ups == []


async def test_mutual_tls_refuses_a_client_without_a_certificate(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    a, ra = await start(nursery, "a", tls=tls_for(ca, mutual=True), handshake_timeout=10)
    b, _ = await start(nursery, "b", tls=tls_for(ca, mutual=False), handshake_timeout=10)
    # TLS 1.3 lets the client finish first; the server's refusal then closes the stream
    with trio.fail_after(5), pytest.raises(HandshakeFailed):
        await b.connect(a.address)
    await wait_rejected(a)
    assert ra.ups == []
