"""Strict structuring of user options into attrs classes, with errors that name the field.

cattrs on its own coerces (``int("5")``); user-facing options should not, so
the converter here checks scalar types exactly and reports every problem with
its path, the expected type and the allowed options.
"""

from __future__ import annotations

from collections import abc
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
import cattrs.errors
from attrs import AttrsInstance
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError

from .runtime.errors import ConfigError

T = TypeVar("T", bound=AttrsInstance)


def _exact(kind: type[Any], *also: type[Any]) -> Any:
    accepted = (kind, *also)

    def structure(value: object, _: type[Any]) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got a bool")
        if not isinstance(value, accepted):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return kind(value) if kind is float else value

    return structure


_LISTS: frozenset[Any] = frozenset({list, abc.Sequence, abc.MutableSequence})
_SETS: frozenset[Any] = frozenset({set, frozenset, abc.Set, abc.MutableSet})


def _is_collection(kind: Any) -> bool:
    origin = get_origin(kind) or kind
    return origin in _LISTS or origin in _SETS or origin is tuple


def _collection(kind: Any, converter: cattrs.Converter) -> Any:
    """A hook for lists, tuples and sets that refuses a str, bytes or a mapping
    (cattrs would iterate over them: ``"ab"`` would become ``["a", "b"]``)."""
    origin = get_origin(kind) or kind
    args = get_args(kind)
    name = getattr(origin, "__name__", str(origin))

    def structure(value: object, _: Any) -> Any:
        if isinstance(value, str | bytes | bytearray | Mapping) or not isinstance(value, Iterable):
            raise TypeError(f"expected a {name}, got {type(value).__name__} {value!r}")
        items = list(value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise TypeError(f"expected a {name} of {len(args)} items, got {len(items)}")
            return tuple(converter.structure(i, a) for i, a in zip(items, args, strict=True))
        item_type = args[0] if args else Any
        structured = [converter.structure(item, item_type) for item in items]
        if origin is tuple:
            return tuple(structured)
        if origin in _SETS:
            return frozenset(structured) if origin in (frozenset, abc.Set) else set(structured)
        return structured

    return structure


def make_converter() -> cattrs.Converter:
    """A converter that refuses unknown keys and does not coerce scalars."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _exact(int))
    converter.register_structure_hook(float, _exact(float, int))
    converter.register_structure_hook(str, _exact(str))
    converter.register_structure_hook(bool, _exact(bool))
    converter.register_structure_hook_factory(_is_collection, _collection)
    return converter


converter = make_converter()


def _messages(error: BaseException, path: str) -> list[str]:
    """Flatten a cattrs error tree into one line per problem, each with its path."""
    if isinstance(error, ForbiddenExtraKeysError):
        prefix = f"{path}: " if path else ""
        return [f"{prefix}unknown option {key!r}" for key in sorted(error.extra_fields)]
    if isinstance(error, ClassValidationError):
        found: list[str] = []
        for sub in error.exceptions:
            notes = getattr(sub, "__notes__", [])
            name = next((n.name for n in notes if isinstance(n, AttributeValidationNote)), "")
            sub_path = f"{path}.{name}" if path and name else (name or path)
            found.extend(_messages(sub, sub_path))
        return found
    if isinstance(error, KeyError):
        return [f"{path}: required option {error.args[0]!r} is missing"]
    return [f"{path}: {error}" if path else str(error)]


def structure_options(cls: type[T], options: Mapping[str, Any], what: str) -> T:
    """Build ``cls`` from ``options`` or raise :class:`ConfigError` naming every problem.

    ``what`` names the thing being configured, e.g. ``"open_node()"``.
    """
    allowed = ", ".join(f.name for f in attrs.fields(cls) if f.init)
    try:
        return converter.structure(dict(options), cls)
    except (ClassValidationError, ForbiddenExtraKeysError) as error:
        problems = "; ".join(_messages(error, ""))
        raise ConfigError(f"{what}: {problems} (allowed options: {allowed})") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{what}: {error} (allowed options: {allowed})") from None


def structure_value(kind: Any, value: object, path: str) -> Any:
    """Structure one ``value`` as type ``kind`` (an attrs class, a scalar, a
    container, a union), or raise :class:`ConfigError` ``"<path>: <problem>"``.

    For values reached by a path rather than passed as options: a config tree's
    leaves, a runtime update.
    """
    try:
        return converter.structure(value, kind)
    except (ClassValidationError, ForbiddenExtraKeysError) as error:
        raise ConfigError("; ".join(_messages(error, path))) from None
    except (cattrs.errors.CattrsError, TypeError, ValueError) as error:
        raise ConfigError(f"{path}: {_flatten(error)}") from None


def _flatten(error: BaseException) -> str:
    """The leaf messages of a cattrs exception group, joined."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_flatten(sub) for sub in error.exceptions)
    return str(error)
