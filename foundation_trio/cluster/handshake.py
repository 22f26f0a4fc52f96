"""The link handshake as a sans-IO state machine: bytes in, bytes and decisions out.

It does no I/O and reads no clock; the driver (``links.py``) moves the bytes over
a websocket and enforces the handshake timeout. Four messages, msgpack-encoded
msgspec structs, each at most :data:`MAX_MESSAGE` bytes::

    client                                   server
    Hello(version, name, incarnation,   ->
          address, channel, nonce_c)
                                        <-   Challenge(version, name, incarnation,
                                                       address, nonce_s, proof_s)
    Proof(proof_c)                      ->
                                        <-   Welcome() | Reject(reason)

``proof_s = HMAC-SHA256(cookie, "server" + transcript)`` and ``proof_c =
HMAC-SHA256(cookie, "client" + transcript)``, where the transcript binds the
version, both names and incarnations, the channel and both nonces. Each side
proves knowledge of the cookie over a fresh nonce chosen by the other, so a
recorded handshake cannot be replayed, and the role labels stop a proof from
being reflected back. Proofs are compared with ``hmac.compare_digest``.

The client checks the server before it proves itself, and the server decides
whether to admit the client (its own name, a duplicate link) only after the
client has proved the cookie: nothing an unauthenticated peer sends changes the
node's state. Malformed input never raises: it yields :class:`Failed` with the
reason, which the driver logs before closing the connection.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from typing import Final

import attrs
import msgspec

from ..runtime.node import _check_node_name as check_node_name

PROTOCOL_VERSION: Final = 1
NONCE_SIZE: Final = 32
MAX_MESSAGE: Final = 1024
"""Largest handshake message accepted; anything larger ends the handshake."""
_MAX_TEXT = 255
_MAX_REASON = 400


class Hello(msgspec.Struct, tag="hello", array_like=True, forbid_unknown_fields=True):
    version: int
    name: str
    incarnation: int
    address: str
    channel: str
    nonce: bytes


class Challenge(msgspec.Struct, tag="challenge", array_like=True, forbid_unknown_fields=True):
    version: int
    name: str
    incarnation: int
    address: str
    nonce: bytes
    proof: bytes


class Proof(msgspec.Struct, tag="proof", array_like=True, forbid_unknown_fields=True):
    proof: bytes


class Welcome(msgspec.Struct, tag="welcome", array_like=True, forbid_unknown_fields=True):
    pass


class Reject(msgspec.Struct, tag="reject", array_like=True, forbid_unknown_fields=True):
    reason: str


Message = Hello | Challenge | Proof | Welcome | Reject

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


@attrs.frozen
class PeerIdentity:
    """Who is at the other end, as it said in the handshake (and proved the cookie)."""

    name: str
    incarnation: int
    """A random number the peer picked when it started: a restarted node has a new one."""
    address: str
    """The address the peer listens on (where to dial it back)."""
    channel: str


@attrs.frozen
class Reply:
    """Send ``data`` and wait for the next message."""

    data: bytes


@attrs.frozen
class Verified:
    """The other side proved the cookie. The driver now decides: the client calls
    ``confirm()`` (or ``refuse()``), the server ``accept()`` (or ``refuse()``)."""

    peer: PeerIdentity


@attrs.frozen
class Established:
    """Client side: the server admitted us; the connection now carries frames."""

    peer: PeerIdentity


@attrs.frozen
class Failed:
    """The handshake is over and failed. Send ``reply`` if not None, then close."""

    reason: str
    reply: bytes | None = None


Result = Reply | Verified | Established | Failed


class _State(enum.Enum):
    START = "start"
    WAIT_CHALLENGE = "wait-challenge"
    VERIFIED = "verified"
    WAIT_WELCOME = "wait-welcome"
    WAIT_HELLO = "wait-hello"
    WAIT_PROOF = "wait-proof"
    DONE = "done"
    FAILED = "failed"


def _field(tag: bytes, value: bytes) -> bytes:
    return tag + len(value).to_bytes(4, "big") + value


def transcript(
    version: int,
    client: tuple[str, int],
    server: tuple[str, int],
    channel: str,
    client_nonce: bytes,
    server_nonce: bytes,
) -> bytes:
    """The bytes both proofs cover: every field length-prefixed, so no two different
    handshakes share a transcript."""
    return b"".join(
        (
            _field(b"v", str(version).encode()),
            _field(b"c", client[0].encode()),
            _field(b"i", str(client[1]).encode()),
            _field(b"s", server[0].encode()),
            _field(b"j", str(server[1]).encode()),
            _field(b"h", channel.encode()),
            _field(b"n", client_nonce),
            _field(b"m", server_nonce),
        )
    )


def prove(cookie: bytes, role: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``role`` and ``data`` keyed by the cookie."""
    return hmac.new(cookie, b"foundation-trio/" + role + b"/" + data, hashlib.sha256).digest()


