"""Deterministic discrete-event simulator for the sans-IO protocol cores.

:class:`Simulator` runs many membership + Plumtree nodes over a simulated network with
seeded latency, loss, crashes and partitions; :mod:`foundation_trio.sim.experiments`
reproduces the HyParView/Plumtree papers' measurements on top of it.
"""

from foundation_trio.sim.experiments import (
    FailureResult,
    SteadyStateResult,
    build_overlay,
    measure_failure,
    measure_steady_state,
)
from foundation_trio.sim.simulator import (
    BroadcastRecord,
    MembershipCore,
    SimConfig,
    SimNode,
    Simulator,
)

__all__ = [
    "BroadcastRecord",
    "FailureResult",
    "MembershipCore",
    "SimConfig",
    "SimNode",
    "Simulator",
    "SteadyStateResult",
    "build_overlay",
    "measure_failure",
    "measure_steady_state",
]
