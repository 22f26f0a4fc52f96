"""The codec of the ``gossip`` channel: overlay and Plumtree messages as msgspec structs.

Each sans-IO message record (an attrs class of :mod:`foundation_trio.protocols`) has a
struct with the same fields in the same order; a frame is one :class:`OverlayFrame`
(an overlay message tagged with the overlay epoch it belongs to), one Plumtree
message, or an :class:`EpochNotice`. Decoding is strict: anything else raises
:class:`~foundation_trio.cluster.wire.WireError`, and the driver closes that link.
Nothing is pickled; a broadcast's payload stays raw msgpack bytes made by
:func:`foundation_trio.wire.encode_body`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec
from msgspec import Struct

from ..protocols import fullmesh, hyparview, plumtree
from .wire import WireError


class _Msg(Struct, array_like=True, forbid_unknown_fields=True):
    pass


class Join(_Msg, tag=1):
    sender: str


class JoinAccept(_Msg, tag=2):
    sender: str


class ForwardJoin(_Msg, tag=3):
    sender: str
    new_node: str
    ttl: int


class Neighbor(_Msg, tag=4):
    sender: str
    high_priority: bool


class NeighborReply(_Msg, tag=5):
    sender: str
    accepted: bool


class Probe(_Msg, tag=6):
    sender: str


class Disconnect(_Msg, tag=7):
    sender: str
    leaving: bool


class Shuffle(_Msg, tag=8):
    sender: str
    origin: str
    ttl: int
    node_ids: tuple[str, ...]


class ShuffleReply(_Msg, tag=9):
    sender: str
    node_ids: tuple[str, ...]


class Hello(_Msg, tag=10):
    sender: str
    role: str
    members: tuple[tuple[str, str], ...]
    is_reply: bool


class Goodbye(_Msg, tag=11):
    sender: str


class CheckView(_Msg, tag=12):
    sender: str


OverlayMessage: TypeAlias = (
    Join
    | JoinAccept
    | ForwardJoin
    | Neighbor
    | NeighborReply
    | Probe
    | Disconnect
    | Shuffle
    | ShuffleReply
    | Hello
    | Goodbye
    | CheckView
)


class OverlayFrame(_Msg, tag=20):
    """An overlay message of the overlay ``kind`` installed at ``epoch``."""

    epoch: int
    kind: str
    message: OverlayMessage


class EpochNotice(_Msg, tag=21):
    """The sender runs overlay ``kind`` since ``epoch``: a receiver on an older epoch
    switches to it (joining through the sender)."""

    sender: str
    epoch: int
    kind: str


class Gossip(_Msg, tag=30):
    sender: str
    message_id: str
    payload: tuple[str, str, bytes]
    round: int


class IHave(_Msg, tag=31):
    sender: str
    announcements: tuple[tuple[str, int], ...]


class Graft(_Msg, tag=32):
    sender: str
    message_id: str | None
    round: int


class Prune(_Msg, tag=33):
    sender: str


class AntiEntropy(_Msg, tag=34):
    sender: str
    announcements: tuple[tuple[str, int], ...]
    is_reply: bool


class AliveDigest(_Msg, tag=40):
    """Gossip-style liveness (van Renesse, Minsky and Hayden, 1998): the sender's own
    heartbeat and those of the nodes whose heartbeat it saw grow lately, each as
    ``(node id, incarnation, heartbeat)``."""

    sender: str
    entries: tuple[tuple[str, int, int], ...]


Frame: TypeAlias = (
    OverlayFrame | EpochNotice | Gossip | IHave | Graft | Prune | AntiEntropy | AliveDigest
)

_PAIRS: list[tuple[type[Any], type[Any]]] = [
    (hyparview.Join, Join),
    (hyparview.JoinAccept, JoinAccept),
    (hyparview.ForwardJoin, ForwardJoin),
    (hyparview.Neighbor, Neighbor),
    (hyparview.NeighborReply, NeighborReply),
    (hyparview.Probe, Probe),
    (hyparview.CheckView, CheckView),
    (hyparview.Disconnect, Disconnect),
    (hyparview.Shuffle, Shuffle),
    (hyparview.ShuffleReply, ShuffleReply),
    (fullmesh.Hello, Hello),
    (fullmesh.Goodbye, Goodbye),
    (plumtree.Gossip, Gossip),
    (plumtree.IHave, IHave),
    (plumtree.Graft, Graft),
    (plumtree.Prune, Prune),
    (plumtree.AntiEntropy, AntiEntropy),
]
_TO_WIRE: dict[type[Any], type[Any]] = dict(_PAIRS)
_FROM_WIRE: dict[type[Any], type[Any]] = {wire: core for core, wire in _PAIRS}
_FIELDS: dict[type[Any], tuple[str, ...]] = {wire: wire.__struct_fields__ for _, wire in _PAIRS}
PLUMTREE_TYPES = (Gossip, IHave, Graft, Prune, AntiEntropy)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def to_wire(message: object) -> Any:
    """The struct of a core message record; ``TypeError`` for anything else."""
    kind = _TO_WIRE.get(type(message))
    if kind is None:
        raise TypeError(f"no gossip wire form for {type(message).__name__}")
    return kind(*[getattr(message, name) for name in _FIELDS[kind]])


def from_wire(struct: object) -> object:
    """The core message record of a decoded struct."""
    kind = _FROM_WIRE[type(struct)]
    return kind(*[getattr(struct, name) for name in _FIELDS[type(struct)]])


def encode(frame: Frame) -> bytes:
    return _encoder.encode(frame)


def decode(data: bytes) -> Frame:
    """One frame, or :class:`WireError` naming what is wrong."""
    try:
        frame: Frame = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireError(f"bad gossip frame: {exc}") from None
    return frame


def sender_of(frame: Frame) -> str:
    """The node id that claims to have sent ``frame``."""
    if isinstance(frame, OverlayFrame):
        return frame.message.sender
    return frame.sender


__all__ = [
    "PLUMTREE_TYPES",
    "AliveDigest",
    "EpochNotice",
    "Frame",
    "OverlayFrame",
    "decode",
    "encode",
    "from_wire",
    "sender_of",
    "to_wire",
]
