"""A model test of ``ft.Registry``: a unique and a duplicate registry, several
processes registering, unregistering, updating and exiting, against dict/list models.

The registering processes are actors driven from the node's body through trio
memory channels (a process registers *itself*, so the calls must run in it). The
body is a listener of both registries. After every operation the test compares,
for every key: ``lookup``, ``count``, ``whereis`` (unique), ``match``, ``dispatch``;
and ``count()``, ``all_keys()``, ``keys(pid)`` of every process ever started; and
the exact ``RegistryEvent`` sequence the body was sent.

``lookup``, ``match`` and ``dispatch`` must give the entries in registration order
(in a duplicate registry, entries of several processes interleave). Orders the
documentation does not define are compared as such: ``keys(pid)`` and ``all_keys()``
as sets, and the events of one exit or ``clear()`` up to the order of keys (the
order of one key's entries still counts).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import foundation_trio as ft

SLOTS = 3
KEYS = ["k0", "k1", ("t", 2)]
REGISTRIES = ["u", "d"]


class Crash(Exception):
    pass


_STOP = object()


@attrs.define
class Actor:
    pid: ft.Pid
    ref: ft.Ref
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
            if value is _STOP:
                return
            results.send_nowait(("ok", value))


def start_actor() -> Actor:
    send_commands, receive_commands = trio.open_memory_channel[Any](math.inf)
    send_results, receive_results = trio.open_memory_channel[Any](math.inf)
    pid = ft.spawn(_actor_loop, receive_commands, send_results)
    return Actor(pid, ft.monitor(pid), send_commands, receive_results)


async def run_in(actor: Actor, fn: Callable[[], Any]) -> tuple[str, Any]:
    """Run the plain function ``fn`` in ``actor``'s process; return its result."""

    async def wrapped() -> Any:
        return fn()

    actor.commands.send_nowait(wrapped)
    with trio.fail_after(100):
        return await actor.results.receive()


# -- operations ------------------------------------------------------------------------

keys = st.sampled_from(KEYS)
values = st.integers(min_value=0, max_value=3)
slots = st.integers(min_value=0, max_value=SLOTS - 1)
registries = st.sampled_from(REGISTRIES)

operations = st.one_of(
    st.tuples(st.just("register"), registries, slots, keys, values),
    st.tuples(st.just("register"), registries, slots, keys, values),
    st.tuples(st.just("register"), registries, slots, keys, values),
    st.tuples(st.just("unregister"), registries, slots, keys),
    st.tuples(st.just("update"), slots, keys, values),
    st.tuples(st.just("exit"), slots, st.sampled_from(["return", "crash", "kill"])),
    st.tuples(st.just("spawn"), slots),
    st.tuples(st.just("clear"), registries),
)


# -- the model -------------------------------------------------------------------------


@attrs.define
class Model:
    # (pid, key, value) in registration order, per registry
    entries: dict[str, list[tuple[ft.Pid, Hashable, int]]] = attrs.Factory(
        lambda: {name: [] for name in REGISTRIES}
    )
    # events due to the listener: (kind, registry, key, pid, value)
    events: list[tuple[str, str, Hashable, ft.Pid, Any]] = attrs.Factory(list)

    def lookup(self, registry: str, key: Hashable) -> list[tuple[ft.Pid, int]]:
        return [(p, v) for p, k, v in self.entries[registry] if k == key]

    def register(self, registry: str, pid: ft.Pid, key: Hashable, value: int) -> ft.Pid | None:
        """Register; return the holder's pid instead when a unique key is taken."""
        holders = self.lookup(registry, key)
        if registry == "u" and holders:
            return holders[0][0]
        self.entries[registry].append((pid, key, value))
        self.events.append(("register", registry, key, pid, value))
        return None

    def unregister(self, registry: str, pid: ft.Pid, key: Hashable) -> None:
        kept = []
        for entry in self.entries[registry]:
            if entry[0] == pid and entry[1] == key:
                self.events.append(("unregister", registry, key, pid, entry[2]))
            else:
                kept.append(entry)
        self.entries[registry] = kept

    def remove_all(self, registry: str, pid: ft.Pid | None = None) -> None:
        for p, k, _ in list(self.entries[registry]):
            if pid is None or p == pid:
                self.unregister(registry, p, k)


def _event_tuple(event: ft.RegistryEvent) -> tuple[str, str, Hashable, ft.Pid, Any]:
    return (event.kind, event.registry, event.key, event.pid, event.value)


def _by_group(events: list[Any]) -> list[Any]:
    """Events grouped by (registry, key, pid), keeping each group's own order."""
    return sorted(events, key=lambda e: (e[1], repr(e[2]), e[3]))