def _decode(data: object) -> Message | str:
    """The message in ``data``, or why it is not one."""
    if not isinstance(data, bytes | bytearray):
        return f"expected a binary handshake message, got {type(data).__name__}"
    if len(data) > MAX_MESSAGE:
        return f"handshake message of {len(data)} bytes exceeds {MAX_MESSAGE}"
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as error:
        # msgspec raises UnicodeDecodeError (a ValueError) for bad UTF-8 in a str.
        return f"malformed handshake message: {error}"


def _version_of(data: bytes | bytearray) -> int | None:
    """The version a ``hello`` that did not decode claims, to report a mismatch
    rather than a malformed message when a newer node changes the layout."""
    try:
        loose = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, ValueError):
        return None
    if isinstance(loose, list) and len(loose) >= 2 and loose[0] in ("hello", "challenge"):
        version = loose[1]
        if isinstance(version, int) and not isinstance(version, bool):
            return version
    return None


def _check_identity(name: str, incarnation: int, address: str, nonce: bytes) -> str | None:
    try:
        check_node_name(name)
    except TypeError:
        return f"invalid node name {name[:_MAX_TEXT]!r}"
    if len(name) > _MAX_TEXT:
        return "node name longer than 255 characters"
    if not 0 <= incarnation < 2**63:
        return "incarnation out of range"
    if not address or len(address) > _MAX_TEXT or not address.isprintable():
        return "invalid listen address"
    if len(nonce) != NONCE_SIZE:
        return f"nonce must be {NONCE_SIZE} bytes"
    return None


def _reason_text(reason: str) -> str:
    text = reason if reason.isprintable() else repr(reason)
    return text[:_MAX_REASON]


class _Side:
    def __init__(
        self, *, cookie: bytes, name: str, incarnation: int, address: str, nonce: bytes
    ) -> None:
        if not isinstance(cookie, bytes) or not cookie:
            raise ValueError("cookie must be non-empty bytes")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} random bytes")
        self._cookie = cookie
        self.name = check_node_name(name)
        self.incarnation = incarnation
        self.address = address
        self._nonce = nonce
        self.state = _State.START
        self.peer: PeerIdentity | None = None

    def __repr__(self) -> str:
        # Never shows the cookie.
        return f"<{type(self).__name__} {self.name!r} state={self.state.value}>"

    def _fail(self, reason: str, *, tell: bool = True) -> Failed:
        self.state = _State.FAILED
        reply = encode(Reject(_reason_text(reason))) if tell else None
        return Failed(reason, reply)

    def refuse(self, reason: str) -> bytes:
        """Refuse a verified peer: the ``Reject`` to send before closing."""
        if self.state is not _State.VERIFIED:
            raise RuntimeError(f"refuse() in state {self.state.value}")
        self.state = _State.FAILED
        return encode(Reject(_reason_text(reason)))

    def _peer_rejected(self, message: Reject) -> Failed:
        self.state = _State.FAILED
        return Failed(f"refused by the peer: {_reason_text(message.reason)}")


class ClientHandshake(_Side):
    """The dialling side. ``start()`` gives the first message; feed every message
    received to ``receive()``."""

    def __init__(
        self,
        *,
        cookie: bytes,
        name: str,
        incarnation: int,
        address: str,
        channel: str,
        nonce: bytes,
        expect: str | None = None,
        version: int = PROTOCOL_VERSION,
    ) -> None:
        super().__init__(
            cookie=cookie, name=name, incarnation=incarnation, address=address, nonce=nonce
        )
        self.channel = channel
        self.expect = expect
        self.version = version
        self._server_nonce = b""

    def start(self) -> bytes:
        if self.state is not _State.START:
            raise RuntimeError("start() called twice")
        self.state = _State.WAIT_CHALLENGE
        return encode(
            Hello(
                self.version, self.name, self.incarnation, self.address, self.channel, self._nonce
            )
        )

    def _transcript(self, peer: PeerIdentity) -> bytes:
        return transcript(
            self.version,
            (self.name, self.incarnation),
            (peer.name, peer.incarnation),
            self.channel,
            self._nonce,
            self._server_nonce,
        )

    def receive(self, data: bytes) -> Result:
        message = _decode(data)
        if isinstance(message, str):
            if self.state is _State.WAIT_CHALLENGE:
                version = _version_of(data) if isinstance(data, bytes | bytearray) else None
                if version is not None and version != self.version:
                    return self._fail(
                        f"version mismatch: we speak {self.version}, the peer {version}"
                    )
            return self._fail(message)
        if isinstance(message, Reject) and self.state in (
            _State.WAIT_CHALLENGE,
            _State.WAIT_WELCOME,
        ):
            return self._peer_rejected(message)
        if self.state is _State.WAIT_CHALLENGE and isinstance(message, Challenge):
            return self._on_challenge(message)
        if self.state is _State.WAIT_WELCOME and isinstance(message, Welcome):
            assert self.peer is not None
            self.state = _State.DONE
            return Established(self.peer)
        return self._fail(
            f"unexpected {type(message).__name__.lower()} message in state {self.state.value}"
        )

    def _on_challenge(self, message: Challenge) -> Result:
        if message.version != self.version:
            return self._fail(
                f"version mismatch: we speak {self.version}, the peer {message.version}"
            )
        problem = _check_identity(
            message.name, message.incarnation, message.address, message.nonce
        )
        if problem is not None:
            return self._fail(problem)
        peer = PeerIdentity(message.name, message.incarnation, message.address, self.channel)
        self._server_nonce = message.nonce
        expected = prove(self._cookie, b"server", self._transcript(peer))
        if not hmac.compare_digest(expected, message.proof):
            return self._fail("the peer does not know the cookie (server proof mismatch)")
        if peer.name == self.name:
            return self._fail(f"the peer claims our own node name {self.name!r}")
        if self.expect is not None and peer.name != self.expect:
            return self._fail(
                f"expected node {self.expect!r} at this address, found {peer.name!r}"
            )
        self.peer = peer
        self.state = _State.VERIFIED
        return Verified(peer)

    def confirm(self) -> bytes:
        """Prove the cookie to the verified server: the ``Proof`` to send. Then wait
        for ``Welcome`` (or ``Reject``) with ``receive()``."""
        if self.state is not _State.VERIFIED or self.peer is None:
            raise RuntimeError(f"confirm() in state {self.state.value}")
        self.state = _State.WAIT_WELCOME
        return encode(Proof(prove(self._cookie, b"client", self._transcript(self.peer))))


