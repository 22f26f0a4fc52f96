"""Deterministic discrete-event simulator for the overlay and broadcast cores.

Every simulated node runs one membership core (HyParView by default, or any overlay with
the same interface) and one :class:`~foundation_trio.protocols.plumtree.Plumtree` core,
wired as the trio drivers will wire them: membership ``NeighborUp``/``NeighborDown``
effects feed Plumtree, messages are routed to the core that owns their type.

Time is virtual. Events sit in one heap ordered by ``(time, sequence)``; the sequence
number makes ties deterministic, and all randomness comes from ``random.Random`` objects
seeded from the simulator seed, so a run replays exactly.

Network model:

* Latency is fixed per directed pair, drawn uniformly from ``[latency_min, latency_max]``
  by a hash of the pair and the seed. Each link is therefore FIFO, as a TCP connection is.
* ``loss_rate`` drops that fraction of messages silently (an omission fault model).
* A message to a crashed node, or across a partition, is dropped. When the destination
  is an active neighbour of the sender the send fails like a write on a broken
  connection: the sender gets :class:`~foundation_trio.protocols.common.LinkDown` after
  ``send_failure_delay``. A ``Connect`` to such a node yields ``ConnectFailed`` after
  ``connect_timeout``.
* With ``crash_detection_delay`` set, a crash is also noticed by every live neighbour of
  the crashed node after that delay, whether or not it sends (a link heartbeat or the
  operating system resetting a dead process's connections). ``None`` models the paper's
  setting: a failure is discovered only by sending to it.

Periodic maintenance (HyParView shuffle and refill, Plumtree anti-entropy) runs in
explicit *membership rounds* (:meth:`Simulator.run_membership_round`), each node once per
round at a random offset inside it, as in the paper's cycle-based method; the cores are
built with their own periodic timers off. Protocol timers (graft timers, IHAVE batching,
NEIGHBOR timeouts) run from each core's ``tick`` at the deadline the core reports.

Inside the simulator nodes are integer indexes; the cores see opaque string ids.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import attrs

from foundation_trio.protocols.common import (
    CloseLink,
    Connect,
    ConnectFailed,
    LinkDown,
    NeighborDown,
    NeighborUp,
    NodeId,
    Send,
    require_non_negative,
    require_positive,
)
from foundation_trio.protocols.hyparview import HyParView, HyParViewConfig
from foundation_trio.protocols.plumtree import (
    AntiEntropy,
    Deliver,
    Gossip,
    Graft,
    IHave,
    Plumtree,
    PlumtreeConfig,
    Prune,
)

__all__ = [
    "BroadcastRecord",
    "MembershipCore",
    "SimConfig",
    "SimNode",
    "Simulator",
]

_INFINITY = float("inf")

# Event kinds in the heap.
_MESSAGE = 0
_LINK_EVENT = 1
_TICK = 2
_ROUND = 3
_LINK_FAILURE = 4

_PLUMTREE_MESSAGES: frozenset[type] = frozenset({Gossip, IHave, Graft, Prune, AntiEntropy})


def _pair(first: int, second: int) -> tuple[int, int]:
    return (first, second) if first < second else (second, first)


class MembershipCore(Protocol):
    """What the simulator needs from a membership overlay core."""

    @property
    def neighbors(self) -> tuple[NodeId, ...]: ...

    def is_active(self, peer: NodeId) -> bool: ...

    def join(self, contact: NodeId, now: float) -> list[object]: ...

    def leave(self, now: float) -> list[object]: ...

    def membership_round(self, now: float) -> list[object]: ...

    def handle(self, event: object, now: float) -> list[object]: ...

    def tick(self, now: float) -> list[object]: ...

    def next_deadline(self) -> float | None: ...


MembershipFactory = Callable[[NodeId, random.Random], MembershipCore]


@attrs.frozen(slots=True)
class SimConfig:
    """Network model and per-node protocol settings (times in virtual seconds)."""

    latency_min: float = 0.01
    latency_max: float = 0.05
    loss_rate: float = 0.0
    send_failure_delay: float = 0.1
    connect_timeout: float = 0.5
    crash_detection_delay: float | None = None
    round_period: float = 1.0
    anti_entropy_in_rounds: bool = True
    hyparview: HyParViewConfig = attrs.field(factory=lambda: HyParViewConfig(shuffle_period=None))
    plumtree: PlumtreeConfig = attrs.field(
        factory=lambda: PlumtreeConfig(anti_entropy_period=None)
    )

    def __attrs_post_init__(self) -> None:
        owner = "SimConfig"
        require_non_negative(owner, "latency_min", self.latency_min)
        if not self.latency_max >= self.latency_min:
            raise ValueError(
                f"{owner}.latency_max ({self.latency_max!r}) must be >= latency_min"
                f" ({self.latency_min!r})"
            )
        if not 0.0 <= self.loss_rate < 1.0:
            raise ValueError(f"{owner}.loss_rate must be in [0, 1), got {self.loss_rate!r}")
        require_non_negative(owner, "send_failure_delay", self.send_failure_delay)
        require_positive(owner, "connect_timeout", self.connect_timeout)
        if self.crash_detection_delay is not None:
            require_non_negative(owner, "crash_detection_delay", self.crash_detection_delay)
        require_positive(owner, "round_period", self.round_period)


@attrs.define(slots=True, eq=False)
class SimNode:
    """One simulated node: its cores and what the network knows about it."""

    index: int
    node_id: NodeId
    membership: MembershipCore
    broadcast: Plumtree
    alive: bool = True
    joined: bool = False
    group: int = 0
    tick_at: float = _INFINITY


@attrs.define(slots=True, eq=False)
class BroadcastRecord:
    """What happened to one broadcast: who delivered it, how far, how many payloads."""

    message_id: str
    source: int
    sent_at: float
    delivered: set[int] = attrs.field(factory=set)
    duplicate_deliveries: int = 0
    payload_sends: int = 0
    last_delivery_hop: int = 0
    last_delivery_at: float = 0.0


class Simulator:
    """Runs many membership + Plumtree nodes over a simulated network; see module doc."""

    def __init__(
        self,
        config: SimConfig | None = None,
        seed: int = 0,
        membership_factory: MembershipFactory | None = None,
    ) -> None:
        self.config = config if config is not None else SimConfig()
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.nodes: list[SimNode] = []
        self._index: dict[NodeId, int] = {}
        # (time, sequence, kind, target index, peer index or -1, payload). The peer is
        # the sender of a message or the other end of a failed link.
        self._heap: list[tuple[float, int, int, int, int, object]] = []
        self._seq = 0
        self._partitioned = False
        # Links cut by a partition, as unordered index pairs. A TCP connection that broke
        # stays broken after the network heals, until either side connects again.
        self._broken_links: set[tuple[int, int]] = set()
        # Connections opened per node pair. A link failure belongs to the connection it
        # was detected on and is dropped if a newer connection replaced it meanwhile, as
        # a driver ignores events of a connection it already closed.
        self._link_generation: dict[tuple[int, int], int] = {}
        self._latency_salt = random.Random(seed ^ 0x5EED).getrandbits(32)
        self._broadcasts: dict[str, BroadcastRecord] = {}
        self._membership_factory = membership_factory
        # Counters since the last reset_counters(): all messages, and messages per type.
        self.messages_sent = 0
        self.messages_by_type: dict[str, int] = {}
        self.events_processed = 0

    # ------------------------------------------------------------------ nodes

    def add_node(self, node_id: NodeId | None = None) -> NodeId:
        """Create a node that has not joined anything yet; return its id."""
        index = len(self.nodes)
        if node_id is None:
            node_id = f"n{index}"
        if node_id in self._index:
            raise ValueError(f"node id {node_id!r} already exists")
        node_rng = random.Random(self.rng.getrandbits(64))
        if self._membership_factory is None:
            membership: MembershipCore = HyParView(node_id, self.config.hyparview, node_rng)
        else:
            membership = self._membership_factory(node_id, node_rng)
        broadcast = Plumtree(
            node_id, self.config.plumtree, random.Random(node_rng.getrandbits(64))
        )
        self.nodes.append(SimNode(index, node_id, membership, broadcast))
        self._index[node_id] = index
        return node_id

    def node(self, node_id: NodeId) -> SimNode:
        """The node called ``node_id`` (``KeyError`` if there is none)."""
        return self.nodes[self._index[node_id]]

    def live_nodes(self) -> list[SimNode]:
        """Nodes that have not crashed or left."""
        return [node for node in self.nodes if node.alive]

    def join(self, node_id: NodeId, contact: NodeId) -> None:
        """Make ``node_id`` join the overlay through ``contact`` now."""
        node = self.node(node_id)
        if not node.alive:
            raise ValueError(f"node {node_id!r} is not alive")
        node.joined = True
        self._apply(node, node.membership.join(contact, self.now))
        self._reschedule(node)

    def leave(self, node_id: NodeId) -> None:
        """``node_id`` leaves gracefully: its neighbours are told, then it stops."""
        node = self.node(node_id)
        if not node.alive:
            return
        self._apply(node, node.membership.leave(self.now))
        node.alive = False

    def crash(self, node_ids: Iterable[NodeId]) -> None:
        """Crash nodes at once, silently; see ``crash_detection_delay``."""
        crashed = [self.node(node_id) for node_id in node_ids]
        for node in crashed:
            node.alive = False
        delay = self.config.crash_detection_delay
        if delay is None or not crashed:
            return
        crashed_ids = {node.node_id for node in crashed}
        for node in self.nodes:
            if not node.alive:
                continue
            for peer in node.membership.neighbors:
                if peer in crashed_ids:
                    self._link_failure(node.index, self._index[peer], delay)

    def partition(self, groups: Sequence[Iterable[NodeId]]) -> None:
        """Split the network: nodes in different groups cannot exchange messages.

        Nodes not listed stay in group 0 together with the first group.
        """
        for node in self.nodes:
            node.group = 0
        for number, members in enumerate(groups):
            for node_id in members:
                self.node(node_id).group = number
        self._partitioned = True
        delay = self.config.crash_detection_delay
        for node in self.nodes:
            if not node.alive:
                continue
            for peer in node.membership.neighbors:
                other = self._index.get(peer)
                if other is None or self.nodes[other].group == node.group:
                    continue
                self._broken_links.add(_pair(node.index, other))
                if delay is not None:
                    self._link_failure(node.index, other, delay)

    def heal(self) -> None:
        """Remove every partition. The overlay may stay split: see :meth:`merge_components`.

        Links the partition cut stay broken: a send on one fails as it would on a reset
        TCP connection, until either end connects to the other again.
        """
        for node in self.nodes:
            node.group = 0
        self._partitioned = False

    def merge_components(self) -> int:
        """Model the discovery layer that re-joins a split overlay; return the joins made.

        HyParView cannot merge a split overlay by itself (nobody on one side knows anyone
        on the other). The cure in deployed systems is an upper layer that compares the
        members discovery reports (DNS, seeds, mDNS) with the members it reaches and
        re-joins through one it does not reach. This method plays that layer: one random
        node of every component but the largest joins through a random node of the
        largest. Call :meth:`run_until_quiet` afterwards.
        """
        components = self.components()
        if len(components) < 2:
            return 0
        largest = components[0]
        for component in components[1:]:
            joiner = self.nodes[self.rng.choice(component)]
            contact = self.nodes[self.rng.choice(largest)]
            self.join(joiner.node_id, contact.node_id)
        return len(components) - 1

    # ------------------------------------------------------------------ broadcasts

    def broadcast(self, source: NodeId, payload: object = None) -> str:
        """Start a Plumtree broadcast at ``source`` now; return its message id."""
        node = self.node(source)
        if not node.alive:
            raise ValueError(f"node {source!r} is not alive")
        effects = node.broadcast.broadcast(payload, self.now)
        message_id = next(e.message_id for e in effects if isinstance(e, Deliver))
        self._broadcasts[message_id] = BroadcastRecord(message_id, node.index, self.now)
        self._apply(node, effects)
        self._reschedule(node)
        return message_id

    def replace_broadcast_layer(self, config: PlumtreeConfig) -> None:
        """Give every node a fresh Plumtree with ``config`` over its current neighbours.

        Used to compare broadcast variants (Plumtree against eager flooding) on one and
        the same overlay. Call only when no broadcast traffic is in flight.
        """
        for node in self.nodes:
            rng = random.Random(self.rng.getrandbits(64))
            node.broadcast = Plumtree(node.node_id, config, rng)
            if node.alive:
                for peer in node.membership.neighbors:
                    node.broadcast.handle(NeighborUp(peer), self.now)

    def record(self, message_id: str) -> BroadcastRecord:
        """The delivery record of a broadcast started with :meth:`broadcast`."""
        return self._broadcasts[message_id]

    # ------------------------------------------------------------------ running

    def run_until(self, end: float) -> None:
        """Process every event up to virtual time ``end``; the clock ends at ``end``."""
        heap = self._heap
        nodes = self.nodes
        pop = heapq.heappop
        processed = 0
        while heap and heap[0][0] <= end:
            time, _, kind, target, peer_index, payload = pop(heap)
            node = nodes[target]
            if not node.alive:
                continue
            self.now = time
            processed += 1
            if kind == _MESSAGE:
                if self._partitioned and nodes[peer_index].group != node.group:
                    continue
                if type(payload) in _PLUMTREE_MESSAGES:
                    effects = node.broadcast.handle(payload, time)
                else:
                    effects = node.membership.handle(payload, time)
            elif kind == _LINK_EVENT:
                effects = node.membership.handle(payload, time)
            elif kind == _LINK_FAILURE:
                # The payload is the generation of the connection the failure was seen on.
                if self._link_generation.get(_pair(target, peer_index), 0) != payload:
                    continue  # that connection was replaced by a newer one
                effects = node.membership.handle(LinkDown(nodes[peer_index].node_id), time)
            elif kind == _TICK:
                if time != node.tick_at:
                    continue  # superseded by an earlier deadline
                node.tick_at = _INFINITY
                effects = node.membership.tick(time)
                effects.extend(node.broadcast.tick(time))
            else:
                effects = node.membership.membership_round(time)
                if self.config.anti_entropy_in_rounds:
                    effects.extend(node.broadcast.anti_entropy_round(time))
            if effects:
                self._apply(node, effects)
            self._reschedule(node)
        self.events_processed += processed
        if end > self.now:
            self.now = end

    def run_until_quiet(self, limit: float = 600.0) -> bool:
        """Run until no event is left, at most ``limit`` virtual seconds; True if quiet.

        Periodic maintenance does not run by itself here, so an overlay at rest goes
        quiet once its protocol timers have fired.
        """
        end = self.now + limit
        while self._heap and self._heap[0][0] <= end:
            self.run_until(min(end, self._heap[0][0] + self.config.round_period))
        return not self._heap

    def run_membership_round(self) -> int:
        """Run one membership round; return the messages sent during it.

        Each live joined node runs its membership round (and, if configured, a Plumtree
        anti-entropy exchange) once, at a random offset within ``round_period``; the
        clock then advances by one period.
        """
        before = self.messages_sent
        start = self.now
        period = self.config.round_period
        for node in self.nodes:
            if node.alive and node.joined:
                self._push(start + period * self.rng.random(), _ROUND, node.index, -1, None)
        self.run_until(start + period)
        return self.messages_sent - before

    def reset_counters(self) -> None:
        """Zero the message counters."""
        self.messages_sent = 0
        self.messages_by_type = {}

    # ------------------------------------------------------------------ internals

    def _push(self, time: float, kind: int, target: int, peer: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, kind, target, peer, payload))

    def _link_failure(self, node_index: int, peer_index: int, delay: float) -> None:
        """Schedule a LinkDown at ``node_index`` for its current connection to the peer."""
        generation = self._link_generation.get(_pair(node_index, peer_index), 0)
        self._push(self.now + delay, _LINK_FAILURE, node_index, peer_index, generation)

    def _latency(self, source: int, target: int) -> float:
        config = self.config
        # A cheap deterministic hash of the directed pair: constant per pair keeps each
        # link FIFO, which HyParView's handshakes rely on just as they rely on TCP.
        mixed = ((source * 1_000_003 + target) * 2_654_435_761 + self._latency_salt) & 0xFFFFFF
        return config.latency_min + (config.latency_max - config.latency_min) * (mixed / 0xFFFFFF)

    def _reschedule(self, node: SimNode) -> None:
        deadline = node.membership.next_deadline()
        other = node.broadcast.next_deadline()
        if other is not None and (deadline is None or other < deadline):
            deadline = other
        if deadline is not None and deadline < node.tick_at:
            if deadline < self.now:
                deadline = self.now
            node.tick_at = deadline
            self._push(deadline, _TICK, node.index, -1, None)

    def _apply(self, node: SimNode, effects: list[object]) -> None:
        for effect in effects:
            match effect:
                case Send():
                    self._send(node, effect)
                case Deliver():
                    self._record_delivery(node, effect)
                case NeighborUp() | NeighborDown():
                    self._apply(node, node.broadcast.handle(effect, self.now))
                case Connect(peer=peer):
                    target = self._index.get(peer)
                    if target is None or not self._reachable(node, self.nodes[target]):
                        self._push(
                            self.now + self.config.connect_timeout,
                            _LINK_EVENT,
                            node.index,
                            -1,
                            ConnectFailed(peer),
                        )
                    else:
                        # A fresh connection replaces any earlier one, broken or not.
                        pair = _pair(node.index, target)
                        self._link_generation[pair] = self._link_generation.get(pair, 0) + 1
                        self._broken_links.discard(pair)
                case CloseLink():
                    # Links are implicit in the simulated network; the protocols tell the
                    # other side themselves (DISCONNECT), so closing needs no event.
                    continue
                case _:
                    raise TypeError(f"the simulator cannot carry out {type(effect).__name__}")

    def _reachable(self, source: SimNode, target: SimNode) -> bool:
        return target.alive and (not self._partitioned or source.group == target.group)

    def _send(self, node: SimNode, effect: Send) -> None:
        message = effect.message
        type_name = type(message).__name__
        self.messages_sent += 1
        counts = self.messages_by_type
        counts[type_name] = counts.get(type_name, 0) + 1
        if type(message) is Gossip:
            record = self._broadcasts.get(message.message_id)
            if record is not None:
                record.payload_sends += 1
        target_index = self._index.get(effect.to)
        if target_index is None:
            return
        target = self.nodes[target_index]
        broken = bool(self._broken_links) and _pair(node.index, target_index) in self._broken_links
        if broken or not self._reachable(node, target):
            if node.membership.is_active(effect.to):
                self._link_failure(node.index, target_index, self.config.send_failure_delay)
            return
        if self.config.loss_rate and self.rng.random() < self.config.loss_rate:
            return
        delay = self._latency(node.index, target_index)
        self._push(self.now + delay, _MESSAGE, target_index, node.index, message)

    def _record_delivery(self, node: SimNode, deliver: Deliver) -> None:
        record = self._broadcasts.get(deliver.message_id)
        if record is None:
            return
        if node.index in record.delivered:
            record.duplicate_deliveries += 1
            return
        record.delivered.add(node.index)
        if deliver.round > record.last_delivery_hop:
            record.last_delivery_hop = deliver.round
        record.last_delivery_at = self.now

    # ------------------------------------------------------------------ metrics

    def components(self) -> list[list[int]]:
        """Connected components of the active-view graph among live joined nodes.

        An edge exists when either end lists the other and a message can cross it (not
        across a partition, not over a link a partition broke). Largest component first.
        """
        index = self._index
        nodes = self.nodes
        live = [node.index for node in nodes if node.alive and node.joined]
        adjacency: dict[int, list[int]] = {i: [] for i in live}
        for i in live:
            for peer in nodes[i].membership.neighbors:
                j = index.get(peer)
                if j is not None and j in adjacency and self._linked(i, j):
                    adjacency[i].append(j)
                    adjacency[j].append(i)
        seen: set[int] = set()
        components: list[list[int]] = []
        for start in live:
            if start in seen:
                continue
            seen.add(start)
            stack = [start]
            component = []
            while stack:
                current = stack.pop()
                component.append(current)
                for neighbour in adjacency[current]:
                    if neighbour not in seen:
                        seen.add(neighbour)
                        stack.append(neighbour)
            components.append(component)
        components.sort(key=len, reverse=True)
        return components

    def _linked(self, first: int, second: int) -> bool:
        if self._partitioned and self.nodes[first].group != self.nodes[second].group:
            return False
        return not self._broken_links or _pair(first, second) not in self._broken_links

    def largest_component_fraction(self) -> float:
        """Share of live joined nodes in the largest component (1.0 = connected)."""
        components = self.components()
        total = sum(len(c) for c in components)
        return len(components[0]) / total if total else 1.0

    def symmetry(self) -> float:
        """Share of active-view entries between live nodes that are reciprocated.

        Entries across a partition, or over a link a partition broke, are left out: no
        message crosses them, and each end drops the other only when it notices.
        """
        index = self._index
        nodes = self.nodes
        entries = reciprocated = 0
        for node in nodes:
            if not node.alive:
                continue
            for peer in node.membership.neighbors:
                j = index.get(peer)
                if j is None or not nodes[j].alive:
                    continue
                if not self._linked(node.index, j):
                    continue
                entries += 1
                if nodes[j].membership.is_active(node.node_id):
                    reciprocated += 1
        return reciprocated / entries if entries else 1.0

    def reliability(self, message_id: str, among: Iterable[int] | None = None) -> float:
        """Share of live joined nodes (or of ``among``) that delivered the broadcast."""
        record = self._broadcasts[message_id]
        if among is None:
            among = [node.index for node in self.nodes if node.alive and node.joined]
        population = list(among)
        if not population:
            return 1.0
        delivered = record.delivered
        return sum(1 for i in population if i in delivered) / len(population)

    def rmr(self, message_id: str) -> float:
        """Relative message redundancy ``m / (n - 1) - 1`` (0 is optimal).

        ``m`` counts payload (GOSSIP) messages sent for the broadcast, ``n`` the nodes
        that delivered it. Undefined (``nan``) when fewer than two nodes delivered.
        """
        record = self._broadcasts[message_id]
        delivered = len(record.delivered)
        if delivered < 2:
            return float("nan")
        return record.payload_sends / (delivered - 1) - 1.0

    def last_delivery_hop(self, message_id: str) -> int:
        """Hops travelled to the last node that delivered the broadcast (LDH)."""
        return self._broadcasts[message_id].last_delivery_hop
