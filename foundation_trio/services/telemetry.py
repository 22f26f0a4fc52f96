"""Telemetry: named events with measurements, dispatched synchronously to attached handlers.

Modelled on Erlang's ``:telemetry``. Code that wants to be observable calls
:func:`execute` with a dotted event name, numeric measurements and metadata;
whoever wants to observe it attaches a handler to event names with
:func:`attach`. There is no mailbox on the way: :func:`execute` looks up the
handlers in the calling task and calls them there, one after the other, so an
event with no handler attached costs one dictionary lookup, and handlers see
the caller's request context.

Event names are dotted strings of lowercase segments (``"runtime.process.exit"``,
``"protection.breaker.opened"``): each segment starts with a letter and holds
letters, digits and ``_``.

A handler is ``handler(event_name, measurements, metadata) -> None``: a plain
(not async) function that must not block. A handler that raises is detached,
the error is logged with its handler id, a ``telemetry.handler.failed`` event
is emitted, and the other handlers and the emitter carry on.

The handler table belongs to the node: each node started with
``foundation_trio.open_node`` runs a telemetry server under its root supervisor
that owns it, and handlers attached on one node see only that node's events.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final, TypeAlias

from ..runtime.context import request_context
from ..runtime.errors import FoundationError
from ..runtime.node import Node, current_node
from ..runtime.pid import ExitReason, Shutdown
from ..runtime.process import current_process
from ..runtime.server import GenServer
from ..runtime.spec import ChildSpec

logger = logging.getLogger("foundation_trio.telemetry")

Measurements: TypeAlias = Mapping[str, float]
Metadata: TypeAlias = Mapping[str, object]
Handler: TypeAlias = Callable[[str, Measurements, Metadata], None]
"""``handler(event_name, measurements, metadata)``: called synchronously, must not block."""

HANDLER_FAILED: Final = "telemetry.handler.failed"
"""Emitted after a handler raised and was detached. Metadata: ``handler_id``,
``event_name`` (the event it failed on), ``kind`` (the exception's class name),
``error`` (its ``repr``). No measurements."""

_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\Z")

# Names already checked. Event names are few and static in practice, so a set
# turns the check on the hot path into one lookup; it stops growing at a bound
# so that code generating names cannot make it grow without limit.
_checked_names: set[str] = set()
_CHECKED_NAMES_BOUND: Final = 65536


class TelemetryError(FoundationError):
    """Base class of telemetry's errors."""


class HandlerExists(TelemetryError, ValueError):
    """:func:`attach` was given a handler id that is already attached."""

    def __init__(self, handler_id: str) -> None:
        super().__init__(
            f"a telemetry handler with id {handler_id!r} is already attached; "
            "detach it first or choose another id"
        )
        self.handler_id = handler_id


class UnknownHandler(TelemetryError, LookupError):
    """:func:`detach` was given a handler id that is not attached."""

    def __init__(self, handler_id: object) -> None:
        super().__init__(f"no telemetry handler is attached with id {handler_id!r}")
        self.handler_id = handler_id


def check_event_name(event_name: object, what: str = "event_name") -> str:
    """Return ``event_name`` if it is a valid event name, else raise :class:`ValueError`
    (:class:`TypeError` if it is not a str) naming ``what``."""
    if type(event_name) is str and event_name in _checked_names:
        return event_name
    if not isinstance(event_name, str):
        raise TypeError(
            f"{what} must be a str of dotted lowercase segments such as "
            f"'runtime.process.exit', got {type(event_name).__name__} {event_name!r}"
        )
    if not _EVENT_NAME.match(event_name):
        raise ValueError(
            f"{what} must be dotted lowercase segments, each starting with a letter "
            f"and holding letters, digits and '_' (such as 'runtime.process.exit'), "
            f"got {event_name!r}"
        )
    if len(_checked_names) < _CHECKED_NAMES_BOUND:
        _checked_names.add(event_name)
    return event_name


class _Attached:
    __slots__ = ("event_names", "handler", "handler_id")

    def __init__(self, handler_id: str, event_names: tuple[str, ...], handler: Handler) -> None:
        self.handler_id = handler_id
        self.event_names = event_names
        self.handler = handler


class Telemetry:
    """The telemetry state of one node: its handler table.

    Reached through the node's extensions; use the module functions rather than
    this class.
    """

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        # Per event, a tuple of handlers: replaced, never mutated, so that a
        # dispatch in progress is not disturbed by an attach or detach.
        self.by_event: dict[str, tuple[_Attached, ...]] = {}
        self.by_id: dict[str, _Attached] = {}

    def attach(self, handler_id: str, event_names: tuple[str, ...], handler: Handler) -> None:
        if handler_id in self.by_id:
            raise HandlerExists(handler_id)
        attached = _Attached(handler_id, event_names, handler)
        self.by_id[handler_id] = attached
        for name in event_names:
            self.by_event[name] = (*self.by_event.get(name, ()), attached)

    def detach(self, handler_id: str) -> bool:
        attached = self.by_id.pop(handler_id, None)
        if attached is None:
            return False
        for name in attached.event_names:
            left = tuple(a for a in self.by_event.get(name, ()) if a is not attached)
            if left:
                self.by_event[name] = left
            else:
                self.by_event.pop(name, None)
        return True

    def dispatch(
        self,
        handlers: tuple[_Attached, ...],
        event_name: str,
        measurements: Measurements,
        metadata: Metadata | None,
    ) -> None:
        measured = _checked_measurements(measurements)
        delivered = _with_context(metadata)
        for attached in handlers:
            try:
                result: object = attached.handler(event_name, measured, delivered)
                if result is not None:
                    _refuse_awaitable(result)
            except Exception as exc:
                self._handler_failed(attached, event_name, exc)

    def _handler_failed(self, attached: _Attached, event_name: str, exc: Exception) -> None:
        # Detach first: a handler attached to the failure event itself must not loop.
        if self.by_id.get(attached.handler_id) is not attached:
            return  # already detached by an earlier failure of this dispatch
        self.detach(attached.handler_id)
        logger.error(
            "telemetry handler %r raised on event %r and was detached",
            attached.handler_id,
            event_name,
            exc_info=exc,
        )
        handlers = self.by_event.get(HANDLER_FAILED)
        if handlers:
            self.dispatch(
                handlers,
                HANDLER_FAILED,
                {},
                {
                    "handler_id": attached.handler_id,
                    "event_name": event_name,
                    "kind": type(exc).__name__,
                    "error": repr(exc),
                },
            )


def _refuse_awaitable(result: object) -> None:
    if inspect.isawaitable(result):
        # An async handler returns a coroutine that nobody would await.
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError(
            f"handler returned an awaitable ({type(result).__name__}); "
            "telemetry handlers are plain functions, not async"
        )


def _checked_measurements(measurements: Measurements) -> Measurements:
    if type(measurements) is not dict and not isinstance(measurements, Mapping):
        raise TypeError(
            "measurements must be a mapping of str to numbers, got "
            f"{type(measurements).__name__} {measurements!r}"
        )
    for key, value in measurements.items():
        if (type(value) is not float and type(value) is not int) and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise TypeError(
                f"measurements[{key!r}] must be an int or float, got "
                f"{type(value).__name__} {value!r}"
            )
        if type(key) is not str:
            raise TypeError(f"measurement names are str, got {key!r}")
    return MappingProxyType(dict(measurements))


def _with_context(metadata: Metadata | None) -> Metadata:
    context = request_context.get()
    if metadata is None:
        return MappingProxyType({"context": context})
    if not isinstance(metadata, Mapping):
        raise TypeError(
            f"metadata must be a mapping or None, got {type(metadata).__name__} {metadata!r}"
        )
    merged: dict[str, object] = {"context": context}
    merged.update(metadata)
    return MappingProxyType(merged)


# -- the module API ------------------------------------------------------------------


def execute(event_name: str, measurements: Measurements, metadata: Metadata | None = None) -> None:
    """Emit ``event_name`` to the handlers attached to it on this node.

    Runs every handler synchronously in the calling task, in attach order; it
    is not a checkpoint and never blocks (unless a handler does). Handlers get
    read-only copies: ``measurements``, and ``metadata`` with the request
    context added under the key ``"context"`` (:func:`foundation_trio.context.current`;
    a ``"context"`` key of your own wins). A handler that raises is detached and
    logged; ``execute`` itself does not raise because of a handler.

    With no handler attached to ``event_name`` this costs a few lookups; in
    particular the measurements are then not inspected. On a node without the
    telemetry service (the runtime's own ``open_node`` without boot steps) it
    does nothing.

    Raises :class:`~foundation_trio.NoNodeError` outside a node,
    :class:`ValueError` / :class:`TypeError` for a malformed ``event_name``,
    :class:`TypeError` if ``measurements`` is not a mapping of str to numbers or
    ``metadata`` not a mapping (checked only when a handler would receive them).
    """
    state = current_process("telemetry.execute()").node.find_extension(Telemetry)
    if type(event_name) is not str or event_name not in _checked_names:
        check_event_name(event_name)
    if state is None:
        return
    handlers = state.by_event.get(event_name)
    if handlers is not None:
        state.dispatch(handlers, event_name, measurements, metadata)


def _check_handler_id(handler_id: object, what: str) -> str:
    if not isinstance(handler_id, str) or not handler_id:
        raise TypeError(f"{what}: handler_id must be a non-empty str, got {handler_id!r}")
    return handler_id


def attach(handler_id: str, event_names: str | Iterable[str], handler: Handler) -> None:
    """Call ``handler(event_name, measurements, metadata)`` for each of ``event_names``
    emitted on this node from now on, until :func:`detach` (or until it raises).

    ``event_names`` is one name or an iterable of names. ``handler_id`` is a
    non-empty str unique on the node. Raises :class:`HandlerExists` if the id
    is taken, :class:`TypeError` / :class:`ValueError` naming the bad argument
    (an async function is refused as ``handler``), :class:`LookupError` if the
    node runs no telemetry service, :class:`~foundation_trio.NoNodeError` outside a node.
    """
    _check_handler_id(handler_id, "attach()")
    if isinstance(event_names, str):
        names: tuple[str, ...] = (check_event_name(event_names, "attach(): event_names"),)
    elif isinstance(event_names, Iterable) and not isinstance(event_names, bytes | Mapping):
        names = tuple(
            dict.fromkeys(
                check_event_name(n, "attach(): each of event_names") for n in event_names
            )
        )
        if not names:
            raise ValueError("attach(): event_names is empty; name at least one event")
    else:
        raise TypeError(
            f"attach(): event_names must be a str or an iterable of str, got {event_names!r}"
        )
    if not callable(handler):
        raise TypeError(f"attach(): handler must be callable, got {handler!r}")
    if inspect.iscoroutinefunction(handler):
        raise TypeError(
            f"attach(): handler {handler!r} is an async function; telemetry handlers "
            "are plain functions called synchronously by the emitter"
        )
    _service("attach()").attach(handler_id, names, handler)


def detach(handler_id: str) -> None:
    """Detach the handler attached as ``handler_id`` on this node.

    Raises :class:`UnknownHandler` (a :class:`LookupError`) if no handler has
    that id, including one already detached because it raised.
    """
    _check_handler_id(handler_id, "detach()")
    if not _service("detach()").detach(handler_id):
        raise UnknownHandler(handler_id)


def handlers() -> dict[str, tuple[str, ...]]:
    """The attached handlers of this node: handler id -> the event names it listens to."""
    return {i: a.event_names for i, a in _service("handlers()").by_id.items()}


def _service(what: str) -> Telemetry:
    state = current_process(f"telemetry.{what}").node.find_extension(Telemetry)
    if state is None:
        return current_node().extension(Telemetry, "the telemetry service")
    return state


# -- the service ---------------------------------------------------------------------


class TelemetryServer(GenServer):
    """Owns the node's telemetry state for the lifetime of the node.

    The state is created on the first start and kept across restarts of the
    server (attached handlers survive), and dropped when the server is shut
    down with the node.
    """

    node: Node

    async def init(self) -> None:
        self.node = current_node()
        if self.node.find_extension(Telemetry) is None:
            self.node.set_extension(Telemetry, Telemetry(self.node.name))

    async def terminate(self, reason: ExitReason) -> None:
        if isinstance(reason, Shutdown):
            self.node.remove_extension(Telemetry)


async def boot(node: Node) -> None:
    """Boot step: start the telemetry service under the node's root supervisor."""
    await node.start_supervisor(
        [ChildSpec("server", TelemetryServer)], id="foundation_trio.telemetry"
    )


__all__ = [
    "HANDLER_FAILED",
    "Handler",
    "HandlerExists",
    "Measurements",
    "Metadata",
    "Telemetry",
    "TelemetryError",
    "TelemetryServer",
    "UnknownHandler",
    "attach",
    "boot",
    "check_event_name",
    "detach",
    "execute",
    "handlers",
]
