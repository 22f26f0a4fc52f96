"""attrs validators and converters shared by the cluster's option records
(``options.py``, ``discovery.py``): one wording for every bad value."""

from __future__ import annotations

import math
from typing import Any

import attrs

from ..runtime.errors import ConfigError


def where(instance: object, attribute: attrs.Attribute[Any]) -> str:
    """``"Record.field"``, how an error names the value it refuses."""
    return f"{type(instance).__name__}.{attribute.name}"


def seconds(*, allow_zero: bool = False) -> Any:
    """A validator of a finite duration: greater than 0, or 0 or more."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        ok = (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and math.isfinite(value)
            and (value >= 0 if allow_zero else value > 0)
        )
        if not ok:
            bound = "0 or more" if allow_zero else "greater than 0"
            raise ConfigError(
                f"{where(instance, attribute)}: expected a finite number of seconds "
                f"{bound}, got {value!r}"
            )

    return check


def to_float(value: object) -> object:
    """An int becomes a float (a bool stays, for the validator to refuse)."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
