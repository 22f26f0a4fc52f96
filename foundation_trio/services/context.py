"""The request context: a small immutable mapping of scalar values that follows the work.

``with bind(request_id="r1", user_id=7):`` adds values for the duration of the
block; :func:`current` returns the snapshot in force; ``with restore(snapshot):``
re-establishes a snapshot taken elsewhere (the receiving side of a request).

The context lives in one :class:`contextvars.ContextVar` holding an immutable
mapping, so it is carried wherever ``contextvars`` go: into the tasks a task
starts (trio copies the starting task's context into a new task), into the
processes spawned while it is bound, and into telemetry metadata. Values are
msgpack-able scalars (``str``, ``int``, ``float``, ``bool``, ``None``) so that
the same snapshot can cross a node boundary unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Final, TypeAlias, cast

from ..runtime.context import EMPTY as _EMPTY
from ..runtime.context import request_context

Scalar: TypeAlias = str | int | float | bool | None
"""A value a context may hold."""

Snapshot: TypeAlias = Mapping[str, Scalar]
"""An immutable view of a context, as :func:`current` returns it."""

EMPTY: Final[Snapshot] = cast("Snapshot", _EMPTY)
"""The context outside any :func:`bind`."""

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SCALARS = (str, int, float, bool, type(None))

# The runtime's variable holds Mapping[str, object]; only this module writes it,
# always with checked scalars.
_context = cast("ContextVar[Snapshot]", request_context)


def current() -> Snapshot:
    """The context in force in the calling task: an immutable mapping.

    It is the same object until the next :func:`bind` or :func:`restore`, so a
    caller may hold on to it and compare it by identity. Works outside a node.
    """
    return _context.get()


def _check_item(key: object, value: object, what: str) -> None:
    if not isinstance(key, str) or not _KEY.match(key):
        raise TypeError(f"{what}: a context key is an identifier-like str, got {key!r}")
    if not isinstance(value, _SCALARS):
        raise TypeError(
            f"{what}: context value {key!r} must be a str, int, float, bool or None "
            f"(it may cross a node boundary), got {type(value).__name__} {value!r}"
        )


@contextmanager
def bind(**values: Scalar) -> Iterator[Snapshot]:
    """Add ``values`` to the context for the duration of the ``with`` block.

    Values bound here override those of an enclosing ``bind`` with the same key;
    the enclosing context is back in force when the block ends, however it ends.
    Yields the new snapshot. Raises :class:`TypeError` naming the key if a value
    is not a scalar; nothing is bound then.
    """
    for key, value in values.items():
        _check_item(key, value, "bind()")
    merged = MappingProxyType({**_context.get(), **values}) if values else _context.get()
    token = _context.set(merged)
    try:
        yield merged
    finally:
        _context.reset(token)


def check_snapshot(snapshot: object, what: str = "restore()") -> Snapshot:
    """``snapshot`` as an immutable context: what :func:`current` returned is returned
    as is; any other mapping is checked like :func:`bind`'s arguments and copied.
    Raises :class:`TypeError` naming ``what`` and the bad key or value."""
    if snapshot is _context.get():
        return snapshot
    if not isinstance(snapshot, Mapping):
        raise TypeError(
            f"{what} takes a snapshot mapping (from current()), got "
            f"{type(snapshot).__name__} {snapshot!r}"
        )
    for key, value in snapshot.items():
        _check_item(key, value, what)
    return MappingProxyType(dict(snapshot))


@contextmanager
def restore(snapshot: Mapping[str, Scalar]) -> Iterator[Snapshot]:
    """Make ``snapshot`` the whole context for the duration of the ``with`` block.

    Unlike :func:`bind` it replaces the context rather than adding to it: use it
    where work arrives with the context of its sender (a request from another
    process or node). ``snapshot`` is a mapping as :func:`current` returns, or
    any mapping: it is checked like the arguments of :func:`bind` (keys are
    identifier-like str, values scalars) and copied. Raises :class:`TypeError`
    naming the bad key or value.
    """
    checked = check_snapshot(snapshot)
    token = _context.set(checked)
    try:
        yield checked
    finally:
        _context.reset(token)


__all__ = ["EMPTY", "Scalar", "Snapshot", "bind", "check_snapshot", "current", "restore"]
