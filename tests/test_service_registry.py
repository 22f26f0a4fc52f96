"""The service registry (issue 3, item 4): namespaced services on the node registry.

Entries die with their process; health checks have typed outcomes, run under their
timeout (MockClock) and are contained when they crash; ``wait_for`` wakes on the
registration (no polling) and times out with a typed error.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

import foundation_trio as ft
from foundation_trio.runtime.node import current_node
from foundation_trio.runtime.node import open_node as open_runtime_node
from foundation_trio.services import registry as service_registry
from foundation_trio.services import telemetry

svc = ft.services


def services_node(name: str = "reg") -> Any:
    return ft.open_node(name)


async def idle() -> None:
    await trio.sleep_forever()


async def kill(pid: ft.Pid) -> None:
    """Kill ``pid`` and return once its ``Down`` arrived (its exit is fully handled)."""
    ref = ft.monitor(pid)
    ft.exit(pid, ft.KILLED)
    await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)


# -- register, lookup, list, discover ------------------------------------------------------


async def test_register_lookup_list_unregister(autojump_clock):
    async with services_node():
        a, b, c = ft.spawn(idle), ft.spawn(idle), ft.spawn(idle)
        svc.register("storage", "primary", a, capabilities=("read", "write"))
        svc.register("storage", "replica", b, capabilities=["read"])
        svc.register("cache", "primary", c)
        assert svc.lookup("storage", "primary") == a
        assert svc.lookup("cache", "primary") == c
        assert svc.lookup("storage", "missing") is None
        assert [(i.service, i.pid) for i in svc.list_services("storage")] == [
            ("primary", a),
            ("replica", b),
        ]
        assert [i.namespace for i in svc.list_services()] == ["storage", "storage", "cache"]
        info = svc.info("storage", "primary")
        assert info is not None
        assert info.capabilities == frozenset({"read", "write"})
        assert svc.unregister("storage", "primary") is True
        assert svc.unregister("storage", "primary") is False
        assert svc.lookup("storage", "primary") is None
        assert ft.is_alive(a)  # unregistering does not touch the process


async def test_a_dead_process_is_never_returned(autojump_clock):
    async with services_node():
        pid = ft.spawn(idle)
        svc.register("storage", "primary", pid, capabilities=("read",))
        await kill(pid)
        # Gone by the time anyone can see the process dead.
        assert svc.lookup("storage", "primary") is None
        assert svc.list_services("storage") == []
        assert svc.discover("read") == []
        with pytest.raises(svc.ServiceNotFound):
            await svc.health("storage", "primary")
        # The name is free again.
        other = ft.spawn(idle)
        svc.register("storage", "primary", other)
        assert svc.lookup("storage", "primary") == other


async def test_a_taken_name_and_a_dead_pid_are_refused(autojump_clock):
    async with services_node():
        a, b = ft.spawn(idle), ft.spawn(idle)
        svc.register("storage", "primary", a)
        with pytest.raises(svc.ServiceAlreadyRegistered) as caught:
            svc.register("storage", "primary", b)
        assert caught.value.pid == a
        assert isinstance(caught.value, ft.AlreadyStarted)
        assert "'primary'" in str(caught.value) and "'storage'" in str(caught.value)
        await kill(b)
        with pytest.raises(ft.NoProcess):
            svc.register("storage", "other", b)
        assert svc.lookup("storage", "other") is None


async def test_discover_intersects_capabilities(autojump_clock):
    async with services_node():
        rw, ro, other_ns = ft.spawn(idle), ft.spawn(idle), ft.spawn(idle)
        svc.register("db", "rw", rw, capabilities={"read", "write"})
        svc.register("db", "ro", ro, capabilities={"read"})
        svc.register("files", "rw", other_ns, capabilities={"read", "write"})
        assert [i.pid for i in svc.discover("read")] == [rw, ro, other_ns]
        assert [i.pid for i in svc.discover({"read", "write"})] == [rw, other_ns]
        assert [i.pid for i in svc.discover(["read", "write"], namespace="db")] == [rw]
        assert svc.discover({"read", "admin"}) == []
        with pytest.raises(ValueError, match="at least one"):
            svc.discover(())


# -- health ---------------------------------------------------------------------------------


async def test_health_outcomes(autojump_clock):
    async def true_check(pid: ft.Pid) -> bool:
        return True

    async def false_check(pid: ft.Pid) -> bool:
        return False

    async def unhealthy_check(pid: ft.Pid) -> svc.Unhealthy:
        return svc.Unhealthy("disk 97% full")

    checked: list[tuple[str, str]] = []
    async with services_node():
        telemetry.attach(
            "t",
            ["services.registry.health_checked"],
            lambda name, m, md: checked.append((md["service"], md["status"])),
        )
        cases = {
            "no-check": (None, svc.Healthy()),
            "true": (true_check, svc.Healthy()),
            "false": (false_check, svc.Unhealthy("health check returned False")),
            "unhealthy": (unhealthy_check, svc.Unhealthy("disk 97% full")),
        }
        for name, (check, _) in cases.items():
            svc.register("ns", name, ft.spawn(idle), health_check=check)
        for name, (_, expected) in cases.items():
            assert await svc.health("ns", name) == expected
        assert checked == [
            ("no-check", "healthy"),
            ("true", "healthy"),
            ("false", "unhealthy"),
            ("unhealthy", "unhealthy"),
        ]


async def test_health_check_times_out_at_its_timeout(autojump_clock):
    cancelled = []

    async def slow(pid: ft.Pid) -> bool:
        try:
            await trio.sleep(60)
        except trio.Cancelled:
            cancelled.append(trio.current_time())
            raise
        return True

    async with services_node():
        svc.register("ns", "slow", ft.spawn(idle), health_check=slow)
        start = trio.current_time()
        assert await svc.health("ns", "slow", timeout=2.5) == svc.TimedOut(2.5)
        assert trio.current_time() - start == pytest.approx(2.5)
        assert cancelled == [pytest.approx(start + 2.5)]


async def test_crashing_health_check_is_contained_and_logged(autojump_clock, caplog):
    async def crashing(pid: ft.Pid) -> bool:
        raise RuntimeError("probe exploded")

    async def wrong_type(pid: ft.Pid) -> Any:
        return "fine"

    async with services_node():
        svc.register("ns", "crash", ft.spawn(idle), health_check=crashing)
        svc.register("ns", "wrong", ft.spawn(idle), health_check=wrong_type)
        with caplog.at_level(logging.WARNING, "foundation_trio.services.registry"):
            status = await svc.health("ns", "crash")
            assert isinstance(status, svc.CheckCrashed)
            assert isinstance(status.error, RuntimeError)
            assert "probe exploded" in caplog.text
            status = await svc.health("ns", "wrong")
            assert isinstance(status, svc.CheckCrashed)
            assert isinstance(status.error, TypeError)
            assert "'fine'" in str(status.error)
        # The registry still works after both.
        assert svc.lookup("ns", "crash") is not None


async def test_process_dying_during_the_check_is_process_dead(autojump_clock):
    async def check_that_outlives(pid: ft.Pid) -> bool:
        await trio.sleep(10)
        return True

    async def short_lived() -> None:
        await trio.sleep(1)
        raise ValueError("went down")

    async with services_node():
        pid = ft.spawn(short_lived)
        svc.register("ns", "flaky", pid, health_check=check_that_outlives)
        start = trio.current_time()
        status = await svc.health("ns", "flaky", timeout=5)
        assert isinstance(status, svc.ProcessDead)
        assert status.pid == pid
        assert isinstance(status.reason, ValueError)
        # The check was abandoned when the process died, not at the timeout.
        assert trio.current_time() - start == pytest.approx(1.0)


# -- wait_for -----------------------------------------------------------------------------


async def test_wait_for_wakes_on_registration(autojump_clock):
    async with services_node():
        late = ft.spawn(idle)

        async def register_later() -> None:
            await trio.sleep(3)
            svc.register("ns", "late", late)

        ft.spawn(register_later)
        start = trio.current_time()
        assert await svc.wait_for("ns", "late", timeout=10) == late
        assert trio.current_time() - start == pytest.approx(3.0)
        # Already registered: returns at once.
        assert await svc.wait_for("ns", "late", timeout=0) == late


async def test_wait_for_times_out_with_a_typed_error(autojump_clock):
    async with services_node():
        start = trio.current_time()
        with pytest.raises(svc.ServiceWaitTimeout) as caught:
            await svc.wait_for("ns", "never", timeout=4)
        assert trio.current_time() - start == pytest.approx(4.0)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.timeout == 4
        state = current_node().extension(service_registry.ServiceRegistry, "test")
        assert state.waiters == {}


async def test_cancelled_wait_for_leaves_no_waiter(autojump_clock):
    async with services_node():
        state = current_node().extension(service_registry.ServiceRegistry, "test")
        with trio.move_on_after(1):
            await svc.wait_for("ns", "never", timeout=None)
        assert state.waiters == {}


async def test_wait_for_skips_a_registration_whose_process_died(autojump_clock):
    async with services_node():
        first, second = ft.spawn(idle), ft.spawn(idle)

        async def register_then_die_then_register() -> None:
            await trio.sleep(1)
            svc.register("ns", "svc", first)
            ft.exit(first, ft.KILLED)  # gone before the waiter runs again
            await trio.sleep(1)
            svc.register("ns", "svc", second)

        ft.spawn(register_then_die_then_register)
        assert await svc.wait_for("ns", "svc", timeout=10) == second
        assert trio.current_time() == pytest.approx(2.0)


# -- supervision, telemetry --------------------------------------------------------------------


async def test_registration_events_reach_telemetry(autojump_clock):
    seen: list[tuple[str, str, Any]] = []

    def handler(name: str, measurements: Any, metadata: Any) -> None:
        seen.append((name, metadata["service"], metadata["pid"]))

    async with services_node():
        telemetry.attach(
            "t", ["services.registry.registered", "services.registry.unregistered"], handler
        )
        pid = ft.spawn(idle)
        svc.register("ns", "a", pid)
        await kill(pid)
        await trio.sleep(0.1)
        assert seen == [
            ("services.registry.registered", "a", pid),
            ("services.registry.unregistered", "a", pid),
        ]


async def test_the_registry_tree_is_supervised(autojump_clock):
    async with services_node():
        pid = ft.spawn(idle)
        svc.register("ns", "a", pid)
        listener = ft.whereis(service_registry.SERVER_NAME)
        assert listener is not None
        ft.exit(listener, RuntimeError("crash"))
        await trio.sleep(0.1)
        new_listener = ft.whereis(service_registry.SERVER_NAME)
        assert new_listener is not None and new_listener != listener
        # The table survived its listener's restart, and waiters still wake.
        assert svc.lookup("ns", "a") == pid
        later = ft.spawn(idle)

        async def register_later() -> None:
            await trio.sleep(1)
            svc.register("ns", "b", later)

        ft.spawn(register_later)
        assert await svc.wait_for("ns", "b", timeout=5) == later


async def test_a_restarted_table_starts_empty_and_works(autojump_clock):
    async with services_node():
        pid = ft.spawn(idle)
        svc.register("ns", "a", pid)
        supervisor = "ft.services"
        children = {c.id: c.pid for c in await ft.which_children(supervisor)}
        old_listener = children["listener"]
        assert children["table"] is not None
        ft.exit(children["table"], RuntimeError("table owner crashed"))
        await trio.sleep(0.1)
        children = {c.id: c.pid for c in await ft.which_children(supervisor)}
        # REST_FOR_ONE: the listener after it restarted too; the table was cleared.
        assert children["listener"] != old_listener
        assert svc.lookup("ns", "a") is None
        assert ft.is_alive(pid)
        svc.register("ns", "a", pid)
        assert svc.lookup("ns", "a") == pid


# -- bad input ----------------------------------------------------------------------------------


async def test_bad_arguments_raise_typed_errors_naming_them(autojump_clock):
    async with services_node():
        pid = ft.spawn(idle)
        with pytest.raises(TypeError, match="namespace"):
            svc.register("", "a", pid)
        with pytest.raises(TypeError, match="service"):
            svc.register("ns", 3, pid)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="pid"):
            svc.register("ns", "a", "not-a-pid")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="capabilities"):
            svc.register("ns", "a", pid, capabilities="read")
        with pytest.raises(TypeError, match="capabilities"):
            svc.register("ns", "a", pid, capabilities=("read", ""))
        with pytest.raises(TypeError, match="health_check"):
            svc.register("ns", "a", pid, health_check="ping")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="namespace"):
            svc.lookup(None, "a")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="capability"):
            svc.discover(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="namespace"):
            svc.list_services(7)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="timeout"):
            await svc.health("ns", "a", timeout="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            await svc.wait_for("ns", "a", timeout=-1)
        assert svc.list_services() == []


async def test_outside_a_node_and_without_the_service():
    with pytest.raises(ft.NoNodeError):
        svc.lookup("ns", "a")
    async with open_runtime_node("bare"):
        with pytest.raises(LookupError, match="service registry"):
            svc.lookup("ns", "a")


async def test_registry_register_for_another_pid(autojump_clock):
    """The runtime ``Registry`` accepts ``pid=`` (used by the service registry)."""
    async with open_runtime_node("bare"):
        reg = ft.Registry("unique")
        pid = ft.spawn(idle)
        reg.register("k", 1, pid=pid)
        assert reg.lookup("k") == [(pid, 1)]
        reg.unregister("k", pid=ft.self_pid())  # not the holder: nothing happens
        assert reg.whereis("k") == pid
        reg.unregister("k", pid=pid)
        assert reg.whereis("k") is None
        await kill(pid)
        with pytest.raises(ft.NoProcess):
            reg.register("k", pid=pid)
        with pytest.raises(TypeError, match="pid"):
            reg.register("k", pid="x")  # type: ignore[arg-type]
