"""Protection (``ft.protection``): circuit breakers, rate limiters and resource pools,
composed per key by :func:`execute_protected`.

::

    ft.protection.configure(
        "payments",
        rate_limit={"rate": 50.0, "burst": 10},          # per entity
        breaker={"failure_threshold": 5, "recovery_time": 30.0},
        pool={"factory": connect, "close": disconnect, "size": 4},
        timeout=2.0,
    )
    receipt = await ft.protection.execute_protected(
        "payments", charge, order, entity=customer_id
    )   # runs await charge(connection, order)

A protected call passes, in this order: the **rate limit** (``entity``'s token
bucket; :class:`RateLimited`), the **breaker** (:class:`CircuitOpen`), the **pool**
(a resource is checked out and passed to ``fn`` as its first argument;
:class:`PoolCheckoutTimeout`), then ``fn`` itself, bounded by ``timeout``
(:class:`ProtectedCallTimeout`). Each part is optional. A refusal raises before
anything later runs: a rate-limited call never touches the breaker's counts. What
the breaker counts is described in :mod:`.breaker`: a cancelled call is not a
failure, a refusal (:class:`ProtectionError`) is not a failure, a timeout is one if
it is among the breaker's ``failure_types`` (it is by default).

The primitives are usable on their own, in any trio code: :class:`CircuitBreaker`,
:class:`RateLimiter`, :class:`ResourcePool`. The keyed configuration lives in the
protection service, which ``foundation_trio.open_node`` starts on every node; its
pools are closed when the node stops.

Telemetry events (emitted inside a node; see each module for measurements and
metadata): ``protection.breaker.opened``, ``protection.breaker.half_opened``,
``protection.breaker.closed``, ``protection.breaker.rejected``,
``protection.rate_limit.rejected``, ``protection.pool.checkout_timeout``,
``protection.pool.resource_replaced``, ``protection.call.timed_out``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, TypeVar

import attrs
import trio

from ..._validation import structure_options
from ...runtime.errors import FoundationError
from ...runtime.node import Node
from ...runtime.pid import ExitReason
from ...runtime.process import current_process
from ...runtime.server import GenServer
from ...runtime.spec import ChildSpec
from ._common import ProtectionError, emit
from .breaker import BreakerOptions, BreakerState, CircuitBreaker, CircuitOpen
from .pool import PoolCheckoutTimeout, PoolClosed, PoolOptions, PoolStats, ResourcePool
from .rate_limit import RateLimited, RateLimiter, RateLimitOptions

T = TypeVar("T")

SERVER_NAME = "foundation_trio.services.protection"
"""The registered name of the protection service's process."""


class ProtectedCallTimeout(FoundationError, TimeoutError):
    """The protected function did not finish within the key's ``timeout``; it was
    cancelled. Counted as a failure by the key's breaker (if among its
    ``failure_types``, as with the default)."""

    def __init__(self, key: str, timeout: float) -> None:
        super().__init__(f"protected call {key!r} did not finish within {timeout} s")
        self.key = key
        self.timeout = timeout


class UnknownProtectionKey(FoundationError, LookupError):
    """No protection is configured under the key."""

    def __init__(self, key: object, known: list[str]) -> None:
        super().__init__(
            f"no protection is configured as {key!r}: call ft.protection.configure({key!r}, "
            f"...) first (configured: {', '.join(map(repr, known)) or 'none'})"
        )
        self.key = key


