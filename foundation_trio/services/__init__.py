"""The Foundation core services, each started on every node by ``foundation_trio.open_node``.

``ft.services`` is this package: its own API is the **service registry**
(:mod:`~foundation_trio.services.registry`: ``ft.services.register``, ``lookup``,
``discover``, ``health``, ``wait_for``, ...). The other services are modules of it,
exposed at the top level:

- :mod:`~foundation_trio.services.config` (``ft.config``): the node's validated
  configuration tree, loaded from code, a TOML file and the environment, with
  runtime updates of declared paths, subscriptions and persistence.
- :mod:`~foundation_trio.services.telemetry` (``ft.telemetry``): synchronous event
  dispatch to attached handlers, spans, counters, gauges and histograms.
- :mod:`~foundation_trio.services.events` (``ft.events``): the event store, in memory
  or in SQLite, with correlation, queries and subscriptions.
- :mod:`~foundation_trio.services.context` (``ft.context``): the request context,
  carried by ``contextvars`` into child tasks, spawned processes and GenServer requests.
- :mod:`~foundation_trio.services.errors` (``ft.errors``): the structured error type
  and helpers to wrap exceptions.
- :mod:`~foundation_trio.services.subscribers`: the bounded subscriptions with a
  ``Lagged`` marker that config and events share.
- :mod:`~foundation_trio.services.protection` (``ft.protection``): circuit breakers,
  rate limiters, resource pools and ``execute_protected``.
- :mod:`~foundation_trio.services.boot`: the ordered boot steps that start the
  services on a node.
"""

from .registry import (
    CheckCrashed,
    HealthCheck,
    HealthStatus,
    Healthy,
    ProcessDead,
    ServiceAlreadyRegistered,
    ServiceInfo,
    ServiceNotFound,
    ServiceWaitTimeout,
    TimedOut,
    Unhealthy,
    discover,
    health,
    info,
    list_services,
    lookup,
    register,
    unregister,
    wait_for,
)

__all__ = [
    "CheckCrashed",
    "HealthCheck",
    "HealthStatus",
    "Healthy",
    "ProcessDead",
    "ServiceAlreadyRegistered",
    "ServiceInfo",
    "ServiceNotFound",
    "ServiceWaitTimeout",
    "TimedOut",
    "Unhealthy",
    "discover",
    "health",
    "info",
    "list_services",
    "lookup",
    "register",
    "unregister",
    "wait_for",
]
