"""Telemetry: named events with measurements, dispatched synchronously to attached handlers;
spans; counters, gauges and histograms; Prometheus exposition.

Modelled on Erlang's ``:telemetry`` and ``Telemetry.Metrics``. Code that wants to
be observable calls :func:`execute` with a dotted event name, numeric
measurements and metadata; whoever wants to observe it attaches a handler to
event names with :func:`attach`, or declares a metric fed by an event. There is
no mailbox on the way: :func:`execute` looks the event up in the calling task
and runs its handlers and metric updates there, so an event nobody listens to
costs one dictionary lookup, and handlers see the caller's request context.

Event names are dotted strings of lowercase segments (``"runtime.process.exit"``,
``"protection.breaker.opened"``): each segment starts with a letter and holds
letters, digits and ``_``.

A handler is ``handler(event_name, measurements, metadata) -> None``: a plain
(not async) function that must not block. A handler that raises is detached,
the error is logged with its handler id, a ``telemetry.handler.failed`` event
is emitted, and the other handlers and the emitter carry on.

Everything belongs to the node: each node started with
``foundation_trio.open_node`` runs a telemetry server under its root supervisor
that owns the node's handler table and metrics; handlers attached on one node see
only that node's events. Call the functions here from trio tasks of the node;
they are not thread-safe.
"""

from __future__ import annotations

import bisect
import enum
import inspect
import itertools
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, Final, TypeAlias

import attrs
import trio

from ..runtime.context import request_context
from ..runtime.errors import FoundationError
from ..runtime.events import (
    ChildExited,
    ChildRestarted,
    ChildStarted,
    LifecycleEvent,
    ProcessExited,
    ProcessStarted,
    SupervisorGaveUp,
)
from ..runtime.node import Node, current_node
from ..runtime.pid import ExitReason, Killed, Normal, Shutdown
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

PROCESS_START: Final = "runtime.process.start"
PROCESS_EXIT: Final = "runtime.process.exit"
CHILD_START: Final = "runtime.supervisor.child_start"
CHILD_EXIT: Final = "runtime.supervisor.child_exit"
CHILD_RESTART: Final = "runtime.supervisor.restart"
SUPERVISOR_GIVE_UP: Final = "runtime.supervisor.give_up"
RUNTIME_EVENTS: Final = frozenset(
    {PROCESS_START, PROCESS_EXIT, CHILD_START, CHILD_EXIT, CHILD_RESTART, SUPERVISOR_GIVE_UP}
)
"""The runtime's lifecycle events as telemetry events (see docs/telemetry.md). They
are converted from the node's lifecycle hooks only while something listens to
one of them, so that a node nobody observes pays nothing per spawn or exit."""

PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The HTTP ``Content-Type`` of :func:`prometheus_text`'s output."""

_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\Z")
_METRIC_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

# Names already checked. Event names are few and static in practice, so a set
# turns the check on the hot path into one lookup; it stops growing at a bound
# so that code generating names cannot make it grow without limit.
_checked_names: set[str] = set()
_CHECKED_NAMES_BOUND: Final = 65536


# -- errors --------------------------------------------------------------------------


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


class MetricExists(TelemetryError, ValueError):
    """A metric of that name is already declared, differently."""


class UnknownMetric(TelemetryError, LookupError):
    """No metric of that name is declared on this node."""

    def __init__(self, name: object) -> None:
        super().__init__(
            f"no metric {name!r} is declared on this node; declare it first with "
            "counter(), gauge() or histogram()"
        )
        self.name = name


# -- argument checks ------------------------------------------------------------------


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


def _check_metadata(metadata: object, what: str) -> Metadata | None:
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(
            f"{what} must be a mapping or None, got {type(metadata).__name__} {metadata!r}"
        )
    return metadata


def _is_number(value: object) -> bool:
    kind = type(value)
    return kind is float or kind is int or (isinstance(value, int | float) and kind is not bool)


def _check_number(value: object, what: str) -> float:
    if not _is_number(value):
        raise TypeError(f"{what} must be an int or float, got {type(value).__name__} {value!r}")
    return float(value)  # type: ignore[arg-type]


def _checked_measurements(measurements: Measurements) -> Measurements:
    """A read-only view of ``measurements`` once checked. Not a copy: handlers run
    before the emitter goes on, and one that keeps measurements copies them."""
    if type(measurements) is not dict and not isinstance(measurements, Mapping):
        raise TypeError(
            "measurements must be a mapping of str to numbers, got "
            f"{type(measurements).__name__} {measurements!r}"
        )
    for key, value in measurements.items():
        kind = type(value)
        if (kind is not float and kind is not int and not _is_number(value)) or type(
            key
        ) is not str:
            _bad_measurement(key, value)
    return MappingProxyType(measurements)


