"""HyParView message handlers and failure paths, one core at a time."""

from __future__ import annotations

import random

import pytest

from foundation_trio.protocols.common import (
    CloseLink,
    Connect,
    ConnectFailed,
    LinkDown,
    NeighborDown,
    NeighborUp,
    Send,
)
from foundation_trio.protocols.hyparview import (
    CheckView,
    Disconnect,
    ForwardJoin,
    HyParView,
    HyParViewConfig,
    Join,
    JoinAccept,
    Neighbor,
    NeighborReply,
    Probe,
    Shuffle,
    ShuffleReply,
)


def make(node_id: str = "me", seed: int = 7, **config: object) -> HyParView:
    settings: dict[str, object] = {"shuffle_period": None}
    settings.update(config)
    return HyParView(node_id, HyParViewConfig(**settings), random.Random(seed))  # type: ignore[arg-type]


def with_active(core: HyParView, peers: list[str]) -> HyParView:
    for peer in peers:
        core.handle(JoinAccept(peer), 0.0)
    assert list(core.active_view) == peers
    return core


def with_passive(core: HyParView, peers: list[str]) -> HyParView:
    core.handle(ShuffleReply("someone", tuple(peers)), 0.0)
    return core


def sends(effects: list[object]) -> list[tuple[str, object]]:
    return [(e.to, e.message) for e in effects if isinstance(e, Send)]


# ---------------------------------------------------------------- configuration


def test_defaults_are_the_papers() -> None:
    config = HyParViewConfig()
    assert (config.active_view_size, config.passive_view_size) == (5, 30)
    assert (config.active_random_walk_length, config.passive_random_walk_length) == (6, 3)
    assert config.shuffle_walk_length == 6
    assert (config.shuffle_active_count, config.shuffle_passive_count) == (3, 4)
    assert config.full_view_accept_probability == 0.0
    assert config.check_passive_per_failure == 0  # the extension is off by default


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("active_view_size", 0),
        ("passive_view_size", -1),
        ("active_random_walk_length", 0),
        ("shuffle_walk_length", 0),
        ("shuffle_active_count", -1),
        ("shuffle_passive_count", 1.5),
        ("shuffle_period", 0.0),
        ("neighbor_request_timeout", -2.0),
        ("full_view_accept_probability", 1.5),
        ("active_view_size", 2.0),
        ("check_passive_per_failure", -1),
        ("check_passive_per_failure", 0.5),
    ],
)
def test_bad_config_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        HyParViewConfig(**{field: value})  # type: ignore[arg-type]


def test_prwl_longer_than_arwl_is_rejected() -> None:
    with pytest.raises(ValueError, match="passive_random_walk_length"):
        HyParViewConfig(active_random_walk_length=2, passive_random_walk_length=3)


def test_unknown_event_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="HyParView cannot handle str"):
        make().handle("JOIN", 0.0)


def test_joining_through_itself_is_refused() -> None:
    with pytest.raises(ValueError, match="itself"):
        make().join("me", 0.0)


# ---------------------------------------------------------------- join


def test_join_connects_and_sends_join_to_the_contact() -> None:
    effects = make().join("seed", 0.0)
    assert effects == [Connect("seed"), Send("seed", Join("me"))]


def test_contact_accepts_joiner_and_forwards_join_to_other_members() -> None:
    core = with_active(make(), ["a", "b"])
    effects = core.handle(Join("new"), 1.0)
    assert core.active_view == ("a", "b", "new")
    assert NeighborUp("new") in effects
    assert ("new", JoinAccept("me")) in sends(effects)
    forwarded = [(to, m) for to, m in sends(effects) if isinstance(m, ForwardJoin)]
    assert forwarded == [("a", ForwardJoin("me", "new", 6)), ("b", ForwardJoin("me", "new", 6))]


