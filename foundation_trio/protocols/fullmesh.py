"""Full-mesh overlay, sans-IO: every node links to every member it learns of.

This is distributed Erlang's topology: simple, one hop to anyone, and quadratic in links,
so it suits clusters of tens of nodes (see ``docs/membership.md``). The same machinery,
with a rule for which roles link to which, gives the client-server overlay of
:mod:`foundation_trio.protocols.client_server`.

Protocol: a joiner connects to its contact and sends ``HELLO`` with its role and the
members it knows; the receiver links back when its rule allows, merges the list, connects
to the members it did not know, and answers with a ``HELLO`` marked as a reply carrying
what it knows. Every ``gossip_period`` (or :meth:`MeshOverlay.membership_round`) a node
sends its member list to one random neighbour, so knowledge spreads even when a HELLO was
lost. A broken link or a failed connect removes the member; ``GOODBYE`` announces a
departure. Effects and link events are those of :mod:`foundation_trio.protocols.common`.
"""

from __future__ import annotations

import abc
import random
from typing import Final

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
    require_positive,
)

__all__ = ["FullMesh", "Goodbye", "Hello", "MeshConfig", "MeshOverlay"]

PEER_ROLE: Final = "peer"


@attrs.frozen(slots=True)
class MeshConfig:
    """``gossip_period``: seconds between member-list exchanges run by ``tick`` (None =
    the owner calls ``membership_round``); ``connect_timeout``: how long a link attempt
    may stay unanswered before the member is forgotten."""

    gossip_period: float | None = 10.0
    connect_timeout: float = 5.0

    def __attrs_post_init__(self) -> None:
        if self.gossip_period is not None:
            require_positive("MeshConfig", "gossip_period", self.gossip_period)
        require_positive("MeshConfig", "connect_timeout", self.connect_timeout)


@attrs.frozen(slots=True)
class Hello:
    """``sender`` (with ``role``) announces itself and the members it knows."""

    sender: NodeId
    role: str
    members: tuple[tuple[NodeId, str], ...]
    is_reply: bool


@attrs.frozen(slots=True)
class Goodbye:
    """``sender`` leaves the cluster."""

    sender: NodeId


