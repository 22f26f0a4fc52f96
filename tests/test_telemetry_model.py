"""The handler table against a model: random attaches, detaches, failing handlers and
events, checked after every step (hypothesis stateful testing).

It drives the per-node ``Telemetry`` state directly, with the node left out: the
event names here are not the runtime's, so the node's lifecycle hooks are never
touched.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from foundation_trio.services.telemetry import HandlerExists, Telemetry

IDS = st.sampled_from(["a", "b", "c", "d"])
NAMES = st.sampled_from(["x.one", "x.two", "x.three"])


class TelemetryTable(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = Telemetry(node=None)  # type: ignore[arg-type]
        self.model: dict[str, tuple[tuple[str, ...], bool]] = {}  # id -> (names, fails)
        self.order: list[str] = []  # attach order
        self.calls: list[tuple[str, str, int]] = []
        self.serial = 0

    def handler(self, handler_id: str, fails: bool):
        def handle(event_name, measurements, metadata):
            self.calls.append((handler_id, event_name, measurements["n"]))
            if fails:
                raise RuntimeError(f"{handler_id} fails")

        return handle

    @rule(
        handler_id=IDS,
        names=st.lists(NAMES, min_size=1, max_size=3, unique=True),
        fails=st.booleans(),
    )
    def attach(self, handler_id, names, fails):
        if handler_id in self.model:
            with pytest.raises(HandlerExists):
                self.state.attach(handler_id, tuple(names), self.handler(handler_id, fails))
            return
        self.state.attach(handler_id, tuple(names), self.handler(handler_id, fails))
        self.model[handler_id] = (tuple(names), fails)
        self.order.append(handler_id)

    @rule(handler_id=IDS)
    def detach(self, handler_id):
        assert self.state.detach(handler_id) is (handler_id in self.model)
        if handler_id in self.model:
            del self.model[handler_id]
            self.order.remove(handler_id)

    @rule(name=NAMES)
    def execute(self, name):
        self.serial += 1
        self.calls.clear()
        route = self.state.routes.get(name)
        if route is not None:
            self.state.dispatch(route, name, {"n": self.serial}, None)
        expected = [i for i in self.order if name in self.model[i][0]]
        assert self.calls == [(i, name, self.serial) for i in expected]
        for handler_id in expected:
            if self.model[handler_id][1]:  # a failing handler is detached
                del self.model[handler_id]
                self.order.remove(handler_id)

    @invariant()
    def table_matches_model(self):
        assert {i: a.event_names for i, a in self.state.by_id.items()} == {
            i: names for i, (names, _) in self.model.items()
        }
        for name in ("x.one", "x.two", "x.three"):
            route = self.state.routes.get(name)
            listening = [i for i in self.order if name in self.model[i][0]]
            if not listening:
                assert route is None, name  # an empty route is dropped
            else:
                assert route is not None
                assert [a.handler_id for a in route.handlers] == listening


TelemetryTable.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None
)


@pytest.fixture(autouse=True)
def _quiet_handler_failures():
    logger = logging.getLogger("foundation_trio.telemetry")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


TestTelemetryTable = TelemetryTable.TestCase
