"""The membership driver: one sans-IO overlay core and Plumtree over a node's links.

A :class:`Membership` runs in the cluster's ``links`` process (see ``boot.py``). It
feeds the overlay core (:class:`~foundation_trio.protocols.fullmesh.FullMesh`,
:class:`~foundation_trio.protocols.client_server.ClientServer` or
:class:`~foundation_trio.protocols.hyparview.HyParView`) with the messages that arrive
on the ``gossip`` channel and with link losses, and carries out its effects: a
``Send`` becomes a frame queued on the gossip channel (dialling the peer first when no
link is up, HyParView's transient connections), a ``Connect`` a dial, a ``CloseLink``
a link closed after :data:`LINGER` seconds unless it is wanted again by then or
remote processes use it. ``NeighborUp``/``NeighborDown`` go to the node's
:class:`~foundation_trio.protocols.plumtree.Plumtree`, which carries
``ft.cluster.broadcast``. One task sleeps until the earliest deadline of the cores
(``trio.sleep_until``-style, woken when an earlier one appears) and runs their
``tick``. Failure detection (``failure.py``): the links report every heartbeat to
this driver's :class:`~.failure.FailureDetector`, which closes the link of a peer whose
phi crosses the threshold; the links' own watchdog (``peer_down_after`` silent
heartbeat intervals) is the hard upper bound. Either way the cores see ``LinkDown``.

A node's id in the cores is ``"<name>@<address>"`` (its advertised address), so any id
learned from gossip can be dialled. See docs/membership.md for the public functions
(``members``, ``reachable``, ``connected``, ``broadcast``, ``subscribe``,
``set_overlay``, ``join``) and what each guarantees.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

import attrs
import trio

from ..protocols.client_server import ClientServer
from ..protocols.common import (
    CloseLink,
    Connect,
    ConnectFailed,
    LinkDown,
    NeighborDown,
    NeighborUp,
    Send,
)
from ..protocols.fullmesh import FullMesh, MeshConfig, MeshOverlay
from ..protocols.hyparview import HyParView, HyParViewConfig
from ..protocols.plumtree import Deliver, Plumtree, PlumtreeConfig
from ..runtime.errors import ConfigError
from ..runtime.node import Node, current_node
from ..runtime.process import (
    Process,
    current_process,
    reset_current_process,
    set_current_process,
)
from ..services import telemetry
from ..services.subscribers import DEFAULT_BUFFER, Lagged, Subscribers, check_buffer
from . import _gossip_wire as gw
from . import wire
from .errors import HandshakeFailed, NotConnected, SendQueueFull
from .failure import FailureDetector
from .options import OVERLAYS, Channel, Cluster, parse_address

if TYPE_CHECKING:
    from .links import Links
    from .remote import ClusterService

logger = logging.getLogger("foundation_trio.cluster.membership")

LINGER: Final = 2.0
"""Seconds a link the overlay stopped wanting stays open before it is closed: long
enough for the messages queued before the decision (a ``DISCONNECT``, a shuffle reply)
to be written, and for a quick change of mind to keep the link."""

ANSWER_TIMEOUT_HANDSHAKES: Final = 3
"""A full-mesh or client-server core waits this many ``Cluster.handshake_timeout`` for
the ``HELLO`` answer of a peer it asked to link with before it forgets the peer. The
answer crosses up to three bounded waits: the control handshake (or the peer's
simultaneous dial it defers to), the gossip channel's handshake, then the queues of
both nodes; a dial or a channel that fails within its own timeout is reported at once
(``ConnectFailed``, ``LinkDown``). With one ``handshake_timeout``, a loaded node gave
up on links that were up and only waited for their gossip channel (see
docs/membership.md, "Live figures"). HyParView keeps one ``handshake_timeout`` for a
``NEIGHBOR`` answer: a node that times out just asks another passive member."""

EPOCH_NOTICE_INTERVAL: Final = 1.0
"""At most one epoch notice per peer per this many seconds."""

_OVERLAY_TOPIC: Final = "$overlay"

REACHABLE_INTERVALS: Final = 4
"""A node stays in ``reachable()`` for this many ``alive_interval`` after its
heartbeat was last seen to grow: it travels a few gossip hops, each up to one interval
late, so one or two late rounds must not make it flicker."""

FORGET_AFTER_INTERVALS: Final = 60
"""A heartbeat that has not grown for this many intervals is forgotten (bounded
memory; a node that comes back starts a fresh entry)."""

_DIGEST_ENTRY_BYTES: Final = 96
"""A generous size of one digest entry on the wire, to bound a digest to a chunk."""

VIEW_CHANGED_EVENT: Final = "cluster.membership.view_changed"
OVERLAY_SWITCHED_EVENT: Final = "cluster.membership.overlay_switched"
DELIVERED_EVENT: Final = "cluster.broadcast.delivered"
BROADCAST_EVENT: Final = "cluster.broadcast.sent"

Overlay = MeshOverlay | HyParView


@attrs.frozen
class BroadcastMessage:
    """One broadcast as a subscriber receives it."""

    topic: str
    payload: object
    origin: str
    """The name of the node that broadcast it."""
    message_id: str
    """Unique cluster-wide; a broadcast is delivered at most once per id."""


def node_id(name: str, address: str) -> str:
    """The id of a node in the overlay cores: ``"<name>@<address>"``."""
    return f"{name}@{address}"


def split_id(peer: str) -> tuple[str, str]:
    """``(name, address)`` of a node id."""
    name, _, address = peer.rpartition("@")
    return name, address


class Membership:
    """The membership and broadcast driver of one node; see the module docstring."""

    def __init__(self, node: Node, options: Cluster, service: ClusterService) -> None:
        self.node = node
        self.options = options
        self.service = service
        seed = options.rng.random() if options.rng is not None else None
        self.rng = random.Random(seed)
        self.auto = options.overlay == "auto"
        self.kind: str = "full_mesh" if self.auto else options.overlay
        self.epoch = 0
        self.me = ""
        self.links: Links | None = None
        self.core: Overlay = FullMesh("unstarted")
        self.plumtree = Plumtree("unstarted")
        self.detector = FailureDetector(options)
        self.frames_sent = 0
        self.frames_received = 0
        self.frames_dropped = 0
        self._ids: dict[str, str] = {}
        self._pending: dict[str, list[bytes]] = {}
        self._dialing: set[str] = set()
        self._joining: set[str] = set()
        self._seed_names: dict[str, str] = {}
        self._close_at: dict[str, float] = {}
        # Gossip-style liveness: node id -> (incarnation, heartbeat) seen, and the
        # local time it last grew.
        self._beats: dict[str, tuple[int, int]] = {}
        self._alive: dict[str, float] = {}
        self._incarnation = 0
        self._heartbeat = 0
        self._digest_sent_at = -math.inf
        self._digest_due = math.inf
        self._notified: dict[str, float] = {}
        self._subscribers: Subscribers[BroadcastMessage] = Subscribers("cluster broadcasts")
        self._wake = trio.Event()
        self._sleeping_until = math.inf
        self._nursery: trio.Nursery | None = None
        self._process: Process | None = None

    # -- running ---------------------------------------------------------------------

    async def run(
        self, links: Links, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Drive the overlay over ``links`` (already listening) until cancelled: join
        through the seeds, run the timers, gossip this node's heartbeat every
        ``alive_interval`` and re-join the seeds that went out of reach."""
        self._process = current_process("Membership.run()")
        self.links = links
        self.me = node_id(self.node.name, links.address)
        self.plumtree = Plumtree(self.me, PlumtreeConfig(), random.Random(self.rng.random()))
        self.core = self._new_core(self.kind)
        self._ids.clear()
        self._beats.clear()
        self._alive.clear()
        # Wall-clock nanoseconds: a restarted node's heartbeats outrank its old ones.
        self._incarnation = time.time_ns()
        self._heartbeat = 0
        self._digest_sent_at = -math.inf
        self._digest_due = math.inf
        self.detector = detector = FailureDetector(self.options)
        for peer in links.peers():
            detector.peer_up(peer, trio.current_time())
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for seed in self.options.seeds:
                    nursery.start_soon(self._join_seed, seed)
                nursery.start_soon(self._timers)
                nursery.start_soon(detector.run, links, self._emit)
                nursery.start_soon(self._liveness)
                task_status.started()
        finally:
            self._nursery = None
            self.links = None

    def leave(self) -> None:
        """Tell the neighbours this node leaves (best effort: the links close next)."""
        if self.links is None:
            return
        now = trio.current_time()
        self._apply(self.core.leave(now), now)

    def _new_core(self, kind: str) -> Overlay:
        options = self.options
        rng = random.Random(self.rng.random())
        if kind == "hyparview":
            passive = max(options.passive_view_size, options.active_view_size)
            config = HyParViewConfig(
                active_view_size=options.active_view_size,
                passive_view_size=passive,
                shuffle_period=options.shuffle_period,
                neighbor_request_timeout=options.handshake_timeout,
            )
            return HyParView(self.me, config, rng)
        mesh = MeshConfig(
            gossip_period=options.shuffle_period,
            connect_timeout=ANSWER_TIMEOUT_HANDSHAKES * options.handshake_timeout,
        )
        if kind == "client_server":
            return ClientServer(self.me, options.role, mesh, rng)
        return FullMesh(self.me, mesh, rng)

    # -- answers -----------------------------------------------------------------------

    def member_ids(self) -> list[str]:
        core = self.core
        if isinstance(core, HyParView):
            return [*core.active_view, *core.passive_view]
        return list(core.known_members)

    def members(self) -> list[str]:
        return sorted({split_id(peer)[0] for peer in self.member_ids()})

    def connected(self) -> list[str]:
        return self.links.peers() if self.links is not None else []

    def reachable(self) -> list[str]:
        now = trio.current_time()
        horizon = now - REACHABLE_INTERVALS * self.options.alive_interval
        names = set(self.connected())
        names.update(split_id(peer)[0] for peer, seen in self._alive.items() if seen >= horizon)
        names.discard(self.node.name)
        return sorted(names)

    def _wanted(self, peer: str) -> bool:
        core = self.core
        if core.is_active(peer):
            return True
        if isinstance(core, HyParView):
            return peer in core.pending_neighbor_requests
        if core.is_connecting(peer):
            return True
        role = core.known_members.get(peer)
        return role is not None and (core.initiates_to(role) or core.accepts_from(role))

    # -- public operations ---------------------------------------------------------------

    async def join(self, address: str, *, quiet: bool = True) -> str | None:
        """Dial ``address`` and join the overlay through the node there (unless that
        node is already reachable); return that node's name, or None when nothing was
        done (the links are not running, ``address`` is this node's, a join through it
        is under way) or, with ``quiet``, the dial failed (logged at debug level).
        Without ``quiet`` a failed dial raises what ``Links.connect`` raises
        (discovery wants the reason). Raises ``ConfigError`` for a malformed address,
        ``TypeError`` for a ``quiet`` that is not a bool."""
        parse_address(address, "join(address)")
        if not isinstance(quiet, bool):
            raise TypeError(f"join(quiet): expected a bool, got {quiet!r}")
        if not quiet:
            return await self._join_address(address)
        try:
            return await self._join_address(address)
        except (NotConnected, HandshakeFailed, OSError) as exc:
            logger.debug("node %s: join through %s failed: %s", self.node.name, address, exc)
            return None

    async def _join_seed(self, address: str) -> None:
        await self.join(address)

    async def _join_address(self, address: str) -> str | None:
        links = self.links
        if links is None or address == links.address or address in self._joining:
            return None
        known = self._seed_names.get(address)
        if known is not None and known in self.reachable() and self.core.neighbors:
            return known
        self._joining.add(address)
        try:
            name = await links.connect(address)
            self._seed_names[address] = name
            if name == self.node.name or self.links is not links:
                return name
            peer = self._ids.get(name) or node_id(name, address)
            now = trio.current_time()
            self._apply(self.core.join(peer, now), now)
            return name
        finally:
            self._joining.discard(address)

    def broadcast(self, topic: str, payload: object) -> str:
        if not isinstance(topic, str) or not topic or topic.startswith("$"):
            raise ValueError(
                f"broadcast(topic): expected a non-empty str not starting with '$', got {topic!r}"
            )
        body = wire.encode_body(payload)
        limit = self.options.chunk_size - 1024
        if len(body) > limit:
            raise ValueError(
                f"broadcast(payload): {len(body)} bytes encoded, more than the {limit} a "
                "broadcast carries (Cluster.chunk_size - 1024)"
            )
        return self._broadcast(topic, body)

    def _broadcast(self, topic: str, body: bytes) -> str:
        if self.links is None:
            raise NotConnected(f"{self.node.name} (the cluster links are not running)")
        now = trio.current_time()
        effects = self.plumtree.broadcast((topic, self.me, body), now)
        message_id = next(e.message_id for e in effects if isinstance(e, Deliver))
        if not topic.startswith("$"):
            self._emit(BROADCAST_EVENT, {"count": 1, "bytes": len(body)}, {"topic": topic})
        self._apply(effects, now)
        return message_id

    def subscribe(
        self, topic: str | None, buffer: int
    ) -> trio.MemoryReceiveChannel[BroadcastMessage | Lagged]:
        if topic is not None and (not isinstance(topic, str) or not topic):
            raise ValueError(f"subscribe(topic): expected a non-empty str or None, got {topic!r}")
        check_buffer(buffer, "subscribe()")
        accepts: Callable[[BroadcastMessage], bool] | None = None
        if topic is not None:

            def accepts(message: BroadcastMessage) -> bool:
                return message.topic == topic

        return self._subscribers.subscribe(buffer, accepts)

    def set_overlay(self, kind: str) -> None:
        if kind not in OVERLAYS:
            raise ValueError(
                f"set_overlay(kind): expected one of {', '.join(OVERLAYS)}, got {kind!r}"
            )
        if self.links is None:
            raise NotConnected(f"{self.node.name} (the cluster links are not running)")
        self.auto = kind == "auto"
        if self.auto:
            kind = (
                "hyparview"
                if len(self.member_ids()) + 1 > self.options.mesh_limit
                else "full_mesh"
            )
        now = trio.current_time()
        epoch = self.epoch + 1
        self._switch(kind, epoch, None, now)
        self._broadcast(_OVERLAY_TOPIC, wire.encode_body([epoch, kind, self.auto]))

    # -- switching overlays --------------------------------------------------------------

    def _switch(self, kind: str, epoch: int, contact: str | None, now: float) -> None:
        """Replace the overlay core: the members it knew are handed to the new one,
        Plumtree (its cache, so in-flight broadcasts) is kept."""
        old = self.core
        known = [peer for peer in self.member_ids() if peer != self.me]
        old_neighbors = old.neighbors
        previous = self.kind
        self.kind, self.epoch = kind, epoch
        self.core = core = self._new_core(kind)
        for peer in old_neighbors:
            self._apply([NeighborDown(peer)], now)
        effects: list[object] = []
        if isinstance(core, HyParView):
            if contact is None:
                candidates = list(old_neighbors) or known
                contact = self.rng.choice(candidates) if candidates else None
            if contact is not None:
                effects.extend(core.join(contact, now))
            # The contact too: until its JOIN_ACCEPT arrives it is in neither view, and
            # a member must not vanish while the switch is in flight.
            core.add_passive(known)
        else:
            for peer in dict.fromkeys([*([contact] if contact else []), *known]):
                effects.extend(core.join(peer, now))
        self._apply(effects, now)
        for peer in old_neighbors:
            if not self._wanted(peer):
                self._linger(peer, now)
        logger.info("node %s: overlay %s -> %s (epoch %d)", self.node.name, previous, kind, epoch)
        self._emit(
            OVERLAY_SWITCHED_EVENT,
            {"count": 1, "epoch": epoch, "members": len(known)},
            {"from": previous, "to": kind},
        )

    def _check_auto(self, now: float) -> None:
        if (
            self.auto
            and self.kind == "full_mesh"
            and len(self.member_ids()) + 1 > self.options.mesh_limit
        ):
            self._switch("hyparview", self.epoch + 1, None, now)

    # -- link events (from ClusterService) -----------------------------------------------

    def heartbeat_received(self, name: str, arrived: float) -> None:
        """The links' ``on_heartbeat`` hook: feeds the failure detector."""
        self.detector.heartbeat(name, arrived)

    def peer_up(self, name: str) -> None:
        self.detector.peer_up(name, trio.current_time())
        peer = self._ids.get(name)
        if peer is None or self.links is None:
            return
        now = trio.current_time()
        if isinstance(self.core, MeshOverlay):
            # The links redialled a member the mesh dropped: it is a member again.
            if not self.core.is_active(peer) and peer != self.me:
                self._apply(self.core.join(peer, now), now)
        elif not self._wanted(peer):
            self._linger(peer, now)

    def peer_down(self, name: str, reason: str) -> None:
        self.detector.peer_down(name)
        peer = self._ids.get(name)
        self._close_at.pop(peer or "", None)
        if peer is None or self.links is None:
            return
        self._pending.pop(peer, None)
        now = trio.current_time()
        hyparview = isinstance(self.core, HyParView)
        if not hyparview or self._wanted(peer):
            # A failure verdict: the peer is out of reachable() until its heartbeat is
            # seen to grow again (the same heartbeat gossiped back does not count).
            if peer in self._alive:
                self._alive[peer] = now - (REACHABLE_INTERVALS + 1) * self.options.alive_interval
            self._apply(self.core.handle(LinkDown(peer), now), now)
        # A HyParView link outside the active view (a join reply, a shuffle, a linger
        # closed by either side) going down is no failure verdict: the peer stays in
        # the passive view, which HyParView checks when it tries to promote it.
        if hyparview and not self._wanted(peer):
            # Stop the links redialling a node the overlay replaced; the seeds are
            # re-joined by the liveness loop when they go out of reach.
            self.links.disconnect(name, "not an overlay neighbour", forget=True)

    def received(self, name: str, data: bytes) -> None:
        """Handle one gossip frame from the authenticated peer ``name``. Raises
        :class:`~.wire.WireError` (the link is closed) for a malformed frame or one
        claiming another sender."""
        frame = gw.decode(data)
        sender = gw.sender_of(frame)
        sender_name, address = split_id(sender)
        if sender_name != name:
            raise wire.WireError(f"a gossip frame from {name!r} claims sender {sender!r}")
        try:
            parse_address(address, "sender address")
        except ConfigError as exc:
            raise wire.WireError(f"gossip frame sender {sender!r}: {exc}") from None
        if self.links is None:
            return
        self.frames_received += 1
        self._ids[name] = sender
        now = trio.current_time()
        if isinstance(frame, gw.AliveDigest):
            self._merge_digest(frame, now)
        elif isinstance(frame, gw.OverlayFrame | gw.EpochNotice):
            if frame.kind not in OVERLAYS or frame.kind == "auto":
                raise wire.WireError(f"unknown overlay {frame.kind!r}")
            theirs, mine = (frame.epoch, frame.kind), (self.epoch, self.kind)
            if theirs > mine:
                self._switch(frame.kind, frame.epoch, sender, now)
            if isinstance(frame, gw.EpochNotice):
                return
            if theirs < mine:
                self._notify_epoch(sender, now)
                return
            self._apply(self.core.handle(gw.from_wire(frame.message), now), now)
            self._check_auto(now)
        else:
            self._apply(self.plumtree.handle(gw.from_wire(frame), now), now)

    def _notify_epoch(self, peer: str, now: float) -> None:
        if self._notified.get(peer, -math.inf) + EPOCH_NOTICE_INTERVAL > now:
            return
        self._notified[peer] = now
        self._send_frame(peer, gw.encode(gw.EpochNotice(self.me, self.epoch, self.kind)), now)

    # -- effects -------------------------------------------------------------------------

    def _apply(self, effects: list[object], now: float) -> None:
        for effect in effects:
            kind = type(effect)
            if kind is Send:
                assert isinstance(effect, Send)
                struct = gw.to_wire(effect.message)
                frame: gw.Frame = (
                    struct
                    if isinstance(struct, gw.PLUMTREE_TYPES)
                    else gw.OverlayFrame(self.epoch, self.kind, struct)
                )
                self._send_frame(effect.to, gw.encode(frame), now)
            elif kind is Deliver:
                assert isinstance(effect, Deliver)
                self._deliver(effect, now)
            elif kind is Connect:
                assert isinstance(effect, Connect)
                self._close_at.pop(effect.peer, None)
                self._dial(effect.peer)
            elif kind is CloseLink:
                assert isinstance(effect, CloseLink)
                self._linger(effect.peer, now)
            elif kind is NeighborUp or kind is NeighborDown:
                assert isinstance(effect, NeighborUp | NeighborDown)
                up = kind is NeighborUp
                if up:
                    self._close_at.pop(effect.peer, None)
                    # A new neighbour may be a join or a heal: what each side knows
                    # is news to the other.
                    self._send_digest(now, effect.peer)
                self._apply(self.plumtree.handle(effect, now), now)
                self._emit(
                    VIEW_CHANGED_EVENT,
                    {"neighbors": len(self.core.neighbors), "members": len(self.member_ids())},
                    {"peer": split_id(effect.peer)[0], "change": "up" if up else "down"},
                )
            else:
                raise TypeError(f"unknown effect {effect!r}")
        self._rearm()

    def _send_frame(self, peer: str, data: bytes, now: float) -> None:
        links = self.links
        if links is None:
            return
        name, _ = split_id(peer)
        if name in self.service.peers and peer not in self._dialing:
            try:
                links.send_nowait(name, Channel.GOSSIP, data)
            except SendQueueFull:
                # Gossip is repaired by IHAVE/GRAFT and anti-entropy: drop, do not wait.
                self.frames_dropped += 1
                return
            except NotConnected:
                pass
            else:
                self.frames_sent += 1
                if not self._wanted(peer) and peer not in self._close_at:
                    self._linger(peer, now)
                return
        pending = self._pending.setdefault(peer, [])
        if len(pending) < self.options.gossip.send_queue_size:
            pending.append(data)
        else:
            self.frames_dropped += 1
        self._dial(peer)

    def _dial(self, peer: str) -> None:
        if peer in self._dialing or self._nursery is None or peer == self.me:
            return
        self._dialing.add(peer)
        self._nursery.start_soon(self._dial_task, peer)

    async def _dial_task(self, peer: str) -> None:
        links = self.links
        name, address = split_id(peer)
        reached: str | None = None
        try:
            if links is not None:
                reached = await links.connect(address)
        except (NotConnected, HandshakeFailed, ConfigError, OSError) as exc:
            logger.debug("node %s: dial %s failed: %s", self.node.name, peer, exc)
            # Both sides dialled at once and the peer kept its own dial: the link
            # comes up that way.
            with trio.move_on_after(self.options.handshake_timeout):
                # No event marks a new peer: poll.
                while name not in self.service.peers and self.links is links:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            if name in self.service.peers:
                reached = name
        finally:
            self._dialing.discard(peer)
        if links is None or self.links is not links:
            return
        now = trio.current_time()
        frames = self._pending.pop(peer, [])
        if reached != name:
            if reached is not None:
                logger.warning(
                    "node %s: %s answered as %r, not %r", self.node.name, address, reached, name
                )
            self._apply(self.core.handle(ConnectFailed(peer), now), now)
            return
        self._ids.setdefault(name, peer)
        for data in frames:
            try:
                links.send_nowait(name, Channel.GOSSIP, data)
                self.frames_sent += 1
            except (SendQueueFull, NotConnected):
                self.frames_dropped += 1
        if not self._wanted(peer):
            self._linger(peer, now)

    def _linger(self, peer: str, now: float) -> None:
        self._close_at[peer] = now + LINGER
        self._rearm()

    def _reap(self, now: float) -> None:
        links = self.links
        if links is None:
            return
        due = [peer for peer, at in self._close_at.items() if at <= now]
        for peer in due:
            del self._close_at[peer]
            name, _ = split_id(peer)
            if self._wanted(peer) or self.service.in_use(name):
                continue
            links.disconnect(name, "not an overlay neighbour", forget=True)

    def _deliver(self, effect: Deliver, now: float) -> None:
        payload_parts: tuple[str, str, bytes] = effect.payload  # type: ignore[assignment]
        topic, origin, body = payload_parts
        try:
            payload = wire.decode_body(body)
        except wire.WireError as exc:
            logger.warning(
                "node %s: broadcast %s dropped: %s", self.node.name, effect.message_id, exc
            )
            return
        if topic == _OVERLAY_TOPIC:
            epoch, kind, auto = cast("list[Any]", payload)
            if (epoch, kind) > (self.epoch, self.kind) and kind in OVERLAYS:
                self.auto = bool(auto)
                self._switch(kind, epoch, None, now)
            return
        self._subscribers.publish(
            BroadcastMessage(topic, payload, split_id(origin)[0], effect.message_id)
        )
        self._emit(DELIVERED_EVENT, {"count": 1, "hops": effect.round}, {"topic": topic})

    # -- timers ----------------------------------------------------------------------------

    def _deadline(self) -> float:
        deadline = math.inf
        for candidate in (self.core.next_deadline(), self.plumtree.next_deadline()):
            if candidate is not None and candidate < deadline:
                deadline = candidate
        if self._close_at:
            deadline = min(deadline, min(self._close_at.values()))
        return min(deadline, self._digest_due)

    def _rearm(self) -> None:
        if self._deadline() < self._sleeping_until:
            self._wake.set()

    async def _timers(self) -> None:
        while True:
            now = trio.current_time()
            self._apply(self.core.tick(now), now)
            self._apply(self.plumtree.tick(now), now)
            self._reap(now)
            self._check_auto(now)
            if self._digest_due <= now:
                self._send_digest(now)
            self._wake = trio.Event()
            self._sleeping_until = self._deadline()
            with trio.move_on_at(self._sleeping_until):
                await self._wake.wait()
            self._sleeping_until = math.inf

    # -- liveness ------------------------------------------------------------------------

    def _gossip_heartbeat(self, now: float) -> None:
        """Bump this node's heartbeat, forget the heartbeats that stopped long ago,
        and send the digest."""
        self._heartbeat += 1
        forget = now - FORGET_AFTER_INTERVALS * self.options.alive_interval
        for peer in [peer for peer, seen in self._alive.items() if seen < forget]:
            del self._alive[peer]
            del self._beats[peer]
        self._send_digest(now)

    def _send_digest(self, now: float, to: str | None = None) -> None:
        """Send this node's heartbeat and the fresh ones it knows to ``to``, or to
        ``active_view_size`` random neighbours: a few frames per node per interval
        whatever the cluster's size, where a liveness broadcast per node would cost
        every node a frame per member per interval."""
        if to is None:
            self._digest_due = math.inf
        neighbors = [to] if to is not None else list(self.core.neighbors)
        if not neighbors:
            return
        if to is None:
            self._digest_sent_at = now
        fresh = now - REACHABLE_INTERVALS * self.options.alive_interval
        entries = [
            (peer, *self._beats[peer]) for peer, seen in self._alive.items() if seen >= fresh
        ]
        room = (self.options.chunk_size - 1024) // _DIGEST_ENTRY_BYTES - 1
        if len(entries) > room:
            # The rest travel in the next rounds' samples.
            entries = self.rng.sample(entries, room)
        entries.append((self.me, self._incarnation, self._heartbeat))
        data = gw.encode(gw.AliveDigest(self.me, tuple(entries)))
        count = min(len(neighbors), self.options.active_view_size)
        for peer in self.rng.sample(neighbors, count):
            self._send_frame(peer, data, now)

    def _merge_digest(self, digest: gw.AliveDigest, now: float) -> None:
        """Keep the newer heartbeats. A digest that makes a node reachable (new, or
        back) is passed on at once, or as soon as a quarter interval has passed since
        the last digest: a join or a heal spreads a quarter interval per hop at most,
        not one interval per hop."""
        fresh = now - REACHABLE_INTERVALS * self.options.alive_interval
        news = False
        for peer, incarnation, heartbeat in digest.entries:
            if peer == self.me:
                continue
            seen = self._beats.get(peer)
            if seen is None or (incarnation, heartbeat) > seen:
                news = news or self._alive.get(peer, -math.inf) < fresh
                self._beats[peer] = (incarnation, heartbeat)
                self._alive[peer] = now
        if news:
            due = self._digest_sent_at + self.options.alive_interval / 4
            if due <= now:
                self._send_digest(now)
            elif due < self._digest_due:
                self._digest_due = due
                self._rearm()

    async def _liveness(self) -> None:
        interval = self.options.alive_interval
        while True:
            self._gossip_heartbeat(trio.current_time())
            links = self.links
            if links is not None and self._nursery is not None:
                for seed in self.options.seeds:
                    name = self._seed_names.get(seed)
                    if name is None or name not in self.reachable() or not self.core.neighbors:
                        self._nursery.start_soon(self._join_seed, seed)
            await trio.sleep(interval * (0.75 + 0.5 * self.rng.random()))

    def _emit(
        self, event: str, measurements: dict[str, float], metadata: dict[str, object]
    ) -> None:
        # Link events arrive from whatever task the links run: the event is this
        # node's, so it is emitted as the cluster's process.
        if self._process is None:
            return
        metadata["node"] = self.node.name
        token = set_current_process(self._process)
        try:
            telemetry.execute(event, measurements, metadata)
        finally:
            reset_current_process(token)


