"""Full-mesh and client-server overlays, run to completion with a tiny message pump."""

from __future__ import annotations

import random
from collections import deque

import pytest

from foundation_trio.protocols.client_server import CLIENT, SERVER, ClientServer
from foundation_trio.protocols.common import (
    ConnectFailed,
    LinkDown,
    NeighborDown,
    NeighborUp,
    Send,
)
from foundation_trio.protocols.fullmesh import FullMesh, Goodbye, Hello, MeshConfig, MeshOverlay


def pump(nodes: dict[str, MeshOverlay], effects: list[tuple[str, list[object]]]) -> None:
    """Deliver every Send in FIFO order until nothing is left."""
    queue: deque[tuple[str, object]] = deque()
    for _, batch in effects:
        queue.extend((e.to, e.message) for e in batch if isinstance(e, Send))
    while queue:
        to, message = queue.popleft()
        if to not in nodes:
            continue
        out = nodes[to].handle(message, 0.0)
        queue.extend((e.to, e.message) for e in out if isinstance(e, Send))


def test_bad_mesh_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="gossip_period"):
        MeshConfig(gossip_period=0.0)
    with pytest.raises(ValueError, match="connect_timeout"):
        MeshConfig(connect_timeout=-1.0)


def test_full_mesh_links_everyone_to_everyone() -> None:
    config = MeshConfig(gossip_period=None)
    nodes: dict[str, MeshOverlay] = {
        f"n{i}": FullMesh(f"n{i}", config, random.Random(i)) for i in range(6)
    }
    for i in range(1, 6):
        pump(nodes, [(f"n{i}", nodes[f"n{i}"].join(f"n{i - 1}", 0.0))])
    for name, node in nodes.items():
        assert set(node.neighbors) == set(nodes) - {name}


def test_full_mesh_forgets_failed_and_departed_members() -> None:
    mesh = FullMesh("me", MeshConfig(gossip_period=None))
    mesh.handle(Hello("a", "peer", (("b", "peer"),), False), 0.0)
    assert mesh.neighbors == ("a",)
    assert mesh.handle(LinkDown("a"), 0.0) == [NeighborDown("a")]
    assert mesh.handle(ConnectFailed("b"), 0.0) == []
    assert mesh.known_members == {}
    mesh.handle(Hello("c", "peer", (), False), 0.0)
    assert mesh.handle(Goodbye("c"), 0.0) == [NeighborDown("c")]
    with pytest.raises(TypeError):
        mesh.handle(42, 0.0)
    with pytest.raises(ValueError, match="itself"):
        mesh.join("me", 0.0)


def test_unanswered_connect_is_given_up_after_the_timeout() -> None:
    mesh = FullMesh("me", MeshConfig(gossip_period=None, connect_timeout=2.0))
    mesh.join("seed", 0.0)
    assert mesh.next_deadline() == 2.0
    mesh.tick(2.0)
    assert mesh.known_members == {} and mesh.next_deadline() is None


def test_leave_says_goodbye_and_gossip_round_spreads_the_member_list() -> None:
    mesh = FullMesh("me", MeshConfig(gossip_period=None))
    mesh.handle(Hello("a", "peer", (), False), 0.0)
    (gossip,) = mesh.membership_round(0.0)
    assert isinstance(gossip, Send) and isinstance(gossip.message, Hello)
    assert gossip.message.members == (("a", "peer"),)
    effects = mesh.leave(0.0)
    assert Send("a", Goodbye("me")) in effects and NeighborDown("a") in effects
    assert mesh.membership_round(0.0) == []


def test_client_server_links_clients_only_to_servers() -> None:
    config = MeshConfig(gossip_period=None)
    roles = {"s0": SERVER, "s1": SERVER, "s2": SERVER, "c0": CLIENT, "c1": CLIENT, "c2": CLIENT}
    nodes: dict[str, MeshOverlay] = {
        name: ClientServer(name, role, config, random.Random(1)) for name, role in roles.items()
    }
    order = ["s1", "s2", "c0", "c1", "c2"]
    contacts = {"s1": "s0", "s2": "s1", "c0": "s2", "c1": "c0", "c2": "s0"}
    for name in order:
        pump(nodes, [(name, nodes[name].join(contacts[name], 0.0))])
    servers = {"s0", "s1", "s2"}
    clients = {"c0", "c1", "c2"}
    for name in servers:
        assert set(nodes[name].neighbors) == (servers | clients) - {name}
    for name in clients:
        # c1 joined through a client and still reached every server, and no client.
        assert set(nodes[name].neighbors) == servers


def test_client_server_rejects_unknown_roles() -> None:
    with pytest.raises(ValueError, match="role"):
        ClientServer("x", "worker")


def test_neighbor_up_is_reported_once_per_link() -> None:
    mesh = FullMesh("me", MeshConfig(gossip_period=None))
    first = mesh.handle(Hello("a", "peer", (), False), 0.0)
    second = mesh.handle(Hello("a", "peer", (), True), 0.0)
    assert first.count(NeighborUp("a")) == 1
    assert NeighborUp("a") not in second


def test_is_connecting_until_the_hello_answer_or_the_timeout() -> None:
    mesh = FullMesh("a", MeshConfig(connect_timeout=5.0))
    mesh.join("b", 0.0)
    assert mesh.is_connecting("b") and not mesh.is_active("b")
    mesh.handle(Hello("b", "peer", (), True), 1.0)
    assert not mesh.is_connecting("b") and mesh.is_active("b")
    mesh.join("c", 1.0)
    assert mesh.is_connecting("c")
    mesh.tick(5.9)
    assert mesh.is_connecting("c")
    mesh.tick(6.0)
    assert not mesh.is_connecting("c") and "c" not in mesh.known_members
