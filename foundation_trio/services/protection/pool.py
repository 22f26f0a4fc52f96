"""The resource pool: a fixed number of reusable resources (connections, clients).

::

    pool = ResourcePool("db", factory=connect, close=disconnect, size=4,
                        health_check=ping, checkout_timeout=2.0)
    async with pool.checkout() as conn:
        await conn.execute(...)
    await pool.aclose()

At most ``size`` resources exist at once. They are made on demand by ``await
factory()``; a returned resource goes back to the pool (the most recently returned
is handed out first, so idle ones stay warm). ``health_check(resource)``, if given,
runs on every checkout of an idle resource: one that fails it (returns a false
value or raises; the error is logged) is closed and replaced by a new one. A
resource is also closed instead of reused when the block that held it raised one
of ``discard_on``, or after :meth:`ResourcePool.mark_broken`. ``close(resource)``
(optional) runs shielded from cancellation, for at most ``close_timeout`` seconds;
an error in it is logged.

Waiting checkouts are served first come, first served. A checkout that gets no
resource within ``checkout_timeout`` seconds (the wait, the health checks and the
factory all count) raises :class:`PoolCheckoutTimeout`.

Cancellation never leaks a resource: a checkout cancelled while it waits takes
nothing; one cancelled in the factory holds nothing (what the factory made is the
factory's to clean up); one cancelled in the health check puts the resource back
unchecked; a block cancelled while holding a resource returns it on the way out.

Telemetry (metadata ``pool``: the name): ``protection.pool.checkout_timeout``
(measurements ``timeout``), ``protection.pool.resource_replaced`` (metadata
``reason``: ``"health_check"``, ``"discarded"``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

import attrs
import trio

from ..._validation import structure_options
from ...runtime.checks import check_timeout
from ._common import (
    ProtectionError,
    as_tuple,
    async_function,
    check_name,
    emit,
    exception_types,
    non_negative_finite,
    optional_async_function,
    optional_seconds,
    positive_int,
)

logger = logging.getLogger("foundation_trio.services.protection")

R = TypeVar("R")

_DEFAULT: Any = object()


@attrs.frozen(kw_only=True)
class PoolOptions:
    """Options of a :class:`ResourcePool`, validated on construction."""

    factory: Any = attrs.field(validator=async_function)
    """``async def factory() -> resource``; its errors reach the checkout."""

    size: int = attrs.field(default=10, validator=positive_int)
    """The most resources that exist at once."""

    close: Any = attrs.field(default=None, validator=optional_async_function)
    """``async def close(resource)``, run when a resource is dropped."""

    health_check: Any = attrs.field(default=None, validator=optional_async_function)
    """``async def check(resource) -> bool``, run when an idle resource is checked out."""

    checkout_timeout: float | None = attrs.field(default=5.0, validator=optional_seconds)
    """Seconds a checkout may take; None waits for ever."""

    close_timeout: float = attrs.field(default=5.0, validator=non_negative_finite)
    """Seconds one ``close`` may take (shielded from cancellation) before it is cut off."""

    discard_on: Any = attrs.field(default=(), converter=as_tuple, validator=exception_types)
    """Exceptions that, raised by the block holding a resource, get it closed."""


@attrs.frozen
class PoolStats:
    """A snapshot of a pool's counts."""

    size: int
    idle: int
    in_use: int
    waiting: int
    created: int
    closed: int
    replaced: int
    checkout_timeouts: int