class ServerHandshake(_Side):
    """The accepting side: feed every message received to ``receive()``."""

    def __init__(
        self,
        *,
        cookie: bytes,
        name: str,
        incarnation: int,
        address: str,
        nonce: bytes,
        channels: frozenset[str],
        version: int = PROTOCOL_VERSION,
    ) -> None:
        super().__init__(
            cookie=cookie, name=name, incarnation=incarnation, address=address, nonce=nonce
        )
        self.channels = channels
        self.version = version
        self.state = _State.WAIT_HELLO
        self._hello: Hello | None = None

    def receive(self, data: bytes) -> Result:
        message = _decode(data)
        if isinstance(message, str):
            if self.state is _State.WAIT_HELLO:
                version = _version_of(data) if isinstance(data, bytes | bytearray) else None
                if version is not None and version != self.version:
                    return self._fail(
                        f"version mismatch: we speak {self.version}, the peer {version}"
                    )
            return self._fail(message)
        if self.state is _State.WAIT_HELLO and isinstance(message, Hello):
            return self._on_hello(message)
        if self.state is _State.WAIT_PROOF and isinstance(message, Proof):
            return self._on_proof(message)
        if isinstance(message, Reject) and self.state is _State.WAIT_PROOF:
            return self._peer_rejected(message)
        return self._fail(
            f"unexpected {type(message).__name__.lower()} message in state {self.state.value}"
        )

    def _on_hello(self, message: Hello) -> Result:
        if message.version != self.version:
            return self._fail(
                f"version mismatch: we speak {self.version}, the peer {message.version}"
            )
        problem = _check_identity(
            message.name, message.incarnation, message.address, message.nonce
        )
        if problem is not None:
            return self._fail(problem)
        if message.channel not in self.channels:
            return self._fail(f"unknown channel {message.channel[:_MAX_TEXT]!r}")
        if message.name == self.name:
            return self._fail(f"the peer claims our own node name {self.name!r}")
        self._hello = message
        self.state = _State.WAIT_PROOF
        proof = prove(self._cookie, b"server", self._transcript(message))
        return Reply(
            encode(
                Challenge(
                    self.version, self.name, self.incarnation, self.address, self._nonce, proof
                )
            )
        )

    def _transcript(self, hello: Hello) -> bytes:
        return transcript(
            self.version,
            (hello.name, hello.incarnation),
            (self.name, self.incarnation),
            hello.channel,
            hello.nonce,
            self._nonce,
        )

    def _on_proof(self, message: Proof) -> Result:
        hello = self._hello
        assert hello is not None
        expected = prove(self._cookie, b"client", self._transcript(hello))
        if not hmac.compare_digest(expected, message.proof):
            return self._fail("the peer does not know the cookie (client proof mismatch)")
        self.peer = PeerIdentity(hello.name, hello.incarnation, hello.address, hello.channel)
        self.state = _State.VERIFIED
        return Verified(self.peer)

    def accept(self) -> bytes:
        """Admit the verified client: the ``Welcome`` to send."""
        if self.state is not _State.VERIFIED:
            raise RuntimeError(f"accept() in state {self.state.value}")
        self.state = _State.DONE
        return encode(Welcome())