# -- module-level API (ft.cluster.*) ---------------------------------------------------------


def _membership(what: str) -> Membership:
    return current_node().extension(Membership, f"cluster membership ({what})")


def members() -> list[str]:
    """Names of the nodes this node's overlay knows, sorted, without this node.

    Full mesh and client-server: every member learnt (linked or not yet). HyParView:
    the active view plus the passive view (a partial view: in a large cluster most
    nodes are in nobody's views but a few). Raises ``LookupError`` outside a node
    opened with ``cluster=``."""
    return _membership("members()").members()


def reachable() -> list[str]:
    """Names of the nodes believed alive, sorted, without this node: those connected
    now, plus those whose heartbeat this node saw grow within the last
    ``REACHABLE_INTERVALS * alive_interval`` (4 intervals) seconds. Every node bumps
    its heartbeat every ``Cluster.alive_interval`` and gossips the fresh heartbeats it
    knows to a few neighbours (van Renesse's gossip-style failure detection), so a
    node is reachable through the overlay without a link to it. May name nodes that
    are not in :func:`members`."""
    return _membership("reachable()").reachable()


def connected() -> list[str]:
    """Names of the nodes with an authenticated live link to this node right now,
    sorted (overlay neighbours, transient links, links of remote processes)."""
    return _membership("connected()").connected()