def _bad_measurement(key: object, value: object) -> None:
    if type(key) is not str:
        raise TypeError(f"measurement names are str, got {key!r}")
    raise TypeError(
        f"measurements[{key!r}] must be an int or float, got {type(value).__name__} {value!r}"
    )


def _with_context(metadata: Metadata | None) -> Metadata:
    merged: dict[str, object] = {"context": request_context.get()}
    if metadata is not None:
        if type(metadata) is not dict:
            _check_metadata(metadata, "metadata")
        merged.update(metadata)
    return MappingProxyType(merged)


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


# -- metrics -----------------------------------------------------------------------------


class MetricKind(enum.Enum):
    """What a metric measures, as Prometheus names it."""

    COUNTER = "counter"
    """A total that only goes up."""
    GAUGE = "gauge"
    """A value that is set, or goes up and down."""
    HISTOGRAM = "histogram"
    """Observations counted in buckets, with their sum and count."""


@attrs.frozen
class Sample:
    """The value of a counter or gauge for one combination of label values."""

    labels: Mapping[str, str]
    value: float


@attrs.frozen
class HistogramSample:
    """A histogram's state for one combination of label values.

    ``buckets`` are ``(upper bound, cumulative count)`` pairs in increasing
    order, the last one ``(inf, count)``: as Prometheus's ``le`` buckets, each
    counts the observations less than or equal to its bound.
    """

    labels: Mapping[str, str]
    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int


@attrs.frozen
class Metric:
    """A snapshot of one metric, as :func:`metrics` returns it."""

    name: str
    kind: MetricKind
    description: str
    label_names: tuple[str, ...]
    samples: tuple[Sample | HistogramSample, ...]
    event: str | None = None
    """The event that feeds it, if declared with one."""
    measurement: str | None = None
    """The measurement of ``event`` it records, if any."""


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """``count`` bucket bounds ``start, start*factor, start*factor**2, ...``.

    Raises :class:`ValueError` unless ``start > 0``, ``factor > 1`` and ``count >= 1``.
    """
    start = _check_number(start, "exponential_buckets(): start")
    factor = _check_number(factor, "exponential_buckets(): factor")
    if type(count) is not int:
        raise TypeError(f"exponential_buckets(): count must be an int, got {count!r}")
    if not (start > 0 and math.isfinite(start)):
        raise ValueError(f"exponential_buckets(): start must be > 0 and finite, got {start}")
    if not (factor > 1 and math.isfinite(factor)):
        raise ValueError(f"exponential_buckets(): factor must be > 1 and finite, got {factor}")
    if count < 1:
        raise ValueError(f"exponential_buckets(): count must be at least 1, got {count}")
    return tuple(start * factor**i for i in range(count))


def linear_buckets(start: float, width: float, count: int) -> tuple[float, ...]:
    """``count`` bucket bounds ``start, start+width, start+2*width, ...``.

    Raises :class:`ValueError` unless ``width > 0`` and ``count >= 1``.
    """
    start = _check_number(start, "linear_buckets(): start")
    width = _check_number(width, "linear_buckets(): width")
    if type(count) is not int:
        raise TypeError(f"linear_buckets(): count must be an int, got {count!r}")
    if not math.isfinite(start):
        raise ValueError(f"linear_buckets(): start must be finite, got {start}")
    if not (width > 0 and math.isfinite(width)):
        raise ValueError(f"linear_buckets(): width must be > 0 and finite, got {width}")
    if count < 1:
        raise ValueError(f"linear_buckets(): count must be at least 1, got {count}")
    return tuple(start + width * i for i in range(count))


DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds, as Prometheus's clients default them: for request latencies."""