def test_full_contact_evicts_a_member_with_disconnect() -> None:
    core = with_active(make(active_view_size=2), ["a", "b"])
    effects = core.handle(Join("new"), 1.0)
    assert len(core.active_view) == 2 and "new" in core.active_view
    (victim,) = {"a", "b"} - set(core.active_view)
    assert (victim, Disconnect("me", leaving=False)) in sends(effects)
    assert CloseLink(victim) in effects and NeighborDown(victim) in effects
    assert victim in core.passive_view


def test_join_accept_adds_the_sender_once() -> None:
    core = make()
    assert core.handle(JoinAccept("a"), 0.0) == [NeighborUp("a"), Send("a", JoinAccept("me"))]
    assert core.handle(JoinAccept("a"), 0.0) == []
    assert core.active_view == ("a",)


# ---------------------------------------------------------------- forward join


def test_forward_join_with_ttl_zero_ends_the_walk_here() -> None:
    core = with_active(make(), ["a", "b"])
    effects = core.handle(ForwardJoin("a", "new", 0), 0.0)
    assert "new" in core.active_view
    assert Connect("new") in effects
    assert ("new", JoinAccept("me")) in sends(effects)


def test_forward_join_ends_at_a_node_with_a_single_member() -> None:
    core = with_active(make(), ["a"])
    core.handle(ForwardJoin("a", "new", 5), 0.0)
    assert core.active_view == ("a", "new")


def test_forward_join_continues_to_a_member_other_than_sender_and_joiner() -> None:
    core = with_active(make(), ["a", "b", "new"])
    effects = core.handle(ForwardJoin("a", "new", 5), 0.0)
    assert sends(effects) == [("b", ForwardJoin("me", "new", 4))]
    assert core.active_view == ("a", "b", "new")
    assert "new" not in core.passive_view


def test_forward_join_at_prwl_also_records_the_joiner_as_passive() -> None:
    core = with_active(make(), ["a", "b"])
    effects = core.handle(ForwardJoin("a", "new", 3), 0.0)
    assert sends(effects) == [("b", ForwardJoin("me", "new", 2))]
    assert "new" in core.passive_view
    assert "new" not in core.active_view


def test_forward_join_about_myself_is_ignored() -> None:
    core = with_active(make(), ["a"])
    assert core.handle(ForwardJoin("a", "me", 0), 0.0) == []
    assert core.active_view == ("a",)


# ---------------------------------------------------------------- neighbor


def test_low_priority_neighbor_is_accepted_with_a_free_slot() -> None:
    core = with_active(make(active_view_size=2), ["a"])
    effects = core.handle(Neighbor("p", high_priority=False), 0.0)
    assert ("p", NeighborReply("me", accepted=True)) in sends(effects)
    assert core.active_view == ("a", "p")


def test_low_priority_neighbor_is_rejected_when_full() -> None:
    core = with_active(make(active_view_size=2, probe_active_view=False), ["a", "b"])
    effects = core.handle(Neighbor("p", high_priority=False), 0.0)
    assert sends(effects) == [("p", NeighborReply("me", accepted=False))]
    assert core.active_view == ("a", "b")
    assert "p" in core.passive_view


def test_refusal_probes_every_active_link_at_most_once_per_request_timeout() -> None:
    core = with_active(make(active_view_size=2, neighbor_request_timeout=2.0), ["a", "b"])
    effects = core.handle(Neighbor("p", high_priority=False), 0.0)
    assert sends(effects) == [
        ("p", NeighborReply("me", accepted=False)),
        ("a", Probe("me")),
        ("b", Probe("me")),
    ]
    # A second refusal within the timeout does not probe again; after it, it does.
    assert sends(core.handle(Neighbor("q", high_priority=False), 1.0)) == [
        ("q", NeighborReply("me", accepted=False))
    ]
    assert ("a", Probe("me")) in sends(core.handle(Neighbor("r", high_priority=False), 2.5))