class ProtectionKeyExists(FoundationError, ValueError):
    """:func:`configure` was given a key that is already configured."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"protection {key!r} is already configured; remove it first "
            "(await ft.protection.remove(key))"
        )
        self.key = key


@attrs.frozen
class Protected:
    """The protection configured under ``key``: the live primitives (each may be
    None), for inspection (``.breaker.state``, ``.pool.stats()``, ...)."""

    key: str
    rate_limiter: RateLimiter | None
    breaker: CircuitBreaker | None
    pool: ResourcePool[Any] | None
    timeout: float | None


class Protection:
    """The protection service of one node (a node extension). Use the module functions."""

    def __init__(self) -> None:
        self.entries: dict[str, Protected] = {}

    def get(self, key: object, what: str) -> Protected:
        protected = self.entries.get(key) if isinstance(key, str) else None
        if protected is None:
            _check_key(key, what)
            raise UnknownProtectionKey(key, list(self.entries))
        return protected

    async def close_pools(self) -> None:
        for protected in list(self.entries.values()):
            if protected.pool is not None:
                await protected.pool.aclose()


def _state(what: str) -> Protection:
    node = current_process(what).node
    state = node.find_extension(Protection)
    if state is None:
        # Raises the runtime's LookupError, naming the service and the node.
        return node.extension(Protection, f"the protection service ({what})")
    return state


def _check_key(key: object, what: str) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"{what}: key must be a non-empty str, got {key!r}")
    return key


def _options(cls: type[Any], value: object, argument: str, what: str) -> Any:
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{what}: {argument} must be a mapping of options or a {cls.__name__}, got {value!r}"
        )
    return structure_options(cls, value, f"{what}: {argument}")


def configure(
    key: str,
    *,
    rate_limit: Mapping[str, Any] | RateLimitOptions | None = None,
    breaker: Mapping[str, Any] | BreakerOptions | None = None,
    pool: Mapping[str, Any] | PoolOptions | None = None,
    timeout: float | None = None,
) -> Protected:
    """Configure the protection of ``key`` (a non-empty str) on this node.

    Each of ``rate_limit`` (see :class:`RateLimiter`), ``breaker`` (see
    :class:`CircuitBreaker`) and ``pool`` (see :class:`ResourcePool`) is a mapping of
    that primitive's options or its options record; None leaves it out. ``timeout``
    bounds each protected call (None: no bound). Returns the :class:`Protected`
    record. Raises :class:`~foundation_trio.ConfigError` naming the bad option,
    :class:`TypeError` for a malformed argument, :class:`ProtectionKeyExists` if
    ``key`` is configured already.
    """
    _check_key(key, "protection.configure()")
    what = f"protection.configure({key!r})"
    limit = _options(RateLimitOptions, rate_limit, "rate_limit", what)
    breaker_options = _options(BreakerOptions, breaker, "breaker", what)
    pool_options = _options(PoolOptions, pool, "pool", what)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(
                f"{what}: timeout must be seconds (int or float) or None, got {timeout!r}"
            )
        if not 0 < timeout < math.inf:
            raise ValueError(
                f"{what}: timeout must be a finite number of seconds greater "
                f"than 0, got {timeout!r}"
            )
    state = _state("configure()")
    if key in state.entries:
        raise ProtectionKeyExists(key)
    protected = Protected(
        key,
        None if limit is None else RateLimiter(key, **_fields(limit)),
        None if breaker_options is None else CircuitBreaker(key, **_fields(breaker_options)),
        None if pool_options is None else ResourcePool(key, **_fields(pool_options)),
        None if timeout is None else float(timeout),
    )
    state.entries[key] = protected
    return protected


def _fields(options: Any) -> dict[str, Any]:
    return attrs.asdict(options, recurse=False)


def get(key: str) -> Protected:
    """The :class:`Protected` record of ``key``; :class:`UnknownProtectionKey` if none."""
    return _state("get()").get(key, "protection.get()")


def keys() -> list[str]:
    """The configured keys, in configuration order."""
    return list(_state("keys()").entries)


async def remove(key: str) -> bool:
    """Drop the protection of ``key`` and close its pool (resources in use are closed
    when returned); return whether it was configured."""
    _check_key(key, "protection.remove()")
    protected = _state("remove()").entries.pop(key, None)
    if protected is None:
        await trio.lowlevel.checkpoint()
        return False
    if protected.pool is not None:
        await protected.pool.aclose()
    else:
        await trio.lowlevel.checkpoint()
    return True


async def execute_protected(
    key: str, fn: Callable[..., Awaitable[T]], *args: Any, entity: Hashable = None
) -> T:
    """Run ``await fn(*args)`` (``await fn(resource, *args)`` when ``key`` has a pool)
    under the protection configured as ``key``, and return its result.

    ``entity`` selects the rate limiter's bucket (None: one bucket for all).
    Raises, before ``fn`` runs: :class:`RateLimited`, :class:`CircuitOpen`,
    :class:`PoolCheckoutTimeout`, :class:`PoolClosed`, or what the pool's factory
    raised; then :class:`ProtectedCallTimeout` or whatever ``fn`` raises.
    :class:`UnknownProtectionKey` if ``key`` is not configured.

    Cancellation: the pool resource goes back to the pool, and the breaker counts
    the call as neither a success nor a failure (a half-open trial slot is freed).
    """
    protected = _state("protection.execute_protected()").get(key, "protection.execute_protected()")
    if not callable(fn):
        raise TypeError(
            f"protection.execute_protected(): fn must be an async function, got {fn!r}"
        )
    if protected.rate_limiter is not None:
        protected.rate_limiter.acquire(entity)
    breaker = protected.breaker
    simple = protected.pool is None and protected.timeout is None
    if breaker is None:
        return await (fn(*args) if simple else _run(protected, fn, args))
    ticket = breaker.admit()
    try:
        result = await (fn(*args) if simple else _run(protected, fn, args))
    except BaseException as error:
        breaker.record(ticket, error)
        raise
    breaker.record(ticket, None)
    return result


async def _run(protected: Protected, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    if protected.pool is None:
        return await _bounded(protected, fn, args)
    async with protected.pool.checkout() as resource:
        return await _bounded(protected, fn, (resource, *args))


async def _bounded(
    protected: Protected, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]
) -> T:
    timeout = protected.timeout
    if timeout is None:
        return await fn(*args)
    with trio.move_on_after(timeout):
        return await fn(*args)
    emit("protection.call.timed_out", {"timeout": timeout}, {"key": protected.key})
    raise ProtectedCallTimeout(protected.key, timeout)


class ProtectionServer(GenServer):
    """The protection service's process: it owns the node's keyed pools and closes
    them when it stops."""

    async def init(self, state: Protection) -> None:
        self.state = state

    async def terminate(self, reason: ExitReason) -> None:
        await self.state.close_pools()


async def boot(node: Node) -> None:
    """Boot step: start the protection service on ``node`` (``ft.open_node`` runs it)."""
    state = Protection()
    node.set_extension(Protection, state)
    await node.start_supervisor(
        [ChildSpec("protection", ProtectionServer, args=(state,), name=SERVER_NAME)],
        name="ft.protection",
    )


__all__ = [
    "BreakerOptions",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "PoolCheckoutTimeout",
    "PoolClosed",
    "PoolOptions",
    "PoolStats",
    "Protected",
    "ProtectedCallTimeout",
    "ProtectionError",
    "ProtectionKeyExists",
    "RateLimitOptions",
    "RateLimited",
    "RateLimiter",
    "ResourcePool",
    "UnknownProtectionKey",
    "configure",
    "execute_protected",
    "get",
    "keys",
    "remove",
]
