"""Helpers shared by the benchmark scripts in this directory.

Benchmarks are scripts, not tests: each prints one JSON object to stdout and its
progress to stderr. These helpers keep their statistics and environment reports
uniform: every figure is the median of several runs, reported with the runs.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

_START = time.perf_counter()


def progress(message: str) -> None:
    """Print a progress line to stderr, prefixed with the seconds since start."""
    print(f"[{time.perf_counter() - _START:7.2f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` in 0..1)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summary(runs: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """``{"median": ..., "runs": [...]}`` for one figure measured in several runs."""
    return {
        "median": round(statistics.median(runs), digits),
        "runs": [round(run, digits) for run in runs],
    }


def collect_garbage() -> None:
    """Start the next run from the same heap state: a full collection, twice
    (the first may free objects whose finalizers release more)."""
    gc.collect()
    gc.collect()


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment(*packages: str) -> dict[str, Any]:
    """Interpreter, platform, CPU count and versions of ``packages``."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {name: package_version(name) for name in packages},
    }


_COMPARE = {
    ">=": lambda value, threshold: value >= threshold,
    "<=": lambda value, threshold: value <= threshold,
    "<": lambda value, threshold: value < threshold,
}


def target(value: float, op: str, threshold: float, description: str) -> dict[str, Any]:
    """A pass/fail record: whether ``value op threshold`` holds (``op`` is >=, <= or <)."""
    return {
        "target": description,
        "value": round(value, 3),
        "op": op,
        "threshold": threshold,
        "pass": bool(_COMPARE[op](value, threshold)),
    }
