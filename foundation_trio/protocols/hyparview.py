"""HyParView partial-view membership (Leitão, Pereira, Rodrigues, DSN 2007), sans-IO.

Each node keeps two views of the cluster:

* the **active view**, small (5) and symmetric: a live link to every member; broadcast
  layers (Plumtree) disseminate over it. Link breakage is the failure detector.
* the **passive view**, larger (30): node ids without links, kept fresh by periodic
  random-walk shuffles, from which failed active members are replaced.

Protocol summary (see ``docs/membership.md``):

* ``JOIN``: the contact puts the joiner in its active view (evicting a random member with
  ``DISCONNECT`` when full), answers ``JOIN_ACCEPT`` and sends ``FORWARDJOIN(ttl=ARWL)``
  to every other active member. A ``FORWARDJOIN`` walk ends, adding the joiner to the
  active view, when its ttl reaches 0 or the node has a single active member; at
  ``ttl == PRWL`` the joiner is also put in the passive view.
* ``NEIGHBOR(priority)`` promotes a passive node: high priority when the requester's
  active view is empty (always accepted, evicting if needed), low otherwise (accepted only
  with a free slot). A rejection, timeout or failed connect moves on to another passive
  candidate.
* ``SHUFFLE`` carries the sender, ``ka`` active and ``kp`` passive ids on a random walk of
  ``shuffle_walk_length`` hops; the node where it ends replies ``SHUFFLEREPLY`` with as
  many of its passive ids and both merge, evicting first the ids they sent.
* ``DISCONNECT(leaving)`` removes the sender from the receiver's active view; the sender
  goes to the passive view unless it is leaving the cluster.
* Extension (``probe_active_view``): a node sends a ``PROBE`` on every active link when
  it refuses a low-priority ``NEIGHBOR`` because its view looks full, and when one of its
  active links fails. When links are the only failure detector, a node whose members
  crashed does not know it until it sends: the probe checks the view a refusal is based
  on, and after one failure (failures are often correlated) finds the others, so that
  the node's own requests carry the right priority. A slot freed that way goes first to
  a node that asked for one recently.
* Extension (``check_passive_per_failure``, off by default): a node that loses an active
  member also sends a :class:`CheckView` to passive entries: ``m`` times that many for
  the ``m``-th member lost within ``neighbor_request_timeout``, an entry at most once
  per that window. The receiver probes its own active view and, if it needs a
  neighbour, asks the sender first. Under detect-on-send, a survivor whose members all
  crashed at once learns it only when it sends; if nobody asks it for a slot it stays
  silent until its own shuffle. The nodes that hold it in their passive view are the
  ones that can wake it, and after a mass failure those are the nodes that just lost
  members, several each.

Effects and link events are the records of :mod:`foundation_trio.protocols.common`.
Timers run from :meth:`HyParView.tick`; with ``shuffle_period=None`` the owner runs the
periodic maintenance itself through :meth:`HyParView.membership_round` (the simulator does,
to reproduce the paper's round-based method).

Messages carry their ``sender``; a driver must check that it matches the authenticated
peer of the link a message arrived on before handing it to :meth:`HyParView.handle`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import ClassVar

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

__all__ = [
    "CheckView",
    "Disconnect",
    "ForwardJoin",
    "HyParView",
    "HyParViewConfig",
    "Join",
    "JoinAccept",
    "Neighbor",
    "NeighborReply",
    "Probe",
    "Shuffle",
    "ShuffleReply",
]


@attrs.frozen(slots=True)
class HyParViewConfig:
    """HyParView parameters; defaults are the paper's (shuffle period from Partisan).

    ``shuffle_period`` is the seconds between two maintenance rounds (shuffle, refill of
    an under-full active view) run by :meth:`HyParView.tick`; ``None`` leaves them to the
    owner. ``neighbor_request_timeout`` bounds the wait for a ``NEIGHBOR`` answer before
    the next passive candidate is tried. ``full_view_accept_probability`` is an
    extension: the chance that a node with a full active view still accepts a
    low-priority ``NEIGHBOR`` (evicting a random member); 0, the paper's rule, by default.
    ``probe_active_view`` (an extension, on by default) makes a node send a
    :class:`Probe` on each active link (at most once per ``neighbor_request_timeout``)
    when it refuses a low-priority ``NEIGHBOR`` for want of a free slot and when an
    active link fails, so that members that crashed silently are found by the failed
    sends; a slot freed that way is offered first to the refused requester.
    ``check_passive_per_failure`` (an extension, 0 = off by default) makes a node that
    loses its ``m``-th active member within ``neighbor_request_timeout`` send a
    :class:`CheckView` to ``m`` times that many random passive entries not sent one in
    that window: each receiver probes its own active view, so a survivor whose members
    all crashed silently finds out without sending anything itself, and asks the sender
    (alive, with a slot just freed) first. Cost, only after a failure: for a lone crash,
    ``check_passive_per_failure`` messages (and transient connections) per neighbour of
    the dead node; never more than ``passive_view_size`` per node per
    ``neighbor_request_timeout``; each live receiver probes its active view (at most
    ``active_view_size`` messages, once per ``neighbor_request_timeout``).
    """

    active_view_size: int = 5
    passive_view_size: int = 30
    active_random_walk_length: int = 6
    passive_random_walk_length: int = 3
    shuffle_walk_length: int = 6
    shuffle_active_count: int = 3
    shuffle_passive_count: int = 4
    shuffle_period: float | None = 10.0
    neighbor_request_timeout: float = 5.0
    full_view_accept_probability: float = 0.0
    probe_active_view: bool = True
    check_passive_per_failure: int = 0

    def __attrs_post_init__(self) -> None:
        owner = "HyParViewConfig"
        for name in (
            "active_view_size",
            "passive_view_size",
            "active_random_walk_length",
            "shuffle_walk_length",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{owner}.{name} must be an integer >= 1, got {value!r}")
        for name in (
            "passive_random_walk_length",
            "shuffle_active_count",
            "shuffle_passive_count",
            "check_passive_per_failure",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{owner}.{name} must be an integer >= 0, got {value!r}")
        if self.passive_random_walk_length > self.active_random_walk_length:
            raise ValueError(
                f"{owner}.passive_random_walk_length ({self.passive_random_walk_length}) must"
                f" not exceed active_random_walk_length ({self.active_random_walk_length}):"
                " the walk would never reach it"
            )
        if self.shuffle_period is not None:
            require_positive(owner, "shuffle_period", self.shuffle_period)
        require_positive(owner, "neighbor_request_timeout", self.neighbor_request_timeout)
        if not 0.0 <= self.full_view_accept_probability <= 1.0:
            raise ValueError(
                f"{owner}.full_view_accept_probability must be in [0, 1],"
                f" got {self.full_view_accept_probability!r}"
            )


@attrs.frozen(slots=True)
class Join:
    """``sender`` asks the receiver (its contact) to let it into the overlay."""

    sender: NodeId


@attrs.frozen(slots=True)
class JoinAccept:
    """``sender`` put the receiver in its active view; the receiver must reciprocate."""

    sender: NodeId


@attrs.frozen(slots=True)
class ForwardJoin:
    """Random walk announcing ``new_node``; ``ttl`` hops remain."""

    sender: NodeId
    new_node: NodeId
    ttl: int


@attrs.frozen(slots=True)
class Neighbor:
    """``sender`` asks to enter the receiver's active view."""

    sender: NodeId
    high_priority: bool


