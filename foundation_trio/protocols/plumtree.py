"""Plumtree epidemic broadcast trees (Leitão, Pereira, Rodrigues, SRDS 2007), sans-IO.

Plumtree runs over any overlay that reports :class:`~.common.NeighborUp` and
:class:`~.common.NeighborDown` (HyParView's active view, a full mesh, client-server). Each
node splits its neighbours into *eager* peers, which receive payloads at once, and *lazy*
peers, which only receive ``IHAVE`` announcements of message ids:

* First receipt of ``GOSSIP``: deliver, push the payload to the eager peers except the
  sender, queue ``IHAVE`` for the lazy peers (sent in one batch per peer every
  ``ihave_interval``), make sure the sender is eager.
* A duplicate ``GOSSIP`` means two eager paths: the receiver makes the sender lazy and
  answers ``PRUNE``, which makes the receiver lazy on the other side too. Eager links
  thus converge to a spanning tree.
* ``IHAVE`` for an unknown id starts timer 1 (``graft_timeout``); on expiry the node sends
  ``GRAFT`` to the first announcer, makes it eager and starts timer 2
  (``graft_retry_timeout``) before trying the next announcer. ``GRAFT`` makes the
  requester eager and is answered with the payload when it is cached.
* Round-gap optimisation: an ``IHAVE`` whose round is at least ``optimization_threshold``
  hops lower than the round the message was delivered with grafts that lazy link and
  prunes the eager one, so the tree keeps short paths.
* Anti-entropy: every ``anti_entropy_period`` (or when the owner calls
  :meth:`Plumtree.anti_entropy_round`) a node sends the ids it has cached to a random
  neighbour, which treats the ones it lacks as announcements (and so grafts them) and
  answers with the ids the first node lacks.
* Extension beyond the paper: a new neighbour receives an ``IHAVE`` of the messages this
  node received in the last ``neighbor_up_announce_window`` seconds, so a node that was
  cut off while a broadcast passed fetches it as soon as its overlay repairs.

Delivery is at most once per message id while the id is cached (``cache_size`` entries,
``cache_ttl`` seconds); an id announced again after it left the cache would be delivered
again.

``prune=False`` turns the protocol into eager flooding over the overlay (every neighbour
stays eager); it exists as the baseline the benchmarks compare against.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import ClassVar

import attrs

from foundation_trio.protocols.common import (
    NeighborDown,
    NeighborUp,
    NodeId,
    Send,
    require_non_negative,
    require_positive,
)

__all__ = [
    "AntiEntropy",
    "Deliver",
    "Gossip",
    "Graft",
    "IHave",
    "Plumtree",
    "PlumtreeConfig",
    "Prune",
]

MessageId = str
Announcement = tuple[MessageId, int]


@attrs.frozen(slots=True)
class PlumtreeConfig:
    """Plumtree parameters (times in seconds).

    ``ihave_interval`` batches lazy announcements; ``graft_timeout`` and
    ``graft_retry_timeout`` are the paper's timers 1 and 2; ``optimization_threshold`` the
    round gap (7 in the paper); ``cache_size`` and ``cache_ttl`` bound the message cache;
    ``anti_entropy_period`` is the period of the id exchange run by :meth:`Plumtree.tick`
    (``None`` leaves it to the owner); ``anti_entropy_max_ids`` caps one exchange;
    ``neighbor_up_announce_window`` how far back a new neighbour is told about (0 = off).
    """

    ihave_interval: float = 0.05
    graft_timeout: float = 0.5
    graft_retry_timeout: float = 0.25
    optimization_threshold: int = 7
    cache_size: int = 10_000
    cache_ttl: float = 120.0
    anti_entropy_period: float | None = 10.0
    anti_entropy_max_ids: int = 1_000
    neighbor_up_announce_window: float = 5.0
    prune: bool = True

    def __attrs_post_init__(self) -> None:
        owner = "PlumtreeConfig"
        require_non_negative(owner, "ihave_interval", self.ihave_interval)
        require_positive(owner, "graft_timeout", self.graft_timeout)
        require_positive(owner, "graft_retry_timeout", self.graft_retry_timeout)
        for name in ("optimization_threshold", "cache_size", "anti_entropy_max_ids"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{owner}.{name} must be an integer >= 1, got {value!r}")
        require_positive(owner, "cache_ttl", self.cache_ttl)
        if self.anti_entropy_period is not None:
            require_positive(owner, "anti_entropy_period", self.anti_entropy_period)
        require_non_negative(
            owner, "neighbor_up_announce_window", self.neighbor_up_announce_window
        )


@attrs.frozen(slots=True)
class Gossip:
    """A payload on its way; ``round`` is the number of hops it travelled to the receiver."""

    sender: NodeId
    message_id: MessageId
    payload: object
    round: int


@attrs.frozen(slots=True)
class IHave:
    """Lazy announcement: ``sender`` holds each ``(message_id, round)`` listed."""

    sender: NodeId
    announcements: tuple[Announcement, ...]


@attrs.frozen(slots=True)
class Graft:
    """Make the receiver eager towards ``sender``; send ``message_id`` if it is not None."""

    sender: NodeId
    message_id: MessageId | None
    round: int


@attrs.frozen(slots=True)
class Prune:
    """The receiver should stop pushing payloads eagerly to ``sender``."""

    sender: NodeId


@attrs.frozen(slots=True)
class AntiEntropy:
    """Ids ``sender`` holds; ``is_reply`` marks the answer, which is not answered again."""

    sender: NodeId
    announcements: tuple[Announcement, ...]
    is_reply: bool


@attrs.frozen(slots=True)
class Deliver:
    """Effect: hand ``payload`` to the application (once per ``message_id``)."""

    message_id: MessageId
    payload: object
    round: int


@attrs.define(slots=True)
class _Cached:
    payload: object
    round: int
    sender: NodeId | None
    received_at: float


_Handler = Callable[["Plumtree", object, float, list[object]], None]


class Plumtree:
    """One node's Plumtree state machine.

    Feed it overlay notifications and received messages with :meth:`handle`, start a
    broadcast with :meth:`broadcast`, call :meth:`tick` when :meth:`next_deadline` is
    reached, and carry out the returned effects in order.
    """

    __slots__ = (
        "_broadcast_seq",
        "_cache",
        "_eager",
        "_graft_timers",
        "_ihave_flush_at",
        "_lazy",
        "_lazy_queue",
        "_missing",
        "_next_anti_entropy_at",
        "_timer_seq",
        "config",
        "node_id",
        "rng",
    )

    _HANDLERS: ClassVar[dict[type, _Handler]] = {}

    def __init__(
        self,
        node_id: NodeId,
        config: PlumtreeConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config if config is not None else PlumtreeConfig()
        self.rng = rng if rng is not None else random.Random(0)
        # dicts used as ordered sets: deterministic iteration for seeded replays.
        self._eager: dict[NodeId, None] = {}
        self._lazy: dict[NodeId, None] = {}
        self._cache: OrderedDict[MessageId, _Cached] = OrderedDict()
        # Unknown ids announced to us: id -> announcers still to try, oldest first.
        self._missing: dict[MessageId, list[tuple[NodeId, int]]] = {}
        self._graft_timers: list[tuple[float, int, MessageId]] = []
        self._timer_seq = 0
        self._lazy_queue: dict[NodeId, list[Announcement]] = {}
        self._ihave_flush_at: float | None = None
        self._next_anti_entropy_at: float | None = None
        self._broadcast_seq = 0

    # ------------------------------------------------------------------ inspection

    @property
    def eager_peers(self) -> tuple[NodeId, ...]:
        """Neighbours that receive payloads eagerly."""
        return tuple(self._eager)

    @property
    def lazy_peers(self) -> tuple[NodeId, ...]:
        """Neighbours that receive only ``IHAVE`` announcements."""
        return tuple(self._lazy)

    @property
    def cache_length(self) -> int:
        """Number of cached messages (never above ``config.cache_size``)."""
        return len(self._cache)

    @property
    def missing_ids(self) -> tuple[MessageId, ...]:
        """Announced ids not received yet that still have an announcer to graft from."""
        return tuple(self._missing)

    def has_message(self, message_id: MessageId) -> bool:
        """Whether ``message_id`` is in the cache (delivered and not expired)."""
        return message_id in self._cache

    def next_deadline(self) -> float | None:
        """Earliest time at which :meth:`tick` has work to do, or None."""
        deadline = self._ihave_flush_at
        if self._graft_timers:
            timer = self._graft_timers[0][0]
            if deadline is None or timer < deadline:
                deadline = timer
        anti_entropy = self._next_anti_entropy_at
        if anti_entropy is not None and (deadline is None or anti_entropy < deadline):
            deadline = anti_entropy
        return deadline

    # ------------------------------------------------------------------ local API

    def broadcast(
        self, payload: object, now: float, message_id: MessageId | None = None
    ) -> list[object]:
        """Start a broadcast of ``payload``; the effects include the local Deliver.

        ``message_id`` defaults to ``"<node id>#<sequence>"``; a caller-chosen id must be
        unique cluster-wide. Raises ``ValueError`` if the id is already cached here.
        """
        if message_id is None:
            self._broadcast_seq += 1
            message_id = f"{self.node_id}#{self._broadcast_seq}"
        if message_id in self._cache:
            raise ValueError(f"message id {message_id!r} was already broadcast or received")
        out: list[object] = []
        self._accept_new(message_id, payload, 0, None, now, out)
        return out

    def anti_entropy_round(self, now: float) -> list[object]:
        """Send the cached ids to one random neighbour so each side grafts what it lacks."""
        neighbours = [*self._eager, *self._lazy]
        if not neighbours:
            return []
        self._expire_cache(now)
        peer = self.rng.choice(neighbours)
        return [Send(peer, AntiEntropy(self.node_id, self._recent_announcements(), False))]

    def tick(self, now: float) -> list[object]:
        """Flush batched ``IHAVE``, fire graft timers, expire the cache, run anti-entropy."""
        out: list[object] = []
        if self._ihave_flush_at is not None and self._ihave_flush_at <= now:
            self._flush_ihave(out)
        timers = self._graft_timers
        while timers and timers[0][0] <= now:
            _, _, message_id = heapq.heappop(timers)
            self._fire_graft_timer(message_id, now, out)
        self._expire_cache(now)
        if self._next_anti_entropy_at is not None and self._next_anti_entropy_at <= now:
            period = self.config.anti_entropy_period
            assert period is not None  # armed only when a period is configured
            self._next_anti_entropy_at = now + period
            out.extend(self.anti_entropy_round(now))
        return out

    def handle(self, event: object, now: float) -> list[object]:
        """Process one received message or overlay notification; return the effects.

        Raises ``TypeError`` for an object that is not a Plumtree message or an overlay
        notification.
        """
        handler = self._HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"Plumtree cannot handle {type(event).__name__}")
        out: list[object] = []
        handler(self, event, now, out)
        return out

    # ------------------------------------------------------------------ handlers

    def _on_gossip(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, Gossip)
        sender = event.sender
        if event.message_id in self._cache:
            # A second eager path delivered it: keep the tree a tree.
            if self.config.prune and sender in self._eager:
                del self._eager[sender]
                self._lazy[sender] = None
                out.append(Send(sender, Prune(self.node_id)))
            return
        if sender in self._lazy:
            del self._lazy[sender]
            self._eager[sender] = None
        self._accept_new(event.message_id, event.payload, event.round, sender, now, out)

    def _on_ihave(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, IHave)
        self._take_announcements(event.sender, event.announcements, now, out)

    def _on_graft(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, Graft)
        sender = event.sender
        if sender in self._lazy:
            del self._lazy[sender]
            self._eager[sender] = None
        if event.message_id is None:
            return
        cached = self._cache.get(event.message_id)
        if cached is not None:
            # Answered even for a non-neighbour: the requester is missing the message.
            gossip = Gossip(self.node_id, event.message_id, cached.payload, cached.round + 1)
            out.append(Send(sender, gossip))

    def _on_prune(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, Prune)
        if self.config.prune and event.sender in self._eager:
            del self._eager[event.sender]
            self._lazy[event.sender] = None

    def _on_anti_entropy(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, AntiEntropy)
        self._take_announcements(event.sender, event.announcements, now, out)
        if not event.is_reply:
            theirs = {message_id for message_id, _ in event.announcements}
            ours = tuple(a for a in self._recent_announcements() if a[0] not in theirs)
            out.append(Send(event.sender, AntiEntropy(self.node_id, ours, True)))

    def _on_neighbor_up(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, NeighborUp)
        peer = event.peer
        self._lazy.pop(peer, None)
        self._eager[peer] = None
        period = self.config.anti_entropy_period
        if period is not None and self._next_anti_entropy_at is None:
            self._next_anti_entropy_at = now + period * self.rng.random()
        window = self.config.neighbor_up_announce_window
        if window > 0 and self._cache:
            horizon = now - window
            recent: list[Announcement] = []
            for message_id in reversed(self._cache):
                cached = self._cache[message_id]
                if cached.received_at < horizon:
                    break
                recent.append((message_id, cached.round + 1))
            if recent:
                recent.reverse()
                out.append(Send(peer, IHave(self.node_id, tuple(recent))))

    def _on_neighbor_down(self, event: object, now: float, out: list[object]) -> None:
        assert isinstance(event, NeighborDown)
        peer = event.peer
        self._eager.pop(peer, None)
        self._lazy.pop(peer, None)
        self._lazy_queue.pop(peer, None)
        for announcers in self._missing.values():
            announcers[:] = [entry for entry in announcers if entry[0] != peer]

    # ------------------------------------------------------------------ internals

    def _accept_new(
        self,
        message_id: MessageId,
        payload: object,
        round_: int,
        sender: NodeId | None,
        now: float,
        out: list[object],
    ) -> None:
        """Cache, deliver and forward a message seen for the first time."""
        cache = self._cache
        cache[message_id] = _Cached(payload, round_, sender, now)
        if len(cache) > self.config.cache_size:
            cache.popitem(last=False)
        self._missing.pop(message_id, None)
        out.append(Deliver(message_id, payload, round_))
        next_round = round_ + 1
        if self._eager:
            gossip = Gossip(self.node_id, message_id, payload, next_round)
            out.extend(Send(peer, gossip) for peer in self._eager if peer != sender)
        if self._lazy:
            queue = self._lazy_queue
            announcement = (message_id, next_round)
            for peer in self._lazy:
                if peer != sender:
                    pending = queue.get(peer)
                    if pending is None:
                        queue[peer] = [announcement]
                    else:
                        pending.append(announcement)
            if self._ihave_flush_at is None and queue:
                self._ihave_flush_at = now + self.config.ihave_interval

    def _take_announcements(
        self,
        announcer: NodeId,
        announcements: tuple[Announcement, ...],
        now: float,
        out: list[object],
    ) -> None:
        config = self.config
        for message_id, round_ in announcements:
            cached = self._cache.get(message_id)
            if cached is not None:
                if (
                    config.prune
                    and announcer in self._lazy
                    and cached.round - round_ >= config.optimization_threshold
                ):
                    # The lazy path is much shorter than the eager one that delivered:
                    # swap them so the tree keeps short paths.
                    del self._lazy[announcer]
                    self._eager[announcer] = None
                    out.append(Send(announcer, Graft(self.node_id, None, round_)))
                    previous = cached.sender
                    if previous is not None and previous in self._eager and previous != announcer:
                        del self._eager[previous]
                        self._lazy[previous] = None
                        out.append(Send(previous, Prune(self.node_id)))
                continue
            announcers = self._missing.get(message_id)
            if announcers is None:
                self._missing[message_id] = [(announcer, round_)]
                self._start_timer(now + config.graft_timeout, message_id)
            else:
                announcers.append((announcer, round_))

    def _fire_graft_timer(self, message_id: MessageId, now: float, out: list[object]) -> None:
        announcers = self._missing.get(message_id)
        if announcers is None:
            return  # received meanwhile, or abandoned
        if not announcers:
            del self._missing[message_id]
            return
        announcer, round_ = announcers.pop(0)
        if announcer in self._lazy:
            del self._lazy[announcer]
            self._eager[announcer] = None
        out.append(Send(announcer, Graft(self.node_id, message_id, round_)))
        self._start_timer(now + self.config.graft_retry_timeout, message_id)

    def _start_timer(self, deadline: float, message_id: MessageId) -> None:
        self._timer_seq += 1
        heapq.heappush(self._graft_timers, (deadline, self._timer_seq, message_id))

    def _flush_ihave(self, out: list[object]) -> None:
        for peer, announcements in self._lazy_queue.items():
            if announcements:
                out.append(Send(peer, IHave(self.node_id, tuple(announcements))))
        self._lazy_queue.clear()
        self._ihave_flush_at = None

    def _expire_cache(self, now: float) -> None:
        cache = self._cache
        horizon = now - self.config.cache_ttl
        while cache:
            oldest = next(iter(cache.values()))
            if oldest.received_at >= horizon:
                break
            cache.popitem(last=False)

    def _recent_announcements(self) -> tuple[Announcement, ...]:
        limit = self.config.anti_entropy_max_ids
        newest: list[Announcement] = []
        for message_id in reversed(self._cache):
            if len(newest) >= limit:
                break
            newest.append((message_id, self._cache[message_id].round + 1))
        newest.reverse()
        return tuple(newest)


Plumtree._HANDLERS.update(
    {
        Gossip: Plumtree._on_gossip,
        IHave: Plumtree._on_ihave,
        Graft: Plumtree._on_graft,
        Prune: Plumtree._on_prune,
        AntiEntropy: Plumtree._on_anti_entropy,
        NeighborUp: Plumtree._on_neighbor_up,
        NeighborDown: Plumtree._on_neighbor_down,
    }
)
