"""The cluster's boot step: what ``ft.open_node(cluster=ft.Cluster(...))`` starts."""

from __future__ import annotations

from typing import Any

import trio

from ..runtime.node import BootStep, Node
from ..runtime.spec import ChildSpec, Restart
from .discovery import auto_cluster, run_discovery
from .links import Links
from .membership import Membership
from .options import Cluster
from .remote import ClusterService


def cluster_boot(options: Cluster | str) -> BootStep:
    """The boot step that joins the node to a cluster with ``options``.

    It starts a supervisor (``"ft.cluster"``, a child of the root) whose one child runs
    the node's links (listening, dialling the seeds, reconnecting) and the remote
    process service; it returns once the endpoint listens, so that
    ``ft.cluster_address()`` is known in the body. Then it installs the service as
    ``node.remote``, the runtime's route to processes on other nodes. If the links
    crash, the child is restarted (up to 3 times in 5 s) with a fresh endpoint:
    every peer sees the node go down and come back. With ``options.discovery``, a
    second child runs the discovery rounds (see ``discovery.py``); ``"auto"``
    builds the options from the environment (:func:`discovery.auto_cluster`).
    """
    if isinstance(options, str) and options == "auto":
        # The environment is read when the node is opened (docs/cluster.md, Discovery).
        options = auto_cluster()
    if not isinstance(options, Cluster):
        raise TypeError(f"open_node(cluster=...) takes a foundation_trio.Cluster, got {options!r}")

    async def boot(node: Node) -> None:
        service = ClusterService(node, max_message_size=options.max_message_size)
        node.set_extension(ClusterService, service)
        membership = Membership(node, options, service)
        service.membership = membership
        node.set_extension(Membership, membership)

        async def run_links(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            links = Links(node.name, options, service, on_heartbeat=membership.heartbeat_received)
            async with trio.open_nursery() as nursery:

                async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    await service.run(links, task_status=task_status)
                    # The service stopped (the node leaves): so does the overlay.
                    nursery.cancel_scope.cancel()

                await nursery.start(serve)
                await nursery.start(membership.run, links)
                task_status.started()

        children = [ChildSpec("links", run_links, restart=Restart.PERMANENT)]
        discovery = options.discovery
        if discovery is not None:

            async def discover(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                await run_discovery(
                    lambda: service.links,
                    discovery,
                    options.cookie,
                    membership=membership,
                    task_status=task_status,
                )

            children.append(ChildSpec("discovery", discover, restart=Restart.PERMANENT))
        await node.start_supervisor(
            children,
            name="ft.cluster",
            max_restarts=3,
            max_seconds=5.0,
        )
        node.remote = service

    return boot


__all__ = ["cluster_boot"]
