"""Process societies: a supervised coordinator with worker pools, routing,
topologies, autoscaling by queue depth, health from measurements, and tools for
CPU-bound work. Exposed as ``foundation_trio.society``::

    import foundation_trio as ft

    society = await ft.society.start(ft.society.pool("resize", resize, count=4))
    thumbnail = await society.submit(image)

See ``docs/society.md``.
"""

from __future__ import annotations

from .autoscale import ScaleDecision, scale_decision
from .core import (
    JOBS_PER_YIELD,
    HealthStatus,
    Percentiles,
    PoolHealth,
    PoolSpec,
    Society,
    SocietyHealth,
    Worker,
    WorkerFactory,
    lookup,
    pool,
    start,
)
from .cpu import DEFAULT_MAX_SLICE, CpuMode, cooperative, run_cpu
from .errors import (
    CpuWorkerLost,
    JobFailed,
    NotAMember,
    NotPicklable,
    QueueFull,
    SocietyError,
    SocietyStopped,
)
from .options import ROUTINGS, PoolOptions, Routing, SocietyOptions
from .topology import TOPOLOGIES, Topology, neighbour_positions

__all__ = [
    "DEFAULT_MAX_SLICE",
    "JOBS_PER_YIELD",
    "ROUTINGS",
    "TOPOLOGIES",
    "CpuMode",
    "CpuWorkerLost",
    "HealthStatus",
    "JobFailed",
    "NotAMember",
    "NotPicklable",
    "Percentiles",
    "PoolHealth",
    "PoolOptions",
    "PoolSpec",
    "QueueFull",
    "Routing",
    "ScaleDecision",
    "Society",
    "SocietyError",
    "SocietyHealth",
    "SocietyOptions",
    "SocietyStopped",
    "Topology",
    "Worker",
    "WorkerFactory",
    "cooperative",
    "lookup",
    "neighbour_positions",
    "pool",
    "run_cpu",
    "scale_decision",
    "start",
]
