"""A model test of one process's mailbox: random operations from several senders
against a plain list.

One target process (``mailbox_size`` 1-6) and three sender processes are actors
driven from the node's body through trio memory channels, so that their own
mailboxes hold nothing but what the test sends. Each operation is applied to the
real node and to the model, then the outcome is compared exactly:

- ``send`` puts the message at the end, or waits while the mailbox is full; a
  waiting sender gets in (first come, first served) as soon as a receive frees room;
- ``send_nowait`` raises ``MailboxFull(pid, capacity)`` at capacity;
- ``receive(match, timeout)`` takes the oldest message ``match`` accepts; with
  ``timeout=0`` it raises ``ReceiveTimeout`` at once when none does, with a
  timeout it raises after exactly that much (virtual) time, and with none it
  waits for the first matching message that arrives;
- a monitored process that is killed puts ``Down`` in the mailbox, above capacity;
- ``demonitor(ref, flush=True)`` removes that ``Down`` and nothing else, and
  returns whether the monitor was still active.

Every run ends by draining the mailbox with ``receive(timeout=0)``, so the order of
whatever is left is compared too. Runs are in virtual time (``MockClock``); trio's
scheduler is made deterministic by pytest-trio under hypothesis.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import foundation_trio as ft

SENDERS = 3


@attrs.frozen
class ModelDown:
    """A ``Down`` in the model: the index of the monitor it belongs to."""

    index: int


def _is_down(m: object) -> bool:
    return isinstance(m, ft.Down | ModelDown)


PREDICATES: dict[str, Callable[[Any], bool] | None] = {
    "any": None,
    "int": lambda m: isinstance(m, int),
    "even": lambda m: isinstance(m, int) and m % 2 == 0,
    "eq1": lambda m: m == 1,
    "not_str": lambda m: not isinstance(m, str),
    "down": _is_down,
    "from0": lambda m: isinstance(m, tuple) and m[0] == 0,
    "never": lambda m: False,
}


def _accepts(name: str, message: object) -> bool:
    predicate = PREDICATES[name]
    return predicate is None or predicate(message)


messages = st.one_of(
    st.integers(min_value=0, max_value=3),
    st.sampled_from(["a", "b"]),
    st.tuples(st.integers(min_value=0, max_value=SENDERS - 1), st.integers(0, 3)),
)

sends = st.tuples(st.sampled_from(["send", "send_nowait"]), st.integers(0, SENDERS - 1), messages)
operations = st.one_of(
    sends,
    sends,
    sends,
    st.tuples(
        st.just("receive"), st.sampled_from(sorted(PREDICATES)), st.sampled_from([0, 0.5, None])
    ),
    st.tuples(st.just("monitor")),
    st.tuples(st.just("kill"), st.integers(0, 3)),
    st.tuples(st.just("demonitor"), st.integers(0, 3), st.booleans()),
)


# -- actors: processes that run closures sent to them over a trio channel ----------------


@attrs.define
class Actor:
    pid: ft.Pid
    commands: trio.MemorySendChannel[Callable[[], Awaitable[Any]]]
    results: trio.MemoryReceiveChannel[tuple[str, Any]]


async def _actor_loop(
    commands: trio.MemoryReceiveChannel[Callable[[], Awaitable[Any]]],
    results: trio.MemorySendChannel[tuple[str, Any]],
) -> None:
    async for fn in commands:
        try:
            value = await fn()
        except ft.FoundationError as error:
            results.send_nowait(("error", error))
        else:
            results.send_nowait(("ok", value))


def start_actor(mailbox_size: int | None = None) -> Actor:
    send_commands, receive_commands = trio.open_memory_channel[Any](math.inf)
    send_results, receive_results = trio.open_memory_channel[Any](math.inf)
    pid = ft.spawn(_actor_loop, receive_commands, send_results, mailbox_size=mailbox_size)
    return Actor(pid, send_commands, receive_results)


async def _idle() -> None:
    await trio.sleep_forever()


# -- the model ---------------------------------------------------------------------------


@attrs.define
class Monitor:
    pid: ft.Pid
    ref: ft.Ref
    active: bool = True  # not demonitored and not yet down
    killed: bool = False


@attrs.define
class Model:
    capacity: int
    box: list[Any] = attrs.Factory(list)
    # senders waiting for room, first come first served: (sender index, message)
    blocked: list[tuple[int, Any]] = attrs.Factory(list)
    # the predicate name of a receive (timeout None) that waits, if any
    waiting_receive: str | None = None
    # results each actor ("t" the target, or a sender index) is due to report
    due: dict[Any, list[tuple[str, Any]]] = attrs.Factory(dict)

    def report(self, actor: Any, result: tuple[str, Any]) -> None:
        self.due.setdefault(actor, []).append(result)

    def arrive(self, message: Any) -> None:
        self.box.append(message)
        if self.waiting_receive is not None and _accepts(self.waiting_receive, message):
            self.waiting_receive = None
            self.box.pop()
            self.report("t", ("ok", message))
            self.freed_one()

    def freed_one(self) -> None:
        """A receive took a message: one waiting sender gets in if there is room."""
        if self.blocked and len(self.box) < self.capacity:
            sender, message = self.blocked.pop(0)
            self.report(sender, ("ok", None))
            self.arrive(message)

    def take(self, name: str) -> Any:
        for index, message in enumerate(self.box):
            if _accepts(name, message):
                del self.box[index]
                self.freed_one()
                return message
        return None


def _same(real: Any, model: Any, refs: dict[ft.Ref, int]) -> bool:
    if isinstance(real, ft.Down):
        return (
            isinstance(model, ModelDown)
            and refs.get(real.ref) == model.index
            and real.reason == ft.KILLED
        )
    return type(real) is type(model) and real == model


async def _run(capacity: int, ops: list[tuple[Any, ...]]) -> None:
    async with ft.open_node("mbox"):
        target = start_actor(mailbox_size=capacity)
        senders = [start_actor() for _ in range(SENDERS)]
        actors: dict[Any, Actor] = {"t": target, **dict(enumerate(senders))}
        model = Model(capacity)
        monitors: list[Monitor] = []
        refs: dict[ft.Ref, int] = {}

        async def settle() -> None:
            await trio.testing.wait_all_tasks_blocked()

        async def check_results() -> None:
            """Every actor reported exactly what the model says it is due to."""
            await settle()
            for key, actor in actors.items():
                got: list[tuple[str, Any]] = []
                while True:
                    try:
                        got.append(actor.results.receive_nowait())
                    except trio.WouldBlock:
                        break
                due = model.due.pop(key, [])
                assert len(got) == len(due), (key, got, due)
                for (kind, value), (due_kind, due_value) in zip(got, due, strict=True):
                    assert kind == due_kind, (key, value, due_value)
                    if kind == "ok":
                        assert _same(value, due_value, refs), (key, value, due_value)
                    else:
                        assert isinstance(value, due_value), (key, value, due_value)
                        if isinstance(value, ft.MailboxFull):
                            assert value.pid == target.pid
                            assert value.capacity == capacity

        async def on_target(fn: Callable[[], Awaitable[Any]]) -> tuple[str, Any]:
            """Run ``fn`` in the target and wait (in virtual time) for its result."""
            target.commands.send_nowait(fn)
            with trio.fail_after(1000):
                return await target.results.receive()

        def busy(sender: int) -> bool:
            return any(s == sender for s, _ in model.blocked)

        for op in ops:
            kind = op[0]
            if kind in ("send", "send_nowait"):
                _, sender, message = op
                if busy(sender):
                    continue
                if kind == "send":

                    async def do_send(message: Any = message) -> None:
                        await ft.send(target.pid, message)

                    senders[sender].commands.send_nowait(do_send)
                    if len(model.box) >= capacity:
                        model.blocked.append((sender, message))
                    else:
                        model.report(sender, ("ok", None))
                        model.arrive(message)
                else:

                    async def do_send_nowait(message: Any = message) -> None:
                        ft.send_nowait(target.pid, message)

                    senders[sender].commands.send_nowait(do_send_nowait)
                    if len(model.box) >= capacity:
                        model.report(sender, ("error", ft.MailboxFull))
                    else:
                        model.report(sender, ("ok", None))
                        model.arrive(message)
            elif model.waiting_receive is not None and kind in ("receive", "monitor", "demonitor"):
                continue  # the target is busy in a receive
            elif kind == "receive":
                _, name, timeout = op
                match = PREDICATES[name]

                async def do_receive(match: Any = match, timeout: Any = timeout) -> Any:
                    return await ft.receive(match, timeout=timeout)

                before = trio.current_time()
                expected = model.take(name)
                if expected is not None:
                    result = await on_target(do_receive)
                    assert result[0] == "ok", result
                    assert _same(result[1], expected, refs), (result, expected)
                    assert trio.current_time() == before
                elif timeout is None:
                    target.commands.send_nowait(do_receive)
                    model.waiting_receive = name
                else:
                    result = await on_target(do_receive)
                    assert result[0] == "error", result
                    assert isinstance(result[1], ft.ReceiveTimeout), result
                    assert trio.current_time() - before == timeout
            elif kind == "monitor":
                watched = ft.spawn(_idle)

                async def do_monitor(watched: ft.Pid = watched) -> ft.Ref:
                    return ft.monitor(watched)

                result = await on_target(do_monitor)
                assert result[0] == "ok"
                refs[result[1]] = len(monitors)
                monitors.append(Monitor(watched, result[1]))
            elif kind == "kill":
                if op[1] >= len(monitors) or monitors[op[1]].killed:
                    continue
                watched_monitor = monitors[op[1]]
                watched_monitor.killed = True
                ft.exit(watched_monitor.pid, ft.KILLED)
                if watched_monitor.active:
                    watched_monitor.active = False
                    model.arrive(ModelDown(op[1]))
            elif kind == "demonitor":
                _, index, flush = op
                if index >= len(monitors):
                    continue
                if flush and ModelDown(index) in model.box and len(model.blocked) > 1:
                    # Removing a message wakes every waiting sender at once; which of
                    # them gets the room first is up to trio's scheduler.
                    continue
                ref = monitors[index].ref

                async def do_demonitor(ref: ft.Ref = ref, flush: bool = flush) -> bool:
                    return ft.demonitor(ref, flush=flush)

                result = await on_target(do_demonitor)
                assert result == ("ok", monitors[index].active), (result, monitors[index])
                monitors[index].active = False
                if flush and ModelDown(index) in model.box:
                    model.box.remove(ModelDown(index))
                    if model.blocked and len(model.box) < capacity:
                        sender, message = model.blocked.pop(0)
                        model.report(sender, ("ok", None))
                        model.arrive(message)
            await check_results()

        # Drain what is left, oldest first; waiting senders get in as room frees up.
        if model.waiting_receive is None:
            while model.box or model.blocked:
                expected = model.take("any")
                result = await on_target(lambda: ft.receive(timeout=0))
                assert result[0] == "ok", (result, expected)
                assert _same(result[1], expected, refs), (result, expected)
                await check_results()
            result = await on_target(lambda: ft.receive(timeout=0))
            assert result[0] == "error" and isinstance(result[1], ft.ReceiveTimeout)


@settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    capacity=st.integers(min_value=1, max_value=6),
    ops=st.lists(operations, max_size=60),
)
def test_mailbox_matches_a_list_model(capacity: int, ops: list[tuple[Any, ...]]) -> None:
    """``_run`` asserts after every operation that the real mailbox equals the model."""
    trio.run(_run, capacity, ops, clock=trio.testing.MockClock(autojump_threshold=0))
