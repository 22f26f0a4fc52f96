"""The cluster layer: links between nodes (``links.py``), their options, handshake,
framing and fault injection; remote processes are built on top of them."""

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
