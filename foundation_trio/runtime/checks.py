"""Checks of user-supplied numbers, shared by the runtime's entry points."""

from __future__ import annotations

import math


def check_timeout(value: object, what: str) -> float:
    """``value`` as seconds (``None`` means for ever), or a clear error naming ``what``.

    Checked before anything is sent, so that a bad timeout never leaves a request
    half-made.
    """
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what}: timeout must be seconds (int or float) or None, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{what}: timeout must be a number of seconds, got nan")
    return float(value)


def check_mailbox_size(value: object, what: str) -> int | None:
    """A positive int, or None for the node's default."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what}: mailbox_size must be a positive int or None, got {value!r}")
    return value
