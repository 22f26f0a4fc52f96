"""Both event stores against a plain list model (hypothesis, stateful).

The model keeps (timestamp, storing order, event) in a list; a query filters it
and sorts it. The stores must agree with it on every query after any sequence of
batch inserts (with size and age bounds), prunes and lookups, including events
stored out of timestamp order and with equal timestamps. The stores are driven
directly (they are synchronous), so one example runs in well under a millisecond.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from foundation_trio.services.events import (
    Event,
    EventQuery,
    MemoryStore,
    SqliteStore,
    make_query,
)

TIMES = st.integers(min_value=0, max_value=20).map(float)
TYPES = st.sampled_from(["a", "b", "c"])
CORRELATIONS = st.sampled_from([None, "x", "y"])
_ids = itertools.count()


@st.composite
def new_events(draw: Any) -> Event:
    return Event(
        id=f"e{next(_ids)}",
        type=draw(TYPES),
        data={"n": draw(st.integers(-5, 5))},
        timestamp=draw(TIMES),
        correlation_id=draw(CORRELATIONS),
    )


QUERIES = st.builds(
    make_query,
    type=st.none() | TYPES,
    since=st.none() | TIMES,
    until=st.none() | TIMES,
    correlation_id=st.none() | st.sampled_from(["x", "y"]),
    limit=st.none() | st.integers(0, 6),
    offset=st.integers(0, 4),
    order=st.sampled_from(["asc", "desc"]),
    not_before=st.sampled_from([-math.inf, 3.0, 8.0]),
)


def model_query(rows: list[tuple[float, int, Event]], q: EventQuery) -> list[Event]:
    found = sorted((r for r in rows if q.matches(r[2])), key=lambda r: (r[0], r[1]))
    if q.order == "desc":
        found.reverse()
    end = None if q.limit is None else q.offset + q.limit
    return [r[2] for r in found[q.offset : end]]


class StoresAgainstModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.memory = MemoryStore()
        self.sqlite = SqliteStore(":memory:")
        self.rows: list[tuple[float, int, Event]] = []
        self.seq = 0

    def teardown(self) -> None:
        self.sqlite.close()

    @rule(
        batch=st.lists(new_events(), min_size=1, max_size=5),
        not_before=st.sampled_from([-math.inf, -math.inf, 2.0, 6.0]),
        max_events=st.integers(1, 12),
    )
    def insert(self, batch: list[Event], not_before: float, max_events: int) -> None:
        for event in batch:
            self.seq += 1
            self.rows.append((event.timestamp, self.seq, event))
        by_age = [r for r in self.rows if r[0] < not_before]
        self.rows = sorted((r for r in self.rows if r[0] >= not_before), key=lambda r: r[:2])
        by_size = max(0, len(self.rows) - max_events)
        self.rows = self.rows[by_size:]
        for store in (self.memory, self.sqlite):
            evicted = store.insert(batch, not_before, max_events)
            assert (evicted.by_age, evicted.by_size) == (len(by_age), by_size)

    @rule(t=TIMES)
    def prune(self, t: float) -> None:
        removed = sum(1 for r in self.rows if r[0] < t)
        self.rows = [r for r in self.rows if r[0] >= t]
        assert self.memory.prune_before(t) == removed
        assert self.sqlite.prune_before(t) == removed

    @rule(q=QUERIES)
    def query(self, q: EventQuery) -> None:
        expected = model_query(self.rows, q)
        assert self.memory.query(q) == expected
        assert self.sqlite.query(q) == expected

    @rule(data=st.data())
    def get(self, data: Any) -> None:
        if self.rows:
            event = data.draw(st.sampled_from(self.rows))[2]
            assert self.memory.get(event.id) == event
            assert self.sqlite.get(event.id) == event
        assert self.memory.get("missing") is None
        assert self.sqlite.get("missing") is None

    @invariant()
    def counts_and_span_agree(self) -> None:
        assert self.memory.count() == self.sqlite.count() == len(self.rows)
        times = [r[0] for r in self.rows]
        span = (min(times), max(times)) if times else (None, None)
        assert self.memory.span() == self.sqlite.span() == span


StoresAgainstModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, derandomize=True
)
test_stores_against_model = StoresAgainstModel.TestCase
