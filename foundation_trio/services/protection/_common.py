"""What the protection primitives share: the error base, telemetry, option checks."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from ...runtime.errors import FoundationError, NoNodeError
from .. import telemetry

Clock = Callable[[], float]
"""Where a primitive reads the time: ``trio.current_time`` unless told otherwise."""


class ProtectionError(FoundationError):
    """A protection mechanism refused a call before it reached the protected service
    (:class:`RateLimited`, :class:`CircuitOpen`, :class:`PoolCheckoutTimeout`,
    :class:`PoolClosed`). A refusal is never counted as the service's failure."""


def emit(
    event_name: str, measurements: Mapping[str, float], metadata: Mapping[str, object]
) -> None:
    """Emit a telemetry event if the caller runs inside a node; the primitives also
    work in plain trio code, where there is no telemetry service to tell."""
    with contextlib.suppress(NoNodeError):
        telemetry.execute(event_name, measurements, metadata)


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what}: name must be a non-empty str, got {value!r}")
    return value


def check_clock(value: object, what: str) -> Clock:
    if value is None:
        return trio.current_time
    if not callable(value):
        raise TypeError(f"{what}: clock must be a function returning seconds, got {value!r}")
    return value


def positive_int(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be 1 or more, got {value!r}")


def positive_finite(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number greater than 0, got {value!r}")


def non_negative_finite(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number, 0 or more, got {value!r}")


def optional_seconds(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"{attribute.name} must be 0 or more seconds, or None, got {value!r}")


def optional_async_function(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{attribute.name} must be an async function or None, got {value!r}")


def async_function(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise TypeError(f"{attribute.name} must be an async function, got {value!r}")


def exception_types(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in value
    ):
        raise TypeError(f"{attribute.name} must be a tuple of exception classes, got {value!r}")


def as_tuple(value: object) -> object:
    """Accept a list or a single exception class where a tuple of them is expected."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, type):
        return (value,)
    return value
