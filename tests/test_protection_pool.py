"""The resource pool (issue 3, item 5): fixed size, checkout timeout, health check on
checkout, replacement of broken resources, and cancellation that leaks nothing."""

from __future__ import annotations

import itertools
import logging
import random
from typing import Any

import pytest
import trio
import trio.testing

import foundation_trio as ft
from foundation_trio.services import telemetry

protection = ft.protection


class Conn:
    """A fake connection: numbered, with a health flag, closed at most once."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.healthy = True
        self.closed = False

    def __repr__(self) -> str:
        return f"Conn({self.number})"


class Factory:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.numbers = itertools.count(1)
        self.made: list[Conn] = []
        self.closed: list[Conn] = []

    async def make(self) -> Conn:
        await trio.sleep(self.delay)
        conn = Conn(next(self.numbers))
        self.made.append(conn)
        return conn

    async def close(self, conn: Conn) -> None:
        assert not conn.closed, f"{conn} closed twice"
        conn.closed = True
        self.closed.append(conn)

    async def check(self, conn: Conn) -> bool:
        await trio.sleep(0.01)
        return conn.healthy


def make_pool(factory: Factory, **options: Any) -> protection.ResourcePool[Conn]:
    options.setdefault("close", factory.close)
    return protection.ResourcePool("db", factory=factory.make, **options)


def assert_nothing_leaked(pool: protection.ResourcePool[Any], factory: Factory) -> None:
    stats = pool.stats()
    assert stats.in_use == 0
    assert stats.waiting == 0
    open_conns = [c for c in factory.made if not c.closed]
    assert stats.idle == len(open_conns)
    assert stats.created == len(factory.made)
    assert len(open_conns) <= stats.size


async def test_a_cancelled_pool_checkout_leaks_nothing(autojump_clock):
    factory = Factory()
    pool = make_pool(factory, size=1, checkout_timeout=None)
    holder_has_it = trio.Event()
    release = trio.Event()

    async def holder() -> None:
        async with pool.checkout() as conn:
            assert conn.number == 1
            holder_has_it.set()
            await release.wait()

    waiter_scope = trio.CancelScope()

    async def waiter() -> None:
        with waiter_scope:
            async with pool.checkout():
                raise AssertionError("the only resource is held")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await holder_has_it.wait()
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.stats().waiting == 1
        waiter_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert pool.stats().waiting == 0
        assert waiter_scope.cancelled_caught
        release.set()
    assert_nothing_leaked(pool, factory)
    # The one resource is free: a new checkout gets it at once, without the factory.
    async with pool.checkout(timeout=0) as conn:
        assert conn.number == 1
    assert len(factory.made) == 1


async def test_a_cancelled_call_holding_a_resource_returns_it(autojump_clock):
    factory = Factory()
    pool = make_pool(factory, size=2)
    with trio.move_on_after(1):
        async with pool.checkout() as conn:
            assert pool.stats().in_use == 1
            await trio.sleep_forever()
    assert_nothing_leaked(pool, factory)
    assert pool.stats().idle == 1
    assert not conn.closed
    async with pool.checkout() as again:
        assert again is conn


async def test_a_checkout_cancelled_in_the_factory_or_health_check_holds_nothing(
    autojump_clock,
):
    factory = Factory(delay=5.0)
    pool = make_pool(factory, size=1, health_check=factory.check, checkout_timeout=None)
    with trio.move_on_after(1):
        async with pool.checkout():
            raise AssertionError("the factory takes 5 s")
    assert pool.stats().in_use == 0
    assert factory.made == []
    async with pool.checkout() as conn:
        pass
    # Cancelled during the health check: the resource goes back unchecked.
    with trio.move_on_after(0.005):
        async with pool.checkout():
            raise AssertionError("the health check takes 10 ms")
    assert_nothing_leaked(pool, factory)
    assert pool.stats().idle == 1
    async with pool.checkout() as again:
        assert again is conn


async def test_checkout_times_out_with_a_typed_error(autojump_clock):
    events = []
    async with ft.open_node("pool"):
        telemetry.attach(
            "t", ["protection.pool.checkout_timeout"], lambda n, m, md: events.append(dict(m))
        )
        factory = Factory()
        pool = make_pool(factory, size=1, checkout_timeout=2.0)
        async with pool.checkout():
            start = trio.current_time()
            with pytest.raises(protection.PoolCheckoutTimeout) as caught:
                async with pool.checkout():
                    raise AssertionError("the only resource is in use")
            assert trio.current_time() - start == pytest.approx(2.0)
            assert caught.value.timeout == 2.0
            assert isinstance(caught.value, TimeoutError)
            with pytest.raises(protection.PoolCheckoutTimeout):
                async with pool.checkout(timeout=0.5):
                    pass
        assert pool.stats().checkout_timeouts == 2
        assert events == [{"timeout": 2.0}, {"timeout": 0.5}]
        assert_nothing_leaked(pool, factory)


async def test_unhealthy_resources_are_replaced_on_checkout(autojump_clock, caplog):
    factory = Factory()
    calls = []

    async def check(conn: Conn) -> bool:
        calls.append(conn.number)
        if conn.number == 2:
            raise ConnectionResetError("probe failed")
        return conn.healthy

    pool = make_pool(factory, size=2, health_check=check)
    async with pool.checkout() as first:
        pass
    first.healthy = False
    async with pool.checkout() as second:
        assert second.number == 2  # the unhealthy one was closed and replaced
    assert first.closed
    with caplog.at_level(logging.WARNING, "foundation_trio.services.protection"):
        async with pool.checkout() as third:
            assert third.number == 3  # a crashing check counts as unhealthy
    assert "probe failed" in caplog.text
    assert calls == [1, 2]
    assert pool.stats().replaced == 2
    assert_nothing_leaked(pool, factory)


async def test_discard_on_and_mark_broken_close_the_resource(autojump_clock):
    factory = Factory()
    pool = make_pool(factory, size=1, discard_on=ConnectionError)
    with pytest.raises(ConnectionResetError):
        async with pool.checkout() as conn:
            raise ConnectionResetError("peer went away")
    assert conn.closed
    with pytest.raises(KeyError):
        async with pool.checkout() as kept:
            raise KeyError("not a connection problem")
    assert not kept.closed
    async with pool.checkout() as marked:
        pool.mark_broken(marked)
    assert marked.closed
    with pytest.raises(ValueError, match="not checked out"):
        pool.mark_broken(marked)
    assert pool.stats().replaced == 2
    assert_nothing_leaked(pool, factory)


async def test_close_is_shielded_and_bounded(autojump_clock, caplog):
    hanging = []

    async def hang(conn: Conn) -> None:
        hanging.append(conn)
        await trio.sleep_forever()

    factory = Factory()
    pool = protection.ResourcePool("db", factory=factory.make, close=hang, close_timeout=3.0)
    start = trio.current_time()
    with caplog.at_level(logging.WARNING, "foundation_trio.services.protection"):
        with trio.move_on_after(1):
            async with pool.checkout() as conn:
                pool.mark_broken(conn)
                await trio.sleep_forever()
    # Cancelled at 1 s, the close still ran (shielded) and was cut off 3 s later.
    assert hanging == [conn]
    assert trio.current_time() - start == pytest.approx(4.0)
    assert "took more than 3.0 s" in caplog.text
    assert pool.stats().in_use == 0


async def test_waiters_are_served_in_order(autojump_clock):
    factory = Factory()
    pool = make_pool(factory, size=1, checkout_timeout=None)
    order = []

    async def user(name: str) -> None:
        async with pool.checkout():
            order.append(name)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for name in "abcd":
            nursery.start_soon(user, name)
            await trio.testing.wait_all_tasks_blocked()
    assert order == list("abcd")
    assert len(factory.made) == 1


async def test_aclose_closes_idle_now_and_in_use_on_return(autojump_clock):
    factory = Factory()
    async with make_pool(factory, size=2) as pool:
        async with pool.checkout() as a, pool.checkout() as b:
            pass
        async with pool.checkout() as held:
            await pool.aclose()
            assert pool.closed
            assert [c.closed for c in (a, b)].count(True) == 1  # the idle one
            with pytest.raises(protection.PoolClosed):
                async with pool.checkout():
                    pass
        assert held.closed
    assert all(c.closed for c in factory.made)
    assert pool.stats().in_use == 0


async def test_random_cancellations_leak_nothing(autojump_clock):
    """Many users with random hold times, some cancelled while waiting, some while
    holding, some timing out: afterwards every resource is idle or closed."""
    rng = random.Random(1234)
    factory = Factory(delay=0.05)
    pool = make_pool(
        factory,
        size=3,
        health_check=factory.check,
        checkout_timeout=0.5,
        discard_on=ConnectionError,
    )
    outcomes = {"ok": 0, "timeout": 0, "cancelled": 0, "broken": 0}

    async def user(hold: float, cancel_after: float, breaks: bool) -> None:
        with trio.move_on_after(cancel_after) as scope:
            try:
                async with pool.checkout() as conn:
                    assert not conn.closed
                    await trio.sleep(hold)
                    if breaks:
                        raise ConnectionError("dropped")
                    conn.healthy = rng.random() > 0.2
            except protection.PoolCheckoutTimeout:
                outcomes["timeout"] += 1
                return
            except ConnectionError:
                outcomes["broken"] += 1
                return
            outcomes["ok"] += 1
        if scope.cancelled_caught:
            outcomes["cancelled"] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(300):
            nursery.start_soon(user, rng.uniform(0, 0.3), rng.uniform(0, 1.0), rng.random() < 0.1)
            await trio.sleep(rng.uniform(0, 0.05))
            stats = pool.stats()
            assert stats.in_use + stats.idle <= stats.size
    assert all(outcomes.values()), outcomes
    assert_nothing_leaked(pool, factory)
    await pool.aclose()
    assert all(c.closed for c in factory.made)


def test_bad_options_raise_config_errors_naming_them():
    async def make() -> None:
        return None

    for options, name in [
        ({}, "factory"),
        ({"factory": 1}, "factory"),
        ({"factory": make, "size": 0}, "size"),
        ({"factory": make, "size": 2.0}, "size"),
        ({"factory": make, "close": "x"}, "close"),
        ({"factory": make, "health_check": 3}, "health_check"),
        ({"factory": make, "checkout_timeout": -1.0}, "checkout_timeout"),
        ({"factory": make, "close_timeout": float("nan")}, "close_timeout"),
        ({"factory": make, "discard_on": ("OSError",)}, "discard_on"),
    ]:
        with pytest.raises(ft.ConfigError, match=name):
            protection.ResourcePool("db", **options)


async def test_bad_checkout_timeout_is_refused_before_waiting():
    factory = Factory()
    pool = make_pool(factory)
    with pytest.raises(TypeError, match="timeout"):
        async with pool.checkout(timeout="1"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="timeout"):
        async with pool.checkout(timeout=-1):
            pass
    assert pool.stats().in_use == 0
