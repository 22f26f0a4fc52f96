"""The public ``open_node``: the runtime's node with the core services booted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .runtime.node import Node
from .runtime.node import open_node as open_runtime_node
from .services.boot import services_boot_steps


@asynccontextmanager
async def open_node(
    name: str = "nonode", *, config: object = None, cluster: object = None, **options: Any
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

    ``cluster`` (joining a cluster) is not implemented yet: passing anything
    but None raises :class:`NotImplementedError`.
    """
    if cluster is not None:
        raise NotImplementedError(
            "open_node(cluster=...): clustering is not implemented yet; "
            "open the node without cluster"
        )
    if "boot" in options:
        raise TypeError(
            "foundation_trio.open_node() takes no boot steps: it boots the services "
            "itself; use foundation_trio.runtime.node.open_node(boot=[...]) for a bare node"
        )
    steps = services_boot_steps(config)
    async with open_runtime_node(name, boot=steps, **options) as node:
        yield node


__all__ = ["open_node"]