def broadcast(topic: str, payload: object) -> str:
    """Send ``payload`` to the subscribers of ``topic`` on every node (this one
    included) over Plumtree; return the message id. Does not wait.

    ``payload`` is a message body as ``ft.wire`` defines it (plain data, pids,
    registered attrs classes), at most ``Cluster.chunk_size - 1024`` bytes encoded.
    Delivery is best effort and at most once per node: every node connected to this
    one through the overlay receives it, including nodes that join or reconnect within
    a few seconds (lazy announcements, grafts, anti-entropy). Raises ``ValueError`` for
    a topic that is empty or starts with ``$`` (reserved) or a payload too large,
    ``TypeError`` for a payload the wire cannot carry, :class:`NotConnected` while the
    links are restarting."""
    return _membership("broadcast()").broadcast(topic, payload)


def subscribe(
    topic: str | None = None, *, buffer: int = DEFAULT_BUFFER
) -> trio.MemoryReceiveChannel[BroadcastMessage | Lagged]:
    """A receive channel of the broadcasts on ``topic`` (every topic if None) delivered
    to this node from now on, as :class:`BroadcastMessage` records. The channel holds
    at most ``buffer`` of them; when the subscriber falls behind, later ones are
    dropped and the next it gets is preceded by one :class:`~.subscribers.Lagged`
    saying how many it missed. Close the channel to end the subscription."""
    return _membership("subscribe()").subscribe(topic, buffer)


