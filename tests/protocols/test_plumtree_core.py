"""Plumtree message handlers, timers and bounds, one core at a time."""

from __future__ import annotations

import random

import pytest

from foundation_trio.protocols.common import NeighborDown, NeighborUp, Send
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


def make(*peers: str, **config: object) -> Plumtree:
    settings: dict[str, object] = {"anti_entropy_period": None, "neighbor_up_announce_window": 0.0}
    settings.update(config)
    core = Plumtree("me", PlumtreeConfig(**settings), random.Random(3))  # type: ignore[arg-type]
    for peer in peers:
        assert core.handle(NeighborUp(peer), 0.0) == []
    return core


def sends(effects: list[object]) -> list[tuple[str, object]]:
    return [(e.to, e.message) for e in effects if isinstance(e, Send)]


def test_bad_config_values_name_the_field() -> None:
    for field, value in [
        ("graft_timeout", 0.0),
        ("graft_retry_timeout", -1.0),
        ("optimization_threshold", 0),
        ("cache_size", 0),
        ("cache_ttl", 0.0),
        ("anti_entropy_period", -5.0),
        ("ihave_interval", -0.1),
        ("neighbor_up_announce_window", -1.0),
        ("anti_entropy_max_ids", 0),
    ]:
        with pytest.raises(ValueError, match=field):
            PlumtreeConfig(**{field: value})  # type: ignore[arg-type]


def test_unknown_event_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="Plumtree cannot handle"):
        make().handle(object(), 0.0)


def test_broadcast_delivers_locally_and_pushes_to_all_eager_peers() -> None:
    core = make("a", "b")
    effects = core.broadcast("hello", 0.0, message_id="m1")
    assert effects[0] == Deliver("m1", "hello", 0)
    assert sends(effects) == [
        ("a", Gossip("me", "m1", "hello", 1)),
        ("b", Gossip("me", "m1", "hello", 1)),
    ]
    with pytest.raises(ValueError, match="already"):
        core.broadcast("again", 0.0, message_id="m1")


def test_generated_ids_are_unique_per_node() -> None:
    core = make()
    ids = {core.broadcast(i, 0.0)[0].message_id for i in range(3)}  # type: ignore[attr-defined]
    assert ids == {"me#1", "me#2", "me#3"}


def test_first_gossip_is_delivered_and_forwarded_except_to_sender() -> None:
    core = make("a", "b", "c")
    effects = core.handle(Gossip("a", "m", "x", 2), 0.0)
    assert Deliver("m", "x", 2) in effects
    assert sends(effects) == [("b", Gossip("me", "m", "x", 3)), ("c", Gossip("me", "m", "x", 3))]


def test_duplicate_gossip_prunes_the_sender() -> None:
    core = make("a", "b")
    core.handle(Gossip("a", "m", "x", 1), 0.0)
    effects = core.handle(Gossip("b", "m", "x", 1), 0.0)
    assert sends(effects) == [("b", Prune("me"))]
    assert not any(isinstance(e, Deliver) for e in effects)
    assert core.eager_peers == ("a",) and core.lazy_peers == ("b",)


def test_duplicate_gossip_without_pruning_is_plain_flooding() -> None:
    core = make("a", "b", prune=False)
    core.handle(Gossip("a", "m", "x", 1), 0.0)
    assert core.handle(Gossip("b", "m", "x", 1), 0.0) == []
    assert core.eager_peers == ("a", "b")


def test_prune_moves_the_sender_to_lazy() -> None:
    core = make("a", "b")
    assert core.handle(Prune("a"), 0.0) == []
    assert core.eager_peers == ("b",) and core.lazy_peers == ("a",)


def test_lazy_peers_get_batched_ihave_on_tick() -> None:
    core = make("a", "b", "c", ihave_interval=0.05)
    core.handle(Prune("b"), 0.0)
    core.handle(Prune("c"), 0.0)
    core.handle(Gossip("a", "m1", "x", 1), 0.0)
    core.handle(Gossip("a", "m2", "y", 4), 0.01)
    assert core.next_deadline() == pytest.approx(0.05)
    assert core.tick(0.04) == []
    effects = core.tick(0.05)
    assert sends(effects) == [
        ("b", IHave("me", (("m1", 2), ("m2", 5)))),
        ("c", IHave("me", (("m1", 2), ("m2", 5)))),
    ]
    assert core.tick(1.0) == []


def test_ihave_for_unknown_message_grafts_after_timer_one_then_next_announcer() -> None:
    core = make("a", "b", "c", graft_timeout=0.5, graft_retry_timeout=0.2)
    core.handle(Prune("b"), 0.0)
    core.handle(Prune("c"), 0.0)
    core.handle(IHave("b", (("m", 3),)), 1.0)
    core.handle(IHave("c", (("m", 4),)), 1.1)
    assert core.missing_ids == ("m",)
    assert core.tick(1.4) == []
    effects = core.tick(1.5)
    assert sends(effects) == [("b", Graft("me", "m", 3))]
    assert "b" in core.eager_peers
    effects = core.tick(1.7)
    assert sends(effects) == [("c", Graft("me", "m", 4))]
    assert core.tick(1.9) == []
    assert core.missing_ids == ()


