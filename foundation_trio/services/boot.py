"""The boot steps that start the core services on every node, in order.

``foundation_trio.open_node`` runs these after the root supervisor is up and
before its body: config first (the others read it), then telemetry (the others
emit events), events, the service registry and protection. Each service's
supervisor is a child of the root, so they stop in reverse order, after
everything the body started.
"""

from __future__ import annotations

from ..runtime.node import BootStep
from . import config, events, protection, registry, telemetry


def services_boot_steps(config_source: object = None) -> list[BootStep]:
    """The services' boot steps for one node, in start order.

    ``config_source`` is what ``open_node(config=...)`` was given (see
    :func:`foundation_trio.services.config.as_source`); a bad one raises
    :class:`TypeError` here, before the node opens.
    """
    return [
        config.boot_step(config_source),
        telemetry.boot,
        events.boot_step(),
        registry.boot,
        protection.boot,
    ]


__all__ = ["services_boot_steps"]
