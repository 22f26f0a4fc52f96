"""The node's own configuration sections, shared by the config service (which
loads and validates them) and the services they configure.

A field is updatable at runtime when its attrs metadata says so
(``metadata=UPDATABLE``, or ``{"updatable": True, ...}``); the same rule holds
for the user's application section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

import attrs

UPDATABLE: Final[Mapping[str, Any]] = MappingProxyType({"updatable": True})
"""attrs field metadata marking a config field as updatable at runtime."""


def is_updatable(field: attrs.Attribute[Any]) -> bool:
    """Whether ``field`` is declared updatable (``metadata={"updatable": True}``)."""
    return field.metadata.get("updatable") is True


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0 or math.isnan(value):
        raise ValueError(f"{attribute.name} must be greater than 0, got {value!r}")


@attrs.frozen(kw_only=True)
class EventsSettings:
    """The ``[events]`` section: which store the event service uses and its bounds."""

    store: Literal["memory", "sqlite"] = "memory"
    """``"memory"`` (lost when the node closes) or ``"sqlite"`` (durable, at ``path``)."""

    path: str = "events.sqlite3"
    """The SQLite database file, relative to the working directory; only for
    ``store = "sqlite"``."""

    max_events: int = attrs.field(default=100_000, validator=_positive, metadata=UPDATABLE)
    """Events kept; storing more evicts the oldest (updatable)."""

    max_age: float = attrs.field(default=86_400.0, validator=_positive, metadata=UPDATABLE)
    """Seconds an event is kept after its timestamp; ``inf`` keeps them (updatable)."""


NODE_SECTIONS: Final[Mapping[str, type[Any]]] = MappingProxyType({"events": EventsSettings})
"""The node's sections of the config tree, by name. The user's section comes after."""


__all__ = ["NODE_SECTIONS", "UPDATABLE", "EventsSettings", "is_updatable"]