def test_message_arriving_before_timer_cancels_the_graft() -> None:
    core = make("a", "b", graft_timeout=0.5)
    core.handle(Prune("b"), 0.0)
    core.handle(IHave("b", (("m", 3),)), 1.0)
    core.handle(Gossip("a", "m", "x", 2), 1.2)
    assert core.missing_ids == ()
    # Only the batched IHAVE to the lazy peer goes out; no GRAFT.
    assert sends(core.tick(2.0)) == [("b", IHave("me", (("m", 3),)))]


def test_ihave_for_known_message_does_nothing_within_threshold() -> None:
    core = make("a", "b")
    core.handle(Prune("b"), 0.0)
    core.handle(Gossip("a", "m", "x", 5), 0.0)
    assert core.handle(IHave("b", (("m", 3),)), 0.1) == []
    assert core.missing_ids == ()


def test_round_gap_optimisation_swaps_a_long_eager_path_for_a_short_lazy_one() -> None:
    core = make("a", "b", optimization_threshold=7)
    core.handle(Prune("b"), 0.0)
    core.handle(Gossip("a", "m", "x", 10), 0.0)
    effects = core.handle(IHave("b", (("m", 3),)), 0.1)
    assert sends(effects) == [("b", Graft("me", None, 3)), ("a", Prune("me"))]
    assert core.eager_peers == ("b",) and core.lazy_peers == ("a",)


def test_graft_makes_requester_eager_and_resends_cached_payload() -> None:
    core = make("a", "b")
    core.handle(Prune("b"), 0.0)
    core.handle(Gossip("a", "m", "x", 2), 0.0)
    effects = core.handle(Graft("b", "m", 3), 0.1)
    assert sends(effects) == [("b", Gossip("me", "m", "x", 3))]
    assert "b" in core.eager_peers


def test_graft_for_unknown_message_only_changes_the_link() -> None:
    core = make("a")
    core.handle(Prune("a"), 0.0)
    assert core.handle(Graft("a", "nope", 1), 0.0) == []
    assert core.eager_peers == ("a",)


def test_neighbor_down_forgets_peer_and_its_announcements() -> None:
    core = make("a", "b")
    core.handle(Prune("b"), 0.0)
    core.handle(IHave("b", (("m", 1),)), 0.0)
    core.handle(NeighborDown("b"), 0.1)
    assert core.lazy_peers == () and core.eager_peers == ("a",)
    effects = core.tick(10.0)
    assert sends(effects) == []
    assert core.missing_ids == ()


def test_neighbor_up_announces_recent_messages_to_the_new_neighbour() -> None:
    core = make("a", neighbor_up_announce_window=5.0)
    core.handle(Gossip("a", "old", "x", 1), 0.0)
    core.handle(Gossip("a", "new", "y", 2), 10.0)
    effects = core.handle(NeighborUp("b"), 12.0)
    assert sends(effects) == [("b", IHave("me", (("new", 3),)))]
    assert "b" in core.eager_peers


def test_cache_is_bounded_in_size_and_age() -> None:
    core = make("a", cache_size=3, cache_ttl=10.0)
    for number in range(5):
        core.handle(Gossip("a", f"m{number}", number, 1), float(number))
        assert core.cache_length <= 3
    assert not core.has_message("m0") and core.has_message("m4")
    core.tick(13.5)
    assert core.cache_length == 1 and core.has_message("m4")


def test_anti_entropy_exchange_grafts_what_each_side_lacks() -> None:
    left = Plumtree("L", PlumtreeConfig(anti_entropy_period=None, graft_timeout=0.1))
    right = Plumtree("R", PlumtreeConfig(anti_entropy_period=None, graft_timeout=0.1))
    left.handle(NeighborUp("R"), 0.0)
    right.handle(NeighborUp("L"), 0.0)
    left.broadcast("only-left", 0.0, message_id="l1")
    right.broadcast("only-right", 0.0, message_id="r1")
    ((to, summary),) = sends(left.anti_entropy_round(1.0))
    assert to == "R" and isinstance(summary, AntiEntropy) and not summary.is_reply
    ((back, reply),) = sends(right.handle(summary, 1.0))
    assert back == "L" and isinstance(reply, AntiEntropy) and reply.is_reply
    assert [a[0] for a in reply.announcements] == ["r1"]
    assert right.missing_ids == ("l1",)
    assert left.handle(reply, 1.1) == []
    assert left.missing_ids == ("r1",)
    (graft,) = sends(right.tick(1.2))
    assert graft == ("L", Graft("R", "l1", 1))
    (payload,) = sends(left.handle(graft[1], 1.2))
    delivered = right.handle(payload[1], 1.3)
    assert Deliver("l1", "only-left", 1) in delivered


def test_anti_entropy_period_drives_rounds_from_tick() -> None:
    core = Plumtree("me", PlumtreeConfig(anti_entropy_period=10.0), random.Random(1))
    core.handle(NeighborUp("a"), 0.0)
    deadline = core.next_deadline()
    assert deadline is not None and deadline <= 10.0
    assert any(isinstance(m, AntiEntropy) for _, m in sends(core.tick(deadline)))


def test_anti_entropy_without_neighbours_sends_nothing() -> None:
    assert make().anti_entropy_round(0.0) == []
