"""The event store: application events with correlation, queries and subscriptions.

(Not to be confused with :mod:`foundation_trio.runtime.events`, the runtime's
lifecycle records for hooks.)

An :class:`Event` is an immutable record of something that happened: a type, a
payload of plain data, a wall-clock timestamp, optional correlation and parent
ids, and the request context bound when it was created. The node's event
service keeps them in one of two stores, chosen by the config's ``events``
section:

- ``"memory"`` (the default): bounded by ``max_events`` and ``max_age``, lost
  when the node closes;
- ``"sqlite"``: a SQLite database in WAL mode at ``events.path``, kept across
  restarts, with the same bounds.

Writes (:func:`store`, :func:`store_batch`, :func:`prune_before`) go through the
node's events server, a supervised GenServer, so they are applied and published
one at a time. Reads (:func:`get`, :func:`query`, :func:`correlation_chain`,
:func:`stats`) go to the store directly. Every SQLite call runs in a worker
thread (``trio.to_thread.run_sync``), never on the event loop, on the store's one
connection; a ``CapacityLimiter(1)`` ensures one thread at a time uses it, which
is what lets the connection be shared with ``check_same_thread=False``.

Bounds are applied on writes: storing evicts the events older than ``max_age``
and then the oldest beyond ``max_events`` (by timestamp, ties by storing order),
and :func:`stats` counts both. Reads never return an event older than
``max_age``, even if no write has evicted it yet.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol, TypeAlias, cast

import attrs
import outcome
import trio

from ..runtime.errors import FoundationError
from ..runtime.node import BootStep, Node, current_node
from ..runtime.pid import ExitReason, Shutdown
from ..runtime.server import GenServer, call
from ..runtime.spec import ChildSpec
from . import context
from .config import ConfigService
from .settings import EventsSettings
from .subscribers import DEFAULT_BUFFER, Lagged, Subscribers, check_buffer

SERVER_NAME: Final = "foundation_trio.events"
"""The name the events server is registered under on its node."""

MAX_TYPE_LENGTH: Final = 200
MAX_DEPTH: Final = 64
"""Nesting of lists and dicts an event's data may have."""

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1

Order: TypeAlias = Literal["asc", "desc"]


class InvalidEventData(FoundationError, TypeError, ValueError):
    """Event data that is not plain data. The message names the offending value
    and where it is (``data['items'][2]``)."""


class DuplicateEvent(FoundationError, ValueError):
    """An event with this id is already stored."""


class EventStoreClosed(FoundationError):
    """The store was closed (its node is stopping)."""


def _event_data(value: object) -> Any:
    return plain_data(value)


def _event_time(value: object) -> float:
    checked = _check_time(value, "Event.timestamp")
    if checked is None:
        raise TypeError("Event.timestamp must be seconds since the epoch, got None")
    return checked


