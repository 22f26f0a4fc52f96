"""Client-server overlay, sans-IO: clients link only to servers, servers to each other.

Partisan's client-server topology: a small, fully meshed set of servers carries the
cluster, and each client holds links to the servers only, never to another client. It
shares the HELLO/GOODBYE protocol of :mod:`foundation_trio.protocols.fullmesh`; what
differs is the rule for who links to whom:

===========  ====================  ===================
this node    opens links to        accepts links from
===========  ====================  ===================
server       servers               servers, clients
client       servers               servers
===========  ====================  ===================

A client that joins through another client still learns the servers from its reply and
links to them; the client-to-client link is closed at once.
"""

from __future__ import annotations

import random
from typing import Final

from foundation_trio.protocols.common import NodeId
from foundation_trio.protocols.fullmesh import Goodbye, Hello, MeshConfig, MeshOverlay

__all__ = ["CLIENT", "SERVER", "ClientServer", "Goodbye", "Hello", "MeshConfig"]

SERVER: Final = "server"
CLIENT: Final = "client"


class ClientServer(MeshOverlay):
    """One node of a client-server overlay; ``role`` is :data:`SERVER` or :data:`CLIENT`."""

    __slots__ = ()

    def __init__(
        self,
        node_id: NodeId,
        role: str,
        config: MeshConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if role not in (SERVER, CLIENT):
            raise ValueError(f"ClientServer role must be {SERVER!r} or {CLIENT!r}, got {role!r}")
        super().__init__(node_id, role, config, rng)

    @property
    def is_server(self) -> bool:
        """Whether this node is a server."""
        return self.role == SERVER

    def initiates_to(self, peer_role: str) -> bool:
        """Everyone opens links to servers only."""
        return peer_role == SERVER

    def accepts_from(self, peer_role: str) -> bool:
        """Servers accept everyone; clients accept servers only."""
        return self.role == SERVER or peer_role == SERVER
