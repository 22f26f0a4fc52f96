"""Structured errors: what failed, how badly, whether to retry, and in which request.

:class:`Error` is an exception (a :class:`~foundation_trio.FoundationError`)
that is also an attrs record: raise it, catch it, log it, or turn it into a plain
dict (:meth:`Error.to_dict`) to store as an event or send to another node. It
records the request context (:func:`foundation_trio.context.current`) in force
where it was created, and takes its correlation id from that context unless
given one.

:func:`wrap` turns any exception into an :class:`Error` (the original is its
``__cause__``); :func:`is_retryable` says whether an operation that raised an
exception is worth retrying.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from typing import Any, Final, TypeVar

import attrs
import trio

from ..runtime.context import request_context
from ..runtime.errors import FoundationError, MailboxFull
from .context import Scalar, Snapshot, check_snapshot

E = TypeVar("E", bound=enum.Enum)

_CODE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\Z")


class Category(enum.Enum):
    """What kind of failure: decides who can fix it."""

    VALIDATION = "validation"
    """The input was wrong; retrying the same input fails again."""
    NOT_FOUND = "not_found"
    """Something named does not exist."""
    CONFLICT = "conflict"
    """The state does not allow it now (already exists, version mismatch)."""
    PERMISSION = "permission"
    """Not allowed for this caller."""
    TIMEOUT = "timeout"
    """No answer in time."""
    UNAVAILABLE = "unavailable"
    """A dependency is down, overloaded or refusing (a breaker is open, a pool is empty)."""
    RATE_LIMITED = "rate_limited"
    """Too many requests; wait ``retry_after``."""
    EXTERNAL = "external"
    """A third party failed."""
    INTERNAL = "internal"
    """A bug or an unexpected state of our own."""


class Severity(enum.Enum):
    """How urgently a human should look at it."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


_RETRYABLE_BY_DEFAULT: Final = frozenset(
    {Category.TIMEOUT, Category.UNAVAILABLE, Category.RATE_LIMITED}
)


def _check_code(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _CODE.match(value):
        raise ValueError(
            f"Error {attribute.name} must be dotted lowercase segments such as "
            f"'payment.card_declined', got {value!r}"
        )


def _check_str(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"Error {attribute.name} must be a str, got {value!r}")


def _check_optional_str(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"Error {attribute.name} must be a str or None, got {value!r}")


def _check_retry_after(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"Error {attribute.name} must be seconds (a number) or None, got {value!r}"
        )
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"Error {attribute.name} must be >= 0 and finite, got {value!r}")


def _check_bool_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"Error {attribute.name} must be a bool or None, got {value!r}")


def _to_enum(kind: type[E], value: object) -> E:
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        for member in kind:
            if member.value == value:
                return member
    allowed = ", ".join(repr(m.value) for m in kind)
    raise ValueError(f"Error {kind.__name__.lower()} must be one of {allowed}, got {value!r}")


def _category(value: object) -> Category:
    return _to_enum(Category, value)


def _severity(value: object) -> Severity:
    return _to_enum(Severity, value)


def _details(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"Error details must be a mapping with str keys, got {value!r}")
    return dict(value)


def _captured_context() -> Mapping[str, Scalar]:
    return request_context.get()  # type: ignore[return-value]


def _context(value: object) -> Snapshot:
    return check_snapshot(value, "Error context")