def test_slot_freed_by_a_failed_probe_goes_to_the_refused_requester_first() -> None:
    # Without this, a survivor whose members all crashed silently refused every
    # low-priority request until its own next shuffle (detect-on-send failure model).
    core = with_passive(with_active(make(active_view_size=2), ["a", "b"]), ["x1", "x2", "x3"])
    core.handle(Neighbor("p", high_priority=False), 0.0)
    effects = core.handle(LinkDown("a"), 0.1)
    assert sends(effects) == [("p", Neighbor("me", high_priority=False))]
    assert Connect("p") in effects
    effects = core.handle(LinkDown("b"), 0.1)
    # The requester is already asked; the second slot goes to a passive node, and the
    # view is now empty, so with high priority.
    (asked,) = [to for to, m in sends(effects) if isinstance(m, Neighbor)]
    assert asked in {"x1", "x2", "x3"}
    assert set(core.pending_neighbor_requests) == {"p", asked}
    core.handle(NeighborReply("p", accepted=True), 0.2)
    assert core.active_view == ("p",)


def test_a_stale_refused_requester_is_not_preferred() -> None:
    core = with_passive(
        with_active(make(active_view_size=2, neighbor_request_timeout=1.0), ["a", "b"]), ["x"]
    )
    core.handle(Neighbor("p", high_priority=False), 0.0)
    core.handle(LinkDown("p"), 0.0)  # it died meanwhile: forgotten
    assert sends(core.handle(LinkDown("a"), 0.1)) == [("x", Neighbor("me", high_priority=False))]
    core = with_passive(
        with_active(make(active_view_size=2, neighbor_request_timeout=1.0), ["a", "b"]), ["x"]
    )
    # Refused too long ago to be a better bet than a passive id chosen at random.
    asked = set()
    for seed in range(10):
        core = with_passive(
            with_active(
                make(seed=seed, active_view_size=2, neighbor_request_timeout=1.0), ["a", "b"]
            ),
            [f"x{i}" for i in range(9)],
        )
        core.handle(Neighbor("p", high_priority=False), 0.0)
        effects = core.handle(LinkDown("a"), 5.0)
        ((to, _),) = [(to, m) for to, m in sends(effects) if isinstance(m, Neighbor)]
        asked.add(to)
    assert len(asked) > 1


def test_a_failed_active_link_probes_the_remaining_members() -> None:
    core = with_passive(with_active(make(active_view_size=3), ["a", "b", "c"]), ["x"])
    effects = core.handle(LinkDown("a"), 1.0)
    assert sends(effects) == [
        ("x", Neighbor("me", high_priority=False)),
        ("b", Probe("me")),
        ("c", Probe("me")),
    ]
    # Both probes fail: the view is empty, so the next request is high priority.
    core.handle(LinkDown("b"), 1.1)
    core.handle(LinkDown("c"), 1.1)
    assert core.active_view == ()
    core.handle(Neighbor("p", high_priority=False), 1.2)
    assert core.active_view == ("p",)
    core2 = with_passive(with_active(make(active_view_size=2), ["a", "b"]), ["x", "y"])
    core2.handle(LinkDown("a"), 1.0)
    core2.handle(LinkDown("b"), 1.1)
    effects = core2.handle(NeighborReply("x", accepted=False), 1.2)
    effects += core2.handle(NeighborReply("y", accepted=False), 1.2)
    assert not [m for _, m in sends(effects) if isinstance(m, Probe)]


def test_without_probing_a_failed_link_sends_only_the_refill() -> None:
    core = make(active_view_size=3, probe_active_view=False)
    core = with_passive(with_active(core, ["a", "b", "c"]), ["x"])
    assert sends(core.handle(LinkDown("a"), 1.0)) == [("x", Neighbor("me", high_priority=False))]


def test_probe_is_a_no_op_for_its_receiver() -> None:
    core = with_active(make(), ["a"])
    assert core.handle(Probe("a"), 0.0) == []
    assert core.handle(Probe("stranger"), 0.0) == []
    assert core.active_view == ("a",)


