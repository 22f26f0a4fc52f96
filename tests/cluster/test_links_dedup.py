"""The deduplication rule of simultaneous dials, run through many message orders.

A small model of two nodes dialling each other follows the steps ``Links`` takes:
the dialler learns the peer's name at the challenge (and gives up if it already has
a connection), the server decides with ``decide_inbound`` once the dialler has proved
the cookie, the dialler registers on the welcome. Messages on one connection arrive
in order; across connections, hypothesis picks the order. Whatever it picks, both
nodes end with the same single connection and no node ever drops a connection the
other one kept.
"""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_trio.cluster.links import Inbound, decide_inbound


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.registered: int | None = None
        self.dialling: int | None = None
        self.dropped: set[int] = set()
        self.downs = 0


def run(
    names: tuple[str, str], dials: list[int], drop: int | None, choices: st.DataObject
) -> dict[str, Node]:
    """Run the dials (indices into ``names``) to the end. ``drop``: the index of a node
    that, once linked, decides its connection is dead (as after missed heartbeats)
    while the other still has it. A node left without a connection dials again, as
    the reconnection loop does, a few times."""
    nodes = {name: Node(name) for name in names}
    # connection id -> (dialler, server); messages in flight per (connection, towards)
    conns: dict[int, tuple[str, str]] = {}
    inflight: dict[tuple[int, str], deque[str]] = {}
    pending = list(dials)
    retries = {name: 4 for name in names}
    started = 0

    def redial(name: str) -> None:
        node = nodes[name]
        if node.registered is None and node.dialling is None and retries[name] > 0:
            retries[name] -= 1
            pending.append(names.index(name))

    def post(conn: int, to: str, message: str) -> None:
        inflight.setdefault((conn, to), deque()).append(message)

    def close(conn: int, by: str) -> None:
        dialler, server = conns[conn]
        other = server if by == dialler else dialler
        post(conn, other, "close")

    def deliver(conn: int, to: str, message: str) -> None:
        node = nodes[to]
        dialler, server = conns[conn]
        peer = server if to == dialler else dialler
        if message == "hello":
            post(conn, dialler, "challenge")
        elif message == "challenge":
            if node.registered is not None or node.dialling is not None:
                post(conn, server, "reject")  # already linked: give up the dial
            else:
                node.dialling = conn
                post(conn, server, "proof")
        elif message == "proof":
            registered = None
            if node.registered is not None:
                registered = conns[node.registered][0]
            decision = decide_inbound(to, peer, registered, node.dialling is not None)
            if decision is Inbound.REJECT:
                post(conn, dialler, "reject")
                return
            if decision is Inbound.REPLACE and node.registered is not None:
                node.downs += 1
                close(node.registered, to)
            if decision is Inbound.ACCEPT_DROP_DIAL:
                assert node.dialling is not None
                node.dropped.add(node.dialling)
            node.registered = conn
            post(conn, dialler, "welcome")
        elif message in ("welcome", "reject"):
            if to == server:
                return  # the dialler gave up: nothing was registered here
            node.dialling = None
            if message == "welcome":
                if conn in node.dropped:
                    close(conn, to)
                else:
                    assert node.registered is None
                    node.registered = conn
            else:
                redial(to)
        elif message == "close" and node.registered == conn:
            node.registered = None
            node.downs += 1
            redial(to)

    while True:
        ready = sorted(key for key, queue in inflight.items() if queue)
        can_start = started < len(pending)
        dropper = nodes[names[drop]] if drop is not None else None
        can_drop = dropper is not None and dropper.registered is not None
        if not ready and not can_start:
            break
        options = len(ready) + (1 if can_start else 0) + (1 if can_drop else 0)
        pick = choices.draw(st.integers(0, options - 1))
        if pick == len(ready) + (1 if can_start else 0):
            assert dropper is not None and dropper.registered is not None
            close(dropper.registered, dropper.name)
            dropper.registered = None
            dropper.downs += 1
            drop = None
            redial(dropper.name)
            continue
        if pick == len(ready):
            dialler = names[pending[started]]
            server = names[1 - pending[started]]
            conns[started] = (dialler, server)
            post(started, server, "hello")
            started += 1
            continue
        conn, to = ready[pick]
        deliver(conn, to, inflight[(conn, to)].popleft())
    return nodes


@settings(max_examples=150, deadline=None)
@given(
    names=st.sampled_from([("a", "b"), ("b", "a")]),
    dials=st.sampled_from([[0, 1], [1, 0], [0], [1]]),
    data=st.data(),
)
def test_simultaneous_dials_keep_the_same_single_connection(
    names: tuple[str, str], dials: list[int], data: st.DataObject
) -> None:
    first, second = run(names, dials, None, data).values()
    assert first.registered is not None
    assert first.registered == second.registered
    assert first.downs == second.downs == 0  # no link ever flapped
    assert first.dialling is None and second.dialling is None


@settings(max_examples=150, deadline=None)
@given(
    names=st.sampled_from([("a", "b"), ("b", "a")]),
    dials=st.sampled_from([[0, 1], [1, 0], [0], [1]]),
    drop=st.sampled_from([0, 1]),
    data=st.data(),
)
def test_after_one_side_gives_a_connection_up_both_agree_again(
    names: tuple[str, str], dials: list[int], drop: int, data: st.DataObject
) -> None:
    first, second = run(names, dials, drop, data).values()
    assert first.registered is not None
    assert first.registered == second.registered
    assert first.dialling is None and second.dialling is None


def test_the_rule_on_its_own() -> None:
    # both dial: the smaller name's dial wins on both sides
    assert decide_inbound("a", "b", None, dialling=True) is Inbound.REJECT
    assert decide_inbound("b", "a", None, dialling=True) is Inbound.ACCEPT_DROP_DIAL
    # a connection we dialled and our name sorts first: keep it
    assert decide_inbound("a", "b", "a", dialling=False) is Inbound.REJECT
    # otherwise the peer has given the registered connection up
    assert decide_inbound("b", "a", "b", dialling=False) is Inbound.REPLACE
    assert decide_inbound("a", "b", "b", dialling=False) is Inbound.REPLACE
    assert decide_inbound("a", "b", None, dialling=False) is Inbound.ACCEPT