@attrs.frozen(slots=True)
class NeighborReply:
    """Answer to :class:`Neighbor`; on ``accepted`` both are now active neighbours."""

    sender: NodeId
    accepted: bool


@attrs.frozen(slots=True)
class Probe:
    """No-op message that exercises an active link: on a dead link the send fails."""

    sender: NodeId


@attrs.frozen(slots=True)
class CheckView:
    """``sender`` lost an active member: the receiver should check its own active view."""

    sender: NodeId


@attrs.frozen(slots=True)
class Disconnect:
    """``sender`` dropped the receiver from its active view (or is leaving the cluster)."""

    sender: NodeId
    leaving: bool


@attrs.frozen(slots=True)
class Shuffle:
    """Shuffle walk started by ``origin`` carrying ``node_ids``; ``ttl`` hops remain."""

    sender: NodeId
    origin: NodeId
    ttl: int
    node_ids: tuple[NodeId, ...]


@attrs.frozen(slots=True)
class ShuffleReply:
    """End of a shuffle walk: passive ids of ``sender`` for the walk's origin."""

    sender: NodeId
    node_ids: tuple[NodeId, ...]


_Handler = Callable[["HyParView", object, float, list[object]], None]


class HyParView:
    """One node's HyParView state machine.

    Feed it messages and link events with :meth:`handle`, call :meth:`tick` when
    :meth:`next_deadline` is reached, and carry out the effects each call returns, in
    order. ``rng`` is the only source of randomness.
    """

    __slots__ = (
        "_active",
        "_checked",
        "_last_check_probe_at",
        "_last_probe_at",
        "_last_shuffle_sent",
        "_left",
        "_losses",
        "_next_shuffle_at",
        "_passive",
        "_pending",
        "_tried",
        "_wanting",
        "config",
        "node_id",
        "rng",
    )

    _HANDLERS: ClassVar[dict[type, _Handler]] = {}

    def __init__(
        self,
        node_id: NodeId,
        config: HyParViewConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config if config is not None else HyParViewConfig()
        self.rng = rng if rng is not None else random.Random(0)
        # Lists, not sets: iteration order must not depend on string hashing, or a seeded
        # run would not replay.
        self._active: list[NodeId] = []
        self._passive: list[NodeId] = []
        # Outstanding NEIGHBOR requests: candidate -> deadline for its answer.
        self._pending: dict[NodeId, float] = {}
        # Passive candidates already tried since the last maintenance round.
        self._tried: set[NodeId] = set()
        # Live nodes short of neighbours -> when we heard from them: requesters refused
        # for want of a free slot, senders of CheckView. Offered a slot first.
        self._wanting: dict[NodeId, float] = {}
        self._last_probe_at: float | None = None
        # Passive entries sent a CheckView -> when; and the last probe a received
        # CheckView caused (rate-limited on its own: a routine probe moments earlier
        # may predate the crash the CheckView reports).
        self._checked: dict[NodeId, float] = {}
        # When active members were lost within the last neighbor_request_timeout.
        self._losses: list[float] = []
        self._last_check_probe_at: float | None = None
        self._last_shuffle_sent: tuple[NodeId, ...] = ()
        self._next_shuffle_at: float | None = None
        self._left = False

    # ------------------------------------------------------------------ inspection

    @property
    def active_view(self) -> tuple[NodeId, ...]:
        """Active-view members, in the order they were added."""
        return tuple(self._active)

    @property
    def neighbors(self) -> tuple[NodeId, ...]:
        """The overlay neighbours: the active view (same name as the mesh overlays)."""
        return tuple(self._active)

    @property
    def passive_view(self) -> tuple[NodeId, ...]:
        """Passive-view members, in the order they were added."""
        return tuple(self._passive)

    @property
    def pending_neighbor_requests(self) -> tuple[NodeId, ...]:
        """Passive candidates asked with ``NEIGHBOR`` and not answered yet."""
        return tuple(self._pending)

    @property
    def has_left(self) -> bool:
        """True once :meth:`leave` was called; the node then ignores all traffic."""
        return self._left

    def is_active(self, peer: NodeId) -> bool:
        """Whether ``peer`` is in the active view."""
        return peer in self._active

    def next_deadline(self) -> float | None:
        """Earliest time at which :meth:`tick` has work to do, or None."""
        deadline = self._next_shuffle_at
        if self._pending:
            earliest = min(self._pending.values())
            if deadline is None or earliest < deadline:
                deadline = earliest
        return deadline

    # ------------------------------------------------------------------ local API

    def join(self, contact: NodeId, now: float) -> list[object]:
        """Join the overlay through ``contact``.

        May be called again at any time to re-join through a discovery contact, which is
        how a split overlay is merged after a partition heals. If ``contact`` cannot be
        reached the driver reports :class:`ConnectFailed` and the caller should try
        another contact; the core does not pick one itself.
        """
        if contact == self.node_id:
            raise ValueError(f"node {self.node_id!r} cannot join through itself")
        self._left = False
        self._arm_shuffle(now)
        return [Connect(contact), Send(contact, Join(self.node_id))]

    def leave(self, now: float) -> list[object]:
        """Leave the cluster: tell every active member, close every link, forget all."""
        out: list[object] = []
        for peer in self._active:
            out.append(Send(peer, Disconnect(self.node_id, leaving=True)))
            out.append(CloseLink(peer))
            out.append(NeighborDown(peer))
        out.extend(CloseLink(peer) for peer in self._pending)
        self._active.clear()
        self._passive.clear()
        self._pending.clear()
        self._tried.clear()
        self._wanting.clear()
        self._checked.clear()
        self._losses.clear()
        self._next_shuffle_at = None
        self._left = True
        return out

    def add_passive(self, node_ids: Iterable[NodeId]) -> None:
        """Remember ``node_ids`` as backups in the passive view (random evictions when
        full), for a driver that learnt members elsewhere: an overlay switch, discovery."""
        for peer in node_ids:
            self._add_passive(peer, ())

    def membership_round(self, now: float) -> list[object]:
        """Run one maintenance round: refill an under-full active view, then shuffle.

        The shuffle goes to a random active member, so a dead member is also discovered
        here (the send fails and the driver reports :class:`LinkDown`).
        """
        if self._left:
            return []
        out: list[object] = []
        self._tried.clear()
        self._refill(now, out)
        if self._active:
            config = self.config
            active_sample = self.rng.sample(
                self._active, min(config.shuffle_active_count, len(self._active))
            )
            passive_sample = self.rng.sample(
                self._passive, min(config.shuffle_passive_count, len(self._passive))
            )
            sent = (self.node_id, *active_sample, *passive_sample)
            self._last_shuffle_sent = sent
            target = self.rng.choice(self._active)
            shuffle = Shuffle(self.node_id, self.node_id, config.shuffle_walk_length, sent)
            out.append(Send(target, shuffle))
        return out

    def tick(self, now: float) -> list[object]:
        """Expire unanswered ``NEIGHBOR`` requests and run a due maintenance round."""
        out: list[object] = []
        if self._pending:
            expired = [peer for peer, deadline in self._pending.items() if deadline <= now]
            for peer in expired:
                del self._pending[peer]
                out.append(CloseLink(peer))
            if expired:
                self._refill(now, out)
        if self._next_shuffle_at is not None and self._next_shuffle_at <= now:
            period = self.config.shuffle_period
            assert period is not None  # armed only when a period is configured
            self._next_shuffle_at = now + period
            out.extend(self.membership_round(now))
        return out

    def handle(self, event: object, now: float) -> list[object]:
        """Process one received message or link event; return the effects to carry out.

        Raises ``TypeError`` for an object that is not a HyParView message or link event.
        """
        handler = self._HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"HyParView cannot handle {type(event).__name__}")
        out: list[object] = []
        if self._left and type(event) is not Neighbor:
            return out
        handler(self, event, now, out)
        return out

    # ------------------------------------------------------------------ handlers

    def _on_join(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, Join)
        joiner = event.sender
        if joiner == self.node_id:
            return
        self._add_active(joiner, now, out)
        out.append(Send(joiner, JoinAccept(self.node_id)))
        walk = ForwardJoin(self.node_id, joiner, self.config.active_random_walk_length)
        out.extend(Send(peer, walk) for peer in self._active if peer != joiner)

    def _on_join_accept(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, JoinAccept)
        peer = event.sender
        if peer == self.node_id or peer in self._active:
            return
        self._add_active(peer, now, out)
        # Confirm the link. If we had evicted this peer while its JOIN_ACCEPT was on the
        # way, our DISCONNECT crossed it and the peer has dropped us; the confirmation
        # arrives after that DISCONNECT (links are FIFO) and re-establishes both sides.
        out.append(Send(peer, JoinAccept(self.node_id)))

    def _on_forward_join(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, ForwardJoin)
        new_node = event.new_node
        if new_node == self.node_id:
            return
        if event.ttl > 0 and len(self._active) > 1:
            if event.ttl == self.config.passive_random_walk_length:
                self._add_passive(new_node, ())
            candidates = [p for p in self._active if p != event.sender and p != new_node]
            if candidates:
                forward = ForwardJoin(self.node_id, new_node, event.ttl - 1)
                out.append(Send(self.rng.choice(candidates), forward))
                return
        # The walk ends here: take the joiner as an active neighbour.
        if new_node not in self._active:
            # Connect first: NeighborUp lets the broadcast layer send on the link at once.
            out.append(Connect(new_node))
            self._add_active(new_node, now, out)
            out.append(Send(new_node, JoinAccept(self.node_id)))

    def _on_neighbor(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, Neighbor)
        requester = event.sender
        if self._left or requester == self.node_id:
            out.append(Send(requester, NeighborReply(self.node_id, accepted=False)))
            return
        if (
            requester in self._active
            or event.high_priority
            or len(self._active) < self.config.active_view_size
            or self.rng.random() < self.config.full_view_accept_probability
        ):
            self._add_active(requester, now, out)
            out.append(Send(requester, NeighborReply(self.node_id, accepted=True)))
        else:
            self._add_passive(requester, ())
            out.append(Send(requester, NeighborReply(self.node_id, accepted=False)))
            if self.config.probe_active_view:
                # Links are the failure detector, and a dead link is found only by using
                # it: a survivor whose members all crashed sees a full view and would
                # refuse every low-priority request until its next shuffle. Check the
                # view, and offer a slot the probes free to this requester first.
                self._remember_wanting(requester, now)
                self._probe_active_view(now, out)

    def _remember_wanting(self, peer: NodeId, now: float) -> None:
        wanting = self._wanting
        wanting.pop(peer, None)
        if len(wanting) >= self.config.active_view_size:
            del wanting[next(iter(wanting))]
        wanting[peer] = now

    def _probe_active_view(self, now: float, out: list[object]) -> None:
        """Send a :class:`Probe` on every active link; failures come back as LinkDown."""
        last = self._last_probe_at
        if last is not None and now - last < self.config.neighbor_request_timeout:
            return
        self._last_probe_at = now
        probe = Probe(self.node_id)
        out.extend(Send(peer, probe) for peer in self._active)

    def _on_probe(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, Probe)
        # Nothing to do: the message only tests the sender's link to us.

    def _check_passive_view(self, now: float, out: list[object]) -> None:
        """After the m-th active member lost within ``neighbor_request_timeout``, send
        :class:`CheckView` to ``m * check_passive_per_failure`` passive entries not sent
        one within that window (``passive_view_size`` at most per window).

        One lost member is a routine crash and costs little; each further loss makes a
        mass failure likelier, and with it backups whose members all died.
        """
        per_failure = self.config.check_passive_per_failure
        if per_failure == 0:
            return
        horizon = now - self.config.neighbor_request_timeout
        losses = [when for when in self._losses if when > horizon]
        losses.append(now)
        self._losses = losses
        checked = self._checked
        for peer in [peer for peer, when in checked.items() if when <= horizon]:
            del checked[peer]
        candidates = [
            peer for peer in self._passive if peer not in self._pending and peer not in checked
        ]
        # The passive view may churn within the window: the budget is what bounds the cost.
        budget = self.config.passive_view_size - len(checked)
        count = min(len(losses) * per_failure, len(candidates), budget)
        if count <= 0:
            return
        check = CheckView(self.node_id)
        for peer in self.rng.sample(candidates, count):
            checked[peer] = now
            # A transient connection, as for NEIGHBOR: a dead entry answers with
            # ConnectFailed and leaves the passive view.
            out.append(Connect(peer))
            out.append(Send(peer, check))

    def _on_check_view(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, CheckView)
        sender = event.sender
        if sender == self.node_id:
            return
        if sender not in self._active:
            # Alive a moment ago and with a slot just freed: the best candidate we have.
            self._remember_wanting(sender, now)
            # Into the passive view only if there is room: after a mass failure many
            # nodes check at once, and random evictions for their sake would drop the
            # entries through which other silent survivors can still be reached.
            if len(self._passive) < self.config.passive_view_size:
                self._add_passive(sender, ())
        # Sending is how a dead member is found: probe the view whatever
        # probe_active_view says (the sender asked for exactly this). A probe made for
        # another reason moments ago may predate the crash, so this one has its own
        # rate limit.
        last = self._last_check_probe_at
        if last is None or now - last >= self.config.neighbor_request_timeout:
            self._last_check_probe_at = now
            probe = Probe(self.node_id)
            out.extend(Send(peer, probe) for peer in self._active)
        self._refill(now, out)

    def _on_neighbor_reply(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, NeighborReply)
        peer = event.sender
        if self._pending.pop(peer, None) is None:
            # Unsolicited or too late (we timed out and moved on). The peer put us in its
            # active view on acceptance; undo that so both views stay symmetric.
            if event.accepted and peer not in self._active:
                out.append(Send(peer, Disconnect(self.node_id, leaving=False)))
                out.append(CloseLink(peer))
            return
        if event.accepted:
            self._add_active(peer, now, out)
        else:
            out.append(CloseLink(peer))
            self._refill(now, out)

    def _on_disconnect(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, Disconnect)
        peer = event.sender
        if peer in self._active:
            self._active.remove(peer)
            out.append(CloseLink(peer))
            out.append(NeighborDown(peer))
        if event.leaving:
            self._remove_passive(peer)
        else:
            self._add_passive(peer, ())
        # Replace the lost neighbour now. Waiting for the next maintenance round would
        # leave a node whose members all evicted it isolated meanwhile, and a join that
        # uses an isolated node as contact grows an island cut off from the overlay.
        self._refill(now, out)

    def _on_shuffle(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, Shuffle)
        origin = event.origin
        if origin == self.node_id:
            return
        ttl = event.ttl - 1
        if ttl > 0 and len(self._active) > 1:
            candidates = [p for p in self._active if p != event.sender and p != origin]
            if candidates:
                forward = Shuffle(self.node_id, origin, ttl, event.node_ids)
                out.append(Send(self.rng.choice(candidates), forward))
                return
        reply_ids = tuple(
            self.rng.sample(self._passive, min(len(event.node_ids), len(self._passive)))
        )
        out.append(Send(origin, ShuffleReply(self.node_id, reply_ids)))
        self._merge_passive(event.node_ids, reply_ids)

    def _on_shuffle_reply(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, ShuffleReply)
        self._merge_passive(event.node_ids, self._last_shuffle_sent)

    def _on_link_down(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, LinkDown | ConnectFailed)
        peer = event.peer
        # A broken link is HyParView's failure verdict: the peer is gone from both views.
        self._remove_passive(peer)
        self._wanting.pop(peer, None)
        if peer in self._active:
            self._active.remove(peer)
            out.append(NeighborDown(peer))
            self._refill(now, out)
            if self._active and self.config.probe_active_view:
                # Crashes are often correlated: check the remaining members too, so
                # that a node whose members all died finds its view empty and asks
                # for neighbours with high priority.
                self._probe_active_view(now, out)
            # The same correlation holds for the nodes that know us as a backup: one
            # whose members all died finds out only if somebody makes it send.
            self._check_passive_view(now, out)
        elif self._pending.pop(peer, None) is not None:
            self._refill(now, out)

    # ------------------------------------------------------------------ view helpers

    def _arm_shuffle(self, now: float) -> None:
        period = self.config.shuffle_period
        if period is not None and self._next_shuffle_at is None:
            # A random phase keeps the nodes' shuffles from marching in lockstep.
            self._next_shuffle_at = now + period * self.rng.random()

    def _add_active(self, peer: NodeId, now: float, out: list[object]) -> None:
        """Put ``peer`` in the active view, evicting a random member if it is full."""
        self._pending.pop(peer, None)
        if peer == self.node_id or peer in self._active:
            return
        if len(self._active) >= self.config.active_view_size:
            victim = self.rng.choice(self._active)
            self._active.remove(victim)
            out.append(Send(victim, Disconnect(self.node_id, leaving=False)))
            out.append(CloseLink(victim))
            out.append(NeighborDown(victim))
            self._add_passive(victim, ())
        self._remove_passive(peer)
        self._active.append(peer)
        self._arm_shuffle(now)
        out.append(NeighborUp(peer))

    def _add_passive(self, peer: NodeId, evict_first: Iterable[NodeId]) -> None:
        """Remember ``peer`` as a backup, evicting ``evict_first`` ids before random ones."""
        if peer == self.node_id or peer in self._active or peer in self._passive:
            return
        if len(self._passive) >= self.config.passive_view_size:
            victim: NodeId | None = None
            for candidate in evict_first:
                if candidate in self._passive:
                    victim = candidate
                    break
            if victim is None:
                victim = self.rng.choice(self._passive)
            self._passive.remove(victim)
            self._tried.discard(victim)
        self._passive.append(peer)

    def _remove_passive(self, peer: NodeId) -> None:
        if peer in self._passive:
            self._passive.remove(peer)

    def _merge_passive(self, node_ids: tuple[NodeId, ...], sent: tuple[NodeId, ...]) -> None:
        # Evict first the ids we just handed to the other side: they are not lost to the
        # overlay, and the view keeps the freshest knowledge.
        evictable = [peer for peer in sent if peer != self.node_id]
        for peer in node_ids:
            if peer == self.node_id or peer in self._active or peer in self._passive:
                continue
            self._add_passive(peer, evictable)
            if evictable and evictable[0] not in self._passive:
                evictable.pop(0)

    def _refill(self, now: float, out: list[object]) -> None:
        """Ask passive candidates to fill every free active slot (one request per slot)."""
        size = self.config.active_view_size
        while len(self._active) + len(self._pending) < size:
            candidate = self._recently_wanting(now)
            if candidate is not None:
                self._ask(candidate, now, out)
                continue
            candidates = [
                peer
                for peer in self._passive
                if peer not in self._pending and peer not in self._tried
            ]
            if not candidates:
                return
            self._ask(self.rng.choice(candidates), now, out)

    def _recently_wanting(self, now: float) -> NodeId | None:
        """Pop the latest node heard short of neighbours within ``neighbor_request_timeout``.

        It asked for a slot (or reported a lost member), so it was alive and short of
        neighbours moments ago: a better candidate than a random passive id, which may
        have crashed long since.
        """
        horizon = now - self.config.neighbor_request_timeout
        wanting = self._wanting
        while wanting:
            peer, when = wanting.popitem()
            if when >= horizon and peer not in self._active and peer not in self._pending:
                return peer
        return None

    def _ask(self, candidate: NodeId, now: float, out: list[object]) -> None:
        self._tried.add(candidate)
        self._pending[candidate] = now + self.config.neighbor_request_timeout
        high = not self._active
        out.append(Connect(candidate))
        out.append(Send(candidate, Neighbor(self.node_id, high_priority=high)))


HyParView._HANDLERS.update(
    {
        Join: HyParView._on_join,
        JoinAccept: HyParView._on_join_accept,
        ForwardJoin: HyParView._on_forward_join,
        Neighbor: HyParView._on_neighbor,
        NeighborReply: HyParView._on_neighbor_reply,
        Probe: HyParView._on_probe,
        CheckView: HyParView._on_check_view,
        Disconnect: HyParView._on_disconnect,
        Shuffle: HyParView._on_shuffle,
        ShuffleReply: HyParView._on_shuffle_reply,
        LinkDown: HyParView._on_link_down,
        ConnectFailed: HyParView._on_link_down,
    }
)
