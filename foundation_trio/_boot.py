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
    under the root supervisor before the body runs: telemetry
    (``ft.telemetry``) today. The services stop after everything the body
    started.

    ``config`` (the node's configuration tree) and ``cluster`` (joining a
    cluster) are not implemented yet: passing anything but None raises
    :class:`NotImplementedError`.
    """
    if config is not None:
        raise NotImplementedError(
            "open_node(config=...): the config service is not implemented yet; "
            "open the node without config"
        )
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
    async with open_runtime_node(name, boot=services_boot_steps(), **options) as node:
        yield node


__all__ = ["open_node"]