class MeshOverlay(abc.ABC):
    """A mesh whose links follow a role rule; see :class:`FullMesh` and the client-server
    overlay. Subclasses decide :meth:`initiates_to` and :meth:`accepts_from`."""

    __slots__ = (
        "_connecting",
        "_known",
        "_left",
        "_neighbors",
        "_next_gossip_at",
        "config",
        "node_id",
        "rng",
        "role",
    )

    def __init__(
        self,
        node_id: NodeId,
        role: str,
        config: MeshConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.role = role
        self.config = config if config is not None else MeshConfig()
        self.rng = rng if rng is not None else random.Random(0)
        self._neighbors: dict[NodeId, str] = {}
        self._known: dict[NodeId, str] = {}
        # Links we asked for and have no HELLO reply on yet: peer -> deadline.
        self._connecting: dict[NodeId, float] = {}
        self._next_gossip_at: float | None = None
        self._left = False

    # ------------------------------------------------------------------ rules

    @abc.abstractmethod
    def initiates_to(self, peer_role: str) -> bool:
        """Whether this node opens a link to a member with ``peer_role``."""

    @abc.abstractmethod
    def accepts_from(self, peer_role: str) -> bool:
        """Whether this node keeps a link opened by a member with ``peer_role``."""

    # ------------------------------------------------------------------ inspection

    @property
    def neighbors(self) -> tuple[NodeId, ...]:
        """Members with an established link, in the order they were linked."""
        return tuple(self._neighbors)

    @property
    def known_members(self) -> dict[NodeId, str]:
        """Every member this node knows of (linked or not), with its role."""
        return dict(self._known)

    def is_active(self, peer: NodeId) -> bool:
        """Whether ``peer`` is a linked neighbour."""
        return peer in self._neighbors

    def is_connecting(self, peer: NodeId) -> bool:
        """Whether a link to ``peer`` was asked for (:class:`Connect`) and its
        ``HELLO`` answer is still awaited (until ``connect_timeout``)."""
        return peer in self._connecting

    def next_deadline(self) -> float | None:
        """Earliest time at which :meth:`tick` has work to do, or None."""
        deadline = self._next_gossip_at
        if self._connecting:
            earliest = min(self._connecting.values())
            if deadline is None or earliest < deadline:
                deadline = earliest
        return deadline

    # ------------------------------------------------------------------ local API

    def join(self, contact: NodeId, now: float) -> list[object]:
        """Contact ``contact``; its reply brings the member list. Failure comes back as
        :class:`ConnectFailed` and the caller picks another contact."""
        if contact == self.node_id:
            raise ValueError(f"node {self.node_id!r} cannot join through itself")
        self._left = False
        self._arm_gossip(now)
        out: list[object] = []
        self._open(contact, now, out)
        return out

    def leave(self, now: float) -> list[object]:
        """Say goodbye to every neighbour, close every link and forget the cluster."""
        out: list[object] = []
        for peer in self._neighbors:
            out.append(Send(peer, Goodbye(self.node_id)))
            out.append(CloseLink(peer))
            out.append(NeighborDown(peer))
        out.extend(CloseLink(peer) for peer in self._connecting)
        self._neighbors.clear()
        self._known.clear()
        self._connecting.clear()
        self._next_gossip_at = None
        self._left = True
        return out

    def membership_round(self, now: float) -> list[object]:
        """Send the member list to one random neighbour."""
        if self._left or not self._neighbors:
            return []
        peer = self.rng.choice(list(self._neighbors))
        return [Send(peer, Hello(self.node_id, self.role, self._member_list(), False))]

    def tick(self, now: float) -> list[object]:
        """Give up on unanswered link attempts and run a due gossip round."""
        out: list[object] = []
        expired = [peer for peer, deadline in self._connecting.items() if deadline <= now]
        for peer in expired:
            del self._connecting[peer]
            self._known.pop(peer, None)
            out.append(CloseLink(peer))
        if self._next_gossip_at is not None and self._next_gossip_at <= now:
            period = self.config.gossip_period
            assert period is not None  # armed only when a period is configured
            self._next_gossip_at = now + period
            out.extend(self.membership_round(now))
        return out

    def handle(self, event: object, now: float) -> list[object]:
        """Process a received message or link event; ``TypeError`` for anything else."""
        out: list[object] = []
        if isinstance(event, Hello):
            if not self._left:
                self._on_hello(event, now, out)
        elif isinstance(event, Goodbye):
            self._forget(event.sender, out)
        elif isinstance(event, LinkDown | ConnectFailed):
            self._forget(event.peer, out)
        else:
            raise TypeError(f"{type(self).__name__} cannot handle {type(event).__name__}")
        return out

    # ------------------------------------------------------------------ internals

    def _on_hello(self, hello: Hello, now: float, out: list[object]) -> None:
        sender = hello.sender
        if sender == self.node_id:
            return
        self._known[sender] = hello.role
        was_connecting = self._connecting.pop(sender, None) is not None
        if self.accepts_from(hello.role) or (was_connecting and self.initiates_to(hello.role)):
            if sender not in self._neighbors:
                self._neighbors[sender] = hello.role
                self._arm_gossip(now)
                out.append(NeighborUp(sender))
        elif was_connecting or not hello.is_reply:
            # Not a peer we link with (a client reached through another client): keep
            # what it told us, but no link.
            out.append(CloseLink(sender))
        for member, role in hello.members:
            if member == self.node_id or member in self._known:
                continue
            self._known[member] = role
            if self.initiates_to(role):
                self._open(member, now, out)
        if not hello.is_reply:
            out.append(Send(sender, Hello(self.node_id, self.role, self._member_list(), True)))

    def _open(self, peer: NodeId, now: float, out: list[object]) -> None:
        if peer in self._neighbors or peer in self._connecting:
            return
        self._connecting[peer] = now + self.config.connect_timeout
        out.append(Connect(peer))
        out.append(Send(peer, Hello(self.node_id, self.role, self._member_list(), False)))

    def _forget(self, peer: NodeId, out: list[object]) -> None:
        self._known.pop(peer, None)
        self._connecting.pop(peer, None)
        if self._neighbors.pop(peer, None) is not None:
            out.append(NeighborDown(peer))

    def _member_list(self) -> tuple[tuple[NodeId, str], ...]:
        return tuple(self._known.items())

    def _arm_gossip(self, now: float) -> None:
        period = self.config.gossip_period
        if period is not None and self._next_gossip_at is None:
            self._next_gossip_at = now + period * self.rng.random()


class FullMesh(MeshOverlay):
    """Every node links to every member it learns of."""

    __slots__ = ()

    def __init__(
        self, node_id: NodeId, config: MeshConfig | None = None, rng: random.Random | None = None
    ) -> None:
        super().__init__(node_id, PEER_ROLE, config, rng)

    def initiates_to(self, peer_role: str) -> bool:
        """A full-mesh node links to everyone."""
        return True

    def accepts_from(self, peer_role: str) -> bool:
        """A full-mesh node accepts everyone."""
        return True