class PoolCheckoutTimeout(ProtectionError, TimeoutError):
    """No resource could be checked out within ``timeout`` seconds."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(
            f"pool {name!r} had no resource to check out within {timeout} s "
            "(all in use, or the factory or health check was slow)"
        )
        self.name = name
        self.timeout = timeout


class PoolClosed(ProtectionError):
    """The pool was closed; it hands out nothing more."""

    def __init__(self, name: str) -> None:
        super().__init__(f"pool {name!r} is closed")
        self.name = name


class ResourcePool(Generic[R]):
    """A pool of at most ``size`` resources made by ``factory``, named ``name``.

    Options (see :class:`PoolOptions`; a bad or missing one raises
    :class:`~foundation_trio.ConfigError` naming it): ``factory`` (required),
    ``size`` (10), ``close``, ``health_check``, ``checkout_timeout`` (5.0 s),
    ``close_timeout`` (5.0 s), ``discard_on`` (``()``).

    ``async with pool:`` closes it on the way out, like :meth:`aclose`.
    """

    def __init__(self, name: str = "pool", **options: Any) -> None:
        self.name = check_name(name, "ResourcePool()")
        self.options = structure_options(PoolOptions, options, f"ResourcePool({name!r})")
        self._slots = trio.Semaphore(self.options.size)
        self._idle: deque[R] = deque()
        self._in_use: dict[int, R] = {}
        self._broken: set[int] = set()
        self._closed = False
        self._created = 0
        self._closed_count = 0
        self._replaced = 0
        self._timeouts = 0

    def __repr__(self) -> str:
        return (
            f"<ResourcePool {self.name!r} size={self.options.size} idle={len(self._idle)} "
            f"in_use={len(self._in_use)}>"
        )

    async def __aenter__(self) -> ResourcePool[R]:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> PoolStats:
        """The pool's counts now."""
        return PoolStats(
            size=self.options.size,
            idle=len(self._idle),
            in_use=len(self._in_use),
            waiting=self._slots.statistics().tasks_waiting,
            created=self._created,
            closed=self._closed_count,
            replaced=self._replaced,
            checkout_timeouts=self._timeouts,
        )

    # -- checkout ----------------------------------------------------------------------

    def checkout(self, timeout: float | None = _DEFAULT) -> _Checkout[R]:
        """``async with pool.checkout() as resource:`` checks a resource out for the
        block and returns it after.

        ``timeout`` overrides the pool's ``checkout_timeout`` (None: wait for ever);
        a malformed one raises :class:`TypeError` / :class:`ValueError` here.
        Entering raises :class:`PoolCheckoutTimeout`, :class:`PoolClosed`, or what
        ``factory`` raised. See the module doc for cancellation.
        """
        return _Checkout(self, self._checkout_seconds(timeout))

    def mark_broken(self, resource: R) -> None:
        """Close ``resource`` when it is returned instead of reusing it.

        Raises :class:`ValueError` if it is not checked out of this pool.
        """
        if id(resource) not in self._in_use:
            raise ValueError(
                f"ResourcePool.mark_broken(): resource {resource!r} is not checked out "
                f"of pool {self.name!r}"
            )
        self._broken.add(id(resource))

    def _checkout_seconds(self, timeout: object) -> float:
        if timeout is _DEFAULT:
            timeout = self.options.checkout_timeout
        seconds = check_timeout(timeout, "ResourcePool.checkout()")
        if seconds < 0:
            raise ValueError(
                f"ResourcePool.checkout(): timeout must be 0 or more seconds, got {timeout!r}"
            )
        return seconds

    async def _acquire(self, seconds: float) -> R:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise PoolClosed(self.name)
        try:
            # A free slot is taken without waiting, so that timeout=0 means "only
            # if one is free now".
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            return await self._acquire_slowly(seconds, have_slot=False)
        if not self._idle or self.options.health_check is not None:
            return await self._acquire_slowly(seconds, have_slot=True)
        # The fast path: a free slot, an idle resource, nothing to check.
        resource = self._idle.pop()
        self._in_use[id(resource)] = resource
        # A schedule point that cannot be cancelled: the resource is the caller's now.
        await trio.lowlevel.cancel_shielded_checkpoint()
        return resource

    async def _acquire_slowly(self, seconds: float, have_slot: bool) -> R:
        got = False
        resource: R
        with trio.move_on_after(seconds):
            if not have_slot:
                await self._slots.acquire()
            try:
                if self._closed:
                    raise PoolClosed(self.name)
                resource = await self._take()
                got = True
            finally:
                if not got:
                    self._slots.release()
        if not got:
            self._timeouts += 1
            emit("protection.pool.checkout_timeout", {"timeout": seconds}, {"pool": self.name})
            raise PoolCheckoutTimeout(self.name, seconds)
        self._in_use[id(resource)] = resource
        # A schedule point that cannot be cancelled: the resource is the caller's now.
        await trio.lowlevel.cancel_shielded_checkpoint()
        return resource

    async def _take(self) -> R:
        """An idle resource that passes the health check, or a new one. The caller
        holds a slot."""
        check = self.options.health_check
        while self._idle:
            resource = self._idle.pop()
            if check is None:
                # No checkpoint here: a cancellation now would drop the resource.
                return resource
            checked = False
            try:
                healthy = await self._healthy(check, resource)
                checked = True
            finally:
                if not checked:
                    self._idle.append(resource)
            if healthy:
                return resource
            self._replaced += 1
            emit(
                "protection.pool.resource_replaced",
                {},
                {"pool": self.name, "reason": "health_check"},
            )
            await self._close(resource)
        resource = await self.options.factory()
        self._created += 1
        return resource

    async def _healthy(self, check: Callable[[Any], Awaitable[object]], resource: R) -> bool:
        try:
            return bool(await check(resource))
        except Exception:
            logger.warning(
                "health check of a resource of pool %r raised; the resource is replaced",
                self.name,
                exc_info=True,
            )
            return False

    async def _release(self, resource: R) -> None:
        key = id(resource)
        del self._in_use[key]
        broken = key in self._broken
        self._broken.discard(key)
        if self._closed or broken:
            self._slots.release()
            if broken and not self._closed:
                self._replaced += 1
                emit(
                    "protection.pool.resource_replaced",
                    {},
                    {"pool": self.name, "reason": "discarded"},
                )
            await self._close(resource)
            return
        self._idle.append(resource)
        self._slots.release()

    async def _close(self, resource: R) -> None:
        self._closed_count += 1
        close = self.options.close
        if close is None:
            return
        with trio.move_on_after(self.options.close_timeout, shield=True) as scope:
            try:
                await close(resource)
            except Exception:
                logger.warning("closing a resource of pool %r raised", self.name, exc_info=True)
        if scope.cancelled_caught:
            logger.warning(
                "closing a resource of pool %r took more than %s s; abandoned",
                self.name,
                self.options.close_timeout,
            )

    async def aclose(self) -> None:
        """Close the pool: idle resources are closed now, those in use when they are
        returned; checkouts then raise :class:`PoolClosed`. Idempotent."""
        self._closed = True
        while self._idle:
            await self._close(self._idle.pop())
        await trio.lowlevel.checkpoint()


class _Checkout(Generic[R]):
    """What :meth:`ResourcePool.checkout` returns: an async context manager."""

    __slots__ = ("_pool", "_resource", "_seconds")

    def __init__(self, pool: ResourcePool[R], seconds: float) -> None:
        self._pool = pool
        self._seconds = seconds

    async def __aenter__(self) -> R:
        self._resource = await self._pool._acquire(self._seconds)
        return self._resource

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pool = self._pool
        resource = self._resource
        del self._resource
        if error is not None and isinstance(error, pool.options.discard_on):
            pool._broken.add(id(resource))
        await pool._release(resource)


__all__ = [
    "PoolCheckoutTimeout",
    "PoolClosed",
    "PoolOptions",
    "PoolStats",
    "ResourcePool",
]
