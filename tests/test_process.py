"""Processes: spawn, mailboxes, selective receive, links, monitors, exit signals."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

import foundation_trio as ft


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_pid_prints_like_erlang_and_is_hashable() -> None:
    async with ft.open_node("demo"):
        pid = ft.self_pid()
        assert str(pid) == f"<demo.{pid.id}>"
        assert {pid: 1}[ft.Pid("demo", pid.id)] == 1


async def test_spawned_process_runs_and_exits_normally() -> None:
    async with ft.open_node("demo"):
        me = ft.self_pid()

        async def worker(n: int) -> None:
            await ft.send(me, ("double", n * 2))

        pid = ft.spawn(worker, 21)
        ref = ft.monitor(pid)
        assert await ft.receive() == ("double", 42)
        down = await ft.receive(lambda m: isinstance(m, ft.Down))
        assert down == ft.Down(ref, pid, ft.NORMAL)
        assert not ft.is_alive(pid)


async def test_raising_is_an_abnormal_exit_with_that_exception() -> None:
    async with ft.open_node("demo"):
        error = ValueError("bad")

        async def worker() -> None:
            raise error

        ref = ft.monitor(pid := ft.spawn(worker))
        down = await ft.receive()
        assert down.ref == ref and down.pid == pid
        assert down.reason is error


async def test_selective_receive_keeps_other_messages_in_order() -> None:
    async with ft.open_node("demo"):
        me = ft.self_pid()
        for message in ["a", 1, "b", 2, "c"]:
            await ft.send(me, message)
        assert await ft.receive(lambda m: isinstance(m, int)) == 1
        assert await ft.receive(lambda m: isinstance(m, int)) == 2
        assert [await ft.receive() for _ in range(3)] == ["a", "b", "c"]


async def test_selective_receive_waits_for_a_match_that_arrives_later(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo"):
        me = ft.self_pid()

        async def sender() -> None:
            await ft.send(me, "noise")
            await trio.sleep(1)
            await ft.send(me, ("wanted", 1))

        ft.spawn(sender)
        assert await ft.receive(lambda m: isinstance(m, tuple)) == ("wanted", 1)
        assert await ft.receive(timeout=0) == "noise"


async def test_receive_timeout_raises_and_leaves_mailbox_intact(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo"):
        await ft.send(ft.self_pid(), "kept")
        start = trio.current_time()
        with pytest.raises(ft.ReceiveTimeout):
            await ft.receive(lambda m: m == "never", timeout=2.5)
        assert trio.current_time() - start == pytest.approx(2.5)
        with pytest.raises(ft.ReceiveTimeout):
            await ft.receive(lambda m: m == "never", timeout=0)
        assert await ft.receive(timeout=0) == "kept"


async def test_cancelled_receive_loses_no_message(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo"):
        with trio.move_on_after(1):
            await ft.receive()
        await ft.send(ft.self_pid(), "after")
        assert await ft.receive(timeout=0) == "after"


async def test_send_to_dead_pid_is_a_noop_but_unknown_name_raises() -> None:
    async with ft.open_node("demo"):

        async def quick() -> None:
            return

        pid = ft.spawn(quick)
        ft.monitor(pid)
        await ft.receive()
        await ft.send(pid, "into the void")
        ft.send_nowait(pid, "again")
        with pytest.raises(ft.NoProcess):
            await ft.send("nobody", "hello")
        with pytest.raises(ft.NoProcess):
            ft.send_nowait("nobody", "hello")


async def test_full_mailbox_send_nowait_raises_and_send_waits(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo"):
        got: list[object] = []
        release = trio.Event()

        async def slow_reader() -> None:
            await release.wait()
            for _ in range(3):
                got.append(await ft.receive())

        pid = ft.spawn(slow_reader, mailbox_size=2)
        ft.send_nowait(pid, 1)
        ft.send_nowait(pid, 2)
        with pytest.raises(ft.MailboxFull) as info:
            ft.send_nowait(pid, 3)
        assert info.value.capacity == 2

        sent = trio.Event()

        async def blocked_sender() -> None:
            await ft.send(pid, 3)
            sent.set()

        ft.spawn(blocked_sender)
        await trio.sleep(1)
        assert not sent.is_set()
        release.set()
        await sent.wait()
        await trio.lowlevel.checkpoint()
        assert got == [1, 2, 3]


async def test_sender_waiting_for_room_is_released_when_target_dies(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo"):
        stop = trio.Event()

        async def never_reads() -> None:
            await stop.wait()

        pid = ft.spawn(never_reads, mailbox_size=1)
        ft.send_nowait(pid, "fill")
        with trio.move_on_after(1) as scope:
            await ft.send(pid, "waits")
        assert scope.cancelled_caught
        stop.set()
        with trio.fail_after(1):
            await ft.send(pid, "released by the exit")


async def test_monitor_unknown_target_delivers_noprocess_down_at_once() -> None:
    async with ft.open_node("demo"):
        ref = ft.monitor("nobody")
        down = await ft.receive(timeout=0)
        assert down.ref == ref and down.pid == "nobody"
        assert isinstance(down.reason, ft.NoProcess)
        dead = ft.Pid("demo", 999_999)
        ref2 = ft.monitor(dead)
        down2 = await ft.receive(timeout=0)
        assert (down2.ref, down2.pid) == (ref2, dead)


async def test_demonitor_stops_down_and_flush_removes_delivered_one() -> None:
    async with ft.open_node("demo"):
        gate = trio.Event()

        async def waiter() -> None:
            await gate.wait()

        pid = ft.spawn(waiter)
        ref = ft.monitor(pid)
        assert ft.demonitor(ref) is True
        gate.set()
        await trio.sleep(0.01)
        with pytest.raises(ft.ReceiveTimeout):
            await ft.receive(timeout=0)

        async def crash() -> None:
            raise RuntimeError

        ref2 = ft.monitor(ft.spawn(crash))
        await trio.sleep(0.01)
        assert ft.demonitor(ref2, flush=True) is False
        with pytest.raises(ft.ReceiveTimeout):
            await ft.receive(timeout=0)


async def test_abnormal_exit_kills_linked_process_that_does_not_trap(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo"):
        boom = KeyError("x")
        cleaned = trio.Event()

        async def partner() -> None:
            try:
                await trio.sleep_forever()
            finally:
                cleaned.set()

        async def crasher(other: ft.Pid) -> None:
            ft.link(other)
            await trio.sleep(1)
            raise boom

        partner_pid = ft.spawn(partner)
        ref = ft.monitor(partner_pid)
        ft.spawn(crasher, partner_pid)
        down = await ft.receive()
        assert down.ref == ref
        assert down.reason is boom
        assert cleaned.is_set()


async def test_normal_exit_does_not_kill_linked_process(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo"):

        async def partner() -> None:
            await trio.sleep(10)

        async def quitter(other: ft.Pid) -> None:
            ft.link(other)

        partner_pid = ft.spawn(partner)
        ref = ft.monitor(partner_pid)
        ft.spawn(quitter, partner_pid)
        down = await ft.receive()
        assert down.ref == ref and down.reason == ft.NORMAL
        assert trio.current_time() == pytest.approx(10)


async def test_trapping_process_receives_exit_message(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo"):
        me = ft.self_pid()
        boom = ValueError("linked crash")

        async def trapper() -> None:
            ft.trap_exits(True)
            message = await ft.receive(lambda m: isinstance(m, ft.Exit))
            await ft.send(me, ("trapped", message))

        async def crasher() -> None:
            await trio.sleep(1)
            raise boom

        trapper_pid = ft.spawn(trapper)
        await trio.lowlevel.checkpoint()

        async def linker() -> None:
            ft.link(trapper_pid)
            await crasher()

        crasher_pid = ft.spawn(linker)
        tag, exit_message = await ft.receive(lambda m: isinstance(m, tuple))
        assert tag == "trapped"
        assert exit_message == ft.Exit(crasher_pid, boom)


async def test_spawn_link_kills_caller_body_with_exit_signal() -> None:
    boom = OSError("disk")

    async def crasher() -> None:
        raise boom

    with pytest.raises(ft.ExitSignal) as info:
        async with ft.open_node("demo"):
            pid = ft.spawn(crasher, link=True)
            await trio.sleep_forever()
    assert info.value.pid == pid
    assert info.value.reason is boom


async def test_link_to_dead_pid_raises_or_delivers_exit_when_trapping() -> None:
    async with ft.open_node("demo"):
        dead = ft.Pid("demo", 424242)
        with pytest.raises(ft.NoProcess):
            ft.link(dead)
        ft.trap_exits(True)
        ft.link(dead)
        message = await ft.receive(timeout=0)
        assert isinstance(message, ft.Exit) and message.pid == dead
        assert isinstance(message.reason, ft.NoProcess)


async def test_unlink_stops_propagation(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo"):

        async def partner() -> None:
            await trio.sleep(5)

        async def crasher(other: ft.Pid) -> None:
            ft.link(other)
            ft.unlink(other)
            raise RuntimeError("alone")

        partner_pid = ft.spawn(partner)
        ref = ft.monitor(partner_pid)
        ft.spawn(crasher, partner_pid)
        down = await ft.receive()
        assert down.ref == ref and down.reason == ft.NORMAL


async def test_exit_signal_semantics(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo"):

        async def sleeper() -> None:
            await trio.sleep(100)

        me = ft.self_pid()

        async def trapper() -> None:
            ft.trap_exits(True)
            await ft.send(me, "trapping")
            await trio.sleep(100)

        plain = ft.spawn(sleeper)
        ref_plain = ft.monitor(plain)
        ft.exit(plain, ft.NORMAL)  # ignored when not trapping
        await trio.sleep(1)
        assert ft.is_alive(plain)
        ft.exit(plain, ft.Shutdown("go"))
        down = await ft.receive(lambda m: isinstance(m, ft.Down))
        assert (down.ref, down.reason) == (ref_plain, ft.Shutdown("go"))

        trapping = ft.spawn(trapper)
        ref_trap = ft.monitor(trapping)
        assert await ft.receive(lambda m: m == "trapping") == "trapping"
        ft.exit(trapping, ft.SHUTDOWN)  # trapped: becomes a message, process lives
        await trio.sleep(1)
        assert ft.is_alive(trapping)
        ft.exit(trapping, ft.KILLED)  # cannot be trapped
        down = await ft.receive(lambda m: isinstance(m, ft.Down))
        assert (down.ref, down.reason) == (ref_trap, ft.KILLED)
        ft.exit(ft.Pid("demo", 10**9), ft.KILLED)  # no-op for a dead pid


async def test_exit_reasons_classify() -> None:
    assert ft.is_orderly(ft.NORMAL)
    assert ft.is_orderly(ft.SHUTDOWN)
    assert ft.is_orderly(ft.Shutdown({"why": "maintenance"}))
    assert not ft.is_orderly(ft.KILLED)
    assert not ft.is_orderly(ValueError())
    assert repr(ft.Shutdown("x")) == "Shutdown('x')"
    assert repr(ft.SHUTDOWN) == "SHUTDOWN"


async def test_spawned_processes_end_with_the_node() -> None:
    finished: list[str] = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            finished.append("cleaned up")

    async with ft.open_node("demo"):
        ft.spawn(forever)
        ft.spawn(forever)
    assert finished == ["cleaned up", "cleaned up"]


async def test_spawn_with_name_registers_and_rejects_taken_name() -> None:
    async with ft.open_node("demo"):
        before = set(ft.processes())  # root, shell and the services

        async def idle() -> None:
            await trio.sleep_forever()

        pid = ft.spawn(idle, name="idle")
        assert ft.whereis("idle") == pid
        with pytest.raises(ft.AlreadyStarted) as info:
            ft.spawn(idle, name="idle")
        assert info.value.pid == pid
        assert set(ft.processes()) == before | {pid}  # the refused spawn left nothing


async def test_function_with_task_status_reports_readiness(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo"):
        steps: list[str] = []

        async def slow_start(task_status: trio.TaskStatus[None]) -> None:
            await trio.sleep(3)
            steps.append("ready")
            task_status.started()
            await trio.sleep_forever()

        async def after() -> None:
            steps.append("second")
            await trio.sleep_forever()

        await ft.start_supervisor([ft.ChildSpec("slow", slow_start), ft.ChildSpec("after", after)])
        assert steps == ["ready", "second"]
