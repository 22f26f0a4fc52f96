"""The autoscaling rule of a pool, as a pure function of what was measured.

The coordinator measures each autoscaled pool every ``scale_interval`` seconds
and asks :func:`scale_decision` what to do; keeping the rule here, apart from
the processes, lets it be checked exhaustively (tests/test_society.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from .options import PoolOptions

ScaleDecision = Literal[-1, 0, 1]


def scale_decision(
    options: PoolOptions, samples: Iterable[float], workers: int, depth: float
) -> ScaleDecision:
    """Whether an autoscaled pool should grow (+1), shrink (-1) or stay (0).

    ``samples`` are the latest depth-per-worker measurements, oldest first, the
    last one taken now; ``workers`` is how many workers take new jobs and
    ``depth`` the pool's current depth (jobs queued and running on them, plus
    blocked submitters).

    - Grow when the last ``scale_samples`` samples are all at or above
      ``scale_up_depth`` and ``workers < max``.
    - Shrink when they are all at or below ``scale_down_depth``,
      ``workers > min``, and one worker fewer would leave a depth per worker
      below ``scale_up_depth``: a pool never shrinks into a state that would
      make it grow again.
    - Otherwise stay, also while fewer than ``scale_samples`` samples exist.
    """
    low, high = options.min, options.max
    if low is None or high is None:
        raise ValueError("scale_decision() applies to autoscaled pools (min and max set)")
    window = list(samples)[-options.scale_samples :]
    if len(window) < options.scale_samples:
        return 0
    if all(s >= options.scale_up_depth for s in window) and workers < high:
        return 1
    if (
        all(s <= options.scale_down_depth for s in window)
        and workers > low
        and depth / (workers - 1) < options.scale_up_depth
    ):
        return -1
    return 0


__all__ = ["ScaleDecision", "scale_decision"]