# ---------------------------------------------------------------- check view


def checks(effects: list[object]) -> list[str]:
    return [to for to, m in sends(effects) if isinstance(m, CheckView)]


def test_a_lost_member_sends_no_check_view_by_default() -> None:
    core = with_passive(with_active(make(active_view_size=3), ["a", "b", "c"]), ["x", "y"])
    assert checks(core.handle(LinkDown("a"), 1.0)) == []


def test_each_lost_member_checks_more_passive_entries_over_a_transient_link() -> None:
    passive = [f"x{i}" for i in range(20)]
    core = make(active_view_size=4, check_passive_per_failure=2, neighbor_request_timeout=2.0)
    core = with_passive(with_active(core, ["a", "b", "c", "d"]), passive)
    effects = core.handle(LinkDown("a"), 1.0)
    first = checks(effects)
    assert len(first) == 2 and set(first) <= set(passive)
    for peer in first:
        # Connected first, so that a dead entry is found (ConnectFailed) and dropped.
        assert effects.index(Connect(peer)) < effects.index(Send(peer, CheckView("me")))
    # The m-th loss within neighbor_request_timeout checks m * 2 entries: more losses
    # at once make a mass failure likelier. Never an entry already checked in this
    # window, nor a candidate the refill is asking.
    assert not set(first) & set(core.pending_neighbor_requests)
    second = checks(core.handle(LinkDown("b"), 1.1))
    assert not set(second) & set(core.pending_neighbor_requests)
    third = checks(core.handle(LinkDown("c"), 1.2))
    assert not set(third) & set(core.pending_neighbor_requests)
    assert (len(second), len(third)) == (4, 6)
    assert len(set(first) | set(second) | set(third)) == 12
    dead = first[0]
    core.handle(ConnectFailed(dead), 1.6)
    assert dead not in core.passive_view
    # A loss after the window is a first loss again.
    core.tick(10.0)
    assert len(checks(core.handle(LinkDown("d"), 10.0))) == 2


def test_check_views_are_bounded_by_the_passive_view_size_per_request_timeout() -> None:
    # No storm: a node that loses every member at once sends at most passive_view_size
    # CheckView messages per neighbor_request_timeout, however many it lost.
    core = make(
        active_view_size=5,
        passive_view_size=4,
        check_passive_per_failure=3,
        neighbor_request_timeout=2.0,
    )
    core = with_passive(with_active(core, ["a", "b", "c", "d", "e"]), ["x1", "x2", "x3", "x4"])
    sent: list[str] = []
    for peer in ["a", "b", "c", "d", "e"]:
        sent += checks(core.handle(LinkDown(peer), 1.0))
    assert len(sent) <= 4
    assert len(sent) == len(set(sent))
    # More failures inside the window add nothing; after it, the budget is back.
    core.handle(JoinAccept("f"), 1.5)
    core.handle(JoinAccept("g"), 1.5)
    assert checks(core.handle(LinkDown("f"), 2.5)) == []
    core.tick(3.1)  # the refill's requests time out: the entries are candidates again
    assert core.pending_neighbor_requests == ()
    # Second loss within the window (f at 2.5): 2 * 3, capped by the 4 entries.
    assert len(checks(core.handle(LinkDown("g"), 3.1))) == 4


def test_check_view_probes_the_active_view_despite_a_recent_routine_probe() -> None:
    core = with_active(make(active_view_size=2, neighbor_request_timeout=2.0), ["a", "b"])
    core.handle(Neighbor("r", high_priority=False), 0.0)  # refusal: routine probe at 0.0
    effects = core.handle(CheckView("p"), 1.0)
    assert sends(effects) == [("a", Probe("me")), ("b", Probe("me"))]
    assert "p" in core.passive_view
    # Many holders may check the same node: it probes once per request timeout.
    assert sends(core.handle(CheckView("q"), 1.5)) == []
    assert sends(core.handle(CheckView("q"), 3.0)) == [("a", Probe("me")), ("b", Probe("me"))]


