"""The protection service (issue 3, item 5): ``configure`` and ``execute_protected``
composing rate limit, breaker and pool in that order; cancellation; bad input."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import foundation_trio as ft
from foundation_trio.runtime.node import open_node as open_runtime_node

protection = ft.protection


class Conn:
    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False


def connection_factory(made: list[Conn]) -> tuple[Any, Any]:
    async def connect() -> Conn:
        await trio.lowlevel.checkpoint()
        made.append(Conn(len(made) + 1))
        return made[-1]

    async def disconnect(conn: Conn) -> None:
        conn.closed = True

    return connect, disconnect


async def echo(conn: Conn, value: object) -> tuple[int, object]:
    await trio.sleep(0.1)
    return conn.number, value


async def test_execute_protected_passes_the_pool_resource_and_returns_the_result(
    autojump_clock,
):
    made: list[Conn] = []
    connect, disconnect = connection_factory(made)
    async with ft.open_node("p"):
        protected = protection.configure(
            "db",
            rate_limit={"rate": 10.0, "burst": 5},
            breaker={"failure_threshold": 2, "recovery_time": 5.0},
            pool={"factory": connect, "close": disconnect, "size": 2},
        )
        assert protection.get("db") is protected
        assert protection.keys() == ["db"]
        assert await protection.execute_protected("db", echo, "hi") == (1, "hi")
        assert await protection.execute_protected("db", echo, "again") == (1, "again")
        assert protected.pool is not None
        assert protected.pool.stats().idle == 1
    # Stopping the node closed the pool's resources.
    assert made and all(conn.closed for conn in made)


async def test_the_order_is_rate_limit_then_breaker_then_pool(autojump_clock):
    made: list[Conn] = []
    connect, _ = connection_factory(made)
    async with ft.open_node("p"):
        protected = protection.configure(
            "svc",
            rate_limit={"rate": 1.0, "burst": 1},
            breaker={"failure_threshold": 1, "recovery_time": 60.0},
            pool={"factory": connect, "size": 1},
        )
        assert protected.breaker is not None

        async def failing(conn: Conn) -> None:
            raise ConnectionError("down")

        with pytest.raises(ConnectionError):
            await protection.execute_protected("svc", failing)
        assert protected.breaker.state is protection.BreakerState.OPEN
        # Both would refuse; the rate limit is asked first.
        with pytest.raises(protection.RateLimited):
            await protection.execute_protected("svc", failing)
        await trio.sleep(1)
        # A token is there now: the breaker refuses, before the pool is touched.
        with pytest.raises(protection.CircuitOpen):
            await protection.execute_protected("svc", failing)
        assert len(made) == 1
        # Per-entity buckets: another entity is not limited by the first.
        with pytest.raises(protection.CircuitOpen):
            await protection.execute_protected("svc", failing, entity="other")


async def test_timeouts_count_as_failures_and_pool_timeouts_do_not(autojump_clock):
    made: list[Conn] = []
    connect, _ = connection_factory(made)
    timed_out: list[tuple[Any, Any]] = []
    async with ft.open_node("p"):
        ft.telemetry.attach(
            "t",
            ["protection.call.timed_out"],
            lambda name, m, md: timed_out.append((dict(m), md["key"])),
        )
        protected = protection.configure(
            "slow",
            breaker={"failure_threshold": 2, "recovery_time": 60.0},
            pool={"factory": connect, "size": 1, "checkout_timeout": 0.5},
            timeout=2.0,
        )
        breaker = protected.breaker
        assert breaker is not None

        async def hang(conn: Conn) -> None:
            await trio.sleep_forever()

        start = trio.current_time()
        with pytest.raises(protection.ProtectedCallTimeout) as caught:
            await protection.execute_protected("slow", hang)
        assert caught.value.timeout == 2.0
        assert trio.current_time() - start == pytest.approx(2.0)
        assert breaker.failures == 1
        assert timed_out == [({"timeout": 2.0}, "slow")]

        async with trio.open_nursery() as nursery:

            async def hold() -> None:
                with pytest.raises(protection.ProtectedCallTimeout):
                    await protection.execute_protected("slow", hang)

            nursery.start_soon(hold)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                with pytest.raises(protection.PoolCheckoutTimeout):
                    await protection.execute_protected("slow", hang)
            assert breaker.failures == 1  # pool timeouts are not the service's failure
        assert breaker.state is protection.BreakerState.OPEN  # the second timeout


async def test_a_cancelled_protected_call_returns_its_resource_and_frees_its_trial(
    autojump_clock,
):
    made: list[Conn] = []
    connect, _ = connection_factory(made)
    async with ft.open_node("p"):
        protected = protection.configure(
            "svc",
            breaker={"failure_threshold": 1, "recovery_time": 1.0},
            pool={"factory": connect, "size": 1},
        )
        breaker, pool = protected.breaker, protected.pool
        assert breaker is not None and pool is not None

        async def fail(conn: Conn) -> None:
            raise ConnectionError("down")

        async def hang(conn: Conn) -> None:
            await trio.sleep_forever()

        with pytest.raises(ConnectionError):
            await protection.execute_protected("svc", fail)
        await trio.sleep(1)
        assert breaker.state is protection.BreakerState.HALF_OPEN
        with trio.move_on_after(1):
            await protection.execute_protected("svc", hang)  # the trial, cancelled
        stats = pool.stats()
        assert (stats.in_use, stats.idle, stats.waiting) == (0, 1, 0)
        # Not a failure, and the trial slot is free again: the next call is let through.
        assert breaker.state is protection.BreakerState.HALF_OPEN
        assert await protection.execute_protected("svc", echo, 1) == (1, 1)
        assert breaker.state is protection.BreakerState.CLOSED


async def test_factory_errors_count_as_failures(autojump_clock):
    attempts = []

    async def refuse() -> Conn:
        attempts.append(trio.current_time())
        raise ConnectionRefusedError("db is down")

    async with ft.open_node("p"):
        protected = protection.configure(
            "db",
            breaker={"failure_threshold": 2, "recovery_time": 30.0},
            pool={"factory": refuse, "size": 1},
        )
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError):
                await protection.execute_protected("db", echo, 0)
        assert protected.breaker is not None
        assert protected.breaker.state is protection.BreakerState.OPEN
        with pytest.raises(protection.CircuitOpen):
            await protection.execute_protected("db", echo, 0)
        assert len(attempts) == 2  # the open breaker spared the factory
        assert protected.pool is not None
        assert protected.pool.stats().in_use == 0


async def test_a_key_without_parts_just_runs_the_function(autojump_clock):
    async with ft.open_node("p"):
        protection.configure("plain")

        async def add(a: int, b: int) -> int:
            await trio.lowlevel.checkpoint()
            return a + b

        assert await protection.execute_protected("plain", add, 2, 3) == 5


async def test_remove_closes_the_pool(autojump_clock):
    made: list[Conn] = []
    connect, disconnect = connection_factory(made)
    async with ft.open_node("p"):
        protection.configure("db", pool={"factory": connect, "close": disconnect})
        await protection.execute_protected("db", echo, 0)
        assert await protection.remove("db") is True
        assert made[0].closed
        assert await protection.remove("db") is False
        with pytest.raises(protection.UnknownProtectionKey):
            await protection.execute_protected("db", echo, 0)
        protection.configure("db")  # the key is free again


async def test_configure_validates_every_option_and_names_it(autojump_clock):
    async def connect() -> None:
        return None

    async with ft.open_node("p"):
        bad: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"rate_limit": {"rate": -1.0, "burst": 1}}, ft.ConfigError, "rate_limit"),
            ({"rate_limit": {"burst": 1}}, ft.ConfigError, "rate"),
            ({"breaker": {"failure_threshold": "3"}}, ft.ConfigError, "failure_threshold"),
            ({"breaker": {"threshold": 3}}, ft.ConfigError, "threshold"),
            ({"pool": {"size": 2}}, ft.ConfigError, "factory"),
            ({"pool": {"factory": connect, "size": -2}}, ft.ConfigError, "size"),
            ({"breaker": [("failure_threshold", 3)]}, TypeError, "breaker"),
            ({"timeout": "2"}, TypeError, "timeout"),
            ({"timeout": 0}, ValueError, "timeout"),
        ]
        for options, kind, name in bad:
            with pytest.raises(kind, match=name):
                protection.configure("k", **options)
            assert protection.keys() == []
        with pytest.raises(TypeError, match="key"):
            protection.configure("")
        # Options records are accepted as well as mappings.
        protection.configure("k", breaker=protection.BreakerOptions(failure_threshold=9))
        assert protection.get("k").breaker is not None
        with pytest.raises(protection.ProtectionKeyExists):
            protection.configure("k")
        with pytest.raises(protection.UnknownProtectionKey, match="'k'"):
            protection.get("missing")
        with pytest.raises(TypeError, match="fn"):
            await protection.execute_protected("k", "not a function")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="key"):
            await protection.execute_protected(3, echo)  # type: ignore[arg-type]


async def test_outside_a_node_and_without_the_service():
    with pytest.raises(ft.NoNodeError):
        protection.keys()
    async with open_runtime_node("bare"):
        with pytest.raises(LookupError, match="protection service"):
            protection.configure("k")