def set_overlay(kind: str) -> None:
    """Switch the whole cluster to overlay ``kind`` (``"full_mesh"``, ``"hyparview"``,
    ``"client_server"`` or ``"auto"``) now. This node switches at once and announces
    the switch by broadcast; every node also switches when it receives a message of
    the newer overlay. Membership (every member known) and Plumtree's state (so the
    broadcasts in flight) carry over; see docs/membership.md."""
    _membership("set_overlay()").set_overlay(kind)


def overlay() -> str:
    """The overlay this node runs now (``"full_mesh"``, ``"hyparview"`` or
    ``"client_server"``; ``"auto"`` resolves to one of the first two)."""
    return _membership("overlay()").kind


async def join(address: str) -> None:
    """Dial ``address`` (``"host:port"``) and join the overlay through the node there,
    unless that node is already reachable. For discovery strategies and operators; a
    node joins its seeds by itself. Returns once the join request is queued; a node
    that cannot be reached is logged and ignored (discovery polls again). Raises
    ``ConfigError`` for a malformed address."""
    await _membership("join()").join(address)


def membership_stats() -> dict[str, Any]:
    """Counters of this node's driver: overlay, epoch, frames sent/received/dropped,
    active/passive view sizes, Plumtree cache length; and the failure detector's
    state: ``phi`` (each linked peer's phi now, by name), ``phi_threshold`` (the
    effective threshold now, None when phi does not act), ``local_health`` (the
    score), ``loop_stalls`` and ``suspected`` (peers phi declared down)."""
    driver = _membership("membership_stats()")
    core = driver.core
    detector = driver.detector
    now = trio.current_time()
    return {
        "phi": detector.phis(now),
        "phi_threshold": detector.effective_threshold(now),
        "local_health": detector.health.score(now),
        "loop_stalls": detector.stalls,
        "suspected": detector.suspected,
        "overlay": driver.kind,
        "epoch": driver.epoch,
        "neighbors": len(core.neighbors),
        "members": len(driver.member_ids()),
        "frames_sent": driver.frames_sent,
        "frames_received": driver.frames_received,
        "frames_dropped": driver.frames_dropped,
        "broadcast_cache": driver.plumtree.cache_length,
    }


__all__ = [
    "LINGER",
    "BroadcastMessage",
    "Membership",
    "broadcast",
    "connected",
    "join",
    "members",
    "membership_stats",
    "overlay",
    "reachable",
    "set_overlay",
    "subscribe",
]
