"""The event store (issue 3, item 2): records, validation of data, store and query
semantics on both stores, bounds and eviction counts, SQLite durability across a
restart, subscriptions, bad input."""

from __future__ import annotations

import math
import sqlite3
import threading
from typing import Any

import attrs
import pytest
import trio

import foundation_trio as ft
from foundation_trio.runtime.node import open_node
from foundation_trio.services import config, events
from foundation_trio.services.events import (
    DuplicateEvent,
    Event,
    InvalidEventData,
    SqliteStore,
)
from foundation_trio.services.subscribers import Lagged

T0 = 1_700_000_000.0


class FakeClock:
    """Wall-clock time as the tests want it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def node(
    events_config: dict[str, Any] | None = None, clock: FakeClock | None = None, name: str = "ev"
) -> Any:
    source = config.ConfigSource(values={"events": events_config or {}})
    return open_node(name, boot=[config.boot_step(source), events.boot_step(clock=clock)])


@pytest.fixture(params=["memory", "sqlite"])
def store_config(request, tmp_path) -> dict[str, Any]:
    if request.param == "memory":
        return {"store": "memory"}
    return {"store": "sqlite", "path": str(tmp_path / "events.sqlite3")}


# -- records and validation ---------------------------------------------------------------


async def test_new_event_fills_the_record():
    clock = FakeClock()
    async with node(clock=clock):
        event = events.new_event("order.created", {"n": 1}, correlation_id="c", parent_id="p")
        assert event.type == "order.created"
        assert event.data == {"n": 1}
        assert event.timestamp == T0
        assert (event.correlation_id, event.parent_id) == ("c", "p")
        assert len(event.id) == 32
        assert event.id != events.new_event("order.created").id
        assert events.new_event("x", timestamp=5).timestamp == 5.0
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            event.type = "other"  # type: ignore[misc]


async def test_new_event_copies_data_into_plain_types():
    async with node():
        source = {"items": [1, (2, 3)], "nested": {"ok": True, "none": None, "f": 1.5}}
        event = events.new_event("t", source)
        assert event.data == {"items": [1, [2, 3]], "nested": {"ok": True, "none": None, "f": 1.5}}
        source["items"].append(4)  # type: ignore[attr-defined]
        assert event.data["items"] == [1, [2, 3]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"a": {1, 2}}, r"data\['a'\] is set \{1, 2\}: event data must be plain data"),
        ([1, object], r"data\[1\] is type"),
        ({"x": [1.0, math.nan]}, r"data\['x'\]\[1\] is nan: JSON has no NaN or infinity"),
        ({"big": 2**70}, r"data\['big'\] is 1180591620717411303424, outside the 64-bit range"),
        ({1: "a"}, r"data has key 1 of type int: keys must be str"),
        (b"bytes", r"data is bytes b'bytes'"),
        (ft.Pid("n", 1), r"data is Pid"),
    ],
)
async def test_new_event_refuses_what_is_not_plain_data(data, message):
    async with node():
        with pytest.raises(InvalidEventData, match=message) as info:
            events.new_event("t", data)
        assert isinstance(info.value, TypeError)
        assert isinstance(info.value, ft.FoundationError)


async def test_new_event_refuses_deep_nesting_and_bad_arguments():
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    async with node():
        with pytest.raises(InvalidEventData, match="nested more than 64 levels"):
            events.new_event("t", deep)
        with pytest.raises(TypeError, match="type must be a non-empty str"):
            events.new_event("", 1)
        with pytest.raises(TypeError, match="type must be a non-empty str"):
            events.new_event(3, 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="correlation_id must be a non-empty str or None"):
            events.new_event("t", 1, correlation_id=7)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="parent_id must be a non-empty str or None"):
            events.new_event("t", 1, parent_id="")
        with pytest.raises(TypeError, match="timestamp must be seconds"):
            events.new_event("t", 1, timestamp="now")  # type: ignore[arg-type]


def test_an_event_built_directly_is_checked_too():
    assert Event("i", "t", (1, 2), 5).data == [1, 2]
    assert Event("i", "t", None, 5).timestamp == 5.0
    with pytest.raises(InvalidEventData, match=r"data\[0\] is set"):
        Event("i", "t", [{1}], 1.0)
    with pytest.raises(InvalidEventData, match=r"Event\.context must map str to"):
        Event("i", "t", None, 1.0, context={"k": [1]})
    with pytest.raises(TypeError, match=r"Event\.context must be a mapping"):
        Event("i", "t", None, 1.0, context=[("k", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Event\.id must be a non-empty str"):
        Event("", "t", None, 1.0)
    with pytest.raises(TypeError, match=r"Event\.timestamp must be seconds"):
        Event("i", "t", None, math.nan)
    with pytest.raises(TypeError, match=r"Event\.parent_id must be a non-empty str or None"):
        Event("i", "t", None, 1.0, parent_id=3)  # type: ignore[arg-type]


# -- storing and querying, on both stores -------------------------------------------------


async def fill(clock: FakeClock) -> list[Event]:
    """Six events one second apart: types a/b alternating, two correlations."""
    made = []
    for i in range(6):
        made.append(
            events.new_event(
                "a" if i % 2 == 0 else "b",
                {"i": i},
                correlation_id="even" if i % 2 == 0 else "odd",
            )
        )
        clock.advance(1)
    assert await events.store_batch(made[:3]) == [e.id for e in made[:3]]
    for event in made[3:]:
        assert await events.store(event) == event.id
    return made


async def test_store_get_and_query(store_config):
    clock = FakeClock()
    async with node(store_config, clock):
        made = await fill(clock)
        assert await events.get(made[2].id) == made[2]
        assert await events.get("nope") is None
        assert await events.query() == made
        assert await events.query(order="desc") == made[::-1]
        assert await events.query(type="a") == made[0::2]
        assert await events.query(correlation_id="odd") == made[1::2]
        assert await events.query(since=T0 + 2) == made[2:]
        assert await events.query(until=T0 + 2) == made[:2]
        assert await events.query(since=T0 + 1, until=T0 + 4, type="b") == [made[1], made[3]]
        assert await events.query(limit=2) == made[:2]
        assert await events.query(limit=2, offset=3) == made[3:5]
        assert await events.query(limit=2, offset=1, order="desc") == [made[4], made[3]]
        assert await events.query(limit=0) == []
        assert await events.query(offset=10) == []
        assert await events.correlation_chain("even") == made[0::2]
        assert await events.correlation_chain("none") == []


async def test_ties_keep_storing_order_and_late_events_sort_by_timestamp(store_config):
    async with node(store_config, FakeClock()):
        same = [events.new_event("t", i, timestamp=T0) for i in range(3)]
        late = events.new_event("t", "late", timestamp=T0 - 10)
        await events.store_batch(same)
        await events.store(late)
        assert await events.query() == [late, *same]
        assert await events.query(order="desc") == [*same[::-1], late]


async def test_duplicate_ids_are_refused_and_a_batch_is_all_or_nothing(store_config):
    async with node(store_config, FakeClock()):
        first = events.new_event("t", 1)
        await events.store(first)
        fresh = events.new_event("t", 2)
        with pytest.raises(DuplicateEvent):
            await events.store(first)
        with pytest.raises(DuplicateEvent):
            await events.store_batch([fresh, first])
        with pytest.raises(DuplicateEvent):
            await events.store_batch([fresh, fresh])
        assert await events.query() == [first]
        stats = await events.stats()
        assert (stats.count, stats.stored) == (1, 1)
        # the server survived the failed writes
        await events.store(fresh)
        assert await events.query() == [first, fresh]


async def test_prune_before_and_stats(store_config):
    clock = FakeClock()
    async with node(store_config, clock):
        made = await fill(clock)
        assert await events.prune_before(T0 + 2) == 2
        assert await events.query() == made[2:]
        assert await events.prune_before(T0) == 0
        stats = await events.stats()
        assert stats.store == store_config["store"]
        assert (stats.count, stats.stored, stats.pruned) == (4, 6, 2)
        assert (stats.oldest, stats.newest) == (T0 + 2, T0 + 5)
        assert (stats.evicted_by_size, stats.evicted_by_age) == (0, 0)


async def test_size_bound_evicts_the_oldest_and_counts(store_config):
    clock = FakeClock()
    async with node({**store_config, "max_events": 4}, clock):
        made = await fill(clock)
        assert await events.query() == made[2:]
        stats = await events.stats()
        assert (stats.count, stats.evicted_by_size) == (4, 2)
        # a batch larger than the bound keeps its newest
        batch = [events.new_event("t", i, timestamp=T0 + 10 + i) for i in range(6)]
        await events.store_batch(batch)
        assert await events.query() == batch[2:]
        assert (await events.stats()).evicted_by_size == 8
        # the bound is updatable at runtime
        await config.update("events.max_events", 2)
        await events.store(events.new_event("t", "x", timestamp=T0 + 100))
        assert len(await events.query()) == 2
        assert (await events.stats()).evicted_by_size == 11


async def test_age_bound_hides_then_evicts_old_events(store_config):
    clock = FakeClock()
    async with node({**store_config, "max_age": 10.0}, clock):
        old = events.new_event("t", "old")
        await events.store(old)
        clock.advance(5)
        recent = events.new_event("t", "recent")
        await events.store(recent)
        clock.advance(6)
        # 11 s after the first: past max_age, not returned even before any eviction
        assert await events.query() == [recent]
        assert await events.get(old.id) is None
        assert (await events.stats()).count == 2
        await events.store(events.new_event("t", "new"))
        stats = await events.stats()
        assert (stats.count, stats.evicted_by_age) == (2, 1)


async def test_query_arguments_are_checked():
    async with node():
        for kwargs, message in [
            ({"limit": -1}, "limit must be an int >= 0 or None"),
            ({"limit": True}, "limit must be an int >= 0 or None"),
            ({"offset": -1}, "offset must be an int >= 0"),
            ({"order": "up"}, "order must be 'asc' or 'desc'"),
            ({"since": "yesterday"}, "since must be seconds"),
            ({"until": math.nan}, "until must be seconds"),
            ({"type": ""}, "type must be a non-empty str"),
            ({"correlation_id": 3}, "correlation_id must be a non-empty str or None"),
        ]:
            with pytest.raises((TypeError, ValueError), match=message):
                await events.query(**kwargs)
        with pytest.raises(TypeError, match="takes an Event"):
            await events.store({"type": "t"})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="iterable of Events"):
            await events.store_batch(events.new_event("t"))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="takes an Event"):
            await events.store_batch([events.new_event("t"), "x"])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="event_id must be a str"):
            await events.get(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="correlation_id must be a str"):
            await events.correlation_chain(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="t must be"):
            await events.prune_before("x")  # type: ignore[arg-type]
        assert await events.store_batch([]) == []


# -- durability ----------------------------------------------------------------------------


async def test_sqlite_events_survive_a_restart(tmp_path):
    db = tmp_path / "events.sqlite3"
    cfg = {"store": "sqlite", "path": str(db)}
    clock = FakeClock()
    async with node(cfg, clock):
        made = await fill(clock)
    assert db.exists()
    async with node(cfg, clock, name="again"):
        assert await events.query() == made
        assert await events.correlation_chain("odd") == made[1::2]
        assert (await events.stats()).count == 6
        more = events.new_event("t", "after restart")
        await events.store(more)
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 7


async def test_memory_events_do_not_survive_a_restart():
    async with node():
        await events.store(events.new_event("t", 1))
    async with node():
        assert await events.query() == []


async def test_sqlite_calls_run_off_the_event_loop(tmp_path, monkeypatch):
    threads: list[int] = []
    for name in ("insert", "query", "get", "span"):
        original = getattr(SqliteStore, name)

        def spy(self: Any, *args: Any, _original: Any = original) -> Any:
            threads.append(threading.get_ident())
            return _original(self, *args)

        monkeypatch.setattr(SqliteStore, name, spy)
    cfg = {"store": "sqlite", "path": str(tmp_path / "e.sqlite3")}
    async with node(cfg, FakeClock()):
        event = events.new_event("t", 1)
        await events.store(event)
        await events.get(event.id)
        await events.query()
        await events.stats()
    assert len(threads) == 4
    assert threading.get_ident() not in threads


async def test_an_unopenable_database_fails_the_start(tmp_path):
    cfg = {"store": "sqlite", "path": str(tmp_path / "no" / "such" / "dir.sqlite3")}
    with pytest.raises(ft.StartError, match="unable to open database file"):
        async with node(cfg):
            pytest.fail("started")


# -- subscriptions ---------------------------------------------------------------------------


async def test_subscribers_get_stored_events_in_order(store_config):
    async with node(store_config, FakeClock()):
        everything = events.subscribe()
        only_b = events.subscribe("b")
        made = [events.new_event(kind, i) for i, kind in enumerate("abab")]
        await events.store_batch(made[:2])
        await events.store_batch(made[2:])
        assert [everything.receive_nowait() for _ in range(4)] == made
        assert [only_b.receive_nowait() for _ in range(2)] == [made[1], made[3]]
        with pytest.raises(trio.WouldBlock):
            only_b.receive_nowait()
        # a failed write publishes nothing
        with pytest.raises(DuplicateEvent):
            await events.store(made[0])
        with pytest.raises(trio.WouldBlock):
            everything.receive_nowait()


async def test_a_slow_subscriber_lags_without_blocking_writers():
    async with node(clock=FakeClock()):
        slow = events.subscribe(buffer=3)
        for i in range(50):
            with trio.fail_after(1):
                await events.store(events.new_event("t", i))
        assert [slow.receive_nowait().data for _ in range(3)] == [0, 1, 2]
        with pytest.raises(trio.WouldBlock):
            slow.receive_nowait()
        await events.store(events.new_event("t", 50))
        assert slow.receive_nowait() == Lagged(47)
        assert slow.receive_nowait().data == 50
        stats = await events.stats()
        assert (stats.subscribers, stats.dropped_for_subscribers) == (1, 47)
        with pytest.raises(ValueError, match="buffer must be an int of at least 1"):
            events.subscribe(buffer=0)


async def test_subscriptions_end_when_the_node_stops():
    async with node():
        channel = events.subscribe()
    with pytest.raises(trio.EndOfChannel):
        await channel.receive()


# -- the service ------------------------------------------------------------------------------


async def test_the_events_server_restarts_and_the_memory_store_is_kept():
    async with node(clock=FakeClock()):
        event = events.new_event("t", 1)
        await events.store(event)
        first = ft.whereis(events.SERVER_NAME)
        assert first is not None
        ref = ft.monitor(first)
        ft.exit(first, RuntimeError("simulated crash"))
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref, timeout=5)
        with trio.fail_after(5):
            while ft.whereis(events.SERVER_NAME) in (None, first):
                await trio.lowlevel.checkpoint()
        assert await events.get(event.id) == event
        await events.store(events.new_event("t", 2))
        assert len(await events.query()) == 2


async def test_events_without_a_config_service_use_the_defaults():
    async with open_node("plain", boot=[events.boot_step()]):
        await events.store(events.new_event("t", 1))
        assert (await events.stats()).store == "memory"


async def test_outside_a_node_and_without_the_service():
    with pytest.raises(ft.NoNodeError):
        events.new_event("t", 1)
    async with open_node("bare"):
        with pytest.raises(LookupError, match="the event service"):
            await events.query()
    with pytest.raises(TypeError, match="clock must be callable"):
        events.boot_step(clock=3)  # type: ignore[arg-type]


async def test_events_carry_the_bound_request_context(tmp_path):
    cfg = {"store": "sqlite", "path": str(tmp_path / "e.sqlite3")}
    async with node(cfg, FakeClock()):
        with ft.context.bind(request_id="r1", user_id=7):
            event = events.new_event("t", 1)
        assert dict(event.context) == {"request_id": "r1", "user_id": 7}
        assert dict(events.new_event("t", 2).context) == {}
        await events.store(event)
    async with node(cfg, FakeClock()):
        stored = await events.get(event.id)
        assert stored is not None
        assert dict(stored.context) == {"request_id": "r1", "user_id": 7}


async def test_the_public_open_node_boots_config_then_events(tmp_path):
    db = tmp_path / "events.sqlite3"
    cfg = {"events": {"store": "sqlite", "path": str(db), "max_events": 10}}
    async with ft.open_node("pub", config=cfg):
        assert ft.config.get("events.store") == "sqlite"
        await ft.events.store(ft.events.new_event("t", {"x": 1}))
        assert (await ft.events.stats()).store == "sqlite"
    async with ft.open_node("pub", config=cfg):
        assert [e.data for e in await ft.events.query()] == [{"x": 1}]
    with pytest.raises(TypeError, match="config must be None, a mapping"):
        async with ft.open_node("pub", config=3):
            pytest.fail("started")


async def test_a_cancelled_store_leaves_the_server_working(store_config):
    async with node(store_config, FakeClock()):
        event = events.new_event("t", 1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await events.store(event)
        assert scope.cancelled_caught
        # the request was in the server's mailbox: it is stored, exactly once
        with trio.fail_after(5):
            while await events.get(event.id) is None:
                await trio.lowlevel.checkpoint()
        with pytest.raises(DuplicateEvent):
            await events.store(event)
        later = events.new_event("t", 2)
        await events.store(later)
        assert await events.query() == [event, later]
        assert (await events.stats()).stored == 2
