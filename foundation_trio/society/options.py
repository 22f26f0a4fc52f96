"""The options of a society and of its pools, validated with ``_validation``.

Both are frozen attrs records built from keyword arguments by
:func:`~foundation_trio.society.pool` and :func:`~foundation_trio.society.start`;
an unknown option, a value of the wrong type or an inconsistent combination
raises :class:`~foundation_trio.ConfigError` naming the option.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs

from .topology import Topology

Routing = Literal["round_robin", "least_loaded", "hash", "broadcast"]
"""How a pool chooses the worker of a job."""

ROUTINGS: tuple[Routing, ...] = ("round_robin", "least_loaded", "hash", "broadcast")


def _at_least(minimum: float) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
        if value is not None and not value >= minimum:
            raise ValueError(f"{attribute.name} must be {minimum} or more, got {value!r}")

    return check


def _finite_positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value < math.inf:
        raise ValueError(f"{attribute.name} must be finite seconds > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class PoolOptions:
    """Options of one worker pool (see :func:`~foundation_trio.society.pool`).

    Size: exactly one of ``count`` (a fixed number of workers; ``pool()`` also
    accepts ``count="cpus"``, meaning ``os.cpu_count()``) or ``min`` and ``max``
    (autoscaled by queue depth between the two).

    Autoscaling: every ``scale_interval`` seconds the coordinator measures the
    pool's depth per worker, ``(queued + running + blocked submitters) /
    workers``. When the last ``scale_samples`` measurements are all at or above
    ``scale_up_depth`` it adds a worker; when they are all at or below
    ``scale_down_depth`` it retires one. The gap between the two thresholds and
    the run of agreeing samples are the hysteresis: after a change the samples
    start again, so the pool changes by at most one worker per
    ``scale_samples * scale_interval`` seconds.
    """

    count: int | None = attrs.field(default=None, validator=_at_least(1))
    """A fixed number of workers."""
    min: int | None = attrs.field(default=None, validator=_at_least(1))
    """Fewest workers of an autoscaled pool (also its initial size)."""
    max: int | None = attrs.field(default=None, validator=_at_least(1))
    """Most workers of an autoscaled pool."""
    routing: Routing = "round_robin"
    """``round_robin``, ``least_loaded``, ``hash`` (by the ``key`` of each job) or
    ``broadcast`` (every job goes to every worker)."""
    queue_size: int = attrs.field(default=64, validator=_at_least(1))
    """Jobs each worker's queue holds before submitters wait (backpressure)."""
    max_restarts: int = attrs.field(default=10, validator=_at_least(0))
    """Worker restarts the pool's supervisor allows within ``max_seconds``."""
    max_seconds: float = attrs.field(default=5.0, validator=_finite_positive)
    shutdown: float = attrs.field(default=5.0, validator=_at_least(0))
    """Seconds a worker asked to stop may take to finish its job before it is killed."""
    scale_interval: float = attrs.field(default=1.0, validator=_finite_positive)
    """Seconds between two depth measurements of an autoscaled pool."""
    scale_up_depth: float = attrs.field(default=4.0, validator=_at_least(0))
    """Depth per worker at or above which the pool grows."""
    scale_down_depth: float = attrs.field(default=0.5, validator=_at_least(0))
    """Depth per worker at or below which the pool shrinks."""
    scale_samples: int = attrs.field(default=3, validator=_at_least(1))
    """Consecutive agreeing measurements needed before the pool changes size."""
    latency_window: int = attrs.field(default=1024, validator=_at_least(1))
    """How many recent jobs the latency percentiles are computed from."""

    def __attrs_post_init__(self) -> None:
        if self.count is not None:
            if self.min is not None or self.max is not None:
                raise ValueError("give either count or min and max, not both")
        elif self.min is None or self.max is None:
            raise ValueError("give count (or count='cpus'), or both min and max to autoscale")
        elif self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        if not self.scale_down_depth < self.scale_up_depth:
            raise ValueError(
                f"scale_down_depth ({self.scale_down_depth}) must be below scale_up_depth "
                f"({self.scale_up_depth}): the gap is the hysteresis"
            )

    @property
    def autoscaled(self) -> bool:
        return self.count is None

    @property
    def initial_size(self) -> int:
        size = self.count if self.count is not None else self.min
        assert size is not None
        return size


@attrs.frozen(kw_only=True)
class SocietyOptions:
    """Options of a society (see :func:`~foundation_trio.society.start`)."""

    topology: Topology = "mesh"
    """How members are connected for :meth:`Society.neighbours`: mesh, ring or tree."""
    fanout: int = attrs.field(default=2, validator=_at_least(1))
    """Children per member in the ``tree`` topology."""
    max_restarts: int = attrs.field(default=3, validator=_at_least(0))
    """Restarts of the whole society (a pool that gave up, a coordinator crash)
    allowed within ``max_seconds``; one more and the society stops."""
    max_seconds: float = attrs.field(default=5.0, validator=_finite_positive)


__all__ = ["ROUTINGS", "PoolOptions", "Routing", "SocietyOptions"]
