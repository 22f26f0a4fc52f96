"""Registries: the node's name registry and user ``ft.Registry`` instances.

Points covered (issue 2, section 5; notes/otp-semantics.md "Registry"):
names in child specs (and their restarted successors), register/unregister/whereis,
a taken name, prompt cleanup on exit, unique and duplicate registries with their
whole API, local pubsub, listeners, ``Via`` names and ``Registry.child_spec``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import foundation_trio as ft

# -- helpers ---------------------------------------------------------------------


class Echo(ft.GenServer):
    """Answers ``"ping"`` with its own pid; ``"crash"`` raises."""

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        if request == "crash":
            raise RuntimeError("asked to crash")
        if request == "last info":
            return getattr(self, "last_info", None)
        return ("pong", self.pid)

    async def handle_info(self, message: Any) -> None:
        self.last_info = message


async def _idle() -> None:
    await trio.sleep_forever()


async def _registrant(parent: ft.Pid, reg: ft.Registry, entries: list[tuple[Any, Any]]) -> None:
    """Register the calling process under each (key, value), report, then serve
    ``("unregister", key)``, ``("update", key, fn)`` and forward other messages."""
    for key, value in entries:
        reg.register(key, value)
    await ft.send(parent, ("ready", ft.self_pid()))
    while True:
        message = await ft.receive()
        if isinstance(message, tuple) and message[0] == "unregister":
            reg.unregister(message[1])
            await ft.send(parent, ("unregistered", ft.self_pid()))
        elif isinstance(message, tuple) and message[0] == "update":
            new = reg.update_value(message[1], message[2])
            await ft.send(parent, ("updated", new))
        elif message == "stop":
            return
        else:
            await ft.send(parent, ("got", ft.self_pid(), message))


async def start_registrant(reg: ft.Registry, *entries: tuple[Any, Any]) -> ft.Pid:
    pid = ft.spawn(_registrant, ft.self_pid(), reg, list(entries))
    message = await ft.receive(lambda m: isinstance(m, tuple) and m[:2] == ("ready", pid))
    assert message == ("ready", pid)
    return pid


async def stop_and_wait(pid: ft.Pid) -> ft.Down:
    """Kill ``pid`` and return its ``Down`` (received by the calling process)."""
    ref = ft.monitor(pid)
    ft.exit(pid, ft.KILLED)
    down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
    assert down.reason == ft.KILLED
    return down


# -- the node's name registry -----------------------------------------------------------


async def test_child_spec_name_registers_child_and_restarted_successor(autojump_clock):
    async with ft.open_node("reg") as node:
        sup = await node.start_supervisor([ft.ChildSpec("echo", Echo, name="echo")])
        [info] = await ft.which_children(sup)
        assert ft.whereis("echo") == info.pid
        assert await ft.call("echo", "ping") == ("pong", info.pid)
        assert "echo" in ft.registered()

        first = info.pid
        ref = ft.monitor(first)
        with pytest.raises(ft.ServerExited):
            await ft.call("echo", "crash")
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert isinstance(down.reason, RuntimeError)
        await trio.testing.wait_all_tasks_blocked()

        second = ft.whereis("echo")
        assert second is not None
        assert second != first
        [info] = await ft.which_children(sup)
        assert info.pid == second
        assert await ft.call("echo", "ping") == ("pong", second)


async def test_register_whereis_unregister(autojump_clock):
    async with ft.open_node("reg"):
        me = ft.self_pid()
        assert ft.whereis("shell") is None
        ft.register("shell")
        assert ft.whereis("shell") == me
        assert "shell" in ft.registered()

        other = ft.spawn(_idle)
        ft.register("other", other)
        assert ft.whereis("other") == other
        assert set(ft.registered()) >= {"shell", "other"}

        # a registered name is a target
        await ft.send("shell", "to myself")
        assert await ft.receive(timeout=0) == "to myself"

        assert ft.unregister("other") is True
        assert ft.whereis("other") is None
        assert "other" not in ft.registered()
        assert ft.unregister("other") is False
        # the process is still alive: only its name went
        assert ft.is_alive(other)

        # after unregistering, the name is free for another process
        ft.register("other", me)
        assert ft.whereis("other") == me


async def test_a_process_may_hold_several_names(autojump_clock):
    async with ft.open_node("reg"):
        pid = ft.spawn(_idle)
        ft.register("a", pid)
        ft.register("b", pid)
        assert ft.whereis("a") == ft.whereis("b") == pid
        await stop_and_wait(pid)
        assert ft.whereis("a") is None
        assert ft.whereis("b") is None


async def test_taken_name_raises_already_started_with_holder_pid(autojump_clock):
    async with ft.open_node("reg"):
        holder = ft.spawn(_idle, name="taken")
        other = ft.spawn(_idle)
        with pytest.raises(ft.AlreadyStarted) as info:
            ft.register("taken", other)
        assert info.value.pid == holder
        assert info.value.name == "taken"
        # the holder keeps it
        assert ft.whereis("taken") == holder

        with pytest.raises(ft.AlreadyStarted) as info:
            ft.spawn(_idle, name="taken")
        assert info.value.pid == holder

        with pytest.raises(ft.AlreadyStarted) as info:
            await ft.start_server(Echo, name="taken")
        assert info.value.pid == holder


async def test_child_spec_with_taken_name_fails_start_naming_the_holder(autojump_clock):
    async with ft.open_node("reg") as node:
        holder = ft.spawn(_idle, name="echo")
        with pytest.raises(ft.StartError) as info:
            await node.start_supervisor([ft.ChildSpec("echo", Echo, name="echo")])
        reason = info.value.reason
        assert isinstance(reason, ft.AlreadyStarted)
        assert reason.pid == holder
        assert ft.whereis("echo") == holder


async def test_name_disappears_as_soon_as_down_is_observed(autojump_clock):
    async with ft.open_node("reg"):
        pid = ft.spawn(_idle, name="short-lived")
        assert ft.whereis("short-lived") == pid
        await stop_and_wait(pid)
        # no lookup happened in between: the entry was dropped by the exit itself
        assert "short-lived" not in ft.registered()
        assert ft.whereis("short-lived") is None
        with pytest.raises(ft.NoProcess):
            await ft.send("short-lived", "hello")
        # and the name can be taken again
        again = ft.spawn(_idle, name="short-lived")
        assert ft.whereis("short-lived") == again


async def test_name_of_normally_exiting_process_is_dropped(autojump_clock):
    async def quick() -> None:
        await trio.sleep(1)

    async with ft.open_node("reg"):
        pid = ft.spawn(quick, name="quick")
        ref = ft.monitor(pid)
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.reason == ft.NORMAL
        assert ft.whereis("quick") is None


async def test_registering_a_dead_pid_raises_no_process(autojump_clock):
    async with ft.open_node("reg"):
        pid = ft.spawn(_idle)
        await stop_and_wait(pid)
        with pytest.raises(ft.NoProcess):
            ft.register("ghost", pid)
        assert ft.whereis("ghost") is None
        assert "ghost" not in ft.registered()


# -- ft.Registry: unique keys -------------------------------------------------------------


async def test_unique_registry_register_lookup_whereis_unregister(autojump_clock):
    reg = ft.Registry(keys="unique", name="sessions")
    async with ft.open_node("reg"):
        me = ft.self_pid()
        reg.register("user:1", {"since": 0})
        assert reg.lookup("user:1") == [(me, {"since": 0})]
        assert reg.whereis("user:1") == me
        assert reg.lookup("nobody") == []
        assert reg.whereis("nobody") is None
        assert reg.keys(me) == ["user:1"]
        assert reg.count() == 1
        assert reg.count("user:1") == 1
        assert reg.count("nobody") == 0

        reg.unregister("user:1")
        assert reg.lookup("user:1") == []
        assert reg.whereis("user:1") is None
        assert reg.keys(me) == []
        assert reg.count() == 0
        # unregistering what is not there is not an error
        reg.unregister("user:1")


async def test_unique_registry_taken_key_raises_already_started(autojump_clock):
    reg = ft.Registry(keys="unique")
    async with ft.open_node("reg"):
        holder = await start_registrant(reg, ("k", "first"))
        with pytest.raises(ft.AlreadyStarted) as info:
            reg.register("k", "second")
        assert info.value.pid == holder
        assert reg.lookup("k") == [(holder, "first")]
        assert reg.keys(ft.self_pid()) == []
        # once the holder leaves, the key is free
        ref = ft.monitor(holder)
        await ft.send(holder, "stop")
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.reason == ft.NORMAL
        reg.register("k", "second")
        assert reg.lookup("k") == [(ft.self_pid(), "second")]


async def test_unique_registry_update_value(autojump_clock):
    reg = ft.Registry(keys="unique")
    async with ft.open_node("reg"):
        me = ft.self_pid()
        reg.register("counter", 1)
        assert reg.update_value("counter", lambda old: old + 41) == 42
        assert reg.lookup("counter") == [(me, 42)]

        # a key held by another process cannot be updated by the caller
        other = await start_registrant(reg, ("theirs", "x"))
        with pytest.raises(ft.NoProcess):
            reg.update_value("theirs", lambda old: "mine")
        assert reg.lookup("theirs") == [(other, "x")]
        with pytest.raises(ft.NoProcess):
            reg.update_value("never-registered", lambda old: old)

        # the owner can update its own
        await ft.send(other, ("update", "theirs", lambda old: old * 3))
        assert await ft.receive(lambda m: m[0] == "updated") == ("updated", "xxx")
        assert reg.lookup("theirs") == [(other, "xxx")]


async def test_registry_keys_count_and_match(autojump_clock):
    reg = ft.Registry(keys="unique")
    async with ft.open_node("reg"):
        a = await start_registrant(reg, ("a1", 1), ("a2", 2), ("a3", 3))
        b = await start_registrant(reg, ("b1", 10))
        assert sorted(reg.keys(a)) == ["a1", "a2", "a3"]
        assert reg.keys(b) == ["b1"]
        assert reg.keys(ft.self_pid()) == []
        assert reg.count() == 4
        assert reg.count("a2") == 1
        assert sorted(reg.all_keys()) == ["a1", "a2", "a3", "b1"]

        assert reg.match("a2", lambda v: v > 1) == [(a, 2)]
        assert reg.match("a1", lambda v: v > 1) == []
        assert reg.match("missing", lambda v: True) == []


async def test_dispatch_calls_fn_in_the_caller_with_entries(autojump_clock):
    reg = ft.Registry(keys="unique")
    async with ft.open_node("reg"):
        holder = await start_registrant(reg, ("job", "payload"))
        me = ft.self_pid()
        my_task = trio.lowlevel.current_task()
        seen: list[Any] = []

        def fn(entries: list[tuple[ft.Pid, Any]]) -> str:
            seen.append((entries, ft.self_pid(), trio.lowlevel.current_task()))
            return "result"

        assert reg.dispatch("job", fn) == "result"
        assert seen == [([(holder, "payload")], me, my_task)]


async def test_dispatch_does_not_call_fn_when_key_is_empty(autojump_clock):
    reg = ft.Registry(keys="duplicate")
    async with ft.open_node("reg"):
        called: list[Any] = []
        assert reg.dispatch("nobody", called.append) is None
        assert called == []
        # also after the last entry left
        reg.register("topic")
        reg.unregister("topic")
        assert reg.dispatch("topic", called.append) is None
        assert called == []


async def test_unique_registry_entries_cleared_promptly_on_exit(autojump_clock):
    reg = ft.Registry(keys="unique")
    async with ft.open_node("reg"):
        pid = await start_registrant(reg, ("x", 1), ("y", 2), ("z", 3))
        assert reg.count() == 3
        await stop_and_wait(pid)
        # right after Down: no lazy cleanup pending, every key is free
        assert reg.count() == 0
        assert reg.keys(pid) == []
        assert reg.all_keys() == []
        for key in ("x", "y", "z"):
            assert reg.lookup(key) == []
            assert reg.whereis(key) is None
        reg.register("x", "mine now")
        assert reg.whereis("x") == ft.self_pid()


async def test_registry_entries_cleared_on_normal_and_crash_exit(autojump_clock):
    reg = ft.Registry(keys="duplicate")

    async def worker(fail: bool) -> None:
        reg.register("k")
        await trio.sleep(1)
        if fail:
            raise ValueError("boom")

    async with ft.open_node("reg"):
        pids = [ft.spawn(worker, False), ft.spawn(worker, True)]
        refs = {ft.monitor(p): p for p in pids}
        await trio.sleep(0.5)
        assert reg.count("k") == 2
        reasons = []
        for _ in pids:
            down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref in refs)
            reasons.append(down.reason)
        assert ft.NORMAL in reasons
        assert any(isinstance(r, ValueError) for r in reasons)
        assert reg.count("k") == 0


# -- ft.Registry: duplicate keys ---------------------------------------------------------


async def test_duplicate_registry_many_processes_per_key(autojump_clock):
    reg = ft.Registry(keys="duplicate")
    async with ft.open_node("reg"):
        a = await start_registrant(reg, ("topic", "a"))
        b = await start_registrant(reg, ("topic", "b"))
        c = await start_registrant(reg, ("topic", "c"))
        assert reg.lookup("topic") == [(a, "a"), (b, "b"), (c, "c")]
        assert reg.count("topic") == 3
        assert reg.match("topic", lambda v: v != "b") == [(a, "a"), (c, "c")]
        # whereis on a duplicate key answers one of them, never fails
        assert reg.whereis("topic") in (a, b, c)

        await ft.send(b, ("unregister", "topic"))
        await ft.receive(lambda m: m == ("unregistered", b))
        assert reg.lookup("topic") == [(a, "a"), (c, "c")]


async def test_duplicate_registry_same_process_twice(autojump_clock):
    reg = ft.Registry(keys="duplicate")
    async with ft.open_node("reg"):
        me = ft.self_pid()
        reg.register("topic", 1)
        reg.register("topic", 2)
        assert reg.lookup("topic") == [(me, 1), (me, 2)]
        assert reg.count("topic") == 2
        assert reg.count() == 2
        assert reg.keys(me) == ["topic"]
        # unregister removes all of the caller's entries under the key
        reg.unregister("topic")
        assert reg.lookup("topic") == []
        assert reg.count() == 0


async def test_duplicate_registry_local_pubsub(autojump_clock):
    topics = ft.Registry(keys="duplicate", name="topics")
    async with ft.open_node("reg"):
        news = [await start_registrant(topics, ("news", None)) for _ in range(3)]
        sport = await start_registrant(topics, ("sport", None))

        def publish(entries: list[tuple[ft.Pid, Any]]) -> int:
            for pid, _ in entries:
                ft.send_nowait(pid, "headline")
            return len(entries)

        assert topics.dispatch("news", publish) == 3
        got = set()
        for _ in news:
            message = await ft.receive(lambda m: m[0] == "got")
            assert message[2] == "headline"
            got.add(message[1])
        assert got == set(news)
        # nobody else got it
        with pytest.raises(ft.ReceiveTimeout):
            await ft.receive(lambda m: m[0] == "got", timeout=1)

        # a subscriber that exits stops getting messages
        await stop_and_wait(news[0])
        assert topics.dispatch("news", publish) == 2
        senders = {(await ft.receive(lambda m: m[0] == "got"))[1] for _ in range(2)}
        assert senders == set(news[1:])
        assert topics.keys(sport) == ["sport"]


async def test_duplicate_registry_cleanup_of_several_keys_on_exit(autojump_clock):
    reg = ft.Registry(keys="duplicate")
    async with ft.open_node("reg"):
        stays = await start_registrant(reg, ("a", 0), ("b", 0))
        goes = await start_registrant(reg, ("a", 1), ("b", 1), ("c", 1))
        assert reg.count() == 5
        await stop_and_wait(goes)
        assert reg.count() == 2
        assert reg.lookup("a") == [(stays, 0)]
        assert reg.lookup("b") == [(stays, 0)]
        assert reg.lookup("c") == []
        assert reg.keys(goes) == []


# -- listeners ---------------------------------------------------------------------------


def _events(message: Any) -> bool:
    return isinstance(message, ft.RegistryEvent)


async def test_listeners_get_register_and_unregister_events_including_on_exit(autojump_clock):
    async with ft.open_node("reg"):
        me = ft.self_pid()
        reg = ft.Registry(keys="duplicate", name="watched", listeners=[me])
        pid = await start_registrant(reg, ("a", 1), ("b", 2))
        first = await ft.receive(_events, timeout=0)
        second = await ft.receive(_events, timeout=0)
        assert first == ft.RegistryEvent("register", "watched", "a", pid, 1)
        assert second == ft.RegistryEvent("register", "watched", "b", pid, 2)

        await ft.send(pid, ("unregister", "a"))
        await ft.receive(lambda m: m == ("unregistered", pid))
        assert await ft.receive(_events, timeout=0) == ft.RegistryEvent(
            "unregister", "watched", "a", pid, 1
        )

        await stop_and_wait(pid)
        # the automatic unregister on exit is reported too, before Down was observed
        assert await ft.receive(_events, timeout=0) == ft.RegistryEvent(
            "unregister", "watched", "b", pid, 2
        )
        with pytest.raises(ft.ReceiveTimeout):
            await ft.receive(_events, timeout=0)


async def test_listener_by_name(autojump_clock):
    async with ft.open_node("reg"):
        ft.register("listener")
        reg = ft.Registry(keys="unique", listeners=["listener"])
        reg.register("k", "v")
        event = await ft.receive(_events, timeout=0)
        assert event.kind == "register"
        assert event.pid == ft.self_pid()
        assert event.key == "k"
        assert event.value == "v"


# -- Via ---------------------------------------------------------------------------------


async def test_via_as_child_name_and_target_follows_restarts(autojump_clock):
    reg = ft.Registry(keys="unique", name="workers")
    async with ft.open_node("reg") as node:
        via = ft.Via(reg, "worker-1")
        sup = await node.start_supervisor([ft.ChildSpec("w", Echo, name=via)])
        [info] = await ft.which_children(sup)
        assert reg.whereis("worker-1") == info.pid
        assert await ft.call(via, "ping") == ("pong", info.pid)

        # send / monitor take a Via too
        ref = ft.monitor(via)
        await ft.send(via, "info message")
        assert await ft.call(via, "last info") == "info message"
        with pytest.raises(ft.ServerExited):
            await ft.call(via, "crash")
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.pid == info.pid
        assert reg.whereis("worker-1") != info.pid
        await trio.testing.wait_all_tasks_blocked()

        successor = reg.whereis("worker-1")
        [info2] = await ft.which_children(sup)
        assert successor == info2.pid
        assert successor != info.pid
        assert await ft.call(via, "ping") == ("pong", successor)


async def test_via_unknown_key(autojump_clock):
    reg = ft.Registry(keys="unique")
    async with ft.open_node("reg"):
        via = ft.Via(reg, "nobody")
        with pytest.raises(ft.NoProcess):
            await ft.call(via, "ping")
        with pytest.raises(ft.NoProcess):
            await ft.send(via, "hello")
        await ft.cast(via, "dropped")  # never fails because the target is missing
        ref = ft.monitor(via)
        down = await ft.receive(lambda m: isinstance(m, ft.Down), timeout=0)
        assert down.ref == ref
        assert isinstance(down.reason, ft.NoProcess)


async def test_via_child_with_taken_key_fails_to_start(autojump_clock):
    reg = ft.Registry(keys="unique")
    async with ft.open_node("reg") as node:
        reg.register("worker")
        with pytest.raises(ft.StartError) as info:
            await node.start_supervisor([ft.ChildSpec("w", Echo, name=ft.Via(reg, "worker"))])
        assert isinstance(info.value.reason, ft.AlreadyStarted)
        assert info.value.reason.pid == ft.self_pid()
        assert reg.lookup("worker") == [(ft.self_pid(), None)]


# -- Registry.child_spec -----------------------------------------------------------------


async def test_registry_child_spec_closes_and_reopens_with_its_owner(autojump_clock):
    reg = ft.Registry(keys="unique", name="owned")
    async with ft.open_node("reg") as node:
        sup = await node.start_supervisor([reg.child_spec(id="registry")])
        [info] = await ft.which_children(sup)
        assert info.id == "registry"
        assert info.pid is not None

        pid = await start_registrant(reg, ("a", 1), ("b", 2))
        reg.register("mine")
        assert reg.count() == 3

        await ft.terminate_child(sup, "registry")
        assert reg.count() == 0
        assert reg.lookup("a") == []
        assert reg.keys(pid) == []
        with pytest.raises(ft.RegistryClosed):
            reg.register("again")
        assert reg.count() == 0

        await ft.restart_child(sup, "registry")
        reg.register("again", "ok")
        assert reg.lookup("again") == [(ft.self_pid(), "ok")]


async def test_registry_child_spec_default_id():
    reg = ft.Registry(name="sessions")
    spec = reg.child_spec()
    assert spec.id == "registry:sessions"
    assert spec.restart is ft.PERMANENT


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["Unique", "dup", None, 1])
def test_bad_keys_value_raises_value_error(keys):
    with pytest.raises(ValueError, match="keys must be 'unique' or 'duplicate'"):
        ft.Registry(keys=keys)


def test_registry_outside_a_node_raises_no_node_error():
    reg = ft.Registry()
    with pytest.raises(ft.NoNodeError, match="open_node"):
        reg.register("k")