def test_check_view_on_a_node_whose_members_died_makes_it_ask_the_sender_high() -> None:
    # The detect-on-send case the extension exists for: every member crashed, the node
    # does not know it and would stay silent until its own shuffle.
    core = with_passive(with_active(make(active_view_size=1), ["a"]), ["x", "y"])
    assert sends(core.handle(CheckView("p"), 1.0)) == [("a", Probe("me"))]
    effects = core.handle(LinkDown("a"), 1.1)
    assert sends(effects)[0] == ("p", Neighbor("me", high_priority=True))
    assert Connect("p") in effects
    core.handle(NeighborReply("p", accepted=True), 1.2)
    assert core.active_view == ("p",)


def test_check_view_with_several_dead_members_ends_in_high_priority_requests() -> None:
    core = with_passive(with_active(make(active_view_size=2), ["a", "b"]), ["x"])
    core.handle(CheckView("p"), 1.0)
    # The sender is asked first; while b is still listed, with low priority.
    assert sends(core.handle(LinkDown("a"), 1.1)) == [
        ("p", Neighbor("me", high_priority=False)),
        ("b", Probe("me")),
    ]
    # The view is empty now: the next slot is asked for with high priority.
    assert sends(core.handle(LinkDown("b"), 1.1)) == [("x", Neighbor("me", high_priority=True))]
    # p refuses (its view filled meanwhile); the slot goes to nobody else untried.
    core.handle(NeighborReply("p", accepted=False), 1.2)
    core.handle(NeighborReply("x", accepted=True), 1.2)
    assert core.active_view == ("x",)


def test_check_view_to_a_node_with_live_members_costs_only_the_probe() -> None:
    core = make(active_view_size=2, check_passive_per_failure=6)
    core = with_passive(with_active(core, ["a", "b"]), ["x"])
    effects = core.handle(CheckView("p"), 1.0)
    assert sends(effects) == [("a", Probe("me")), ("b", Probe("me"))]
    assert core.active_view == ("a", "b")
    assert core.pending_neighbor_requests == ()


def test_check_view_fills_a_free_slot_with_its_sender() -> None:
    core = with_active(make(active_view_size=3), ["a"])
    effects = core.handle(CheckView("p"), 1.0)
    assert ("p", Neighbor("me", high_priority=False)) in sends(effects)


def test_check_view_from_itself_or_after_leaving_is_ignored() -> None:
    core = with_active(make(), ["a"])
    assert core.handle(CheckView("me"), 0.0) == []
    core.leave(1.0)
    assert core.handle(CheckView("p"), 2.0) == []
    assert core.passive_view == ()


def test_low_priority_neighbor_accepted_when_full_with_probability_one() -> None:
    core = with_active(make(active_view_size=2, full_view_accept_probability=1.0), ["a", "b"])
    effects = core.handle(Neighbor("p", high_priority=False), 0.0)
    assert ("p", NeighborReply("me", accepted=True)) in sends(effects)
    assert "p" in core.active_view and len(core.active_view) == 2


def test_high_priority_neighbor_is_always_accepted() -> None:
    core = with_active(make(active_view_size=2), ["a", "b"])
    effects = core.handle(Neighbor("p", high_priority=True), 0.0)
    assert ("p", NeighborReply("me", accepted=True)) in sends(effects)
    assert "p" in core.active_view and len(core.active_view) == 2
    assert any(isinstance(m, Disconnect) for _, m in sends(effects))


def test_link_down_promotes_a_passive_node_with_high_priority_when_view_empties() -> None:
    core = with_passive(with_active(make(), ["a"]), ["p1"])
    effects = core.handle(LinkDown("a"), 1.0)
    assert NeighborDown("a") in effects
    assert core.active_view == ()
    assert Connect("p1") in effects
    assert ("p1", Neighbor("me", high_priority=True)) in sends(effects)
    assert core.pending_neighbor_requests == ("p1",)


