"""A hypothesis stateful test: random child exits, terminations and restarts
against a small model of OTP's supervisor rules.

The supervisor runs in a trio loop on a helper thread (with a MockClock), and the
state machine's rules send it commands; after each rule the real supervisor's
children (ids, running or not, which pids changed) must equal the model's, and it
must have given up exactly when the model says so.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import foundation_trio as ft

MAX_SECONDS = 5.0
CHILD_IDS = ["c0", "c1", "c2", "c3"]


class Child(ft.GenServer):
    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        return request

    async def handle_cast(self, request: Any) -> None:
        match request:
            case "crash":
                raise RuntimeError("model crash")
            case "normal":
                self.stop(ft.NORMAL)
            case "shutdown":
                self.stop(ft.Shutdown("by itself"))


class NodeThread:
    """A node running in trio on a helper thread; ``run`` executes a coroutine
    function as the node's body process and returns its result."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._commands: trio.MemorySendChannel[Any]
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        trio.run(self._serve, clock=trio.testing.MockClock(autojump_threshold=0))

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[Any](1)
        self._commands = send
        async with ft.open_node("model") as node:
            self.node = node
            self._ready.set()
            async for fn, answers in receive:
                if fn is None:
                    break
                try:
                    answers.put(("ok", await fn()))
                except BaseException as error:
                    answers.put(("error", error))

    def run(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        answers: queue.Queue[tuple[str, Any]] = queue.Queue()
        trio.from_thread.run_sync(
            self._commands.send_nowait, (fn, answers), trio_token=self._token
        )
        kind, value = answers.get(timeout=30)
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        trio.from_thread.run_sync(self._commands.send_nowait, (None, None), trio_token=self._token)
        self._thread.join(timeout=30)


@attrs.define
class ModelChild:
    id: str
    restart: ft.Restart
    running: bool = True


class SupervisorModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.node = NodeThread()
        self.children: list[ModelChild] = []
        self.restarts: list[float] = []
        self.gave_up = False
        self.saw_give_up = False
        self.expected_new: set[str] = set()

    def teardown(self) -> None:
        self.node.close()

    # -- set-up --------------------------------------------------------------------

    @initialize(
        strategy=st.sampled_from(list(ft.Strategy)),
        restarts=st.lists(st.sampled_from(list(ft.Restart)), min_size=4, max_size=4),
        max_restarts=st.integers(min_value=0, max_value=3),
    )
    def start(self, strategy: ft.Strategy, restarts: list[ft.Restart], max_restarts: int) -> None:
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.children = [ModelChild(i, r) for i, r in zip(CHILD_IDS, restarts, strict=True)]
        specs = [ft.ChildSpec(c.id, Child, restart=c.restart) for c in self.children]

        async def start() -> tuple[ft.Pid, ft.Ref]:
            sup = await self.node.node.start_supervisor(
                specs, strategy=strategy, max_restarts=max_restarts, max_seconds=MAX_SECONDS
            )
            return sup, ft.monitor(sup)

        self.sup, self.sup_ref = self.node.run(start)
        self.pids = self._real_children()

    # -- the model ---------------------------------------------------------------------

    def _now(self) -> float:
        async def now() -> float:
            return trio.current_time()

        result: float = self.node.run(now)
        return result

    def _model_exit(self, child: ModelChild, reason: ft.ExitReason) -> None:
        """What OTP does when ``child`` exits by itself with ``reason``."""
        child.running = False
        restart = child.restart is ft.PERMANENT or (
            child.restart is ft.TRANSIENT and not ft.is_orderly(reason)
        )
        if not restart:
            if child.restart is ft.TEMPORARY:
                self.children.remove(child)
            return
        now = self._now()
        self.restarts = [t for t in self.restarts if now - t < MAX_SECONDS] + [now]
        if len(self.restarts) > self.max_restarts:
            self.gave_up = True
            for other in self.children:
                other.running = False
            return
        if self.strategy is ft.ONE_FOR_ONE:
            group = [child]
        elif self.strategy is ft.ONE_FOR_ALL:
            group = [c for c in self.children if c is child or c.running]
        else:
            index = self.children.index(child)
            group = [child] + [c for c in self.children[index + 1 :] if c.running]
        for member in group:
            if member is not child and member.restart is ft.TEMPORARY:
                self.children.remove(member)
            else:
                member.running = True
                self.expected_new.add(member.id)

    # -- rules -------------------------------------------------------------------------------

    def _running(self) -> list[ModelChild]:
        return [c for c in self.children if c.running]

    @precondition(lambda self: not self.gave_up and any(c.running for c in self.children))
    @rule(data=st.data(), how=st.sampled_from(["crash", "normal", "shutdown"]))
    def child_exits(self, data: st.DataObject, how: str) -> None:
        child = data.draw(st.sampled_from(self._running()))
        pid = self.pids[child.id]

        async def make_it_exit() -> None:
            ref = ft.monitor(pid)
            await ft.cast(pid, how)
            await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
            try:
                await ft.which_children(self.sup)
            except ft.ServerExited:
                pass

        self.node.run(make_it_exit)
        reason = {
            "crash": RuntimeError("model crash"),
            "normal": ft.NORMAL,
            "shutdown": ft.Shutdown("by itself"),
        }[how]
        self._model_exit(child, reason)

    @precondition(lambda self: not self.gave_up and any(c.running for c in self.children))
    @rule(data=st.data())
    def terminate(self, data: st.DataObject) -> None:
        child = data.draw(st.sampled_from(self._running()))
        self.node.run(lambda: ft.terminate_child(self.sup, child.id))
        child.running = False
        if child.restart is ft.TEMPORARY:
            self.children.remove(child)

    @precondition(lambda self: not self.gave_up and any(not c.running for c in self.children))
    @rule(data=st.data(), delete=st.booleans())
    def restart_or_delete(self, data: st.DataObject, delete: bool) -> None:
        child = data.draw(st.sampled_from([c for c in self.children if not c.running]))
        if delete:
            self.node.run(lambda: ft.delete_child(self.sup, child.id))
            self.children.remove(child)
        else:
            self.node.run(lambda: ft.restart_child(self.sup, child.id))
            child.running = True
            self.expected_new.add(child.id)

    @rule(seconds=st.sampled_from([0.5, 2.0, 5.0]))
    def time_passes(self, seconds: float) -> None:
        async def sleep() -> None:
            await trio.sleep(seconds)

        self.node.run(sleep)

    # -- checks ------------------------------------------------------------------------------

    def _real_children(self) -> dict[str, ft.Pid | None]:
        async def children() -> dict[str, ft.Pid | None]:
            return {str(c.id): c.pid for c in await ft.which_children(self.sup)}

        result: dict[str, ft.Pid | None] = self.node.run(children)
        return result

    def _real_children_or_none(self) -> dict[str, ft.Pid | None] | None:
        try:
            return self._real_children()
        except ft.NoProcess:
            return None

    @invariant()
    def matches_the_model(self) -> None:
        if not hasattr(self, "sup"):
            return
        if self.gave_up:
            if self.saw_give_up:
                return

            async def supervisor_down() -> ft.Down:
                down: ft.Down = await ft.receive(
                    lambda m: isinstance(m, ft.Down) and m.ref == self.sup_ref, timeout=1
                )
                return down

            assert self.node.run(supervisor_down).reason == ft.GAVE_UP
            assert self._real_children_or_none() is None
            self.saw_give_up = True
            return
        assert self.node.run(lambda: _alive(self.sup))
        real = self._real_children()
        assert list(real) == [c.id for c in self.children]
        for child in self.children:
            pid = real[child.id]
            assert (pid is not None) is child.running, child
            if child.id in self.expected_new:
                assert pid != self.pids.get(child.id), f"{child.id} should have a new pid"
            elif child.running:
                assert pid == self.pids.get(child.id), f"{child.id} should keep its pid"
        self.pids = real
        self.expected_new.clear()


async def _alive(pid: ft.Pid) -> bool:
    return ft.is_alive(pid)


SupervisorModel.TestCase.settings = settings(
    max_examples=300, stateful_step_count=30, deadline=None
)
TestSupervisorModel = SupervisorModel.TestCase