@attrs.define(auto_exc=True, eq=False, kw_only=True)
class Error(FoundationError):
    """A structured error: a record, and an exception you can raise.

    ``Error(code="payment.declined", message="card declined", category="external")``.
    Fields are validated at creation (a bad one raises :class:`TypeError` or
    :class:`ValueError` naming it); the enums also accept their string values.
    As an exception it compares by identity.
    """

    code: str = attrs.field(validator=_check_code)
    """A stable, dotted lowercase identifier (``"payment.card_declined"``)."""
    message: str = attrs.field(validator=_check_str)
    """For humans."""
    category: Category = attrs.field(default=Category.INTERNAL, converter=_category)
    severity: Severity = attrs.field(default=Severity.MEDIUM, converter=_severity)
    details: Mapping[str, object] = attrs.field(factory=dict, converter=_details)
    """Anything else worth knowing (ids, limits); plain data if it is to cross a node."""
    context: Mapping[str, Scalar] = attrs.field(factory=_captured_context, converter=_context)
    """The request context where the error was created."""
    correlation_id: str | None = attrs.field(default=None, validator=_check_optional_str)
    """Ties the error to a request: defaults to the context's ``correlation_id`` or
    ``request_id``, if one is bound."""
    retryable: bool | None = attrs.field(default=None, validator=_check_bool_or_none)
    """Whether retrying may succeed. ``None`` (the default) means: decided by the
    category, True for timeout, unavailable and rate-limited."""
    retry_after: float | None = attrs.field(default=None, validator=_check_retry_after)
    """Seconds to wait before a retry, if the failure said (a rate limit's reset)."""

    def __attrs_post_init__(self) -> None:
        if self.retryable is None:
            self.retryable = self.category in _RETRYABLE_BY_DEFAULT
        if self.correlation_id is None:
            found = self.context.get("correlation_id", self.context.get("request_id"))
            if found is not None:
                self.correlation_id = str(found)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def to_dict(self) -> dict[str, object]:
        """The error as plain data (str, numbers, bools, None, dicts): for an event's
        data or a message to another node. :meth:`from_dict` reads it back."""
        return {
            "code": self.code,
            "message": self.message,
            "category": self.category.value,
            "severity": self.severity.value,
            "details": dict(self.details),
            "context": dict(self.context),
            "correlation_id": self.correlation_id,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Error:
        """Rebuild an error from :meth:`to_dict`'s output; fields are validated as at
        creation, and a missing or unknown key raises :class:`ValueError`."""
        if not isinstance(data, Mapping):
            raise TypeError(f"Error.from_dict() takes a mapping, got {data!r}")
        fields = {f.name for f in attrs.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"Error.from_dict(): unknown keys {sorted(unknown)}")
        for required in ("code", "message"):
            if required not in data:
                raise ValueError(f"Error.from_dict(): {required!r} is missing")
        return cls(**data)  # type: ignore[arg-type]


def wrap(
    exc: BaseException,
    *,
    code: str,
    message: str | None = None,
    category: Category | str | None = None,
    severity: Severity | str = Severity.MEDIUM,
    details: Mapping[str, object] | None = None,
    retryable: bool | None = None,
    retry_after: float | None = None,
) -> Error:
    """An :class:`Error` describing ``exc``, with ``exc`` as its ``__cause__``.

    ``message`` defaults to ``str(exc)`` (or the class name if that is empty);
    ``category`` to what ``exc``'s type suggests (timeouts: ``TIMEOUT``;
    connection errors and a full mailbox: ``UNAVAILABLE``; ``LookupError``:
    ``NOT_FOUND``; ``PermissionError``: ``PERMISSION``; ``ValueError`` and
    ``TypeError``: ``VALIDATION``; otherwise ``INTERNAL``). ``details`` gains
    ``exception``, the class name of ``exc``. Wrapping an :class:`Error` returns a
    new one around it. Raises :class:`TypeError` if ``exc`` is not an exception.
    """
    if not isinstance(exc, BaseException):
        raise TypeError(f"wrap(): exc must be an exception, got {exc!r}")
    text = str(exc) or type(exc).__name__
    error = Error(
        code=code,
        message=text if message is None else message,
        category=_category_of(exc) if category is None else category,
        severity=severity,
        details={"exception": type(exc).__name__, **(details or {})},
        retryable=retryable,
        retry_after=retry_after,
    )
    error.__cause__ = exc
    return error


def _category_of(exc: BaseException) -> Category:
    if isinstance(exc, Error):
        return exc.category
    if isinstance(exc, TimeoutError | trio.TooSlowError):  # CallTimeout, ReceiveTimeout too
        return Category.TIMEOUT
    if isinstance(exc, ConnectionError | MailboxFull):
        return Category.UNAVAILABLE
    if isinstance(exc, PermissionError):
        return Category.PERMISSION
    if isinstance(exc, LookupError | FileNotFoundError):
        return Category.NOT_FOUND
    if isinstance(exc, ValueError | TypeError):
        return Category.VALIDATION
    return Category.INTERNAL


def is_retryable(exc: BaseException) -> bool:
    """Whether the operation that raised ``exc`` may succeed if retried.

    An :class:`Error` says so itself (``retryable``). Otherwise: True for
    timeouts (``TimeoutError``, including ``CallTimeout``, and ``trio.TooSlowError``),
    connection errors
    and a full mailbox; False for everything else (a bug does not go away on a
    retry). Raises :class:`TypeError` if ``exc`` is not an exception.
    """
    if isinstance(exc, Error):
        return bool(exc.retryable)
    if not isinstance(exc, BaseException):
        raise TypeError(f"is_retryable(): exc must be an exception, got {exc!r}")
    return isinstance(exc, TimeoutError | trio.TooSlowError | ConnectionError | MailboxFull)


__all__ = ["Category", "Error", "Severity", "is_retryable", "wrap"]
