"""The cluster layer: links between nodes (``links.py``), their options, handshake,
framing and fault injection; remote processes, discovery, failure detection and the
membership driver are built on top of them. As ``ft.cluster`` this package offers the
membership functions (``members``, ``reachable``, ``connected``, ``broadcast``,
``subscribe``, ``set_overlay``, ``overlay``, ``join``, ``membership_stats``)."""

from .membership import (
    BroadcastMessage,
    broadcast,
    connected,
    join,
    members,
    membership_stats,
    overlay,
    reachable,
    set_overlay,
    subscribe,
)

__all__ = [
    "BroadcastMessage",
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