class _Histogram:
    __slots__ = ("count", "counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum = 0.0
        self.count = 0


class _Metric:
    """A declared metric and its series (one per combination of label values)."""

    __slots__ = (
        "bounds",
        "description",
        "event",
        "kind",
        "label_names",
        "measurement",
        "name",
        "series",
        "warned",
    )

    def __init__(
        self,
        kind: MetricKind,
        name: str,
        description: str,
        label_names: tuple[str, ...],
        bounds: tuple[float, ...],
        event: str | None,
        measurement: str | None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.description = description
        self.label_names = label_names
        self.bounds = bounds
        self.event = event
        self.measurement = measurement
        self.series: dict[tuple[str, ...], float | _Histogram] = {}
        self.warned = False
        if not label_names:
            # An unlabelled metric exists, at zero, from its declaration: a scrape
            # then shows it before the first update, as Prometheus clients do.
            self.series[()] = self._new()

    def definition(self) -> tuple[object, ...]:
        return (
            self.kind,
            self.description,
            self.label_names,
            self.bounds,
            self.event,
            self.measurement,
        )

    def _new(self) -> float | _Histogram:
        return _Histogram(len(self.bounds) + 1) if self.kind is MetricKind.HISTOGRAM else 0.0

    def key(self, labels: Mapping[str, object] | None, what: str) -> tuple[str, ...]:
        names = self.label_names
        if labels is None:
            if names:
                raise ValueError(f"{what}: metric {self.name!r} needs labels {list(names)}")
            return ()
        if not isinstance(labels, Mapping):
            raise TypeError(f"{what}: labels must be a mapping of str to str, got {labels!r}")
        if len(labels) != len(names) or any(n not in labels for n in names):
            raise ValueError(
                f"{what}: metric {self.name!r} has labels {list(names)}, got {sorted(labels)}"
            )
        values = tuple(labels[n] for n in names)
        for name, value in zip(names, values, strict=True):
            if type(value) is not str:
                raise TypeError(f"{what}: label {name!r} must be a str, got {value!r}")
        return values  # type: ignore[return-value]

    def add(self, key: tuple[str, ...], amount: float) -> None:
        self.series[key] = self.series.get(key, 0.0) + amount  # type: ignore[operator]

    def set(self, key: tuple[str, ...], value: float) -> None:
        self.series[key] = value

    def observe(self, key: tuple[str, ...], value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Histogram(len(self.bounds) + 1)
        assert isinstance(series, _Histogram)
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        series.counts[bisect.bisect_left(self.bounds, value)] += 1
        series.sum += value
        series.count += 1

    def record_event(self, measurements: Measurements, metadata: Metadata) -> None:
        """Update from an event this metric is fed by. Never raises for bad data:
        an event without the measurement is skipped and logged once per metric."""
        key = tuple(_label_value(metadata.get(n)) for n in self.label_names)
        if self.measurement is None:
            self.add(key, 1.0)  # a counter of events
            return
        value = measurements.get(self.measurement)
        if value is None or (self.kind is MetricKind.COUNTER and value < 0) or value != value:
            if not self.warned:
                self.warned = True
                logger.warning(
                    "metric %r: event %r came with %s=%r; such events are not recorded",
                    self.name,
                    self.event,
                    self.measurement,
                    value,
                )
            return
        if self.kind is MetricKind.COUNTER:
            self.add(key, value)
        elif self.kind is MetricKind.GAUGE:
            self.set(key, value)
        else:
            self.observe(key, value)

    def snapshot(self) -> Metric:
        samples: list[Sample | HistogramSample] = []
        for key, series in self.series.items():
            labels = MappingProxyType(dict(zip(self.label_names, key, strict=True)))
            if isinstance(series, _Histogram):
                cumulative = 0
                buckets = []
                for bound, count in zip((*self.bounds, math.inf), series.counts, strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                samples.append(HistogramSample(labels, tuple(buckets), series.sum, series.count))
            else:
                samples.append(Sample(labels, series))
        return Metric(
            self.name,
            self.kind,
            self.description,
            self.label_names,
            tuple(samples),
            self.event,
            self.measurement,
        )


def _label_value(value: object) -> str:
    return "" if value is None else value if type(value) is str else str(value)


# -- the per-node state --------------------------------------------------------------------


class _Attached:
    __slots__ = ("event_names", "handler", "handler_id")

    def __init__(self, handler_id: str, event_names: tuple[str, ...], handler: Handler) -> None:
        self.handler_id = handler_id
        self.event_names = event_names
        self.handler = handler


class _Route:
    """Who listens to one event name: handlers, and metrics fed by the event.

    Immutable: replaced on every attach, detach or declaration, so that a
    dispatch in progress is not disturbed by one.
    """

    __slots__ = ("handlers", "metrics")

    def __init__(self, handlers: tuple[_Attached, ...], metrics: tuple[_Metric, ...]) -> None:
        self.handlers = handlers
        self.metrics = metrics


class Telemetry:
    """The telemetry state of one node: its routes, handlers and metrics.

    Reached through the node's extensions; use the module functions rather than
    this class.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.routes: dict[str, _Route] = {}
        self.by_id: dict[str, _Attached] = {}
        self.metrics: dict[str, _Metric] = {}
        self._hooked = False

    # -- routes

    def _set_route(
        self, name: str, handlers: tuple[_Attached, ...], metrics: tuple[_Metric, ...]
    ) -> None:
        if handlers or metrics:
            self.routes[name] = _Route(handlers, metrics)
        else:
            self.routes.pop(name, None)
        if name in RUNTIME_EVENTS:
            self._update_hook()

    def _update_hook(self) -> None:
        wanted = any(name in self.routes for name in RUNTIME_EVENTS)
        if wanted and not self._hooked:
            self.node.add_hook(self.on_lifecycle)
            self._hooked = True
        elif not wanted and self._hooked:
            self.node.remove_hook(self.on_lifecycle)
            self._hooked = False

    def close(self) -> None:
        if self._hooked:
            self.node.remove_hook(self.on_lifecycle)
            self._hooked = False

    def attach(self, handler_id: str, event_names: tuple[str, ...], handler: Handler) -> None:
        if handler_id in self.by_id:
            raise HandlerExists(handler_id)
        attached = _Attached(handler_id, event_names, handler)
        self.by_id[handler_id] = attached
        for name in event_names:
            route = self.routes.get(name)
            if route is None:
                self._set_route(name, (attached,), ())
            else:
                self._set_route(name, (*route.handlers, attached), route.metrics)

    def detach(self, handler_id: str) -> bool:
        attached = self.by_id.pop(handler_id, None)
        if attached is None:
            return False
        for name in attached.event_names:
            route = self.routes.get(name)
            if route is not None:
                left = tuple(a for a in route.handlers if a is not attached)
                self._set_route(name, left, route.metrics)
        return True

    def declare(self, metric: _Metric) -> None:
        existing = self.metrics.get(metric.name)
        if existing is not None:
            if existing.definition() != metric.definition():
                raise MetricExists(
                    f"metric {metric.name!r} is already declared as a "
                    f"{existing.kind.value} with a different definition"
                )
            return
        self.metrics[metric.name] = metric
        if metric.event is not None:
            route = self.routes.get(metric.event)
            if route is None:
                self._set_route(metric.event, (), (metric,))
            else:
                self._set_route(metric.event, route.handlers, (*route.metrics, metric))

    def metric(self, name: object, kind: MetricKind, what: str) -> _Metric:
        metric = self.metrics.get(name) if type(name) is str else None
        if metric is None:
            if not isinstance(name, str):
                raise TypeError(f"{what}: name must be a str, got {name!r}")
            raise UnknownMetric(name)
        if metric.kind is not kind:
            raise TypeError(
                f"{what}: metric {name!r} is a {metric.kind.value}, not a {kind.value}"
            )
        return metric

    # -- dispatch

    def dispatch(
        self,
        route: _Route,
        event_name: str,
        measurements: Measurements,
        metadata: Metadata | None,
    ) -> None:
        self.deliver(
            route, event_name, _checked_measurements(measurements), _with_context(metadata)
        )

    def deliver(
        self, route: _Route, event_name: str, measured: Measurements, delivered: Metadata
    ) -> None:
        """Run ``route`` with measurements and metadata already checked and read-only
        (the metadata with its ``"context"``)."""
        for metric in route.metrics:
            try:
                metric.record_event(measured, delivered)
            except Exception:
                # Only a label value whose str() raises can get here; the emitter
                # must not see it.
                logger.exception("metric %r could not record event %r", metric.name, event_name)
        for attached in route.handlers:
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
        route = self.routes.get(HANDLER_FAILED)
        if route is not None:
            self.dispatch(
                route,
                HANDLER_FAILED,
                {},
                {
                    "handler_id": attached.handler_id,
                    "event_name": event_name,
                    "kind": type(exc).__name__,
                    "error": repr(exc),
                },
            )

    def on_lifecycle(self, event: LifecycleEvent) -> None:
        """The node's lifecycle hook: convert the event if something listens to it.

        The node calls it for every lifecycle event while it is installed, so it
        builds the telemetry event only for a name with a route, and skips the
        checks of :meth:`dispatch` (it makes valid, read-only data itself).
        """
        found = _CONVERTERS.get(type(event))
        if found is None:
            return
        name, convert = found
        route = self.routes.get(name)
        if route is not None:
            measurements, metadata = convert(event)
            metadata["context"] = request_context.get()
            self.deliver(route, name, measurements, MappingProxyType(metadata))


_NO_MEASUREMENTS: Final[Measurements] = MappingProxyType({})

_Converted: TypeAlias = tuple[Measurements, dict[str, object]]


def _process_started(event: ProcessStarted) -> _Converted:
    return _NO_MEASUREMENTS, {"pid": event.pid, "parent": event.parent}


def _process_exited(event: ProcessExited) -> _Converted:
    metadata: dict[str, object] = {
        "pid": event.pid,
        "reason": event.reason,
        "kind": exit_kind(event.reason),
    }
    return _NO_MEASUREMENTS, metadata


def _child_started(event: ChildStarted) -> _Converted:
    metadata = {"supervisor": event.supervisor, "child_id": event.child_id, "pid": event.pid}
    return _NO_MEASUREMENTS, metadata


def _child_exited(event: ChildExited) -> _Converted:
    metadata: dict[str, object] = {
        "supervisor": event.supervisor,
        "child_id": event.child_id,
        "pid": event.pid,
        "reason": event.reason,
        "kind": exit_kind(event.reason),
    }
    return _NO_MEASUREMENTS, metadata


def _child_restarted(event: ChildRestarted) -> _Converted:
    metadata = {
        "supervisor": event.supervisor,
        "child_id": event.child_id,
        "pid": event.pid,
        "strategy": event.strategy,
    }
    return _NO_MEASUREMENTS, metadata


def _supervisor_gave_up(event: SupervisorGaveUp) -> _Converted:
    measurements = MappingProxyType(
        {"max_restarts": event.max_restarts, "max_seconds": event.max_seconds}
    )
    return measurements, {"supervisor": event.supervisor}


_CONVERTERS: Final[dict[type[Any], tuple[str, Callable[[Any], _Converted]]]] = {
    ProcessStarted: (PROCESS_START, _process_started),
    ProcessExited: (PROCESS_EXIT, _process_exited),
    ChildStarted: (CHILD_START, _child_started),
    ChildExited: (CHILD_EXIT, _child_exited),
    ChildRestarted: (CHILD_RESTART, _child_restarted),
    SupervisorGaveUp: (SUPERVISOR_GIVE_UP, _supervisor_gave_up),
}


def exit_kind(reason: ExitReason | None) -> str:
    """``"normal"``, ``"shutdown"``, ``"killed"`` or ``"error"``: an exit reason's kind,
    as the lifecycle events' metadata ``kind`` gives it (a metric label, say)."""
    if isinstance(reason, Normal):
        return "normal"
    if isinstance(reason, Shutdown):
        return "shutdown"
    if isinstance(reason, Killed):
        return "killed"
    return "error"


def _service(what: str) -> Telemetry:
    state = current_process(f"telemetry.{what}").node.find_extension(Telemetry)
    if state is None:
        return current_node().extension(Telemetry, "the telemetry service")
    return state


# -- events and handlers --------------------------------------------------------------------


def execute(event_name: str, measurements: Measurements, metadata: Metadata | None = None) -> None:
    """Emit ``event_name`` to the handlers and metrics listening to it on this node.

    Runs every handler synchronously in the calling task, in attach order; it
    is not a checkpoint and never blocks (unless a handler does). Handlers get
    read-only copies: ``measurements``, and ``metadata`` with the request
    context added under the key ``"context"`` (:func:`foundation_trio.context.current`;
    a ``"context"`` key of your own wins). A handler that raises is detached and
    logged; ``execute`` itself does not raise because of a handler.

    With nothing listening to ``event_name`` this costs a few lookups; in
    particular the measurements are then not inspected. On a node without the
    telemetry service (the runtime's own ``open_node`` without boot steps) it
    does nothing.

    Raises :class:`~foundation_trio.NoNodeError` outside a node,
    :class:`ValueError` / :class:`TypeError` for a malformed ``event_name``,
    :class:`TypeError` if ``measurements`` is not a mapping of str to numbers or
    ``metadata`` not a mapping (checked only when something listens).
    """
    state = current_process("telemetry.execute()").node.find_extension(Telemetry)
    if type(event_name) is not str or event_name not in _checked_names:
        check_event_name(event_name)
    if state is None:
        return
    route = state.routes.get(event_name)
    if route is not None:
        state.dispatch(route, event_name, measurements, metadata)


def _check_handler_id(handler_id: object, what: str) -> str:
    if not isinstance(handler_id, str) or not handler_id:
        raise TypeError(f"{what}: handler_id must be a non-empty str, got {handler_id!r}")
    return handler_id


def _event_names(event_names: object, what: str) -> tuple[str, ...]:
    if isinstance(event_names, str):
        return (check_event_name(event_names, f"{what}: event_names"),)
    if isinstance(event_names, Iterable) and not isinstance(event_names, bytes | Mapping):
        names = tuple(
            dict.fromkeys(check_event_name(n, f"{what}: each of event_names") for n in event_names)
        )
        if not names:
            raise ValueError(f"{what}: event_names is empty; name at least one event")
        return names
    raise TypeError(
        f"{what}: event_names must be a str or an iterable of str, got {event_names!r}"
    )


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
    names = _event_names(event_names, "attach()")
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


# -- spans ------------------------------------------------------------------------------------


def _trio_or_perf_clock() -> Callable[[], float]:
    try:
        trio.current_time()
    except RuntimeError:
        return time.perf_counter
    return trio.current_time


class span:
    """Time a block and emit ``<prefix>.start``, then ``<prefix>.stop`` or
    ``<prefix>.exception``: a context manager, both ``with`` and ``async with``.

    - ``<prefix>.start``: measurements ``monotonic_time`` (the clock below);
      metadata ``metadata``.
    - ``<prefix>.stop``: measurements ``duration`` (seconds) and
      ``monotonic_time``; metadata ``metadata`` plus what :meth:`annotate` added.
    - ``<prefix>.exception`` when the block raises (cancellation included):
      measurements ``duration`` and ``monotonic_time``; metadata as for stop plus
      ``kind`` (the exception's class name) and ``error`` (its ``repr``). The
      exception propagates unchanged.

    The clock is :func:`trio.current_time` inside trio (so durations follow a
    ``MockClock`` in tests) and :func:`time.perf_counter` elsewhere. Raises what
    :func:`execute` raises for a bad ``event_prefix`` or ``metadata``, at
    construction.
    """

    __slots__ = ("_clock", "_extra", "_metadata", "_names", "_started")

    def __init__(self, event_prefix: str, metadata: Metadata | None = None) -> None:
        prefix = check_event_name(event_prefix, "span(): event_prefix")
        _check_metadata(metadata, "span(): metadata")
        self._names = (f"{prefix}.start", f"{prefix}.stop", f"{prefix}.exception")
        self._metadata: Metadata = {} if metadata is None else metadata
        self._extra: dict[str, object] | None = None
        self._clock: Callable[[], float] = time.perf_counter
        self._started = 0.0

    def annotate(self, **metadata: object) -> None:
        """Add ``metadata`` to the stop (or exception) event of this span."""
        if self._extra is None:
            self._extra = {}
        self._extra.update(metadata)

    def __enter__(self) -> span:
        self._clock = _trio_or_perf_clock()
        self._started = now = self._clock()
        execute(self._names[0], {"monotonic_time": now}, self._metadata)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        now = self._clock()
        measurements = {"duration": now - self._started, "monotonic_time": now}
        metadata = dict(self._metadata)
        if self._extra:
            metadata.update(self._extra)
        if exc is None:
            execute(self._names[1], measurements, metadata)
        else:
            metadata["kind"] = type(exc).__name__
            metadata["error"] = repr(exc)
            execute(self._names[2], measurements, metadata)

    async def __aenter__(self) -> span:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, exc, traceback)


# -- metrics API --------------------------------------------------------------------------------


def _check_metric_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _METRIC_NAME.match(name):
        raise (TypeError if not isinstance(name, str) else ValueError)(
            f"{what}: name must be a Prometheus metric name (letters, digits and '_', "
            f"not starting with a digit), got {name!r}"
        )
    return name


def _check_label_names(labels: object, kind: MetricKind, what: str) -> tuple[str, ...]:
    if isinstance(labels, str) or not isinstance(labels, Iterable):
        raise TypeError(f"{what}: labels must be a sequence of label names, got {labels!r}")
    names = tuple(labels)
    for label in names:
        if not isinstance(label, str) or not _LABEL_NAME.match(label) or label.startswith("__"):
            raise ValueError(
                f"{what}: label name {label!r} is not valid (letters, digits and '_', "
                "not starting with a digit or '__')"
            )
        if kind is MetricKind.HISTOGRAM and label == "le":
            raise ValueError(f"{what}: 'le' is reserved for a histogram's bucket bounds")
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: labels {list(names)} repeat a name")
    return names


def _declare(
    kind: MetricKind,
    name: object,
    description: object,
    labels: object,
    event: object,
    measurement: object,
    bounds: tuple[float, ...],
    what: str,
) -> None:
    checked_name = _check_metric_name(name, what)
    if not isinstance(description, str):
        raise TypeError(f"{what}: description must be a str, got {description!r}")
    label_names = _check_label_names(labels, kind, what)
    checked_event = None if event is None else check_event_name(event, f"{what}: event")
    if measurement is not None and not isinstance(measurement, str):
        raise TypeError(f"{what}: measurement must be a str or None, got {measurement!r}")
    if measurement is not None and checked_event is None:
        raise ValueError(f"{what}: measurement={measurement!r} needs event=...")
    if kind is not MetricKind.COUNTER and checked_event is not None and measurement is None:
        raise ValueError(
            f"{what}: a {kind.value} fed by event {checked_event!r} needs measurement=... "
            "(the measurement it records)"
        )
    metric = _Metric(
        kind, checked_name, description, label_names, bounds, checked_event, measurement
    )
    _service(what).declare(metric)


def counter(
    name: str,
    description: str = "",
    *,
    labels: Sequence[str] = (),
    event: str | None = None,
    measurement: str | None = None,
) -> None:
    """Declare a counter on this node: a total that only goes up (:func:`increment`).

    With ``event``, every such event adds 1 (or its ``measurement``, if given),
    and label values are taken from the event's metadata (``str()`` of the value,
    ``""`` if absent). Declaring the same metric again with the same definition
    does nothing; with another, raises :class:`MetricExists`. Prometheus names
    counters ``..._total`` by convention. Bad arguments raise
    :class:`TypeError` / :class:`ValueError` naming them.
    """
    _declare(MetricKind.COUNTER, name, description, labels, event, measurement, (), "counter()")


def gauge(
    name: str,
    description: str = "",
    *,
    labels: Sequence[str] = (),
    event: str | None = None,
    measurement: str | None = None,
) -> None:
    """Declare a gauge on this node: a value set with :func:`set_gauge` or moved with
    :func:`adjust_gauge`. With ``event`` (and then ``measurement``), every such event
    sets the gauge to its measurement. Otherwise as :func:`counter`."""
    _declare(MetricKind.GAUGE, name, description, labels, event, measurement, (), "gauge()")


def histogram(
    name: str,
    description: str = "",
    *,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    labels: Sequence[str] = (),
    event: str | None = None,
    measurement: str | None = None,
) -> None:
    """Declare a histogram on this node: observations (:func:`observe`) counted in
    buckets, with their sum and count.

    ``buckets`` are the finite upper bounds in strictly increasing order (see
    :func:`exponential_buckets` and :func:`linear_buckets`; default
    :data:`DEFAULT_BUCKETS`); an implicit ``+Inf`` bucket follows. A value equal
    to a bound counts in that bound's bucket. With ``event`` (and then
    ``measurement``), every such event observes its measurement. Otherwise as
    :func:`counter`.
    """
    if not isinstance(buckets, Iterable) or isinstance(buckets, str | bytes):
        raise TypeError(f"histogram(): buckets must be a sequence of numbers, got {buckets!r}")
    bounds = tuple(_check_number(b, "histogram(): each bucket bound") for b in buckets)
    if not bounds:
        raise ValueError("histogram(): buckets is empty; give at least one bound")
    if not all(math.isfinite(b) for b in bounds):
        raise ValueError(f"histogram(): bucket bounds must be finite (+Inf is implicit): {bounds}")
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"histogram(): bucket bounds must increase strictly: {bounds}")
    _declare(
        MetricKind.HISTOGRAM, name, description, labels, event, measurement, bounds, "histogram()"
    )


def increment(name: str, amount: float = 1, labels: Mapping[str, str] | None = None) -> None:
    """Add ``amount`` (>= 0) to the counter ``name`` (for ``labels``, if it has labels).

    Raises :class:`UnknownMetric` if it is not declared, :class:`TypeError` if it
    is not a counter, :class:`ValueError` for a negative amount or labels that
    are not exactly its label names.
    """
    metric = _service("increment()").metric(name, MetricKind.COUNTER, "increment()")
    value = _check_number(amount, "increment(): amount")
    if not value >= 0:
        raise ValueError(f"increment(): a counter only goes up; amount must be >= 0, got {amount}")
    metric.add(metric.key(labels, "increment()"), value)


def set_gauge(name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
    """Set the gauge ``name`` to ``value``. Errors as :func:`increment`."""
    metric = _service("set_gauge()").metric(name, MetricKind.GAUGE, "set_gauge()")
    number = _check_number(value, "set_gauge(): value")
    metric.set(metric.key(labels, "set_gauge()"), number)


def adjust_gauge(name: str, delta: float, labels: Mapping[str, str] | None = None) -> None:
    """Add ``delta`` (of either sign) to the gauge ``name``. Errors as :func:`increment`."""
    metric = _service("adjust_gauge()").metric(name, MetricKind.GAUGE, "adjust_gauge()")
    number = _check_number(delta, "adjust_gauge(): delta")
    metric.add(metric.key(labels, "adjust_gauge()"), number)


def observe(name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
    """Record ``value`` in the histogram ``name``. A NaN is refused (:class:`ValueError`);
    otherwise errors as :func:`increment`."""
    metric = _service("observe()").metric(name, MetricKind.HISTOGRAM, "observe()")
    number = _check_number(value, "observe(): value")
    if number != number:
        raise ValueError("observe(): value is NaN")
    metric.observe(metric.key(labels, "observe()"), number)


def metrics() -> dict[str, Metric]:
    """A snapshot of every metric declared on this node, by name."""
    return {name: m.snapshot() for name, m in sorted(_service("metrics()").metrics.items())}


# -- Prometheus text exposition ------------------------------------------------------------------


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if value != value:
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    return repr(float(value))


def _labels_text(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape_label(value)}"' for name, value in pairs)
    return f"{{{inner}}}" if inner else ""


def prometheus_text(metrics_: Mapping[str, Metric] | None = None) -> str:
    """The node's metrics (or ``metrics_``, as :func:`metrics` returns them) in
    Prometheus's text exposition format 0.0.4 (serve it with
    :data:`PROMETHEUS_CONTENT_TYPE`).

    Each metric gets ``# HELP`` and ``# TYPE`` lines, then one line per series;
    a histogram gets cumulative ``_bucket{le="..."}`` lines ending with
    ``le="+Inf"``, then ``_sum`` and ``_count``. Label values and help texts are
    escaped as the format requires.
    """
    found: Mapping[str, Metric]
    if metrics_ is None:
        found = metrics()
    elif isinstance(metrics_, Mapping) and all(isinstance(m, Metric) for m in metrics_.values()):
        found = metrics_
    else:
        raise TypeError(
            "prometheus_text(): metrics_ must be None or a mapping of names to Metric "
            f"(as metrics() returns), got {metrics_!r}"
        )
    lines: list[str] = []
    for name in sorted(found):
        metric = found[name]
        lines.append(f"# HELP {name} {_escape_help(metric.description)}")
        lines.append(f"# TYPE {name} {metric.kind.value}")
        for sample in metric.samples:
            pairs = list(sample.labels.items())
            if isinstance(sample, HistogramSample):
                for bound, count in sample.buckets:
                    le = _labels_text([*pairs, ("le", _format_value(bound))])
                    lines.append(f"{name}_bucket{le} {count}")
                lines.append(f"{name}_sum{_labels_text(pairs)} {_format_value(sample.sum)}")
                lines.append(f"{name}_count{_labels_text(pairs)} {sample.count}")
            else:
                lines.append(f"{name}{_labels_text(pairs)} {_format_value(sample.value)}")
    return "\n".join(lines) + "\n" if lines else ""


# -- the service ------------------------------------------------------------------------------


class TelemetryServer(GenServer):
    """Owns the node's telemetry state for the lifetime of the node.

    The state is created on the first start and kept across restarts of the
    server (attached handlers and metrics survive), and dropped when the server
    is shut down with the node.
    """

    node: Node

    async def init(self) -> None:
        self.node = current_node()
        if self.node.find_extension(Telemetry) is None:
            self.node.set_extension(Telemetry, Telemetry(self.node))

    async def terminate(self, reason: ExitReason) -> None:
        if isinstance(reason, Shutdown):
            state = self.node.find_extension(Telemetry)
            if state is not None:
                state.close()
            self.node.remove_extension(Telemetry)


async def boot(node: Node) -> None:
    """Boot step: start the telemetry service under the node's root supervisor."""
    await node.start_supervisor([ChildSpec("server", TelemetryServer)], name="ft.telemetry")


__all__ = [
    "CHILD_EXIT",
    "CHILD_RESTART",
    "CHILD_START",
    "DEFAULT_BUCKETS",
    "HANDLER_FAILED",
    "PROCESS_EXIT",
    "PROCESS_START",
    "PROMETHEUS_CONTENT_TYPE",
    "RUNTIME_EVENTS",
    "SUPERVISOR_GIVE_UP",
    "Handler",
    "HandlerExists",
    "HistogramSample",
    "Measurements",
    "Metadata",
    "Metric",
    "MetricExists",
    "MetricKind",
    "Sample",
    "Telemetry",
    "TelemetryError",
    "TelemetryServer",
    "UnknownHandler",
    "UnknownMetric",
    "adjust_gauge",
    "attach",
    "boot",
    "check_event_name",
    "counter",
    "detach",
    "execute",
    "exit_kind",
    "exponential_buckets",
    "gauge",
    "handlers",
    "histogram",
    "increment",
    "linear_buckets",
    "metrics",
    "observe",
    "prometheus_text",
    "set_gauge",
    "span",
]