def test_promotion_uses_low_priority_when_other_members_remain() -> None:
    core = with_passive(with_active(make(), ["a", "b"]), ["p1"])
    effects = core.handle(LinkDown("a"), 1.0)
    assert ("p1", Neighbor("me", high_priority=False)) in sends(effects)


def test_rejected_neighbor_tries_another_passive_node() -> None:
    core = with_passive(with_active(make(active_view_size=2), ["a", "b"]), ["p1", "p2"])
    first = sends(core.handle(LinkDown("a"), 1.0))
    (asked, _) = first[0]
    other = "p2" if asked == "p1" else "p1"
    effects = core.handle(NeighborReply(asked, accepted=False), 1.1)
    assert CloseLink(asked) in effects
    assert (other, Neighbor("me", high_priority=False)) in sends(effects)
    # Both tried and rejected: nobody else to ask until the next maintenance round.
    assert sends(core.handle(NeighborReply(other, accepted=False), 1.2)) == []
    assert core.pending_neighbor_requests == ()


def test_connect_failure_drops_the_candidate_and_tries_another() -> None:
    core = with_passive(with_active(make(active_view_size=2), ["a", "b"]), ["p1", "p2"])
    (asked, _) = sends(core.handle(LinkDown("a"), 1.0))[0]
    effects = core.handle(ConnectFailed(asked), 1.5)
    assert asked not in core.passive_view
    assert any(isinstance(m, Neighbor) for _, m in sends(effects))


def test_accepted_neighbor_reply_fills_the_slot() -> None:
    core = with_passive(with_active(make(active_view_size=2), ["a", "b"]), ["p1"])
    core.handle(LinkDown("a"), 1.0)
    effects = core.handle(NeighborReply("p1", accepted=True), 1.1)
    assert effects == [NeighborUp("p1")]
    assert core.active_view == ("b", "p1")
    assert "p1" not in core.passive_view


def test_unsolicited_acceptance_is_undone_to_keep_views_symmetric() -> None:
    core = with_active(make(), ["a"])
    effects = core.handle(NeighborReply("stranger", accepted=True), 0.0)
    assert sends(effects) == [("stranger", Disconnect("me", leaving=False))]
    assert "stranger" not in core.active_view


def test_unanswered_neighbor_request_times_out_and_moves_on() -> None:
    core = with_passive(
        with_active(make(active_view_size=2, neighbor_request_timeout=2.0), ["a", "b"]),
        ["p1", "p2"],
    )
    (asked, _) = sends(core.handle(LinkDown("a"), 1.0))[0]
    assert core.next_deadline() == 3.0
    assert core.tick(2.9) == []
    effects = core.tick(3.0)
    assert CloseLink(asked) in effects
    assert any(isinstance(m, Neighbor) and to != asked for to, m in sends(effects))


# ---------------------------------------------------------------- disconnect and leave


def test_disconnect_moves_the_sender_to_passive_and_refills() -> None:
    core = with_passive(with_active(make(), ["a", "b"]), ["p1"])
    effects = core.handle(Disconnect("a", leaving=False), 0.0)
    assert "a" not in core.active_view
    assert NeighborDown("a") in effects
    assert any(isinstance(m, Neighbor) for _, m in sends(effects))
    assert "a" in core.passive_view or "a" in core.pending_neighbor_requests


def test_disconnect_from_a_leaving_node_forgets_it_entirely() -> None:
    core = with_active(make(), ["a", "b"])
    core.handle(Disconnect("a", leaving=True), 0.0)
    assert "a" not in core.active_view and "a" not in core.passive_view


def test_disconnect_from_an_unknown_peer_only_remembers_it() -> None:
    core = with_active(make(), ["a", "b", "c", "d", "e"])
    effects = core.handle(Disconnect("stranger", leaving=False), 0.0)
    assert effects == []
    assert core.active_view == ("a", "b", "c", "d", "e")


