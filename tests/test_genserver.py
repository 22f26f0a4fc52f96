"""GenServer: call, cast, info, deferred replies, timeouts and failures."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import foundation_trio as ft


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Counter(ft.GenServer):
    terminated: list[object]

    async def init(self, start: int = 0, *, step: int = 1) -> None:
        self.count = start
        self.step = step
        self.infos: list[object] = []
        Counter.terminated = []

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        match request:
            case "get":
                return self.count
            case ("add", n):
                self.count += n
                return self.count
            case "infos":
                return list(self.infos)
            case ("sleep", seconds):
                await trio.sleep(seconds)
                return "slept"
            case "crash":
                raise ValueError("handler failed")
            case "stop":
                self.stop(ft.Shutdown("asked"))
                return "stopping"
        return ("unknown", request)

    async def handle_cast(self, request: Any) -> None:
        if request == "reset":
            self.count = 0
        elif request == "bump":
            self.count += self.step

    async def handle_info(self, message: Any) -> None:
        self.infos.append(message)

    async def terminate(self, reason: ft.ExitReason) -> None:
        Counter.terminated.append(reason)


async def test_call_cast_and_info() -> None:
    async with ft.open_node("demo"):
        pid = await ft.start_server(Counter, 10, step=5, name="counter")
        assert await ft.call("counter", "get") == 10
        assert await ft.call(pid, ("add", 2)) == 12
        await ft.cast(pid, "bump")
        assert await ft.call(pid, "get") == 17
        await ft.cast("counter", "reset")
        await ft.send(pid, {"plain": "message"})
        assert await ft.call(("counter", "demo"), "get") == 0
        assert await ft.call(pid, "infos") == [{"plain": "message"}]


async def test_call_default_timeout_is_five_seconds(clock: trio.testing.MockClock) -> None:
    assert ft.DEFAULT_CALL_TIMEOUT == 5.0
    async with ft.open_node("demo"):
        pid = await ft.start_server(Counter)
        start = trio.current_time()
        with pytest.raises(ft.CallTimeout) as info:
            await ft.call(pid, ("sleep", 60))
        assert trio.current_time() - start == pytest.approx(5.0)
        assert isinstance(info.value, TimeoutError)
        with pytest.raises(ft.CallTimeout):
            await ft.call(pid, "get", timeout=0.5)  # still busy sleeping


async def test_late_reply_is_never_delivered(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo"):
        pid = await ft.start_server(Counter)
        with pytest.raises(ft.CallTimeout):
            await ft.call(pid, ("sleep", 2), timeout=1)
        await trio.sleep(5)  # the server replies "slept" meanwhile
        assert await ft.call(pid, "get") == 0
        with pytest.raises(ft.ReceiveTimeout):
            await ft.receive(timeout=0)


async def test_call_unknown_or_dead_target_raises_noprocess_at_once(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo"):
        start = trio.current_time()
        with pytest.raises(ft.NoProcess):
            await ft.call("nobody", "get")
        pid = await ft.start_server(Counter)
        ref = ft.monitor(pid)
        await ft.call(pid, "stop")
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        with pytest.raises(ft.NoProcess):
            await ft.call(pid, "get")
        with pytest.raises(ft.NoProcess):
            await ft.call(("counter", "other-node"), "get")
        assert trio.current_time() == start


async def test_handler_exception_ends_server_after_terminate_and_fails_caller() -> None:
    async with ft.open_node("demo"):
        pid = await ft.start_server(Counter)
        ref = ft.monitor(pid)
        with pytest.raises(ft.ServerExited) as info:
            await ft.call(pid, "crash")
        assert isinstance(info.value.reason, ValueError)
        down = await ft.receive()
        assert down.ref == ref and down.reason is info.value.reason
        assert Counter.terminated == [info.value.reason]


async def test_server_dying_mid_call_fails_every_waiting_caller_at_once(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo"):
        pid = await ft.start_server(Counter)
        outcomes: list[object] = []

        async def caller(request: object) -> None:
            try:
                outcomes.append(await ft.call(pid, request, timeout=100))
            except ft.ServerExited as error:
                outcomes.append(("exited", error.reason))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, ("sleep", 10))
            await trio.sleep(0.5)
            nursery.start_soon(caller, "get")  # queued behind the sleep
            await trio.sleep(0.5)
            ft.exit(pid, ft.KILLED)
        assert outcomes == [("exited", ft.KILLED), ("exited", ft.KILLED)]
        assert trio.current_time() == pytest.approx(1)
        assert Counter.terminated == []  # a kill skips terminate


async def test_noreply_and_deferred_reply(clock: trio.testing.MockClock) -> None:
    class Deferred(ft.GenServer):
        async def init(self) -> None:
            self.waiting: list[ft.Caller] = []

        async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
            if request == "wait":
                self.waiting.append(caller)
                return ft.NOREPLY
            for parked in self.waiting:
                assert ft.reply(parked, ("released", request))
            released = len(self.waiting)
            self.waiting.clear()
            return released

    async with ft.open_node("demo"):
        pid = await ft.start_server(Deferred)
        results: list[object] = []

        async def waiter() -> None:
            results.append(await ft.call(pid, "wait"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
            await trio.sleep(1)
            assert results == []
            assert await ft.call(pid, "go") == 2
        assert results == [("released", "go"), ("released", "go")]


async def test_reply_to_caller_that_gave_up_returns_false(clock: trio.testing.MockClock) -> None:
    class Holder(ft.GenServer):
        async def init(self) -> None:
            self.held: ft.Caller | None = None

        async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
            if request == "hold":
                self.held = caller
                return ft.NOREPLY
            assert self.held is not None
            return (self.held.waiting, ft.reply(self.held, "late"))

    async with ft.open_node("demo"):
        pid = await ft.start_server(Holder)
        with pytest.raises(ft.CallTimeout):
            await ft.call(pid, "hold", timeout=1)
        assert await ft.call(pid, "release") == (False, False)


async def test_deferred_caller_gets_server_exited_when_server_stops() -> None:
    class Holder(ft.GenServer):
        async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
            return ft.NOREPLY

        async def handle_cast(self, request: Any) -> None:
            raise RuntimeError("crash while a call is deferred")

    async with ft.open_node("demo"):
        pid = await ft.start_server(Holder)
        async with trio.open_nursery() as nursery:

            async def crash_soon() -> None:
                await trio.sleep(0.01)
                await ft.cast(pid, "crash")

            nursery.start_soon(crash_soon)
            with pytest.raises(ft.ServerExited):
                await ft.call(pid, "deferred", timeout=None)


async def test_cast_never_raises_for_missing_target() -> None:
    async with ft.open_node("demo"):
        await ft.cast("nobody", "hello")
        await ft.cast(ft.Pid("demo", 10**9), "hello")
        await ft.cast(("nobody", "elsewhere"), "hello")


async def test_call_to_self_raises() -> None:
    class Selfish(ft.GenServer):
        async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
            try:
                await ft.call(self.pid, "again")
            except ft.CallToSelf:
                return "refused"
            return "unreachable"

    async with ft.open_node("demo"):
        pid = await ft.start_server(Selfish)
        assert await ft.call(pid, "go") == "refused"


async def test_init_failure_raises_start_error_and_frees_the_name() -> None:
    class Broken(ft.GenServer):
        async def init(self) -> None:
            raise ConnectionError("database down")

    async with ft.open_node("demo"):
        with pytest.raises(ft.StartError) as info:
            await ft.start_server(Broken, name="broken")
        assert isinstance(info.value.reason, ConnectionError)
        assert isinstance(info.value.__cause__, ConnectionError)
        assert ft.whereis("broken") is None


async def test_missing_handlers_crash_with_a_message_naming_the_class() -> None:
    class Mute(ft.GenServer):
        pass

    async with ft.open_node("demo"):
        pid = await ft.start_server(Mute)
        with pytest.raises(ft.ServerExited) as info:
            await ft.call(pid, "anything")
        assert isinstance(info.value.reason, NotImplementedError)
        assert "Mute" in str(info.value.reason) and "handle_call" in str(info.value.reason)


async def test_stop_runs_terminate_with_reason() -> None:
    async with ft.open_node("demo"):
        pid = await ft.start_server(Counter)
        ref = ft.monitor(pid)
        assert await ft.call(pid, "stop") == "stopping"
        down = await ft.receive()
        assert down.ref == ref and down.reason == ft.Shutdown("asked")
        assert Counter.terminated == [ft.Shutdown("asked")]


async def test_start_server_link_and_bad_class() -> None:
    async with ft.open_node("demo"):
        with pytest.raises(TypeError, match="GenServer subclass"):
            await ft.start_server(dict)  # type: ignore[arg-type]
        ft.trap_exits(True)
        pid = await ft.start_server(Counter, link=True)
        with pytest.raises(ft.ServerExited):
            await ft.call(pid, "crash")
        message = await ft.receive(lambda m: isinstance(m, ft.Exit))
        assert message.pid == pid and isinstance(message.reason, ValueError)


async def test_server_handles_messages_in_arrival_order_across_kinds() -> None:
    class Recorder(ft.GenServer):
        async def init(self) -> None:
            self.seen: list[object] = []

        async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
            self.seen.append(("call", request))
            return list(self.seen)

        async def handle_cast(self, request: Any) -> None:
            self.seen.append(("cast", request))

        async def handle_info(self, message: Any) -> None:
            self.seen.append(("info", message))

    async with ft.open_node("demo"):
        pid = await ft.start_server(Recorder)
        for i in range(200):
            await ft.cast(pid, i)
            ft.send_nowait(pid, -i)
        seen = await ft.call(pid, "end")
        expected: list[object] = []
        for i in range(200):
            expected += [("cast", i), ("info", -i)]
        assert seen == [*expected, ("call", "end")]


async def test_busy_server_still_lets_other_tasks_run() -> None:
    class Spinner(ft.GenServer):
        async def handle_info(self, message: Any) -> None:
            pass

    async with ft.open_node("demo"):
        pid = await ft.start_server(Spinner, mailbox_size=100_000)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        for _ in range(10_000):
            ft.send_nowait(pid, "x")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()
            before = ticks
            for _ in range(5):
                await trio.lowlevel.checkpoint()
            assert ticks > before
            nursery.cancel_scope.cancel()


async def test_cancelled_caller_abandons_the_call(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo"):
        pid = await ft.start_server(Counter)
        with trio.move_on_after(1):
            await ft.call(pid, ("sleep", 3), timeout=None)
        assert await ft.call(pid, ("add", 1)) == 1


async def test_answered_calls_leave_no_deadline_behind() -> None:
    class Echo(ft.GenServer):
        async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
            return request

    async with ft.open_node("demo") as node:
        pid = await ft.start_server(Echo)
        for i in range(5000):
            assert await ft.call(pid, i) == i
        # Only the newest entry may linger until the next call or expiry sweep.
        assert node.call_timers.pending() <= 1


async def test_calls_with_different_timeouts_expire_in_deadline_order(
    clock: trio.testing.MockClock,
) -> None:
    class Silent(ft.GenServer):
        async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
            return ft.NOREPLY

    async with ft.open_node("demo"):
        pid = await ft.start_server(Silent)
        expired: list[tuple[float, float]] = []

        async def caller(timeout: float) -> None:
            with pytest.raises(ft.CallTimeout) as info:
                await ft.call(pid, "x", timeout=timeout)
            assert info.value.timeout == timeout
            expired.append((timeout, trio.current_time()))

        async with trio.open_nursery() as nursery:
            for timeout in (7.0, 3.0, 5.0, 3.0, 0.5):
                nursery.start_soon(caller, timeout)
        assert sorted(expired) == [(0.5, 0.5), (3.0, 3.0), (3.0, 3.0), (5.0, 5.0), (7.0, 7.0)]
