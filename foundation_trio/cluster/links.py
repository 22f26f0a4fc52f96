"""Links between nodes: websocket connections, one per channel, authenticated.

A node runs one :class:`Links`. It listens on one websocket endpoint, dials its
seeds, and keeps one *link* per peer node. A link is four websocket
connections, one per :class:`Channel`: ``control`` is dialled first and
authenticated (see ``handshake.py``); as soon as it is up, the node that dialled
it dials ``gossip``, ``data`` and ``bulk`` to the same peer, each with its own
handshake. A link is up while its control connection is; when any of its
connections ends (closed, broken, a protocol error, missed heartbeats), the
whole link goes down: every connection closes, senders waiting for room in its
queues get :class:`NotConnected`, and what was queued but not written is lost.
Then whoever knows the peer's address as a seed (or from :meth:`Links.connect`)
dials again, with jittered exponential backoff.

When both nodes dial each other at once, each pair keeps one connection per
channel: the rule (``decide_inbound``) keeps the one dialled by the node whose
name sorts first, and both sides reach the same decision without a further
message. See docs/cluster.md for the whole model.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import random
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..runtime.errors import ConfigError, NoNodeError
from ..runtime.node import _check_node_name
from ..services import telemetry
from . import framing
from ._queue import SendQueue
from ._stream import DirectWrite, TrackedStream
from .errors import FrameTooLarge, HandshakeFailed, LinkProtocolError, NotConnected
from .faults import IN, OUT, FaultInjector
from .handshake import (
    MAX_MESSAGE,
    NONCE_SIZE,
    ClientHandshake,
    Established,
    Failed,
    PeerIdentity,
    Reject,
    Reply,
    ServerHandshake,
    Verified,
)
from .handshake import encode as hs_encode
from .options import Channel, Cluster, format_address, parse_address

__all__ = [
    "Backoff",
    "Channel",
    "Inbound",
    "LinkEvents",
    "LinkStats",
    "Links",
    "decide_inbound",
]

logger = logging.getLogger("foundation_trio.cluster")
T = TypeVar("T")

REJECTED_EVENT = "cluster.handshake.rejected"
"""Telemetry event of every failed handshake: measurement ``count`` (1), metadata
``reason``, ``remote`` (address), ``side`` ("server" when we refused an incoming
connection, "client" when our dial failed) and ``node``."""

WS_PATH = "/foundation-trio"
"""The resource every node serves its links on."""

DIRECT_AFTER_IDLE = 100e-6
"""A message is written by its sender (see :class:`~._stream.DirectWrite`) only
if its connection has written nothing for this many seconds: a lone message (a
call, its reply) skips the writer task, while the messages of a burst, which
follow each other by microseconds, are queued and leave coalesced."""

_CHANNEL_NAMES = frozenset(channel.value for channel in Channel)
_CLOSE_TIMEOUT = 1.0
"""Seconds a websocket close handshake may take before the socket is just closed."""
_CLOSE_SHUTDOWN = 1001  # "going away"
_CLOSE_SHUTDOWN_WAIT = 0.05
_CLOSE_PROTOCOL = 1002
_CLOSE_REPLACED = 4000
_CLOSE_DOWN = 4001
_DUPLICATE = "duplicate connection"
_BLACKHOLED = "blackholed by the fault injector"
_ALREADY_LINKED = "already linked"
_ALREADY_DIALLING = "already dialling this peer"
_RECEIVE_BUFFER = 64 * 1024
"""Bytes read from a socket at once (trio-websocket reads 4 KiB by default, which
takes 16 reads and 16 parser rounds per 64 KiB chunk)."""


class LinkEvents(Protocol):
    """What the links tell the layer above (the cluster's dispatcher)."""

    async def message_received(self, peer: str, channel: Channel, data: bytes) -> None:
        """One message from ``peer`` on ``channel``, in the order the peer queued
        them on that channel. The connection's reader waits while this runs, so
        waiting here is backpressure on the peer. Raising
        :class:`LinkProtocolError` closes the link to ``peer`` with its message as
        the reason (logged); the node and its other links carry on."""

    def peer_up(self, peer: str) -> None:
        """The control connection to ``peer`` is authenticated: sends may start."""

    def peer_down(self, peer: str, reason: str) -> None:
        """The link to ``peer`` is gone; it was up (``peer_up`` came first)."""


class Inbound(enum.Enum):
    """What to do with an authenticated incoming connection (``decide_inbound``)."""

    ACCEPT = "accept"
    REPLACE = "replace"
    """Accept it and close the registered one, which the peer has given up."""
    REJECT = "reject"
    """Refuse it: the registered or dialling connection is the one both keep."""
    ACCEPT_DROP_DIAL = "accept-drop-dial"
    """Accept it and abandon our own dial to the same peer, which the peer refuses."""


def decide_inbound(me: str, peer: str, registered_dialer: str | None, dialling: bool) -> Inbound:
    """The deduplication rule, applied by a node to an authenticated incoming
    connection from ``peer`` on a channel.

    ``registered_dialer`` is who dialled the connection this node already has to
    ``peer`` on that channel (None if it has none); ``dialling`` says whether this
    node is itself in the middle of dialling ``peer`` there (past the point where
    it learned the peer's name). A node only dials a peer it has no connection to
    and dials it once at a time, so:

    - when both dial at once, the dial of the node whose name sorts first wins on
      both sides;
    - a connection already registered is kept against a new one only if this
      node dialled it and its name sorts first (the peer's new dial may be its
      losing half of a simultaneous dial); otherwise the peer must have given it
      up, so the new one replaces it.

    A dialling node also gives up its dial when it learns, at the challenge, that
    it already has a registered connection (``Links`` does that).
    ``tests/cluster/test_links_dedup.py`` runs a model of both sides through
    message orders chosen by hypothesis.
    """
    if registered_dialer is not None:
        if registered_dialer == me and me < peer:
            return Inbound.REJECT
        return Inbound.REPLACE
    if dialling:
        return Inbound.REJECT if me < peer else Inbound.ACCEPT_DROP_DIAL
    return Inbound.ACCEPT


@attrs.define
class Backoff:
    """Reconnection delays: ``minimum``, doubling up to ``maximum``, each times a
    uniform factor in ``1 +- jitter`` drawn from ``rng``."""

    minimum: float
    maximum: float
    jitter: float
    rng: random.Random
    attempt: int = 0

    def next(self) -> float:
        base: float = min(self.maximum, self.minimum * 2.0 ** min(self.attempt, 62))
        self.attempt += 1
        if not self.jitter:
            return base
        return base * self.rng.uniform(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        self.attempt = 0


@attrs.define
class ChannelStats:
    """Counters of one channel of one link (websocket messages are "frames")."""

    frames_sent: int = 0
    direct_frames_sent: int = 0
    """Of ``frames_sent``, those its sender wrote itself on an idle connection
    (one message each) rather than the connection's writer task."""
    messages_sent: int = 0
    bytes_sent: int = 0
    frames_received: int = 0
    messages_received: int = 0
    bytes_received: int = 0


@attrs.define
class LinkStats:
    """Counters of one link since it came up."""

    peer: str
    channels: dict[Channel, ChannelStats]


@attrs.define(eq=False)
class _Link:
    name: str
    incarnation: int
    address: str
    dialer: str
    queues: dict[Channel, SendQueue]
    stats: dict[Channel, ChannelStats]
    conns: dict[Channel, _Conn] = attrs.field(factory=dict)
    down: trio.Event = attrs.field(factory=trio.Event)
    down_reason: str | None = None


@attrs.define(eq=False)
class _Conn:
    peer: PeerIdentity
    link: _Link
    channel: Channel
    ws: WebSocketConnection
    stream: TrackedStream
    dialer: str
    stats: ChannelStats
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    reason: str | None = None
    close_code: int = 1000
    last_received: float = 0.0
    delivering: bool = False
    severed: bool = False
    direct: DirectWrite | None = None
    last_write: float = -math.inf

    def end(self, reason: str, code: int = 1000) -> None:
        """End this connection (its task closes it) with ``reason``; the first
        reason given is the one kept."""
        if self.reason is None:
            self.reason = reason
            self.close_code = code
        self.scope.cancel()


class _Dialling:
    """A dial in progress past the challenge: the peer's name is known."""

    def __init__(self, peer: str, channel: Channel) -> None:
        self.peer = peer
        self.channel = channel
        self.dropped: str | None = None


def _describe_close(error: ConnectionClosed) -> str:
    reason = error.reason
    if reason is None:
        return "connection closed"
    detail = f": {reason.reason}" if reason.reason else ""
    return f"connection closed ({reason.code} {reason.name}{detail})"


def _set_receive_limit(ws: WebSocketConnection, limit: int) -> None:
    # trio-websocket fixes the message size limit when the connection is made; a
    # link starts with the handshake's small limit (so an unauthenticated client
    # cannot make us buffer more than MAX_MESSAGE bytes) and raises it to the
    # channel's frame limit once the handshake has succeeded, before the peer
    # may send a frame. tests/cluster/test_links_security.py checks both limits.
    if not hasattr(ws, "_max_message_size"):
        raise RuntimeError("this trio-websocket has no _max_message_size; update links.py")
    ws._max_message_size = limit


class Links:
    """The links of one node: listen, dial, authenticate, frame, deliver.

    ``run()`` does the work and must be running for anything else to work;
    ``events`` receives the messages and the peers' ups and downs. Send with
    :meth:`send` (waits for room) or :meth:`send_nowait`.

    ``on_heartbeat(peer, arrived)``, if given, is called for every heartbeat frame
    read on a control connection, with the peer's name and the ``trio.current_time()``
    it was read at: the feed of a failure detector (``cluster/failure.py``). It runs
    in the connection's reader task and must not block; an exception it raises is
    logged and the link carries on.
    """

    def __init__(
        self,
        node_name: str,
        options: Cluster,
        events: LinkEvents,
        *,
        on_heartbeat: Callable[[str, float], None] | None = None,
    ) -> None:
        self.name = _check_node_name(node_name)
        if not isinstance(options, Cluster):
            raise TypeError(f"options must be an ft.Cluster, got {type(options).__name__}")
        if on_heartbeat is not None and not callable(on_heartbeat):
            raise TypeError(f"on_heartbeat must be callable or None, got {on_heartbeat!r}")
        self.options = options
        self.events = events
        self.on_heartbeat = on_heartbeat
        self.incarnation = secrets.randbits(63)
        self._cookie = options.cookie.encode()
        self._rng = options.rng if options.rng is not None else random.Random()
        self.address = ""
        """``"host:port"`` peers dial to reach this node; set once ``run()`` has bound."""
        self.faults = FaultInjector(self._sever)
        self._links: dict[str, _Link] = {}
        self._dialling: dict[tuple[str, Channel], _Dialling] = {}
        self._address_names: dict[str, str] = {}
        self._maintained: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._links_changed = trio.Event()
        self.rejected = 0
        self._handshaking = 0
        """Incoming connections refused during the handshake, for tests and stats."""

    def __repr__(self) -> str:
        return f"<Links {self.name!r} at {self.address or 'unbound'} peers={self.peers()}>"

    # -- public API -----------------------------------------------------------------

    def peers(self) -> list[str]:
        """Names of the peers with an authenticated live control connection, sorted."""
        return sorted(self._links)

    def stats(self, peer: str) -> LinkStats:
        """The counters of the link to ``peer``; raises :class:`NotConnected`."""
        link = self._links.get(peer)
        if link is None:
            raise NotConnected(peer)
        return LinkStats(peer, dict(link.stats))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, dial the seeds, and serve and reconnect links until cancelled.

        Calls ``task_status.started()`` once :attr:`address` is known. On
        cancellation every connection is closed (a websocket close with code 1001,
        "going away", so peers see an orderly departure) before it returns.
        Raises ``OSError`` if the listen address cannot be bound.
        """
        if self._nursery is not None:
            raise RuntimeError("Links.run() is already running")
        host, port = parse_address(self.options.listen, "Cluster.listen")
        listeners = await trio.open_tcp_listeners(port, host=host)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                bound = listeners[0].socket.getsockname()
                self.address = self.options.advertise or format_address(bound[0], bound[1])
                for listener in listeners:
                    nursery.start_soon(self._serve, listener)
                for seed in self.options.seeds:
                    self._maintain(seed)
                logger.info("node %s: links listening on %s", self.name, self.address)
                task_status.started()
        finally:
            self._nursery = None
            for link in list(self._links.values()):
                self._link_down(link, "node shutting down")

    async def connect(self, address: str) -> str:
        """Dial ``address``, authenticate, and return the peer's node name.

        Returns at once with the name if a link to that peer is already up. The
        address is then redialled whenever the link is lost, like a seed (see
        ``disconnect(..., forget=True)``). Raises :class:`HandshakeFailed` if the
        peer refuses us or fails to authenticate, :class:`NotConnected` if no
        connection can be made within ``handshake_timeout``.
        """
        parse_address(address, "connect(address)")
        nursery = self._require_running("connect()")
        known = self._address_names.get(address)
        if known is not None and known in self._links:
            self._maintain(address)
            return known
        try:
            name: str = await nursery.start(self._dial, address, Channel.CONTROL, None)
        except HandshakeFailed as error:
            known = self._address_names.get(address)
            if known is None or not (
                _DUPLICATE in error.reason or error.reason == _ALREADY_DIALLING
            ):
                raise
            # The peer dialled us at the same moment and keeps its own dial, or
            # another task here (reconnection, a join) is dialling it: the link
            # comes up through that one.
            with trio.move_on_after(self.options.handshake_timeout):
                while known not in self._links:
                    await self._links_changed.wait()
            if known not in self._links:
                raise
            name = known
        self._maintain(address)
        return name

    async def send(self, peer: str, channel: Channel, data: bytes) -> None:
        """Queue ``data`` for ``peer`` on ``channel``, waiting while the queue is full.

        Returns once queued: the message is written in the order queued, after
        every message queued before it on that channel. Messages of up to
        ``chunk_size`` bytes (64 KiB by default) go on any channel, larger ones
        only on ``Channel.BULK`` (``ValueError`` otherwise), up to
        ``max_message_size``. Raises :class:`NotConnected` if there is no live
        link to ``peer``, or if it goes down while this waits for room; then
        nothing was queued. Cancellation while waiting queues nothing.

        Always a cancellation point; a scheduling point when it waits for room and
        otherwise once every 64 sends, so that a burst of sends is queued together
        and written as one frame. On an idle connection (nothing queued or being
        written, nothing written for :data:`DIRECT_AFTER_IDLE` seconds) the message
        is written by this call itself, in one synchronous step that cancellation
        cannot interrupt (see :class:`~._stream.DirectWrite`), before it returns.
        """
        queue = self._queue(peer, channel, data)
        if not queue.items and not queue.writing:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._write_now(peer, channel, data):
                await queue.yield_sometimes()
                return
        await queue.put(data)

    def send_nowait(self, peer: str, channel: Channel, data: bytes) -> None:
        """Like :meth:`send`, but raises :class:`SendQueueFull` instead of waiting."""
        queue = self._queue(peer, channel, data)
        if not queue.items and not queue.writing and self._write_now(peer, channel, data):
            return
        queue.put_nowait(data)

    def disconnect(self, peer: str, reason: str, *, forget: bool = False) -> None:
        """Close the link to ``peer`` now with ``reason`` (logged and sent to the
        peer). Queued messages are lost, waiting senders get :class:`NotConnected`.

        Seeds and connected addresses are redialled as after any loss; with
        ``forget=True`` the addresses known to lead to ``peer`` are dropped from
        the redial list (a seed is dialled again only when the node restarts).
        Does nothing if there is no link to ``peer``.
        """
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, got {reason!r}")
        if forget:
            for address, name in list(self._address_names.items()):
                if name == peer:
                    self._maintained.discard(address)
        link = self._links.get(peer)
        if link is not None:
            self._link_down(link, f"disconnected: {reason}")

    def declare_down(self, peer: str, reason: str) -> None:
        """Take the link to ``peer`` down as failed, a failure detector's verdict:
        like :meth:`disconnect`, but ``reason`` is reported as it is (to
        ``LinkEvents.peer_down``, the log and the peer) and the peer's addresses stay
        on the redial list, so a peer that was only slow links again. Does nothing
        if there is no link to ``peer``."""
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, got {reason!r}")
        link = self._links.get(peer)
        if link is not None:
            self._link_down(link, reason)

    def delivering(self, peer: str) -> bool:
        """Whether the reader of ``peer``'s control connection is waiting for
        ``LinkEvents.message_received`` to return: while it is, nothing more is read
        from that peer, so a silence then is this node's own (the watchdog and the
        failure detector wait). False without a link."""
        link = self._links.get(peer)
        conn = link.conns.get(Channel.CONTROL) if link is not None else None
        return conn is not None and conn.delivering

    # -- sending ----------------------------------------------------------------------

    def _queue(self, peer: str, channel: Channel, data: bytes) -> SendQueue:
        if not isinstance(channel, Channel):
            raise TypeError(f"channel must be a Channel, got {channel!r}")
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        size = len(data)
        if size > self.options.chunk_size:
            if channel is not Channel.BULK:
                raise FrameTooLarge(
                    size, self.options.chunk_size, f"message on channel {channel.value!r}"
                )
            if size > self.options.max_message_size:
                raise FrameTooLarge(size, self.options.max_message_size, "bulk message")
        link = self._links.get(peer)
        if link is None:
            if not isinstance(peer, str):
                raise TypeError(f"peer must be a node name (str), got {peer!r}")
            raise NotConnected(peer)
        return link.queues[channel]

    def _write_now(self, peer: str, channel: Channel, data: bytes) -> bool:
        """Write ``data`` from the calling task if the connection is idle (nothing
        queued, nothing being written: the caller checked the queue): see
        :class:`DirectWrite`. False if it must be queued instead."""
        link = self._links[peer]
        conn = link.conns.get(channel)
        if (
            conn is None
            or conn.direct is None
            or conn.reason is not None
            or len(data) > self.options.chunk_size
            or self.faults.enabled
        ):
            return False
        now = trio.current_time()
        if now - conn.last_write < DIRECT_AFTER_IDLE:
            # Part of a burst: queue it, so that the writer sends the burst
            # coalesced in one websocket message rather than one write each.
            return False
        conn.last_write = now
        frame = framing.encode_batch((data,))
        try:
            size = conn.direct.try_write(frame)
        except OSError as error:
            # As when the writer's send fails: the connection is gone, and the
            # message with it (at most once); its task takes the link down.
            conn.end(f"connection lost: {error}")
            return True
        if not size:
            return False
        if conn.direct.tail is not None:
            link.queues[channel].wake()
        stats = conn.stats
        stats.frames_sent += 1
        stats.direct_frames_sent += 1
        stats.messages_sent += 1
        stats.bytes_sent += len(frame)
        return True

    async def _writer(self, conn: _Conn, link: _Link) -> None:
        queue = link.queues[conn.channel]
        ws = conn.ws
        stats = conn.stats
        peer = link.name
        channel = conn.channel
        options = self.options
        chunk_size = options.chunk_size
        frame_limit = options.channel(channel).max_frame_size - framing.BATCH_HEADER
        heartbeat = options.heartbeat_interval if channel is Channel.CONTROL else math.inf
        faults = self.faults
        conn.direct = direct = DirectWrite.for_connection(ws, conn.stream)
        # Control sends a heartbeat every interval, whatever else it carries: the
        # peer's phi detector learns the rhythm of heartbeats alone, which bursts of
        # other messages would blur.
        next_beat = trio.current_time() + heartbeat
        while True:
            queue.writing = False
            with trio.move_on_at(next_beat):
                await queue.wait_ready()
            if queue.closed is not None:
                return
            if direct is not None and direct.tail is not None:
                # A direct write the kernel took only part of: its rest goes
                # first (nothing else can be written until it has).
                try:
                    await direct.finish_tail()
                except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                    conn.end(f"connection lost: {error}")
                    return
                queue.settle()
                continue
            if trio.current_time() >= next_beat:
                if not faults.enabled or faults.passes_heartbeat(peer, OUT):
                    await ws.send_message(framing.HEARTBEAT_FRAME)
                    stats.frames_sent += 1
                next_beat = trio.current_time() + heartbeat
                continue
            if not queue.items:
                queue.settle()
                continue
            batch = queue.take(frame_limit, framing.MESSAGE_HEADER, chunk_size)
            if faults.enabled:
                batch, delay = faults.apply(peer, OUT, channel, batch)
                if delay:
                    await trio.sleep(delay)
                if not batch:
                    continue
            if len(batch[0]) > chunk_size:
                for message in batch:  # faults may have duplicated it
                    await self._send_chunked(ws, message, chunk_size, stats)
                continue
            frame = framing.encode_batch(batch)
            await ws.send_message(frame)
            conn.last_write = trio.current_time()
            stats.frames_sent += 1
            stats.messages_sent += len(batch)
            stats.bytes_sent += len(frame)

    @staticmethod
    async def _send_chunked(
        ws: WebSocketConnection, message: bytes, chunk_size: int, stats: ChannelStats
    ) -> None:
        # wsproto frames (and, on the dialling side, masks) a message in one
        # synchronous step: 64 KiB at a time with a checkpoint in between keeps
        # the event loop (and every other link) running during a 50 MB transfer.
        for index, frame in enumerate(framing.chunk_frames(message, chunk_size)):
            if index:
                await trio.lowlevel.checkpoint()
            await ws.send_message(frame)
            stats.frames_sent += 1
            stats.bytes_sent += len(frame)
        stats.messages_sent += 1

    # -- receiving ----------------------------------------------------------------------

    async def _reader(self, conn: _Conn, link: _Link) -> None:
        options = self.options
        channel = conn.channel
        decoder = framing.FrameDecoder(
            max_frame_size=options.channel(channel).max_frame_size,
            chunk_size=options.chunk_size,
            max_message_size=options.max_message_size,
            chunks=channel is Channel.BULK,
            heartbeats=channel is Channel.CONTROL,
        )
        ws = conn.ws
        stats = conn.stats
        peer = link.name
        faults = self.faults
        deliver = self.events.message_received
        on_heartbeat = self.on_heartbeat if channel is Channel.CONTROL else None
        while True:
            try:
                frame = await ws.get_message()
            except ConnectionClosed as error:
                conn.end(_describe_close(error))
                return
            if faults.enabled and faults.blackholed(peer, IN, channel):
                continue
            conn.last_received = trio.current_time()
            stats.frames_received += 1
            try:
                messages = decoder.feed(frame)
            except LinkProtocolError as error:
                self._protocol_error(link, conn, str(error))
                return
            if decoder.completed is not None:
                messages = [await _join(decoder.take_completed())]
            elif not messages:
                if on_heartbeat is not None and frame[0] == framing.HEARTBEAT:
                    self._notify(on_heartbeat, peer, conn.last_received)
                continue
            if faults.enabled:
                messages, delay = faults.apply(peer, IN, channel, messages)
                if delay:
                    await trio.sleep(delay)
            stats.messages_received += len(messages)
            conn.delivering = True
            try:
                for message in messages:
                    stats.bytes_received += len(message)
                    await deliver(peer, channel, message)
            except LinkProtocolError as error:
                self._protocol_error(link, conn, str(error))
                return
            except Exception as error:
                logger.exception(
                    "node %s: message handler failed on a message from %s (%s)",
                    self.name,
                    peer,
                    channel.value,
                )
                self._protocol_error(
                    link, conn, f"message handler raised {type(error).__name__}: {error}"
                )
                return
            finally:
                conn.delivering = False

    def _protocol_error(self, link: _Link, conn: _Conn, reason: str) -> None:
        logger.warning(
            "node %s: closing the link to %s: protocol error on %s: %s",
            self.name,
            link.name,
            conn.channel.value,
            reason,
        )
        self._link_down(link, f"protocol error on {conn.channel.value}: {reason}", _CLOSE_PROTOCOL)

    async def _watchdog(self, conn: _Conn, link: _Link) -> None:
        interval = self.options.heartbeat_interval
        allowed = interval * self.options.peer_down_after
        while True:
            deadline = conn.last_received + allowed
            now = trio.current_time()
            if now < deadline:
                await trio.sleep_until(deadline)
                continue
            if conn.delivering:
                # Our own handler is holding the reader: the silence is ours.
                conn.last_received = now
                continue
            self._link_down(
                link,
                f"no frame on control for {allowed:g} s ({self.options.peer_down_after} "
                "heartbeats missed)",
            )
            return

    # -- connections ----------------------------------------------------------------------

    def _require_running(self, what: str) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError(f"{what} needs Links.run() to be running")
        return self._nursery

    async def _serve(self, listener: trio.SocketListener) -> None:
        await trio.serve_listeners(self._accept, [listener], handler_nursery=self._nursery)

    async def _accept(self, stream: trio.SocketStream) -> None:
        tracked = TrackedStream(stream)
        try:
            peername = stream.socket.getpeername()
            remote = format_address(str(peername[0]), int(peername[1]))
        except OSError:
            remote = "unknown"
        try:
            if self._handshaking >= self.options.max_handshakes:
                # Closed before anything is read: a flood of connections that never
                # finish their handshake costs at most max_handshakes tasks.
                self._count_rejection(
                    f"{self._handshaking} handshakes already in progress (Cluster.max_handshakes)",
                    remote,
                )
                return
            async with trio.open_nursery() as ws_nursery:
                self._handshaking += 1
                try:
                    conn = await self._accept_handshake(ws_nursery, tracked, remote)
                finally:
                    self._handshaking -= 1
                if conn is not None:
                    await self._run_connection(conn)
                ws_nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await tracked.aclose()

    async def _accept_handshake(
        self, ws_nursery: trio.Nursery, tracked: TrackedStream, remote: str
    ) -> _Conn | None:
        """The accepting side of a handshake; the registered connection, or None
        (the rejection logged and counted)."""
        reason = "handshake timed out"
        with trio.move_on_after(self.options.handshake_timeout):
            try:
                return await self._accept_steps(ws_nursery, tracked, remote)
            except _Rejected as rejection:
                if rejection.benign:
                    logger.debug("node %s: %s from %s", self.name, rejection.reason, remote)
                    return None
                reason = rejection.reason
            except LinkProtocolError as error:
                reason = str(error)
            except ConnectionClosed as error:
                reason = f"closed during the handshake: {_describe_close(error)}"
            except trio_websocket.HandshakeError as error:
                reason = f"websocket upgrade failed: {error!r}"
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
                reason = f"connection broke during the handshake: {error!r}"
        self._count_rejection(reason, remote)
        return None

    async def _accept_steps(
        self, ws_nursery: trio.Nursery, tracked: TrackedStream, remote: str
    ) -> _Conn:
        stream: trio.abc.Stream = tracked
        tls = self.options.tls
        if tls is not None:
            ssl_stream = trio.SSLStream(tracked, tls.server, server_side=True)
            try:
                await ssl_stream.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError) as error:
                raise _Rejected(f"TLS handshake failed: {error.__cause__ or error}") from None
            stream = ssl_stream
        request = await _unless_ended(
            tracked,
            trio_websocket.wrap_server_stream(
                ws_nursery,
                stream,
                max_message_size=MAX_MESSAGE,
                message_queue_size=1,
                receive_buffer_size=_RECEIVE_BUFFER,
            ),
        )
        if request is None:
            raise _Rejected(
                "closed before a websocket upgrade: not a websocket client "
                f"(received {tracked.bytes_received} bytes)"
            )
        if request.path != WS_PATH:
            await request.reject(404)
            raise _Rejected(f"websocket upgrade for unknown path {request.path[:100]!r}")
        ws = await request.accept()
        shake = ServerHandshake(
            cookie=self._cookie,
            name=self.name,
            incarnation=self.incarnation,
            address=self.address,
            nonce=secrets.token_bytes(NONCE_SIZE),
            channels=_CHANNEL_NAMES,
        )

        async def receive() -> bytes:
            try:
                return await _get_binary(ws)
            except LinkProtocolError as error:
                await _tell(ws, hs_encode(Reject(str(error))))
                raise _Rejected(str(error)) from None

        result = shake.receive(await receive())
        if isinstance(result, Failed):
            await _tell(ws, result.reply)
            raise _Rejected(result.reason)
        assert isinstance(result, Reply)
        await ws.send_message(result.data)
        result = shake.receive(await receive())
        if isinstance(result, Failed):
            await _tell(ws, result.reply)
            # A dialler that finds itself linked already (both sides dialled at once),
            # or cut off from us by its fault injector, refuses our answer: not an attack.
            raise _Rejected(
                result.reason, benign=result.reason.endswith((_ALREADY_LINKED, _BLACKHOLED))
            )
        assert isinstance(result, Verified)
        peer = result.peer
        channel = Channel(peer.channel)
        refusal, link = self._admit(peer, channel)
        if refusal is not None:
            await _tell(ws, shake.refuse(refusal))
            raise _Rejected(refusal, benign=refusal.startswith((_DUPLICATE, _BLACKHOLED)))
        _set_receive_limit(ws, self.options.channel(channel).max_frame_size)
        conn = self._register(peer, channel, ws, tracked, dialer=peer.name, link=link)
        # Registered before the welcome goes out: from the peer's first frame on,
        # the connection is ours and its frame limit in force.
        try:
            await ws.send_message(shake.accept())
        except ConnectionClosed:
            conn.end("closed right after the handshake")
        return conn

    def _admit(self, peer: PeerIdentity, channel: Channel) -> tuple[str | None, _Link | None]:
        """Whether to admit a verified incoming connection: (refusal, link to join)."""
        if (
            channel is Channel.CONTROL
            and self.faults.enabled
            and self.faults.refuses_link(peer.name)
        ):
            return _BLACKHOLED, None
        link = self._links.get(peer.name)
        if link is not None and link.incarnation != peer.incarnation:
            return (
                f"duplicate node name: a node named {peer.name!r} is already connected "
                "(a restarted node is admitted once the old link is down)",
                None,
            )
        if channel is not Channel.CONTROL:
            if link is None:
                return f"no control link to {peer.name!r}: dial control first", None
            if link.dialer != peer.name:
                return f"{self.name!r} dials the channels of this link, not {peer.name!r}", None
            if channel in link.conns:
                return f"duplicate {channel.value} connection", None
            return None, link
        registered = link.conns[Channel.CONTROL].dialer if link is not None else None
        dialling = self._dialling.get((peer.name, Channel.CONTROL))
        decision = decide_inbound(self.name, peer.name, registered, dialling is not None)
        if decision is Inbound.REJECT:
            return (
                f"{_DUPLICATE}: {peer.name!r} and {self.name!r} keep the one "
                f"dialled by {min(self.name, peer.name)!r}",
                None,
            )
        if decision is Inbound.REPLACE and link is not None:
            self._link_down(link, "replaced by a new connection from the peer", _CLOSE_REPLACED)
        if decision is Inbound.ACCEPT_DROP_DIAL and dialling is not None:
            dialling.dropped = f"{peer.name!r} dialled us at the same time; its dial is kept"
        return None, None

    async def _dial(
        self,
        address: str,
        channel: Channel,
        link: _Link | None,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Dial ``address`` for ``channel`` (of ``link``, for the channels after
        control), authenticate, register and run the connection. Reports the
        peer's name through ``task_status``, or raises before that."""
        host, port = parse_address(address, "peer address")
        tcp: trio.SocketStream | None = None
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as ws_nursery:
                # Errors are raised after the nursery, so that callers see them bare.
                conn: _Conn | None = None
                try:
                    with trio.fail_after(self.options.handshake_timeout):
                        tcp = await trio.open_tcp_stream(host, port)
                        tracked = TrackedStream(tcp)
                        conn = await self._dial_steps(
                            ws_nursery, tracked, address, host, channel, link
                        )
                except trio.TooSlowError:
                    failure = NotConnected(
                        address, f"no handshake within {self.options.handshake_timeout} s"
                    )
                except (HandshakeFailed, NotConnected) as error:
                    # (before OSError: they are ConnectionErrors too)
                    failure = error
                except (OSError, trio.BrokenResourceError, trio_websocket.HandshakeError) as err:
                    failure = NotConnected(address, f"could not connect: {err!r}")
                except ConnectionClosed as error:
                    failure = HandshakeFailed(
                        f"closed during the handshake: {_describe_close(error)}", address
                    )
                except LinkProtocolError as error:
                    failure = HandshakeFailed(str(error), address)
                if failure is None:
                    if conn is None:
                        # Our dial is not needed: a link to that peer is up already.
                        task_status.started(self._address_names[address])
                    else:
                        task_status.started(conn.peer.name)
                        await self._run_connection(conn)
                ws_nursery.cancel_scope.cancel()
        finally:
            if tcp is not None:
                with trio.CancelScope(shield=True):
                    await tcp.aclose()
        if failure is not None:
            raise failure

    async def _dial_steps(
        self,
        ws_nursery: trio.Nursery,
        tracked: TrackedStream,
        address: str,
        host: str,
        channel: Channel,
        link: _Link | None,
    ) -> _Conn | None:
        stream: trio.abc.Stream = tracked
        tls = self.options.tls
        if tls is not None:
            ssl_stream = trio.SSLStream(tracked, tls.client, server_hostname=host)
            try:
                await ssl_stream.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError) as error:
                raise HandshakeFailed(f"TLS: {error.__cause__ or error}", address) from None
            stream = ssl_stream
        ws = await _unless_ended(
            tracked,
            trio_websocket.wrap_client_stream(
                ws_nursery,
                stream,  # type: ignore[arg-type]  # any trio Stream works
                address,
                WS_PATH,
                max_message_size=MAX_MESSAGE,
                message_queue_size=1,
                receive_buffer_size=_RECEIVE_BUFFER,
            ),
        )
        if ws is None:
            raise HandshakeFailed(
                "the peer closed the connection before the websocket upgrade (a TLS "
                "node refusing plain TCP, or not a foundation_trio node)",
                address,
            )
        shake = ClientHandshake(
            cookie=self._cookie,
            name=self.name,
            incarnation=self.incarnation,
            address=self.address,
            channel=channel.value,
            nonce=secrets.token_bytes(NONCE_SIZE),
            expect=link.name if link is not None else None,
        )
        await ws.send_message(shake.start())
        result = shake.receive(await _get_binary(ws))
        if isinstance(result, Failed):
            await _tell(ws, result.reply)
            self._count_rejection(result.reason, address, side="client")
            raise HandshakeFailed(result.reason, address)
        assert isinstance(result, Verified)
        peer = result.peer
        self._address_names[address] = peer.name
        if (
            channel is Channel.CONTROL
            and self.faults.enabled
            and self.faults.refuses_link(peer.name)
        ):
            await _tell(ws, shake.refuse(_BLACKHOLED))
            raise NotConnected(address, _BLACKHOLED)
        key = (peer.name, channel)
        existing = self._links.get(peer.name)
        if channel is Channel.CONTROL:
            if existing is not None and existing.incarnation != peer.incarnation:
                await _tell(ws, shake.refuse("duplicate node name"))
                raise HandshakeFailed(
                    f"duplicate node name: a node named {peer.name!r} is already connected "
                    "(a restarted node is admitted once the old link is down)",
                    address,
                )
            if existing is not None or key in self._dialling:
                await _tell(ws, shake.refuse(_ALREADY_LINKED))
                if existing is None:
                    raise HandshakeFailed(_ALREADY_DIALLING, address)
                return None
        elif link is None or existing is not link or link.incarnation != peer.incarnation:
            await _tell(ws, shake.refuse("the link this channel was for is gone"))
            raise NotConnected(peer.name, "the link went down while its channels were dialled")
        dialling = _Dialling(peer.name, channel)
        self._dialling[key] = dialling
        try:
            _set_receive_limit(ws, self.options.channel(channel).max_frame_size)
            await ws.send_message(shake.confirm())
            result = shake.receive(await _get_binary(ws))
        finally:
            del self._dialling[key]
        if isinstance(result, Failed):
            raise HandshakeFailed(result.reason, address)
        assert isinstance(result, Established)
        if dialling.dropped is not None:
            await ws.aclose(_CLOSE_REPLACED, "duplicate connection")
            return None
        if channel is not Channel.CONTROL and (
            link is None or link.down.is_set() or self._links.get(peer.name) is not link
        ):
            raise NotConnected(peer.name, "the link went down while its channels were dialled")
        return self._register(
            peer, channel, ws, tracked, dialer=self.name, link=link, dialled_host=host
        )

    def _register(
        self,
        peer: PeerIdentity,
        channel: Channel,
        ws: WebSocketConnection,
        tracked: TrackedStream,
        *,
        dialer: str,
        link: _Link | None,
        dialled_host: str | None = None,
    ) -> _Conn:
        if link is None:
            assert channel is Channel.CONTROL
            link = _Link(
                name=peer.name,
                incarnation=peer.incarnation,
                address=_dial_back_address(peer.address, dialled_host),
                dialer=dialer,
                queues={
                    c: SendQueue(peer.name, c.value, self.options.channel(c).send_queue_size)
                    for c in Channel
                },
                stats={c: ChannelStats() for c in Channel},
            )
        conn = _Conn(peer, link, channel, ws, tracked, dialer, link.stats[channel])
        conn.last_received = trio.current_time()
        link.conns[channel] = conn
        if channel is Channel.CONTROL:
            self._links[peer.name] = link
            self._links_changed.set()
            self._links_changed = trio.Event()
            logger.info(
                "node %s: link to %s up (%s, dialled by %s)",
                self.name,
                peer.name,
                peer.address,
                dialer,
            )
            if dialer == self.name:
                nursery = self._require_running("a link")
                for other in (Channel.GOSSIP, Channel.DATA, Channel.BULK):
                    nursery.start_soon(self._dial_channel, link, other)
            self._notify(self.events.peer_up, peer.name)
        return conn

    async def _dial_channel(self, link: _Link, channel: Channel) -> None:
        try:
            await self._dial(link.address, channel, link)
        except (NotConnected, HandshakeFailed) as error:
            if not link.down.is_set():
                self._link_down(link, f"could not open the {channel.value} channel: {error}")

    async def _run_connection(self, conn: _Conn) -> None:
        link = conn.link
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guard, self._writer, conn, link, nursery)
                    if conn.channel is Channel.CONTROL:
                        nursery.start_soon(self._guard, self._watchdog, conn, link, nursery)
                    await self._guard(self._reader, conn, link, nursery)
        finally:
            if conn.reason is None:
                # Cancelled from outside: Links.run() is ending.
                conn.reason = "node shutting down"
                conn.close_code = _CLOSE_SHUTDOWN
            if link.conns.get(conn.channel) is conn:
                self._link_down(link, conn.reason, conn.close_code)
            with trio.CancelScope(shield=True):
                await self._close_ws(conn)

    async def _guard(
        self,
        part: Callable[[_Conn, _Link], Awaitable[None]],
        conn: _Conn,
        link: _Link,
        nursery: trio.Nursery,
    ) -> None:
        """Run one part of a connection; when it ends, the connection ends."""
        try:
            await part(conn, link)
        except ConnectionClosed as error:
            conn.end(_describe_close(error))
        else:
            conn.end("connection ended")
        finally:
            nursery.cancel_scope.cancel()

    async def _close_ws(self, conn: _Conn) -> None:
        if conn.severed:
            return
        # On shutdown the websocket's own reader is cancelled along with us, so the
        # peer's answering close frame can never be read: send ours and move on.
        timeout = _CLOSE_TIMEOUT if conn.close_code != _CLOSE_SHUTDOWN else _CLOSE_SHUTDOWN_WAIT
        with trio.move_on_after(timeout) as scope:
            reason = (conn.reason or "")[:120]  # a close reason is at most 123 bytes
            await conn.ws.aclose(conn.close_code, reason.encode()[:120].decode(errors="ignore"))
        if scope.cancelled_caught:
            await conn.stream.aclose()

    def _link_down(self, link: _Link, reason: str, code: int = _CLOSE_DOWN) -> None:
        """Take ``link`` down (once): close its queues and connections, tell events."""
        if link.down.is_set():
            return
        link.down_reason = reason
        link.down.set()
        if self._links.get(link.name) is link:
            del self._links[link.name]
        dropped = sum(queue.close(reason) for queue in link.queues.values())
        for conn in list(link.conns.values()):
            conn.end(reason, code)
        logger.info(
            "node %s: link to %s down: %s (%d queued messages dropped)",
            self.name,
            link.name,
            reason,
            dropped,
        )
        self._notify(self.events.peer_down, link.name, reason)

    def _sever(self, peer: str) -> int:
        link = self._links.get(peer)
        if link is None:
            return 0
        conns = list(link.conns.values())
        for conn in conns:
            conn.severed = True
            conn.stream.sever()
        self._link_down(link, "severed (fault injection)")
        return len(conns)

    def _notify(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("node %s: link event handler %r failed", self.name, callback)

    def _count_rejection(self, reason: str, remote: str, side: str = "server") -> None:
        """Log and count a failed handshake (``side`` is where it failed: the
        accepting "server" or the dialling "client")."""
        if side == "server":
            self.rejected += 1
        logger.warning(
            "node %s: handshake with %s rejected (%s side): %s", self.name, remote, side, reason
        )
        # Links run outside a node too (tools, tests): then the log line is the record.
        with contextlib.suppress(NoNodeError):
            telemetry.execute(
                REJECTED_EVENT,
                {"count": 1},
                {"reason": reason, "remote": remote, "side": side, "node": self.name},
            )

    # -- reconnection -----------------------------------------------------------------------

    def _maintain(self, address: str) -> None:
        if address in self._maintained:
            return
        self._maintained.add(address)
        self._require_running("reconnection").start_soon(self._keep_linked, address)

    async def _keep_linked(self, address: str) -> None:
        options = self.options
        backoff = Backoff(
            options.reconnect_min, options.reconnect_max, options.reconnect_jitter, self._rng
        )
        nursery = self._require_running("reconnection")
        while address in self._maintained:
            name = self._address_names.get(address)
            link = self._links.get(name) if name is not None else None
            if link is not None:
                await link.down.wait()
                backoff.reset()
                await trio.sleep(backoff.next())
                continue
            try:
                await nursery.start(self._dial, address, Channel.CONTROL, None)
            except (NotConnected, HandshakeFailed) as error:
                delay = backoff.next()
                logger.debug(
                    "node %s: dial %s failed (%s); next try in %.2f s",
                    self.name,
                    address,
                    error,
                    delay,
                )
                await trio.sleep(delay)
            else:
                backoff.reset()
                # Let the link register before looking again.
                await trio.lowlevel.checkpoint()
                if self._links.get(self._address_names.get(address, "")) is None:
                    await trio.sleep(backoff.next())


def _dial_back_address(advertised: str, dialled_host: str | None) -> str:
    """Where to dial a peer's other channels: the address it advertised, except that
    a peer listening on every interface (``0.0.0.0``, ``::``) without an
    ``advertise`` option is reached at the host we dialled for its control channel."""
    try:
        host, port = parse_address(advertised)
    except ConfigError:
        return advertised
    if dialled_host is not None and host in ("0.0.0.0", "::"):
        return format_address(dialled_host, port)
    return advertised


class _Rejected(Exception):
    def __init__(self, reason: str, *, benign: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.benign = benign
        """A refusal that is part of the protocol (a duplicate dial), not a fault."""


_JOIN_IN_THREAD = 1024 * 1024
"""A reassembled message at least this large is joined in a worker thread: joining
50 MB takes about 100 ms here (mostly page faults on the fresh memory), which would
stall every task of the node; ``bytes.join`` releases the GIL for large joins."""


async def _join(parts: list[bytes]) -> bytes:
    if sum(len(part) for part in parts) < _JOIN_IN_THREAD:
        return b"".join(parts)
    return await trio.to_thread.run_sync(b"".join, parts)


async def _get_binary(ws: WebSocketConnection) -> bytes:
    message = await ws.get_message()
    if isinstance(message, str):
        raise LinkProtocolError("text message during the handshake")
    return message


async def _tell(ws: WebSocketConnection, data: bytes | None) -> None:
    """Send a last handshake message if the connection still takes it."""
    if data is None:
        return
    with contextlib.suppress(ConnectionClosed):
        await ws.send_message(data)


async def _unless_ended(tracked: TrackedStream, awaitable: Awaitable[T]) -> T | None:
    """What ``awaitable`` gives, or None if the stream ends first (trio-websocket
    waits for an upgrade that a closed stream can no longer bring)."""
    result: T | None = None

    async def get() -> None:
        nonlocal result
        result = await awaitable
        nursery.cancel_scope.cancel()

    async def watch() -> None:
        await tracked.ended.wait()
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(get)
        nursery.start_soon(watch)
    return result
