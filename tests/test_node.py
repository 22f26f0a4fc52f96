"""The node: ``open_node`` options, the body as a process, orderly shutdown,
exceptions and exit signals, shutdown timeouts, calls outside a node, and
lifecycle hooks (issue 2, sections 2, 4 and 6)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio
import trio.testing
from _helpers import all_tasks

import foundation_trio as ft
from foundation_trio.runtime.node import open_node as open_runtime_node

# -- helpers ---------------------------------------------------------------------


class Recorder(ft.GenServer):
    """Appends ``(tag, reason)`` to ``log`` when it terminates."""

    async def init(self, log: list[Any], tag: str) -> None:
        self.log = log
        self.tag = tag

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        if request == "crash":
            raise RuntimeError(f"{self.tag} crashed")
        return self.tag

    async def terminate(self, reason: ft.ExitReason) -> None:
        self.log.append((self.tag, reason))


class HangsInTerminate(ft.GenServer):
    async def init(self, log: list[Any]) -> None:
        self.log = log

    async def terminate(self, reason: ft.ExitReason) -> None:
        self.log.append(("terminate started", trio.current_time()))
        await trio.sleep_forever()


def recorder(log: list[Any], tag: str, **options: Any) -> ft.ChildSpec:
    return ft.ChildSpec(tag, Recorder, args=(log, tag), **options)


async def _crash_after(delay: float, error: BaseException) -> None:
    await trio.sleep(delay)
    raise error


# -- options ---------------------------------------------------------------------------


async def test_unknown_option_is_a_config_error_listing_allowed_ones():
    with pytest.raises(ft.ConfigError) as info:
        async with ft.open_node("n", mailbox_sise=5):
            pytest.fail("the body must not run")
    message = str(info.value)
    assert "mailbox_sise" in message
    assert "mailbox_size" in message
    assert "shutdown_timeout" in message


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"mailbox_size": "5"}, "mailbox_size"),
        ({"mailbox_size": 5.0}, "mailbox_size"),
        ({"mailbox_size": True}, "mailbox_size"),
        ({"shutdown_timeout": True}, "shutdown_timeout"),
        ({"shutdown_timeout": "1"}, "shutdown_timeout"),
        ({"shutdown_timeout": None}, "shutdown_timeout"),
        ({"mailbox_size": 0}, "mailbox_size"),
        ({"mailbox_size": -1}, "mailbox_size"),
        ({"shutdown_timeout": -0.5}, "shutdown_timeout"),
    ],
)
async def test_bad_option_value_is_a_config_error_naming_the_field(options, field):
    with pytest.raises(ft.ConfigError, match=field):
        async with ft.open_node("n", **options):
            pytest.fail("the body must not run")


async def test_good_options_are_applied(autojump_clock):
    async with ft.open_node("n", mailbox_size=2, shutdown_timeout=1) as node:
        assert node.options.mailbox_size == 2
        assert node.options.shutdown_timeout == 1.0
        pid = ft.spawn(trio.sleep_forever)
        ft.send_nowait(pid, 1)
        ft.send_nowait(pid, 2)
        with pytest.raises(ft.MailboxFull):
            ft.send_nowait(pid, 3)


@pytest.mark.parametrize("name", ["", "has space", "dot.ted", 42, None, b"bytes"])
async def test_bad_node_name_is_a_type_error(name):
    with pytest.raises(TypeError, match="node name"):
        async with ft.open_node(name):
            pytest.fail("the body must not run")


# -- the body is a process --------------------------------------------------------------


async def test_body_is_a_process(autojump_clock):
    async with ft.open_node("demo") as node:
        me = ft.self_pid()
        assert isinstance(me, ft.Pid)
        assert re.fullmatch(r"<demo\.\d+>", str(me))
        assert me.node == "demo"
        assert ft.current_node() is node
        assert ft.is_alive(me)
        assert me in ft.processes()

        await ft.send(me, "hello")
        assert await ft.receive() == "hello"

        async def worker(parent: ft.Pid) -> None:
            await ft.send(parent, ("from", ft.self_pid()))

        pid = ft.spawn(worker, me)
        ref = ft.monitor(pid)
        assert await ft.receive(lambda m: isinstance(m, tuple)) == ("from", pid)
        down = await ft.receive(lambda m: isinstance(m, ft.Down))
        assert down == ft.Down(ref, pid, ft.NORMAL)


async def test_receive_timeout_in_body_uses_virtual_time(autojump_clock):
    async with ft.open_node("demo"):
        start = trio.current_time()
        with pytest.raises(ft.ReceiveTimeout):
            await ft.receive(timeout=1000)
        assert trio.current_time() - start == pytest.approx(1000)


async def test_mock_clock_fixture_runs_in_virtual_time(autojump_clock):
    start = trio.current_time()
    await trio.sleep(1000)
    assert trio.current_time() - start == pytest.approx(1000)
    assert trio.lowlevel.current_clock() is autojump_clock


# -- leaving the block -------------------------------------------------------------------


async def test_leaving_the_block_stops_an_unsupervised_server(autojump_clock):
    log: list[Any] = []
    async with ft.open_node("n"):
        pid = await ft.start_server(Recorder, log, "solo")
        assert await ft.call(pid, "hi") == "solo"
    assert log == [("solo", ft.SHUTDOWN)]


async def test_leaving_the_block_stops_everything_in_reverse_start_order(autojump_clock):
    log: list[Any] = []

    async def spawned(tag: str) -> None:
        try:
            await trio.sleep_forever()
        finally:
            log.append((tag, "finally"))

    async def supervised_fn(task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            log.append(("fn", "finally"))

    before = all_tasks()
    async with ft.open_node("n") as node:
        await node.start_supervisor([recorder(log, "a1"), recorder(log, "a2")])
        await node.start_supervisor(
            [
                recorder(log, "b1"),
                ft.ChildSpec("nested", ft.SupervisorSpec([recorder(log, "c1")])),
                recorder(log, "b2"),
                ft.ChildSpec("fn", supervised_fn),
            ]
        )
        ft.spawn(spawned, "s1")
        ft.spawn(spawned, "s2")
        await ft.start_server(Recorder, log, "server")
        await trio.testing.wait_all_tasks_blocked()
        assert log == []

    tags = [tag for tag, _ in log]
    # unsupervised processes first (asked to stop newest first, they stop
    # concurrently), then the later supervisor's tree, then the earlier one, each
    # supervisor's children in reverse start order
    assert set(tags[:3]) == {"server", "s2", "s1"}
    assert tags[3:] == ["fn", "b2", "c1", "b1", "a2", "a1"]
    assert all(reason in (ft.SHUTDOWN, "finally") for _, reason in log)
    # no task is left
    assert all_tasks() == before


async def test_processes_are_gone_after_the_block(autojump_clock):
    async with ft.open_node("n") as node:
        await node.start_supervisor([ft.ChildSpec("s", Recorder, args=([], "s"))])
        ft.spawn(trio.sleep_forever)
        assert len(node.processes) >= 4
    assert node.processes == {}
    assert node.names == {}


async def test_body_exception_propagates_after_orderly_shutdown(autojump_clock):
    log: list[Any] = []
    error = KeyError("from the body")
    with pytest.raises(KeyError) as info:
        async with ft.open_node("n") as node:
            await node.start_supervisor([recorder(log, "w1"), recorder(log, "w2")])
            raise error
    assert info.value is error
    assert log == [("w2", ft.SHUTDOWN), ("w1", ft.SHUTDOWN)]


async def test_body_exception_already_saw_terminate_when_caught(autojump_clock):
    log: list[Any] = []
    seen: list[Any] = []
    try:
        async with ft.open_node("n"):
            await ft.start_server(Recorder, log, "srv")
            raise ValueError("boom")
    except ValueError:
        seen = list(log)
    assert seen == [("srv", ft.SHUTDOWN)]


async def test_linked_crash_kills_the_body_with_exit_signal(autojump_clock):
    log: list[Any] = []
    error = RuntimeError("linked crash")
    reached: list[str] = []
    with pytest.raises(ft.ExitSignal) as info:
        async with ft.open_node("n"):
            await ft.start_server(Recorder, log, "srv")
            pid = ft.spawn(_crash_after, 1, error, link=True)
            await trio.sleep(10)
            reached.append("after sleep")
    assert reached == []
    assert info.value.pid == pid
    assert info.value.reason is error
    # the orderly shutdown still ran
    assert log == [("srv", ft.SHUTDOWN)]


async def test_exit_signal_from_exit_call_kills_the_body(autojump_clock):
    async def killer(target: ft.Pid) -> None:
        await trio.sleep(1)
        ft.exit(target, ft.Shutdown("bye"))

    with pytest.raises(ft.ExitSignal) as info:
        async with ft.open_node("n"):
            pid = ft.spawn(killer, ft.self_pid())
            await trio.sleep(10)
    assert info.value.pid == pid
    assert info.value.reason == ft.Shutdown("bye")


async def test_trapping_body_receives_exit_message(autojump_clock):
    error = RuntimeError("linked crash")
    async with ft.open_node("n"):
        assert ft.trap_exits(True) is False
        pid = ft.spawn(_crash_after, 1, error, link=True)
        message = await ft.receive(lambda m: isinstance(m, ft.Exit))
        assert message == ft.Exit(pid, error)
        assert message.reason is error
        # the body is still alive and usable
        await ft.send(ft.self_pid(), "still here")
        assert await ft.receive() == "still here"


async def test_normal_exit_of_linked_process_does_not_kill_the_body(autojump_clock):
    async def quick() -> None:
        await trio.sleep(1)

    async with ft.open_node("n"):
        ft.spawn(quick, link=True)
        await trio.sleep(10)
        assert ft.is_alive(ft.self_pid())


async def test_shutdown_timeout_bounds_a_hanging_terminate(autojump_clock):
    log: list[Any] = []
    async with ft.open_node("n", shutdown_timeout=3):
        await ft.start_server(HangsInTerminate, log)
        left_at = trio.current_time()
    assert len(log) == 1
    elapsed = trio.current_time() - left_at
    assert elapsed == pytest.approx(3)


async def test_shutdown_timeout_bounds_a_supervised_child_with_infinite_shutdown(
    autojump_clock,
):
    log: list[Any] = []
    async with ft.open_node("n", shutdown_timeout=2) as node:
        await node.start_supervisor(
            [ft.ChildSpec("hang", HangsInTerminate, args=(log,), shutdown=ft.INFINITY)]
        )
        left_at = trio.current_time()
    assert [entry[0] for entry in log] == ["terminate started"]
    assert trio.current_time() - left_at == pytest.approx(2)


async def test_cancelling_open_node_from_outside_returns_with_nothing_left(autojump_clock):
    body_done: list[str] = []
    before = all_tasks()
    with trio.move_on_after(5) as scope:
        async with ft.open_node("n") as node:
            await node.start_supervisor([recorder([], "w1")])
            await ft.start_server(Recorder, [], "srv")
            ft.spawn(trio.sleep_forever)
            await trio.sleep_forever()
            body_done.append("unreachable")
    assert scope.cancelled_caught
    assert body_done == []
    assert trio.current_time() == pytest.approx(5)
    assert node.processes == {}
    assert all_tasks() == before


async def test_cancelling_open_node_from_outside_still_stops_in_order(autojump_clock):
    log: list[Any] = []
    before = all_tasks()
    with trio.move_on_after(5) as scope:
        async with ft.open_node("n") as node:
            await node.start_supervisor([recorder(log, "w1"), recorder(log, "w2")])
            await ft.start_server(Recorder, log, "srv")
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert log == [("srv", ft.SHUTDOWN), ("w2", ft.SHUTDOWN), ("w1", ft.SHUTDOWN)]
    assert all_tasks() == before


# -- outside a node -----------------------------------------------------------------------


async def test_calls_outside_a_node_raise_no_node_error():
    with pytest.raises(ft.NoNodeError, match="open_node"):
        ft.self_pid()
    with pytest.raises(ft.NoNodeError, match="open_node"):
        await ft.send(ft.Pid("x", 1), "hi")
    with pytest.raises(ft.NoNodeError, match="open_node"):
        ft.spawn(trio.sleep_forever)
    with pytest.raises(ft.NoNodeError, match="open_node"):
        await ft.receive(timeout=0)
    with pytest.raises(ft.NoNodeError, match="open_node"):
        await ft.call("x", "hi")
    with pytest.raises(ft.NoNodeError, match="open_node"):
        ft.whereis("x")
    with pytest.raises(ft.NoNodeError, match="open_node"):
        ft.monitor(ft.Pid("x", 1))
    with pytest.raises(ft.NoNodeError, match="open_node"):
        await ft.start_supervisor([])


async def test_no_node_error_after_the_block(autojump_clock):
    async with ft.open_node("n"):
        pass
    with pytest.raises(ft.NoNodeError):
        ft.self_pid()


async def test_no_node_error_in_a_plain_trio_task(autojump_clock):
    """A trio task started outside any node has no process."""
    errors: list[BaseException] = []

    async def plain() -> None:
        try:
            ft.self_pid()
        except ft.NoNodeError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(plain)
    assert len(errors) == 1


# -- lifecycle hooks ---------------------------------------------------------------------


async def test_hooks_receive_lifecycle_events_with_fields(autojump_clock):
    events: list[Any] = []
    async with ft.open_node("n") as node:
        node.add_hook(events.append)
        sup = await node.start_supervisor(
            [ft.ChildSpec("w", Recorder, args=([], "w"))], max_restarts=1, max_seconds=10
        )
        [info] = await ft.which_children(sup)
        first = info.pid

        started = [e for e in events if isinstance(e, ft.ChildStarted)]
        assert ft.ChildStarted(supervisor=sup, child_id="w", pid=first) in started
        assert started[-1].name == "supervisor.child_started"

        events.clear()
        ref = ft.monitor(sup)
        with pytest.raises(ft.ServerExited):
            await ft.call(first, "crash")
        await trio.testing.wait_all_tasks_blocked()
        exited = [e for e in events if isinstance(e, ft.ChildExited)]
        assert len(exited) == 1
        assert exited[0].supervisor == sup
        assert exited[0].child_id == "w"
        assert exited[0].pid == first
        assert isinstance(exited[0].reason, RuntimeError)
        proc_exits = [e for e in events if isinstance(e, ft.ProcessExited)]
        assert [e.pid for e in proc_exits] == [first]
        assert proc_exits[0].reason is exited[0].reason
        restarted = [e for e in events if isinstance(e, ft.ChildRestarted)]
        [info] = await ft.which_children(sup)
        second = info.pid
        assert restarted == [
            ft.ChildRestarted(supervisor=sup, child_id="w", pid=second, strategy="ONE_FOR_ONE")
        ]
        assert ft.ChildStarted(supervisor=sup, child_id="w", pid=second) in events

        # a second crash within the window exceeds max_restarts=1: give up
        events.clear()
        with pytest.raises(ft.ServerExited):
            await ft.call(second, "crash")
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.reason == ft.GAVE_UP
        gave_up = [e for e in events if isinstance(e, ft.SupervisorGaveUp)]
        assert gave_up == [ft.SupervisorGaveUp(supervisor=sup, max_restarts=1, max_seconds=10)]
        assert gave_up[0].name == "supervisor.gave_up"
        assert ft.ProcessExited(pid=sup, reason=ft.GAVE_UP) in events
        assert not [e for e in events if isinstance(e, ft.ChildRestarted)]


async def test_process_exited_event_for_spawned_process(autojump_clock):
    events: list[Any] = []

    async def fail() -> None:
        raise ValueError("nope")

    async with ft.open_node("n") as node:
        node.add_hook(events.append)
        pid = ft.spawn(fail)
        ref = ft.monitor(pid)
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        [event] = [e for e in events if isinstance(e, ft.ProcessExited)]
        assert event.pid == pid
        assert isinstance(event.reason, ValueError)
        assert event.name == "process.exited"

        node.remove_hook(events.append)
        events.clear()
        ref = ft.monitor(ft.spawn(fail))
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert events == []


async def test_process_started_event_is_emitted(autojump_clock):
    events: list[Any] = []
    async with ft.open_node("n") as node:
        node.add_hook(events.append)
        pid = ft.spawn(trio.sleep_forever)
        await trio.testing.wait_all_tasks_blocked()
        assert ft.ProcessStarted(pid=pid, parent=None) in events
        assert events[-1].name == "process.started"

        sup = await node.start_supervisor([ft.ChildSpec("w", Recorder, args=([], "w"))])
        [info] = await ft.which_children(sup)
        assert ft.ProcessStarted(pid=info.pid, parent=sup) in events


async def test_a_raising_hook_is_removed_and_never_breaks_the_runtime(autojump_clock):
    calls: list[Any] = []
    good: list[Any] = []

    def bad(event: Any) -> None:
        calls.append(event)
        raise RuntimeError("hook failure")

    async with ft.open_node("n") as node:
        node.add_hook(bad)
        node.add_hook(good.append)
        sup = await node.start_supervisor([ft.ChildSpec("w", Recorder, args=([], "w"))])
        assert len(calls) == 1  # called once, then removed
        [info] = await ft.which_children(sup)
        with pytest.raises(ft.ServerExited):
            await ft.call(info.pid, "crash")
        await trio.testing.wait_all_tasks_blocked()
        [info2] = await ft.which_children(sup)
        assert info2.pid is not None
        assert info2.pid != info.pid
        assert await ft.call(info2.pid, "hi") == "w"
        assert len(calls) == 1
        assert any(isinstance(e, ft.ChildRestarted) for e in good)


async def test_hooks_see_events_in_the_task_where_they_happen(autojump_clock):
    """Hooks run synchronously: the event is in the list as soon as the call that
    caused it returns."""
    events: list[Any] = []
    async with ft.open_node("n") as node:
        node.add_hook(events.append)
        sup = await node.start_supervisor([])
        pid = await ft.start_child(sup, ft.ChildSpec("late", Recorder, args=([], "late")))
        assert events[-1] == ft.ChildStarted(supervisor=sup, child_id="late", pid=pid)


# -- boot steps and extensions ------------------------------------------------------------


async def test_boot_steps_run_in_order_before_the_body_and_stop_after_it(autojump_clock):
    log: list[Any] = []

    async def boot_a(node: ft.Node) -> None:
        log.append(("boot", "a"))
        await node.start_supervisor([recorder(log, "booted")])

    async def boot_b(node: ft.Node) -> None:
        log.append(("boot", "b"))

    async with open_runtime_node("n", boot=[boot_a, boot_b]) as node:
        log.append(("body", None))
        await node.start_supervisor([recorder(log, "user")])

    # the body's supervisor stops before the booted one
    assert log == [
        ("boot", "a"),
        ("boot", "b"),
        ("body", None),
        ("user", ft.SHUTDOWN),
        ("booted", ft.SHUTDOWN),
    ]


async def test_failing_boot_step_stops_what_started_and_propagates(autojump_clock):
    log: list[Any] = []
    body_ran = False

    async def boot_ok(node: ft.Node) -> None:
        await node.start_supervisor([recorder(log, "booted")])

    async def boot_fails(node: ft.Node) -> None:
        raise RuntimeError("boot failed")

    before = all_tasks()
    with pytest.raises(RuntimeError, match="boot failed"):
        async with open_runtime_node("n", boot=[boot_ok, boot_fails]):
            body_ran = True
    assert not body_ran
    assert log == [("booted", ft.SHUTDOWN)]
    assert all_tasks() == before


async def test_extensions_are_found_by_type_and_refuse_a_second_value(autojump_clock):
    class Service:
        pass

    async with open_runtime_node("n") as node:
        assert node.find_extension(Service) is None
        with pytest.raises(LookupError, match="the service is not running on node 'n'"):
            node.extension(Service, "the service")
        service = Service()
        node.set_extension(Service, service)
        assert node.extension(Service, "the service") is service
        with pytest.raises(ValueError, match="already has a Service"):
            node.set_extension(Service, Service())
        node.remove_extension(Service)
        assert node.find_extension(Service) is None
