"""The gossip channel's codec carries every HyParView message unchanged."""

from __future__ import annotations

import pytest

from foundation_trio.cluster import _gossip_wire as gw
from foundation_trio.protocols import hyparview as hv

MESSAGES = [
    hv.Join("a@h:1"),
    hv.JoinAccept("a@h:1"),
    hv.ForwardJoin("a@h:1", "b@h:2", 3),
    hv.Neighbor("a@h:1", high_priority=True),
    hv.NeighborReply("a@h:1", accepted=False),
    hv.Probe("a@h:1"),
    hv.CheckView("a@h:1"),
    hv.Disconnect("a@h:1", leaving=True),
    hv.Shuffle("a@h:1", "c@h:3", 2, ("b@h:2", "d@h:4")),
    hv.ShuffleReply("a@h:1", ("b@h:2",)),
]


def test_every_hyparview_message_type_is_listed() -> None:
    listed = {type(message).__name__ for message in MESSAGES}
    exported = {name for name in hv.__all__ if not name.startswith("HyParView")}
    assert listed == exported


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_hyparview_message_round_trips(message: object) -> None:
    frame = gw.OverlayFrame(3, "hyparview", gw.to_wire(message))
    decoded = gw.decode(gw.encode(frame))
    assert isinstance(decoded, gw.OverlayFrame)
    assert (decoded.epoch, decoded.kind) == (3, "hyparview")
    assert gw.from_wire(decoded.message) == message
    assert gw.sender_of(decoded) == "a@h:1"
