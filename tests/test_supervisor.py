"""Supervisors: OTP semantics, point by point (see docs/runtime.md and
shared/notes/otp-semantics.md "Supervisor")."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import foundation_trio as ft

log: list[tuple[str, object]] = []


@pytest.fixture(autouse=True)
def _clear_log() -> None:
    log.clear()


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Worker(ft.GenServer):
    """Records init/terminate in ``log``; crashes or exits on request."""

    async def init(self, tag: str, *, stop_delay: float = 0.0, fail: bool = False) -> None:
        if fail:
            raise RuntimeError(f"{tag} cannot start")
        self.tag = tag
        self.stop_delay = stop_delay
        log.append(("init", tag))

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        return (self.tag, request)

    async def handle_cast(self, request: Any) -> None:
        match request:
            case "crash":
                raise ValueError(f"{self.tag} crashed")
            case "normal":
                self.stop(ft.NORMAL)
            case "shutdown":
                self.stop(ft.Shutdown("done"))

    async def terminate(self, reason: ft.ExitReason) -> None:
        if reason != ft.SHUTDOWN:
            return  # only record stops the supervisor asked for
        if self.stop_delay:
            await trio.sleep(self.stop_delay)
        log.append(("terminate", self.tag))


def worker(tag: str, restart: ft.Restart = ft.PERMANENT, **kwargs: Any) -> ft.ChildSpec:
    spec_keys = {"shutdown", "significant", "name"}
    spec_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in spec_keys}
    return ft.ChildSpec(tag, Worker, args=(tag,), kwargs=kwargs, restart=restart, **spec_kwargs)


async def pids(sup: ft.Pid) -> dict[object, ft.Pid | None]:
    return {c.id: c.pid for c in await ft.which_children(sup)}


async def exit_child(sup: ft.Pid, child_id: str, how: str = "crash") -> None:
    """Make a child exit by itself and wait until its supervisor has reacted."""
    pid = (await pids(sup))[child_id]
    assert pid is not None
    ref = ft.monitor(pid)
    await ft.cast(pid, how)
    await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
    try:
        await ft.which_children(sup)  # queued behind the exit: the reaction is done
    except (ft.ServerExited, ft.NoProcess):
        pass  # the exit made the supervisor stop


def events() -> list[str]:
    return [f"{kind}:{tag}" for kind, tag in log]


# -- 1, 2: ordered start and ordered shutdown ------------------------------------------


async def test_children_start_in_order_each_ready_before_the_next() -> None:
    class Probe(ft.GenServer):
        async def init(self, tag: str) -> None:
            log.append(("init", tag))
            log.append(("saw a", ft.whereis("a") is not None))

    async with ft.open_node("demo") as node:
        await node.start_supervisor(
            [
                ft.ChildSpec("a", Worker, args=("a",), name="a"),
                ft.ChildSpec("b", Probe, args=("b",)),
            ]
        )
        assert log == [("init", "a"), ("init", "b"), ("saw a", True)]


async def test_failing_child_fails_supervisor_start_and_stops_started_ones() -> None:
    async with ft.open_node("demo") as node:
        before = set(ft.processes())  # root, the body and the services
        with pytest.raises(ft.StartError) as info:
            await node.start_supervisor(
                [worker("a"), worker("b"), worker("c", fail=True), worker("d")]
            )
        assert "'c'" in str(info.value)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert events() == ["init:a", "init:b", "terminate:b", "terminate:a"]
        assert set(ft.processes()) == before  # the failed start left nothing


async def test_shutdown_is_in_reverse_start_order() -> None:
    async with ft.open_node("demo") as node:
        await node.start_supervisor([worker("a"), worker("b"), worker("c")])
    assert events() == [
        "init:a",
        "init:b",
        "init:c",
        "terminate:c",
        "terminate:b",
        "terminate:a",
    ]


# -- 3: strategies ---------------------------------------------------------------------


async def test_one_for_one_restarts_only_the_exited_child() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a"), worker("b"), worker("c")])
        before = await pids(sup)
        log.clear()
        await exit_child(sup, "b")
        after = await pids(sup)
        assert after["a"] == before["a"] and after["c"] == before["c"]
        assert after["b"] not in (None, before["b"])
        assert events() == ["init:b"]


async def test_one_for_all_stops_others_in_reverse_then_restarts_all_in_order() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor(
            [worker("a"), worker("b"), worker("c"), worker("d")], strategy=ft.ONE_FOR_ALL
        )
        before = await pids(sup)
        log.clear()
        await exit_child(sup, "b")
        after = await pids(sup)
        assert all(after[k] not in (None, before[k]) for k in "abcd")
        assert events() == [
            "terminate:d",
            "terminate:c",
            "terminate:a",
            "init:a",
            "init:b",
            "init:c",
            "init:d",
        ]


async def test_rest_for_one_restarts_the_exited_child_and_those_after_it() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor(
            [worker("a"), worker("b"), worker("c"), worker("d")], strategy=ft.REST_FOR_ONE
        )
        before = await pids(sup)
        log.clear()
        await exit_child(sup, "b")
        after = await pids(sup)
        assert after["a"] == before["a"]
        assert all(after[k] not in (None, before[k]) for k in "bcd")
        assert events() == ["terminate:d", "terminate:c", "init:b", "init:c", "init:d"]


# -- 4: restart types ------------------------------------------------------------------


async def test_permanent_child_restarts_even_after_normal_exit() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a")])
        before = await pids(sup)
        await exit_child(sup, "a", "normal")
        assert (await pids(sup))["a"] not in (None, before["a"])


@pytest.mark.parametrize(
    ("how", "restarted"), [("normal", False), ("shutdown", False), ("crash", True)]
)
async def test_transient_child_restarts_only_after_abnormal_exit(
    how: str, restarted: bool
) -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a", ft.TRANSIENT)])
        await exit_child(sup, "a", how)
        children = await ft.which_children(sup)
        assert [c.id for c in children] == ["a"]  # the spec stays either way
        assert (children[0].pid is not None) is restarted


@pytest.mark.parametrize("how", ["normal", "crash"])
async def test_temporary_child_is_never_restarted_and_its_spec_dropped(how: str) -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a"), worker("t", ft.TEMPORARY)])
        await exit_child(sup, "t", how)
        assert list(await pids(sup)) == ["a"]


@pytest.mark.parametrize("strategy", [ft.ONE_FOR_ALL, ft.REST_FOR_ONE])
async def test_temporary_child_is_not_restarted_as_collateral(strategy: ft.Strategy) -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor(
            [worker("a"), worker("t", ft.TEMPORARY), worker("c", ft.TRANSIENT)],
            strategy=strategy,
        )
        before = await pids(sup)
        log.clear()
        await exit_child(sup, "a")
        after = await pids(sup)
        assert list(after) == ["a", "c"]
        assert after["c"] not in (None, before["c"])  # transient collateral does restart
        assert "init:t" not in events()
        assert "terminate:t" in events()


# -- 5: one intensity window per supervisor, and giving up --------------------------------


async def test_intensity_is_counted_per_supervisor_not_per_child(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor(
            [worker("a"), worker("b")], max_restarts=3, max_seconds=5
        )
        ref = ft.monitor(sup)
        for child in ["a", "b", "a"]:
            await exit_child(sup, child)
        assert ft.is_alive(sup)
        log.clear()
        await exit_child(sup, "b")  # the 4th restart within 5 s: give up
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.reason == ft.GAVE_UP
        assert isinstance(down.reason, ft.Shutdown)
        assert events() == ["terminate:a"]  # the rest stopped; b was already down


async def test_intensity_window_slides(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a")], max_restarts=1, max_seconds=5)
        for _ in range(4):
            await exit_child(sup, "a")
            await trio.sleep(5)  # the previous restart has left the window
        assert ft.is_alive(sup)
        await exit_child(sup, "a")
        await exit_child(sup, "a")
        assert not ft.is_alive(sup)


async def test_one_for_all_group_restart_counts_once(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor(
            [worker("a"), worker("b"), worker("c")],
            strategy=ft.ONE_FOR_ALL,
            max_restarts=2,
            max_seconds=5,
        )
        await exit_child(sup, "a")
        await exit_child(sup, "c")
        assert ft.is_alive(sup)


async def test_max_restarts_zero_gives_up_on_first_exit() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a")], max_restarts=0)
        await exit_child(sup, "a")
        assert not ft.is_alive(sup)


async def test_give_up_escalates_to_the_parent_which_restarts_the_subtree(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo") as node:
        inner = ft.SupervisorSpec([worker("leaf")], max_restarts=0)
        top = await node.start_supervisor(
            [worker("sibling"), ft.ChildSpec("inner", inner)], max_restarts=5
        )
        first_inner = (await pids(top))["inner"]
        assert first_inner is not None
        leaf = (await pids(first_inner))["leaf"]
        assert leaf is not None
        ref = ft.monitor(first_inner)
        await ft.cast(leaf, "crash")
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.reason == ft.GAVE_UP
        await ft.which_children(top)
        second_inner = (await pids(top))["inner"]
        assert second_inner not in (None, first_inner)
        assert (await pids(second_inner))["leaf"] is not None


async def test_a_child_that_can_never_restart_ends_in_give_up_not_a_loop(
    clock: trio.testing.MockClock,
) -> None:
    attempts = 0

    class Fragile(ft.GenServer):
        async def init(self) -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                raise RuntimeError("no second life")

        async def handle_cast(self, request: Any) -> None:
            raise ValueError("first crash")

    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([ft.ChildSpec("f", Fragile)], max_restarts=3)
        ref = ft.monitor(sup)
        child = (await pids(sup))["f"]
        assert child is not None
        await ft.cast(child, "crash")
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.reason == ft.GAVE_UP
        assert attempts == 4  # the first start, then three failed restarts


# -- 6: shutdown specs ----------------------------------------------------------------


async def test_shutdown_timeout_lets_terminate_run_then_kills(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor(
            [
                worker("quick", stop_delay=1, shutdown=2),
                worker("slow", stop_delay=10, shutdown=2),
            ]
        )
        start = trio.current_time()
        await ft.terminate_child(sup, "slow")
        assert trio.current_time() - start == pytest.approx(2)
        assert "terminate:slow" not in events()  # killed before it finished
        await ft.terminate_child(sup, "quick")
        assert "terminate:quick" in events()
        assert trio.current_time() - start == pytest.approx(3)


async def test_brutal_kill_skips_terminate(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a", shutdown=ft.BRUTAL_KILL)])
        await ft.terminate_child(sup, "a")
        assert events() == ["init:a"]
        assert trio.current_time() == 0


async def test_infinity_waits_as_long_as_terminate_takes(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a", stop_delay=3600, shutdown=ft.INFINITY)])
        await ft.terminate_child(sup, "a")
        assert events() == ["init:a", "terminate:a"]
        assert trio.current_time() == pytest.approx(3600)


async def test_function_child_is_cancelled_on_shutdown() -> None:
    async def body() -> None:
        try:
            await trio.sleep_forever()
        finally:
            log.append(("cancelled", "fn"))

    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([ft.ChildSpec("fn", body)])
        await ft.terminate_child(sup, "fn")
        assert events() == ["cancelled:fn"]


# -- 7: significant children and auto_shutdown ----------------------------------------------


async def test_any_significant_shuts_down_when_one_exits_by_itself() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor(
            [worker("a"), worker("job", ft.TRANSIENT, significant=True)],
            auto_shutdown=ft.ANY_SIGNIFICANT,
        )
        ref = ft.monitor(sup)
        await exit_child(sup, "job", "normal")
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.reason == ft.SHUTDOWN
        assert "terminate:a" in events()


async def test_all_significant_waits_for_the_last_one() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor(
            [
                worker("j1", ft.TEMPORARY, significant=True),
                worker("j2", ft.TRANSIENT, significant=True),
            ],
            auto_shutdown=ft.ALL_SIGNIFICANT,
        )
        await exit_child(sup, "j1", "normal")
        assert ft.is_alive(sup)
        await exit_child(sup, "j2", "crash")  # abnormal: restarted, not an auto-shutdown
        assert ft.is_alive(sup)
        await exit_child(sup, "j2", "normal")
        assert not ft.is_alive(sup)


async def test_terminate_child_of_significant_child_does_not_auto_shutdown() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor(
            [worker("a"), worker("job", ft.TRANSIENT, significant=True)],
            auto_shutdown=ft.ANY_SIGNIFICANT,
        )
        await ft.terminate_child(sup, "job")
        await ft.which_children(sup)
        assert ft.is_alive(sup)


# -- 8: child management ---------------------------------------------------------------------


async def test_which_and_count_children() -> None:
    async with ft.open_node("demo") as node:
        inner = ft.SupervisorSpec([worker("leaf")])
        sup = await node.start_supervisor([worker("a"), ft.ChildSpec("inner", inner)])
        children = await ft.which_children(sup)
        assert [(c.id, c.type, c.restart) for c in children] == [
            ("a", ft.WORKER, ft.PERMANENT),
            ("inner", ft.SUPERVISOR, ft.PERMANENT),
        ]
        assert all(isinstance(c.pid, ft.Pid) for c in children)
        await ft.terminate_child(sup, "a")
        assert await ft.count_children(sup) == ft.ChildCount(
            specs=2, active=1, supervisors=1, workers=1
        )


async def test_start_terminate_restart_delete_child() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a")])
        pid_b = await ft.start_child(sup, worker("b"))
        assert await ft.call(pid_b, "hi") == ("b", "hi")
        with pytest.raises(ft.InvalidChildSpec) as dup:
            await ft.start_child(sup, worker("b"))
        assert dup.value.field == "id"
        with pytest.raises(ft.StartError):
            await ft.start_child(sup, worker("c", fail=True))
        assert list(await pids(sup)) == ["a", "b"]  # the failed spec is not kept

        with pytest.raises(ft.ChildRunning):
            await ft.restart_child(sup, "b")
        with pytest.raises(ft.ChildRunning):
            await ft.delete_child(sup, "b")
        await ft.terminate_child(sup, pid_b)
        assert (await pids(sup))["b"] is None
        new_b = await ft.restart_child(sup, "b")
        assert new_b != pid_b
        await ft.terminate_child(sup, "b")
        await ft.delete_child(sup, "b")
        assert list(await pids(sup)) == ["a"]
        with pytest.raises(ft.NoSuchChild):
            await ft.terminate_child(sup, "b")
        with pytest.raises(ft.NoSuchChild):
            await ft.restart_child(sup, "zzz")
        with pytest.raises(ft.NoSuchChild):
            await ft.terminate_child(sup, ft.Pid("demo", 10**9))


async def test_terminated_child_is_not_restarted_by_a_sibling_crash() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a"), worker("b")], strategy=ft.ONE_FOR_ALL)
        await ft.terminate_child(sup, "b")
        await exit_child(sup, "a")
        assert (await pids(sup))["b"] is None


async def test_dynamically_added_children_are_lost_when_the_supervisor_restarts(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo") as node:
        top = await node.start_supervisor(
            [ft.ChildSpec("inner", ft.SupervisorSpec([worker("static")], max_restarts=0))]
        )
        inner = (await pids(top))["inner"]
        assert inner is not None
        await ft.start_child(inner, worker("added"))
        await exit_child(inner, "added")  # max_restarts=0: the inner supervisor gives up
        await ft.which_children(top)
        new_inner = (await pids(top))["inner"]
        assert new_inner not in (None, inner)
        assert list(await pids(new_inner)) == ["static"]


async def test_restarted_child_is_registered_under_its_name_again() -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a", name="alpha")])
        first = ft.whereis("alpha")
        await exit_child(sup, "a")
        second = ft.whereis("alpha")
        assert second is not None and second != first
        assert await ft.call("alpha", "ping") == ("a", "ping")


# -- 9: DynamicSupervisor -------------------------------------------------------------------


async def test_dynamic_supervisor_starts_restarts_and_limits_children() -> None:
    async with ft.open_node("demo") as node:
        dyn = await node.start_supervisor(ft.DynamicSupervisorSpec(max_children=2))
        a = await ft.start_child(dyn, worker("a"))
        b = await ft.start_child(dyn, worker("b", ft.TEMPORARY))
        with pytest.raises(ft.TooManyChildren):
            await ft.start_child(dyn, worker("c"))
        assert await ft.count_children(dyn) == ft.ChildCount(2, 2, 0, 2)

        ref = ft.monitor(a)
        await ft.cast(a, "crash")
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        children = await ft.which_children(dyn)
        assert len(children) == 2 and a not in [c.pid for c in children]

        await ft.terminate_child(dyn, b)
        assert len(await ft.which_children(dyn)) == 1
        with pytest.raises(ft.NoSuchChild):
            await ft.terminate_child(dyn, b)
        with pytest.raises(ft.SupervisorError):
            await ft.restart_child(dyn, "a")


async def test_dynamic_supervisor_stops_children_concurrently(
    clock: trio.testing.MockClock,
) -> None:
    async with ft.open_node("demo") as node:
        dyn = await node.start_supervisor(ft.DynamicSupervisorSpec())
        for tag in "abc":
            await ft.start_child(dyn, worker(tag, stop_delay=1))
        start = trio.current_time()
        root_children = await ft.which_children(node.root.pid)
        [dyn_child] = [c for c in root_children if c.pid == dyn]
        await ft.terminate_child(node.root.pid, dyn_child.id)
        assert trio.current_time() - start == pytest.approx(1)  # not 3: concurrent
        assert sorted(events()) == sorted(
            ["init:a", "init:b", "init:c", "terminate:a", "terminate:b", "terminate:c"]
        )


async def test_dynamic_supervisor_gives_up_per_intensity() -> None:
    async with ft.open_node("demo") as node:
        dyn = await node.start_supervisor(ft.DynamicSupervisorSpec(max_restarts=1))
        ref = ft.monitor(dyn)
        pid = await ft.start_child(dyn, worker("a"))
        for _ in range(2):
            child_ref = ft.monitor(pid)
            await ft.cast(pid, "crash")
            await ft.receive(lambda m, r=child_ref: isinstance(m, ft.Down) and m.ref == r)
            try:
                children = await ft.which_children(dyn)
            except ft.ServerExited:
                break
            pid = children[0].pid
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.reason == ft.GAVE_UP


async def test_node_start_supervisor_is_not_restarted_by_root() -> None:
    async with ft.open_node("demo") as node:
        services = await ft.which_children(node.root.pid)
        sup = await node.start_supervisor([worker("a")], max_restarts=0, name="top")
        assert ft.whereis("top") == sup
        assert len(await ft.which_children(node.root.pid)) == len(services) + 1
        await exit_child(sup, "a")
        await ft.which_children(node.root.pid)
        assert await ft.which_children(node.root.pid) == services
        assert ft.whereis("top") is None


@pytest.mark.parametrize("strategy", [ft.ONE_FOR_ALL, ft.REST_FOR_ONE])
async def test_group_restart_survives_a_member_failing_to_start_once(
    strategy: ft.Strategy,
) -> None:
    failures = {"b": 1}

    class Flaky(Worker):
        async def init(self, tag: str, **kwargs: Any) -> None:
            if failures.get(tag) and log.count(("init", tag)) == 1:
                failures[tag] -= 1
                raise RuntimeError(f"{tag} failed to restart once")
            await super().init(tag, **kwargs)

    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor(
            [ft.ChildSpec(t, Flaky, args=(t,)) for t in "abc"],
            strategy=strategy,
            max_restarts=5,
        )
        await exit_child(sup, "a")
        after = await pids(sup)
        assert all(after[t] is not None for t in "abc"), after
        assert failures == {"b": 0}


async def test_taken_via_name_fails_the_start_and_leaves_no_process() -> None:
    registry = ft.Registry(keys="unique")
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a", name=ft.Via(registry, "w"))])
        before = ft.processes()
        with pytest.raises(ft.StartError) as info:
            await ft.start_child(sup, worker("b", name=ft.Via(registry, "w")))
        assert isinstance(info.value.reason, ft.AlreadyStarted)
        assert ft.processes() == before


async def test_via_needs_a_unique_registry() -> None:
    with pytest.raises(ValueError, match="unique"):
        ft.Via(ft.Registry(keys="duplicate"), "k")


async def test_stop_is_orderly_and_waits(clock: trio.testing.MockClock) -> None:
    async with ft.open_node("demo") as node:
        sup = await node.start_supervisor([worker("a", ft.TRANSIENT, stop_delay=2)])
        pid = (await pids(sup))["a"]
        assert pid is not None
        await ft.stop(pid, ft.SHUTDOWN)
        assert trio.current_time() == pytest.approx(2)
        assert ("terminate", "a") in log
        assert (await pids(sup))["a"] is None  # transient + shutdown: not restarted
        with pytest.raises(ft.NoProcess):
            await ft.stop(pid)
        slow = await ft.start_child(sup, worker("slow", stop_delay=100))
        with pytest.raises(ft.CallTimeout):
            await ft.stop(slow, ft.SHUTDOWN, timeout=1)
