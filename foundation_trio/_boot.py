"""The public ``open_node``: the runtime's node with the core services booted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from .cluster.options import Cluster
from .runtime.node import Node
from .runtime.node import open_node as open_runtime_node
from .services.boot import services_boot_steps


@asynccontextmanager
async def open_node(
    name: str = "nonode",
    *,
    config: object = None,
    cluster: Cluster | Literal["auto"] | None = None,
    **options: Any,
) -> AsyncIterator[Node]:
    """Run a node, with the core services, for the duration of the ``async with`` block.

    This is :func:`foundation_trio.runtime.node.open_node` (see it for the body
    as a process, the orderly shutdown, cancellation and the options
    ``mailbox_size`` and ``shutdown_timeout``) with the core services started
    under the root supervisor before the body runs: config (``ft.config``),
    telemetry (``ft.telemetry``) and events (``ft.events``), in that order. The
    services stop after everything the body started.

    ``config`` is the node's configuration: None (the defaults), a mapping of
    sections (``{"events": {"store": "sqlite"}}``), the path of a TOML file, or
    a :class:`foundation_trio.ConfigSource` (with the application's own schema,
    environment variables and persisted updates). A config that does not
    validate fails the start with :class:`ConfigError` naming the path.

    ``cluster``, a :class:`foundation_trio.Cluster`, joins the node to a cluster:
    after the services, a ``"cluster"`` supervisor starts the node's links (its
    websocket endpoint, listening before the body runs, and its seeds) and the
    remote-process service, so that ``send``, ``call``, ``monitor`` and ``link``
    reach processes on other nodes (see docs/cluster.md); it stops after
    everything the body started and before the services. Anything else than a
    ``Cluster`` or ``"auto"`` raises :class:`TypeError`. ``"auto"`` builds the
    options from the environment and discovers the other nodes (DNS in
    Kubernetes, else mDNS, else nodes of this machine; see
    :func:`foundation_trio.discovery.auto_cluster` and docs/cluster.md,
    "Discovery").
    """
    if "boot" in options:
        raise TypeError(
            "foundation_trio.open_node() takes no boot steps: it boots the services "
            "itself; use foundation_trio.runtime.node.open_node(boot=[...]) for a bare node"
        )
    steps = services_boot_steps(config)
    if cluster is not None:
        # Imported here: the links need trio-websocket, which a node without a
        # cluster should not have to import.
        from .cluster.boot import cluster_boot

        steps.append(cluster_boot(cluster))
    async with open_runtime_node(name, boot=steps, **options) as node:
        yield node


__all__ = ["open_node"]