async def _run(ops: list[tuple[Any, ...]]) -> None:
    async with ft.open_node("regmodel"):
        me = ft.self_pid()
        gone = ft.spawn(_idle)  # a listener that is not there: ignored
        ft.exit(gone, ft.KILLED)
        regs = {
            "u": ft.Registry("unique", name="u", listeners=[me, gone]),
            "d": ft.Registry("duplicate", name="d", listeners=[me]),
        }
        model = Model()
        actors: list[Actor | None] = [start_actor() for _ in range(SLOTS)]
        every_pid = [a.pid for a in actors if a is not None]

        async def received_events() -> list[Any]:
            events = []
            while True:
                try:
                    event = await ft.receive(lambda m: isinstance(m, ft.RegistryEvent), timeout=0)
                except ft.ReceiveTimeout:
                    return events
                events.append(_event_tuple(event))

        async def check(unordered_events: bool) -> None:
            got = await received_events()
            due, model.events = model.events, []
            if unordered_events:
                assert _by_group(got) == _by_group(due)
            else:
                assert got == due
            for name, reg in regs.items():
                total = 0
                for key in KEYS:
                    expected = model.lookup(name, key)
                    total += len(expected)
                    assert reg.lookup(key) == expected, (name, key)
                    if name == "u":
                        assert reg.whereis(key) == (expected[0][0] if expected else None)
                    assert reg.count(key) == len(expected)
                    assert reg.match(key, lambda v: v % 2 == 0) == [
                        (p, v) for p, v in expected if v % 2 == 0
                    ]
                    assert reg.dispatch(key, list) == (expected or None)
                assert reg.count() == total
                assert set(reg.all_keys()) == {k for _, k, _ in model.entries[name]}
                for pid in every_pid:
                    assert set(reg.keys(pid)) == {
                        k for p, k, _ in model.entries[name] if p == pid
                    }, (name, pid)

        for op in ops:
            kind = op[0]
            unordered = False
            if kind == "register":
                _, name, slot, key, value = op
                actor = actors[slot]
                if actor is None:
                    continue
                reg = regs[name]
                result = await run_in(
                    actor, lambda reg=reg, key=key, value=value: reg.register(key, value)
                )
                holder = model.register(name, actor.pid, key, value)
                if holder is None:
                    assert result == ("ok", None)
                else:
                    assert result[0] == "error" and isinstance(result[1], ft.AlreadyStarted)
                    assert result[1].pid == holder
            elif kind == "unregister":
                _, name, slot, key = op
                actor = actors[slot]
                if actor is None:
                    continue
                reg = regs[name]
                result = await run_in(actor, lambda reg=reg, key=key: reg.unregister(key))
                assert result == ("ok", None)
                model.unregister(name, actor.pid, key)
            elif kind == "update":
                _, slot, key, delta = op
                actor = actors[slot]
                if actor is None:
                    continue
                reg = regs["u"]
                result = await run_in(
                    actor,
                    lambda reg=reg, key=key, delta=delta: reg.update_value(
                        key, lambda current: current + delta
                    ),
                )
                entries = model.entries["u"]
                for index, (pid, k, old) in enumerate(entries):
                    if pid == actor.pid and k == key:
                        entries[index] = (pid, k, old + delta)
                        assert result == ("ok", old + delta)
                        break
                else:
                    assert result[0] == "error" and isinstance(result[1], ft.NoProcess)
            elif kind == "exit":
                _, slot, how = op
                actor = actors[slot]
                if actor is None:
                    continue
                if how == "return":
                    actor.commands.send_nowait(_returns_stop)
                elif how == "crash":
                    actor.commands.send_nowait(_crashes)
                else:
                    ft.exit(actor.pid, ft.KILLED)
                down = await ft.receive(
                    lambda m, ref=actor.ref: isinstance(m, ft.Down) and m.ref == ref,
                    timeout=100,
                )
                assert down.pid == actor.pid
                # Entries are gone the moment the process is: when its Down arrives.
                for name, reg in regs.items():
                    model.remove_all(name, actor.pid)
                    assert reg.keys(actor.pid) == []
                    for key in KEYS:
                        assert all(p != actor.pid for p, _ in reg.lookup(key))
                actors[slot] = None
                unordered = True
            elif kind == "spawn":
                _, slot = op
                if actors[slot] is not None:
                    continue
                actors[slot] = start_actor()
                every_pid.append(actors[slot].pid)
            elif kind == "clear":
                _, name = op
                regs[name].clear()
                model.remove_all(name)
                unordered = True
            await check(unordered)


async def _idle() -> None:
    await trio.sleep_forever()


async def _returns_stop() -> object:
    return _STOP


async def _crashes() -> None:
    raise Crash("asked to crash")


@settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=st.lists(operations, max_size=40))
def test_registries_match_a_dict_model(ops: list[tuple[Any, ...]]) -> None:
    """``_run`` asserts after every operation that both registries equal the model."""
    trio.run(_run, ops, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_duplicate_lookup_is_in_registration_order(autojump_clock):
    """docs/runtime.md: ``lookup(key)`` -> ``[(pid, value), ...]`` in registration order."""
    async with ft.open_node("regorder"):
        topics = ft.Registry("duplicate", name="topics")
        first, second = start_actor(), start_actor()
        assert await run_in(first, lambda: topics.register("news", 1)) == ("ok", None)
        assert await run_in(second, lambda: topics.register("news", 2)) == ("ok", None)
        assert await run_in(first, lambda: topics.register("news", 3)) == ("ok", None)
        assert topics.lookup("news") == [(first.pid, 1), (second.pid, 2), (first.pid, 3)]