def test_leave_tells_every_member_and_then_ignores_traffic() -> None:
    core = with_passive(with_active(make(), ["a", "b"]), ["p"])
    effects = core.leave(0.0)
    assert sends(effects) == [
        ("a", Disconnect("me", leaving=True)),
        ("b", Disconnect("me", leaving=True)),
    ]
    assert core.has_left and core.active_view == () and core.passive_view == ()
    assert core.handle(Join("x"), 1.0) == []
    assert sends(core.handle(Neighbor("x", high_priority=True), 1.0)) == [
        ("x", NeighborReply("me", accepted=False))
    ]
    assert core.membership_round(1.0) == []


def test_link_down_for_an_unknown_peer_changes_nothing() -> None:
    core = with_active(make(), ["a"])
    assert core.handle(LinkDown("ghost"), 0.0) == []
    assert core.active_view == ("a",)


# ---------------------------------------------------------------- shuffle


def test_membership_round_sends_a_shuffle_with_self_ka_active_and_kp_passive() -> None:
    core = with_passive(
        with_active(make(), ["a", "b", "c", "d", "e"]), [f"p{i}" for i in range(10)]
    )
    ((target, shuffle),) = [(t, m) for t, m in sends(core.membership_round(0.0))]
    assert isinstance(shuffle, Shuffle)
    assert target in core.active_view
    assert shuffle.origin == "me" and shuffle.ttl == 6
    ids = shuffle.node_ids
    assert ids[0] == "me"
    assert len([i for i in ids if i in "abcde"]) == 3
    assert len([i for i in ids if i.startswith("p")]) == 4


def test_shuffle_is_forwarded_while_ttl_remains() -> None:
    core = with_active(make(), ["a", "b"])
    effects = core.handle(Shuffle("a", "origin", 3, ("origin", "x")), 0.0)
    assert sends(effects) == [("b", Shuffle("me", "origin", 2, ("origin", "x")))]


def test_shuffle_walk_end_replies_and_merges_into_passive() -> None:
    core = with_passive(with_active(make(), ["a"]), ["p1", "p2"])
    effects = core.handle(Shuffle("a", "origin", 1, ("origin", "x", "me")), 0.0)
    ((to, reply),) = sends(effects)
    assert to == "origin" and isinstance(reply, ShuffleReply)
    assert sorted(reply.node_ids) == ["p1", "p2"]
    assert {"origin", "x"} <= set(core.passive_view)
    assert "me" not in core.passive_view


def test_shuffle_reply_merge_evicts_sent_ids_first() -> None:
    core = with_passive(with_active(make(passive_view_size=3), ["a"]), ["p1", "p2", "p3"])
    (sent,) = [m for _, m in sends(core.membership_round(0.0)) if isinstance(m, Shuffle)]
    sent_passive = [i for i in sent.node_ids if i.startswith("p")]
    core.handle(ShuffleReply("far", ("q1",)), 0.1)
    assert "q1" in core.passive_view
    assert len(core.passive_view) == 3
    assert sent_passive[0] not in core.passive_view


def test_passive_view_never_exceeds_its_size() -> None:
    core = make(passive_view_size=4)
    core.handle(ShuffleReply("x", tuple(f"p{i}" for i in range(20))), 0.0)
    assert len(core.passive_view) == 4


def test_shuffle_period_drives_rounds_from_tick() -> None:
    core = HyParView("me", HyParViewConfig(shuffle_period=10.0), random.Random(1))
    core.handle(JoinAccept("a"), 0.0)
    first = core.next_deadline()
    assert first is not None and 0.0 <= first <= 10.0
    effects = core.tick(first)
    assert any(isinstance(m, Shuffle) for _, m in sends(effects))
    assert core.next_deadline() == pytest.approx(first + 10.0)
