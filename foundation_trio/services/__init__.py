"""The Foundation core services, each started on every node by ``foundation_trio.open_node``.

- :mod:`~foundation_trio.services.telemetry` (``ft.telemetry``): synchronous event
  dispatch to attached handlers, spans, counters, gauges and histograms.
- :mod:`~foundation_trio.services.context` (``ft.context``): the request context,
  carried by ``contextvars`` into child tasks, spawned processes and GenServer requests.
- :mod:`~foundation_trio.services.boot`: the ordered boot steps that start the
  services on a node.
"""