def _event_context(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"Event.context must be a mapping, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str | int | float | bool | None):
            raise InvalidEventData(
                f"Event.context must map str to str, int, float, bool or None; "
                f"got {key!r}: {item!r}"
            )
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


def _event_type(_: object, __: attrs.Attribute[Any], value: object) -> None:
    _check_type(value, "Event")


def _event_id(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"Event.{attribute.name} must be a non-empty str, got {value!r}")


def _event_optional_id(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _check_optional_id(value, f"Event.{attribute.name}")


@attrs.frozen
class Event:
    """Something that happened, as stored. Make one with :func:`new_event`.

    ``timestamp`` is wall-clock time (seconds since the Unix epoch, from
    ``time.time()`` unless given), so that stored events from different runs and
    nodes line up; it is not the monotonic trio clock. ``data`` is a copy of what
    was given, containing only None, bool, int, float, str, list and dict with
    str keys (tuples become lists); anything else raises
    :class:`InvalidEventData`. ``context`` is the request context that was bound
    when the event was made. Every field is checked on construction, so an
    ``Event`` built directly is as valid as one from :func:`new_event`.
    """

    id: str = attrs.field(validator=_event_id)
    type: str = attrs.field(validator=_event_type)
    data: Any = attrs.field(converter=_event_data)
    timestamp: float = attrs.field(converter=_event_time)
    correlation_id: str | None = attrs.field(default=None, validator=_event_optional_id)
    parent_id: str | None = attrs.field(default=None, validator=_event_optional_id)
    context: Mapping[str, Any] = attrs.field(
        factory=lambda: MappingProxyType({}), converter=_event_context
    )


@attrs.frozen
class EventStats:
    """What :func:`stats` reports. Counters run since the node started."""

    store: str
    """``"memory"`` or ``"sqlite"``."""
    count: int
    """Events held now (including any older than ``max_age`` that no write has
    evicted yet)."""
    stored: int
    evicted_by_size: int
    evicted_by_age: int
    pruned: int
    """Removed by :func:`prune_before`."""
    oldest: float | None
    newest: float | None
    subscribers: int
    dropped_for_subscribers: int
    """Events not delivered to subscribers that were not keeping up."""


# -- plain data -------------------------------------------------------------------------------


def plain_data(value: object, where: str = "data", depth: int = 0) -> Any:
    """A copy of ``value`` made only of JSON/msgpack types, or :class:`InvalidEventData`
    naming the first value that is not (floats must be finite, ints fit 64 bits)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidEventData(f"{where} is {value}, outside the 64-bit range of msgpack")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEventData(f"{where} is {value!r}: JSON has no NaN or infinity")
        return float(value)
    if depth >= MAX_DEPTH:
        raise InvalidEventData(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, list | tuple):
        return [plain_data(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEventData(
                    f"{where} has key {key!r} of type {type(key).__name__}: keys must be str"
                )
            copied[key] = plain_data(item, f"{where}[{key!r}]", depth + 1)
        return copied
    raise InvalidEventData(
        f"{where} is {type(value).__name__} {value!r}: event data must be plain data "
        "(None, bool, int, float, str, list, tuple, dict with str keys); "
        "convert it first (e.g. attrs.asdict)"
    )


def _check_optional_id(value: object, what: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{what} must be a non-empty str or None, got {value!r}")
    return value


def _check_type(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TYPE_LENGTH:
        raise TypeError(
            f"{what}: type must be a non-empty str of at most {MAX_TYPE_LENGTH} characters, "
            f"got {value!r}"
        )
    return value


def _check_time(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise TypeError(f"{what} must be seconds since the epoch (int or float), got {value!r}")
    return float(value)


# -- queries ----------------------------------------------------------------------------------


@attrs.frozen
class EventQuery:
    """A validated query. ``since`` is inclusive, ``until`` exclusive; ``not_before``
    is the age bound's cut-off, applied on top."""

    type: str | None = None
    since: float | None = None
    until: float | None = None
    correlation_id: str | None = None
    limit: int | None = None
    offset: int = 0
    order: Order = "asc"
    not_before: float = -math.inf

    def matches(self, event: Event) -> bool:
        return (
            (self.type is None or event.type == self.type)
            and (self.correlation_id is None or event.correlation_id == self.correlation_id)
            and event.timestamp >= self.lower
            and (self.until is None or event.timestamp < self.until)
        )

    @property
    def lower(self) -> float:
        return self.not_before if self.since is None else max(self.since, self.not_before)


def make_query(
    *,
    type: object = None,
    since: object = None,
    until: object = None,
    correlation_id: object = None,
    limit: object = None,
    offset: object = 0,
    order: object = "asc",
    not_before: float = -math.inf,
) -> EventQuery:
    """Check :func:`query`'s arguments, naming the bad one."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"events.query(): limit must be an int >= 0 or None, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"events.query(): offset must be an int >= 0, got {offset!r}")
    if order not in ("asc", "desc"):
        raise ValueError(f"events.query(): order must be 'asc' or 'desc', got {order!r}")
    return EventQuery(
        type=None if type is None else _check_type(type, "events.query()"),
        since=_check_time(since, "events.query(): since"),
        until=_check_time(until, "events.query(): until"),
        correlation_id=_check_optional_id(correlation_id, "events.query(): correlation_id"),
        limit=limit,
        offset=offset,
        order=order,
        not_before=not_before,
    )


# -- the stores ---------------------------------------------------------------------------------


@attrs.define
class Evicted:
    """What one write removed to keep the bounds."""

    by_age: int = 0
    by_size: int = 0


class Store(Protocol):
    """What the event service needs of a store. Every method is synchronous and
    blocking; the service decides on which thread it runs."""

    kind: str

    def insert(self, events: Sequence[Event], not_before: float, max_events: int) -> Evicted: ...
    def get(self, event_id: str) -> Event | None: ...
    def query(self, q: EventQuery) -> list[Event]: ...
    def prune_before(self, t: float) -> int: ...
    def count(self) -> int: ...
    def span(self) -> tuple[float | None, float | None]: ...
    def close(self) -> None: ...


_Key: TypeAlias = tuple[float, int]

_SCAN_STEP: Final = 256


class MemoryStore:
    """Events in memory, ordered by (timestamp, storing order).

    The ordered lists are trimmed lazily from the front (all evictions remove the
    oldest), so eviction is amortized O(1) and inserting in timestamp order is an
    append.
    """

    kind = "memory"

    def __init__(self) -> None:
        self._keys: list[_Key] = []
        self._events: list[Event | None] = []
        self._start = 0
        self._seq = 0
        self._by_id: dict[str, tuple[_Key, Event]] = {}
        self._by_correlation: dict[str, dict[str, _Key]] = {}

    def insert(self, events: Sequence[Event], not_before: float, max_events: int) -> Evicted:
        seen: set[str] = set()
        for event in events:
            if event.id in self._by_id or event.id in seen:
                raise DuplicateEvent(f"an event with id {event.id!r} is already stored")
            seen.add(event.id)
        for event in events:
            self._seq += 1
            key = (event.timestamp, self._seq)
            if not self._keys or key > self._keys[-1]:
                self._keys.append(key)
                self._events.append(event)
            else:
                at = bisect.bisect_left(self._keys, key, self._start)
                self._keys.insert(at, key)
                self._events.insert(at, event)
            self._by_id[event.id] = (key, event)
            if event.correlation_id is not None:
                self._by_correlation.setdefault(event.correlation_id, {})[event.id] = key
        evicted = Evicted(by_age=self.prune_before(not_before))
        excess = self.count() - max_events
        if excess > 0:
            self._drop_front(self._start + excess)
            evicted.by_size = excess
        return evicted

    def _drop_front(self, end: int) -> None:
        for index in range(self._start, end):
            event = self._events[index]
            assert event is not None
            self._events[index] = None
            del self._by_id[event.id]
            if event.correlation_id is not None:
                chain = self._by_correlation[event.correlation_id]
                del chain[event.id]
                if not chain:
                    del self._by_correlation[event.correlation_id]
        self._start = end
        if self._start > 1024 and self._start * 2 > len(self._keys):
            del self._keys[: self._start]
            del self._events[: self._start]
            self._start = 0

    def get(self, event_id: str) -> Event | None:
        found = self._by_id.get(event_id)
        return None if found is None else found[1]

    def query(self, q: EventQuery) -> list[Event]:
        stop = None if q.limit is None else q.offset + q.limit
        if q.correlation_id is not None:
            chain = self._by_correlation.get(q.correlation_id, {})
            ordered = sorted(chain.items(), key=_by_key, reverse=q.order == "desc")
            matching = (
                event
                for event in (self._by_id[event_id][1] for event_id, _ in ordered)
                if q.matches(event)
            )
            return list(itertools.islice(matching, q.offset, stop))
        # The time bounds select a window of the ordered list (past the trimmed
        # front, so no None in it); only the type is left to check. The window is
        # read in slices, which is several times faster than item by item.
        lo = bisect.bisect_left(self._keys, (q.lower, -1), self._start)
        hi = len(self._keys)
        if q.until is not None:
            hi = bisect.bisect_left(self._keys, (q.until, -1), lo)
        found: list[Event] = []
        step = _SCAN_STEP
        for at in range(0, hi - lo, step):
            if q.order == "asc":
                chunk = cast("list[Event]", self._events[lo + at : min(lo + at + step, hi)])
            else:
                chunk = cast("list[Event]", self._events[max(lo, hi - at - step) : hi - at])
                chunk.reverse()
            if q.type is None:
                found += chunk
            else:
                wanted = q.type
                found += [event for event in chunk if event.type == wanted]
            if stop is not None and len(found) >= stop:
                break
        return found[q.offset : stop]

    def prune_before(self, t: float) -> int:
        end = bisect.bisect_left(self._keys, (t, -1), self._start)
        removed = end - self._start
        if removed > 0:
            self._drop_front(end)
        return removed

    def count(self) -> int:
        return len(self._keys) - self._start

    def span(self) -> tuple[float | None, float | None]:
        if not self.count():
            return None, None
        return self._keys[self._start][0], self._keys[-1][0]

    def close(self) -> None:
        """Nothing to release: the events go with the node."""


def _by_key(item: tuple[str, _Key]) -> _Key:
    return item[1]


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    timestamp REAL NOT NULL,
    correlation_id TEXT,
    parent_id TEXT,
    data TEXT NOT NULL,
    context TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (timestamp, seq);
CREATE INDEX IF NOT EXISTS events_by_type ON events (type, timestamp, seq);
CREATE INDEX IF NOT EXISTS events_by_correlation ON events (correlation_id, timestamp, seq);
"""

_COLUMNS: Final = "id, type, timestamp, correlation_id, parent_id, data, context"


class SqliteStore:
    """Events in a SQLite database (WAL mode), kept across restarts.

    Not thread-safe by itself: the event service calls it from one worker thread
    at a time. ``synchronous=NORMAL`` is the usual WAL setting: a committed write
    survives the process crashing; a power loss may lose the last transactions
    but never corrupts the database.
    """

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            _enable_wal(connection, path)
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
            self._count: int = connection.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        except BaseException:
            connection.close()
            raise
        self._connection: sqlite3.Connection | None = connection

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise EventStoreClosed(f"the SQLite event store {self.path!r} is closed")
        return self._connection

    def insert(self, events: Sequence[Event], not_before: float, max_events: int) -> Evicted:
        db = self.connection
        rows = [
            (
                e.id,
                e.type,
                e.timestamp,
                e.correlation_id,
                e.parent_id,
                json.dumps(e.data, separators=(",", ":")),
                json.dumps(dict(e.context), separators=(",", ":")),
            )
            for e in events
        ]
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            evicted = Evicted()
            count = self._count + len(rows)
            if not_before > -math.inf:
                evicted.by_age = db.execute(
                    "DELETE FROM events WHERE timestamp < ?", (not_before,)
                ).rowcount
                count -= evicted.by_age
            if count > max_events:
                evicted.by_size = db.execute(
                    "DELETE FROM events WHERE seq IN "
                    "(SELECT seq FROM events ORDER BY timestamp, seq LIMIT ?)",
                    (count - max_events,),
                ).rowcount
                count -= evicted.by_size
            db.execute("COMMIT")
        except sqlite3.IntegrityError as error:
            db.execute("ROLLBACK")
            raise DuplicateEvent(f"an event of this batch is already stored: {error}") from None
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._count = count
        return evicted

    def get(self, event_id: str) -> Event | None:
        row = self.connection.execute(
            f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        return None if row is None else _from_row(row)

    def query(self, q: EventQuery) -> list[Event]:
        where = ["timestamp >= ?"]
        args: list[Any] = [q.lower]
        if q.until is not None:
            where.append("timestamp < ?")
            args.append(q.until)
        if q.type is not None:
            where.append("type = ?")
            args.append(q.type)
        if q.correlation_id is not None:
            where.append("correlation_id = ?")
            args.append(q.correlation_id)
        direction = "ASC" if q.order == "asc" else "DESC"
        args += [-1 if q.limit is None else q.limit, q.offset]
        rows = self.connection.execute(
            f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(where)} "
            f"ORDER BY timestamp {direction}, seq {direction} LIMIT ? OFFSET ?",
            args,
        ).fetchall()
        return [_from_row(row) for row in rows]

    def prune_before(self, t: float) -> int:
        removed: int = self.connection.execute(
            "DELETE FROM events WHERE timestamp < ?", (t,)
        ).rowcount
        self._count -= removed
        return removed

    def count(self) -> int:
        return self._count

    def span(self) -> tuple[float | None, float | None]:
        row = self.connection.execute("SELECT MIN(timestamp), MAX(timestamp) FROM events")
        oldest, newest = row.fetchone()
        return oldest, newest

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _enable_wal(connection: sqlite3.Connection, path: str) -> None:
    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal" and path != ":memory:":
        raise EventStoreClosed(f"SQLite refused WAL mode for {path!r} (got {mode!r})")


_new_event_object = object.__new__
_set_field = object.__setattr__


def _from_row(row: tuple[Any, ...]) -> Event:
    """An Event from a row of the table, without running its checks again: every
    row was written from a checked Event, and JSON gives back plain data. (This
    halves the cost of a query returning many events.)"""
    event_id, kind, timestamp, correlation_id, parent_id, data, bound = row
    event: Event = _new_event_object(Event)
    _set_field(event, "id", event_id)
    _set_field(event, "type", kind)
    _set_field(event, "data", json.loads(data))
    _set_field(event, "timestamp", timestamp)
    _set_field(event, "correlation_id", correlation_id)
    _set_field(event, "parent_id", parent_id)
    _set_field(event, "context", MappingProxyType(json.loads(bound)))
    return event


# -- the service --------------------------------------------------------------------------------

Clock: TypeAlias = Callable[[], float]


class EventsService:
    """The event service of one node: attached to the node, written through
    :class:`EventsServer`."""

    def __init__(self, settings: EventsSettings, clock: Clock, config: ConfigService | None):
        self.kind = settings.store
        self.path = settings.path
        self._settings = settings
        self._config = config
        self.clock = clock
        self.store: Store | None = None
        self.limiter = trio.CapacityLimiter(1)
        self.subscribers: Subscribers[Event] = Subscribers("events")
        self.stored = 0
        self.evicted = Evicted()
        self.pruned = 0

    @property
    def settings(self) -> EventsSettings:
        """The ``events`` section as it is now: the bounds are updatable."""
        return self._settings if self._config is None else self._config.events

    def not_before(self) -> float:
        return self.clock() - self.settings.max_age

    async def run(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run a store method: in the worker thread for SQLite, inline for memory."""
        if self.kind == "sqlite":
            return await trio.to_thread.run_sync(method, *args, limiter=self.limiter)
        await trio.lowlevel.checkpoint()
        return method(*args)

    def current_store(self) -> Store:
        if self.store is None:
            raise EventStoreClosed("the event store is not open (the events server is restarting)")
        return self.store

    async def open(self) -> None:
        if self.store is None:
            if self.kind == "sqlite":
                self.store = await trio.to_thread.run_sync(
                    SqliteStore, self.path, limiter=self.limiter
                )
            else:
                self.store = MemoryStore()

    async def close(self) -> None:
        store, self.store = self.store, None
        if store is not None and self.kind == "sqlite":
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(store.close, limiter=self.limiter)
        self.subscribers.close()

    async def write(self, events: tuple[Event, ...]) -> int:
        store = self.current_store()
        settings = self.settings
        not_before = self.clock() - settings.max_age
        if self.kind == "sqlite":
            evicted: Evicted = await self.run(
                store.insert, events, not_before, settings.max_events
            )
        else:
            # Called by the server, between messages: no checkpoint needed here.
            evicted = store.insert(events, not_before, settings.max_events)
        self.stored += len(events)
        self.evicted.by_age += evicted.by_age
        self.evicted.by_size += evicted.by_size
        for event in events:
            self.subscribers.publish(event)
        return len(events)

    async def prune(self, t: float) -> int:
        removed: int = await self.run(self.current_store().prune_before, t)
        self.pruned += removed
        return removed


@attrs.frozen
class _Write:
    events: tuple[Event, ...]


@attrs.frozen
class _Prune:
    before: float


class EventsServer(GenServer):
    """Owns the node's event store: opens it on start (a SQLite database is opened
    in the worker thread), applies writes one at a time, closes it on stop. A
    failed write is returned to its caller and does not crash the server."""

    service: EventsService

    async def init(self, service: EventsService) -> None:
        self.service = service
        await service.open()

    async def handle_call(self, request: Any, caller: Any) -> outcome.Outcome[Any]:
        match request:
            case _Write(events):
                return await outcome.acapture(self.service.write, events)
            case _Prune(before):
                return await outcome.acapture(self.service.prune, before)
        raise TypeError(f"events server: unknown request {request!r}")

    async def terminate(self, reason: ExitReason) -> None:
        # Only when the node stops: a restarted server adopts the open store and
        # the subscriptions, which live in the service.
        if isinstance(reason, Shutdown):
            await self.service.close()
            current_node().remove_extension(EventsService)


def boot_step(*, clock: Clock | None = None) -> BootStep:
    """The boot step that starts the node's event service, with the store the
    config's ``events`` section names (the defaults if the node has no config
    service). ``clock`` gives event timestamps and the age bound (default
    ``time.time``; tests pass a fake one)."""
    timestamps = time.time if clock is None else clock
    if not callable(timestamps):
        raise TypeError(f"events.boot_step(): clock must be callable, got {clock!r}")

    async def start_events(node: Node) -> None:
        config = node.find_extension(ConfigService)
        settings = EventsSettings() if config is None else config.events
        service = EventsService(settings, timestamps, config)
        node.set_extension(EventsService, service)
        await node.start_supervisor(
            [ChildSpec("events", EventsServer, args=(service,), name=SERVER_NAME)],
            name="ft.events",
        )

    return start_events


# -- the module-level API --------------------------------------------------------------------


def _service(what: str) -> EventsService:
    return current_node().extension(EventsService, f"the event service (used by {what})")


def new_event(
    type: str,
    data: Any = None,
    correlation_id: str | None = None,
    parent_id: str | None = None,
    *,
    timestamp: float | None = None,
) -> Event:
    """A new :class:`Event` (not stored yet: pass it to :func:`store`).

    ``data`` must be plain data and is copied; anything else raises
    :class:`InvalidEventData` naming the offending value. ``timestamp`` defaults
    to the service's clock (wall-clock time). The id is a random UUID (hex).
    """
    service = _service("events.new_event()")
    return Event(
        id=uuid.uuid4().hex,
        type=type,
        data=data,
        timestamp=service.clock() if timestamp is None else timestamp,
        correlation_id=correlation_id,
        parent_id=parent_id,
        context=context.current(),
    )


def _check_event(event: object, what: str) -> Event:
    if not isinstance(event, Event):
        raise TypeError(f"{what} takes an Event (from events.new_event()), got {event!r}")
    return event


async def store(event: Event) -> str:
    """Store ``event``; return its id once it is stored and published.

    Raises :class:`DuplicateEvent` if its id is already stored. Storing may
    evict the oldest events to keep the bounds.
    """
    return (await store_batch([_check_event(event, "events.store()")]))[0]


async def store_batch(events: Iterable[Event]) -> list[str]:
    """Store ``events`` in one write (one transaction for SQLite): all or none.

    Much faster per event than :func:`store` in a loop. Returns their ids.
    Waits for the events server without a timeout. Cancelling the wait abandons
    it, but not the write: the server may still store the events, so check with
    :func:`get` before storing them again.
    """
    if isinstance(events, Event) or not isinstance(events, Iterable):
        raise TypeError(f"events.store_batch() takes an iterable of Events, got {events!r}")
    batch = tuple(_check_event(e, "events.store_batch()") for e in events)
    _service("events.store_batch()")
    if batch:
        result: outcome.Outcome[int] = await call(SERVER_NAME, _Write(batch), timeout=None)
        result.unwrap()
    return [e.id for e in batch]


async def get(event_id: str) -> Event | None:
    """The stored event with id ``event_id``, or None (also if it is older than
    ``max_age``)."""
    if not isinstance(event_id, str):
        raise TypeError(f"events.get(): event_id must be a str, got {event_id!r}")
    service = _service("events.get()")
    event: Event | None = await service.run(service.current_store().get, event_id)
    if event is not None and event.timestamp < service.not_before():
        return None
    return event


async def query(
    *,
    type: str | None = None,
    since: float | None = None,
    until: float | None = None,
    correlation_id: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    order: Order = "asc",
) -> list[Event]:
    """Stored events matching every filter given, ordered by timestamp (ties in
    storing order), ``order="desc"`` for newest first, skipping ``offset`` and
    returning at most ``limit`` (None: all).

    ``type`` and ``correlation_id`` match exactly; ``since`` is inclusive and
    ``until`` exclusive (seconds since the epoch). A bad argument raises
    :class:`TypeError` or :class:`ValueError` naming it.
    """
    service = _service("events.query()")
    q = make_query(
        type=None if type is None else _check_type(type, "events.query()"),
        since=since,
        until=until,
        correlation_id=correlation_id,
        limit=limit,
        offset=offset,
        order=order,
        not_before=service.not_before(),
    )
    found: list[Event] = await service.run(service.current_store().query, q)
    return found


async def correlation_chain(correlation_id: str) -> list[Event]:
    """Every stored event with ``correlation_id``, oldest first."""
    _check_optional_id(correlation_id, "events.correlation_chain(): correlation_id")
    if correlation_id is None:
        raise TypeError("events.correlation_chain(): correlation_id must be a str, got None")
    return await query(correlation_id=correlation_id)


async def prune_before(t: float) -> int:
    """Remove every stored event with a timestamp before ``t``; return how many."""
    before = _check_time(t, "events.prune_before(): t")
    if before is None:
        raise TypeError("events.prune_before(): t must be a number, got None")
    _service("events.prune_before()")
    result: outcome.Outcome[int] = await call(SERVER_NAME, _Prune(before), timeout=None)
    return result.unwrap()


async def stats() -> EventStats:
    """Counts of the node's event store (see :class:`EventStats`)."""
    service = _service("events.stats()")
    store_ = service.current_store()
    oldest, newest = await service.run(store_.span)
    return EventStats(
        store=service.kind,
        count=store_.count(),
        stored=service.stored,
        evicted_by_size=service.evicted.by_size,
        evicted_by_age=service.evicted.by_age,
        pruned=service.pruned,
        oldest=oldest,
        newest=newest,
        subscribers=len(service.subscribers),
        dropped_for_subscribers=service.subscribers.lagged_total,
    )


def subscribe(
    type: str | None = None, *, buffer: int = DEFAULT_BUFFER
) -> trio.MemoryReceiveChannel[Event | Lagged]:
    """A channel receiving every event stored from now on (of ``type``, if given),
    in storing order.

    Never slows down writers: at most ``buffer`` events wait in the channel;
    beyond that they are dropped, and the next one the subscriber does get is
    preceded by a :class:`Lagged` record with the number dropped. Close the channel
    to unsubscribe; it ends (``trio.EndOfChannel``) when the node stops.
    """
    service = _service("events.subscribe()")
    size = check_buffer(buffer, "events.subscribe()")
    if type is None:
        return service.subscribers.subscribe(size)
    wanted = _check_type(type, "events.subscribe()")
    return service.subscribers.subscribe(size, lambda event: event.type == wanted)


__all__ = [
    "DuplicateEvent",
    "Event",
    "EventQuery",
    "EventStats",
    "EventStoreClosed",
    "EventsService",
    "InvalidEventData",
    "Lagged",
    "MemoryStore",
    "SqliteStore",
    "boot_step",
    "correlation_chain",
    "get",
    "new_event",
    "plain_data",
    "prune_before",
    "query",
    "stats",
    "store",
    "store_batch",
    "subscribe",
]
