"""In-memory links with the interface of ``foundation_trio.cluster.links.Links``.

Tests of remote-process semantics use them where real sockets would only add time
and nondeterminism: they run under trio's ``MockClock`` and can be severed or made
to drop everything (a blackhole) on demand. Integration tests use the real links.

A :class:`Network` holds the nodes' endpoints by address. Each linked pair has,
per direction and channel, a bounded memory channel and a pump task in the
receiving node's links nursery that hands each frame to ``events.message_received``;
a :class:`LinkProtocolError` from it closes the link, as the real links do.
"""

from __future__ import annotations

from typing import Any

import trio

from foundation_trio.cluster.errors import LinkProtocolError, NotConnected, SendQueueFull
from foundation_trio.cluster.options import Channel
from foundation_trio.cluster.remote import ClusterService
from foundation_trio.runtime.node import BootStep, Node
from foundation_trio.runtime.spec import ChildSpec


class Network:
    def __init__(self, queue_size: int = 64) -> None:
        self.endpoints: dict[str, MemLinks] = {}
        self.queue_size = queue_size
        self.errors: list[str] = []


class _Direction:
    """One direction of one channel of a link."""

    def __init__(self, size: int) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](size)
        self.blackhole = False


class MemLinks:
    def __init__(self, node_name: str, network: Network, events: Any) -> None:
        self.node_name = node_name
        self.network = network
        self.events = events
        self.address = f"mem:{node_name}"
        self._out: dict[str, dict[Channel, _Direction]] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.network.endpoints[self.address] = self
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.network.endpoints.pop(self.address, None)
            for peer in list(self._out):
                self.sever(peer, "the node's links stopped")

    def peers(self) -> list[str]:
        return sorted(self._out)

    async def connect(self, address: str) -> str:
        await trio.lowlevel.checkpoint()
        other = self.network.endpoints.get(address)
        if other is None:
            raise OSError(f"nothing listens at {address}")
        if other.node_name in self._out:
            return other.node_name
        size = self.network.queue_size
        forward = {c: _Direction(size) for c in Channel}
        backward = {c: _Direction(size) for c in Channel}
        self._out[other.node_name] = forward
        other._out[self.node_name] = backward
        other._start_pumps(self.node_name, forward)
        self._start_pumps(other.node_name, backward)
        self.events.peer_up(other.node_name)
        other.events.peer_up(self.node_name)
        return other.node_name

    def _start_pumps(self, peer: str, incoming: dict[Channel, _Direction]) -> None:
        assert self._nursery is not None
        scope = self._scopes[peer] = trio.CancelScope()

        async def pump(direction: _Direction, channel: Channel) -> None:
            async for frame in direction.receive:
                try:
                    await self.events.message_received(peer, channel, frame)
                except LinkProtocolError as exc:
                    self.network.errors.append(str(exc))
                    self.sever(peer, f"protocol error: {exc}")
                    return

        async def pumps() -> None:
            with scope:
                async with trio.open_nursery() as nursery:
                    for channel, direction in incoming.items():
                        nursery.start_soon(pump, direction, channel)

        self._nursery.start_soon(pumps)

    def _direction(self, peer: str, channel: Channel) -> _Direction:
        out = self._out.get(peer)
        if out is None:
            raise NotConnected(peer)
        return out[channel]

    async def send(self, peer: str, channel: Channel, data: bytes) -> None:
        direction = self._direction(peer, channel)
        if direction.blackhole:
            await trio.lowlevel.checkpoint()
            return
        try:
            await direction.send.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise NotConnected(peer) from None

    def send_nowait(self, peer: str, channel: Channel, data: bytes) -> None:
        direction = self._direction(peer, channel)
        if direction.blackhole:
            return
        try:
            direction.send.send_nowait(data)
        except trio.WouldBlock:
            raise SendQueueFull(peer, channel.value, self.network.queue_size) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise NotConnected(peer) from None

    def disconnect(self, peer: str, reason: str) -> None:
        self.sever(peer, reason)

    def sever(self, peer: str, reason: str) -> None:
        """Close the link to ``peer`` at once, on both sides."""
        other = self.network.endpoints.get(f"mem:{peer}")
        self._drop(peer, reason)
        if other is not None:
            other._drop(self.node_name, reason)

    def blackhole(self, peer: str, on: bool = True) -> None:
        """Drop (or stop dropping) everything this node sends to ``peer``."""
        for direction in self._out[peer].values():
            direction.blackhole = on

    def _drop(self, peer: str, reason: str) -> None:
        out = self._out.pop(peer, None)
        scope = self._scopes.pop(peer, None)
        if scope is not None:
            scope.cancel()
        if out is not None:
            for direction in out.values():
                direction.send.close()
            self.events.peer_down(peer, reason)


def mem_cluster_boot(network: Network) -> tuple[BootStep, dict[str, MemLinks]]:
    """A boot step joining the node to ``network`` (as ``cluster_boot`` does with real
    links), and the dict where each node's links are put by node name."""
    started: dict[str, MemLinks] = {}

    async def boot(node: Node) -> None:
        service = ClusterService(node)
        node.set_extension(ClusterService, service)

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            links = MemLinks(node.name, network, service)
            started[node.name] = links
            await service.run(links, task_status=task_status)  # type: ignore[arg-type]

        await node.start_supervisor([ChildSpec("links", run)], id="cluster")
        node.remote = service

    return boot, started
