"""The service registry: processes registered as named services in namespaces.

::

    ft.services.register("storage", "primary", pid, capabilities={"read", "write"},
                         health_check=ping)
    ft.services.lookup("storage", "primary")            # -> pid, or None
    ft.services.discover(capability={"read", "write"})  # -> [ServiceInfo, ...]
    await ft.services.health("storage", "primary", timeout=1.0)   # -> Healthy() ...
    pid = await ft.services.wait_for("storage", "replica", timeout=5.0)

A service is a ``(namespace, service)`` pair of non-empty strings naming one live
process of this node. The table is a unique-key :class:`~foundation_trio.Registry`
keyed by that pair, so an entry leaves the moment its process ends: a dead process is
never returned. Registering, looking up and listing are plain functions that never
wait; ``health`` and ``wait_for`` are async.

The table belongs to a small supervised tree that ``foundation_trio.open_node``
starts on every node (:func:`boot`): the table's owner, then a GenServer that listens
to the table (it wakes ``wait_for`` callers and emits the telemetry events below). If
the owner stops, the table is cleared and closed (``register`` raises
:class:`~foundation_trio.RegistryClosed`) until it runs again.

Telemetry events (see ``ft.telemetry``):

``services.registry.registered`` / ``services.registry.unregistered``
    measurements ``{}``; metadata ``namespace``, ``service``, ``pid``. ``unregistered``
    is also emitted when the process's exit removed the entry.
``services.registry.health_checked``
    measurements ``duration`` (seconds the check took); metadata ``namespace``,
    ``service``, ``pid``, ``status`` (``"healthy"``, ``"unhealthy"``,
    ``"process_dead"``, ``"timed_out"``, ``"check_crashed"``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias, cast

import attrs
import trio

from ..runtime.checks import check_timeout
from ..runtime.errors import AlreadyStarted, FoundationError
from ..runtime.node import Node, current_node
from ..runtime.pid import ExitReason, Pid
from ..runtime.process import Process
from ..runtime.registry import Registry, RegistryEvent
from ..runtime.server import GenServer
from ..runtime.spec import ChildSpec, Strategy
from . import telemetry

logger = logging.getLogger("foundation_trio.services.registry")

SERVER_NAME = "foundation_trio.services.registry"
"""The registered name of the registry's listener GenServer."""


# -- records and errors ----------------------------------------------------------------


@attrs.frozen
class Healthy:
    """The service's process is alive and its health check (if any) passed."""


@attrs.frozen
class Unhealthy:
    """The health check ran and reported a problem, described by ``detail``."""

    detail: str


@attrs.frozen
class ProcessDead:
    """The service's process ended while its health was being checked."""

    pid: Pid
    reason: ExitReason | None


@attrs.frozen
class TimedOut:
    """The health check did not answer within ``timeout`` seconds; it was cancelled."""

    timeout: float


@attrs.frozen
class CheckCrashed:
    """The health check raised ``error`` (or returned something it must not); the
    error was logged and contained."""

    error: BaseException = attrs.field(eq=False)


HealthStatus: TypeAlias = Healthy | Unhealthy | ProcessDead | TimedOut | CheckCrashed
"""What :func:`health` returns."""

HealthCheck: TypeAlias = Callable[[Pid], Awaitable["bool | Healthy | Unhealthy"]]
"""``async def check(pid) -> bool | Healthy | Unhealthy``: ``True``/``Healthy()`` for
healthy, ``False``/``Unhealthy(detail)`` for unhealthy."""


@attrs.frozen
class ServiceInfo:
    """One registered service, as :func:`list_services` and :func:`discover` return it."""

    namespace: str
    service: str
    pid: Pid
    capabilities: frozenset[str]
    health_check: HealthCheck | None = attrs.field(default=None, eq=False, repr=False)


class ServiceAlreadyRegistered(AlreadyStarted):
    """The ``(namespace, service)`` pair is taken; ``pid`` is the process that holds it."""

    def __init__(self, namespace: str, service: str, pid: Pid) -> None:
        FoundationError.__init__(
            self,
            f"service {service!r} in namespace {namespace!r} is already registered to {pid}; "
            "unregister it first or pick another name",
        )
        self.name = (namespace, service)
        self.pid = pid
        self.namespace = namespace
        self.service = service


class ServiceNotFound(FoundationError, LookupError):
    """No live process is registered as the service."""

    def __init__(self, namespace: str, service: str) -> None:
        super().__init__(f"no service {service!r} is registered in namespace {namespace!r}")
        self.namespace = namespace
        self.service = service


class ServiceWaitTimeout(FoundationError, TimeoutError):
    """:func:`wait_for` gave up: the service was not registered within ``timeout``."""

    def __init__(self, namespace: str, service: str, timeout: float) -> None:
        super().__init__(
            f"service {service!r} in namespace {namespace!r} was not registered within {timeout} s"
        )
        self.namespace = namespace
        self.service = service
        self.timeout = timeout


# -- argument checks ----------------------------------------------------------------------


def _name(value: object, argument: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what}: {argument} must be a non-empty str, got {value!r}")
    return value


def _capabilities(value: object, argument: str, what: str) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(
            f"{what}: {argument} must be a collection of non-empty str (a tuple, list or "
            f"set; a lone str is not one), got {value!r}"
        )
    found = frozenset(value)
    for item in found:
        _name(item, f"each of {argument}", what)
    return found


# -- the per-node state ---------------------------------------------------------------------


class ServiceRegistry:
    """The service registry of one node (a node extension). Use the module functions."""

    def __init__(self) -> None:
        self.table = Registry("unique", name="services", listeners=[SERVER_NAME])
        # One event per awaited key, set (and dropped) when the key is registered.
        self.waiters: dict[tuple[str, str], trio.Event] = {}

    def wake(self, key: tuple[str, str]) -> None:
        event = self.waiters.pop(key, None)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        waiters, self.waiters = self.waiters, {}
        for event in waiters.values():
            event.set()

    def info(self, key: tuple[str, str]) -> ServiceInfo | None:
        entries = self.table.lookup(key)
        if not entries:
            return None
        info: ServiceInfo = entries[0][1]
        return info

    def all(self) -> list[ServiceInfo]:
        found: list[ServiceInfo] = []
        for key in self.table.all_keys():
            found.extend(value for _pid, value in self.table.lookup(key))
        return found


def _state(what: str) -> ServiceRegistry:
    return current_node().extension(ServiceRegistry, f"the service registry ({what})")


class ServiceRegistryServer(GenServer):
    """Listens to the table: wakes :func:`wait_for` callers and emits telemetry."""

    async def init(self, state: ServiceRegistry) -> None:
        self.state = state
        # Registrations made while this server was down sent their events to no one.
        state.wake_all()

    async def handle_info(self, message: Any) -> None:
        if not isinstance(message, RegistryEvent):
            await super().handle_info(message)
            return
        key = cast("tuple[str, str]", message.key)
        namespace, service = key
        if message.kind == "register":
            self.state.wake((namespace, service))
        telemetry.execute(
            f"services.registry.{message.kind}ed",
            {},
            {"namespace": namespace, "service": service, "pid": message.pid},
        )


async def boot(node: Node) -> None:
    """Boot step: start the service registry on ``node`` (``ft.open_node`` runs it)."""
    state = ServiceRegistry()
    node.set_extension(ServiceRegistry, state)
    await node.start_supervisor(
        [
            state.table.child_spec("table"),
            ChildSpec("listener", ServiceRegistryServer, args=(state,), name=SERVER_NAME),
        ],
        strategy=Strategy.REST_FOR_ONE,
        name="ft.services",
    )


# -- the API --------------------------------------------------------------------------------


def register(
    namespace: str,
    service: str,
    pid: Pid,
    capabilities: Iterable[str] = (),
    health_check: HealthCheck | None = None,
) -> None:
    """Register the live local process ``pid`` as ``service`` in ``namespace``.

    ``capabilities`` is a collection of non-empty strings that :func:`discover`
    matches; ``health_check`` is an async function of the pid that :func:`health`
    runs (see :data:`HealthCheck`). The entry leaves when the process ends.

    Raises :class:`ServiceAlreadyRegistered` if the pair is taken,
    :class:`~foundation_trio.NoProcess` if ``pid`` is not a live process of this
    node, :class:`TypeError` naming the argument for a malformed one, and
    :class:`~foundation_trio.RegistryClosed` while the registry's tree is down.
    """
    what = "services.register()"
    key = (_name(namespace, "namespace", what), _name(service, "service", what))
    if not isinstance(pid, Pid):
        raise TypeError(f"{what}: pid must be a Pid, got {pid!r}")
    caps = _capabilities(capabilities, "capabilities", what)
    if health_check is not None and not callable(health_check):
        raise TypeError(
            f"{what}: health_check must be an async function of the pid or None, "
            f"got {health_check!r}"
        )
    state = _state(what)
    holder = state.table.whereis(key)
    if holder is not None:
        raise ServiceAlreadyRegistered(namespace, service, holder)
    info = ServiceInfo(namespace, service, pid, caps, health_check)
    state.table.register(key, info, pid=pid)


def unregister(namespace: str, service: str) -> bool:
    """Remove the service, whichever process registered it; return whether it existed."""
    what = "services.unregister()"
    key = (_name(namespace, "namespace", what), _name(service, "service", what))
    state = _state(what)
    holder = state.table.whereis(key)
    if holder is None:
        return False
    state.table.unregister(key, pid=holder)
    return True


def lookup(namespace: str, service: str) -> Pid | None:
    """The pid registered as ``service`` in ``namespace``, or None."""
    what = "services.lookup()"
    key = (_name(namespace, "namespace", what), _name(service, "service", what))
    return _state(what).table.whereis(key)


def info(namespace: str, service: str) -> ServiceInfo | None:
    """The :class:`ServiceInfo` of ``service`` in ``namespace``, or None."""
    what = "services.info()"
    key = (_name(namespace, "namespace", what), _name(service, "service", what))
    return _state(what).info(key)


def list_services(namespace: str | None = None) -> list[ServiceInfo]:
    """The services in ``namespace`` (every namespace if None), in registration order."""
    what = "services.list_services()"
    if namespace is not None:
        _name(namespace, "namespace", what)
    return [i for i in _state(what).all() if namespace is None or i.namespace == namespace]


def discover(
    capability: str | Iterable[str], *, namespace: str | None = None
) -> list[ServiceInfo]:
    """The services that have ``capability``, in registration order.

    ``capability`` is one capability (a str) or a non-empty collection of them;
    with several, a service must have **all** of them (the intersection).
    ``namespace`` restricts the search to one namespace.
    """
    what = "services.discover()"
    wanted = (
        frozenset({_name(capability, "capability", what)})
        if isinstance(capability, str)
        else _capabilities(capability, "capability", what)
    )
    if not wanted:
        raise ValueError(f"{what}: capability must name at least one capability, got none")
    if namespace is not None:
        _name(namespace, "namespace", what)
    return [
        i
        for i in _state(what).all()
        if wanted <= i.capabilities and (namespace is None or i.namespace == namespace)
    ]


def _status_name(status: HealthStatus) -> str:
    return {
        Healthy: "healthy",
        Unhealthy: "unhealthy",
        ProcessDead: "process_dead",
        TimedOut: "timed_out",
        CheckCrashed: "check_crashed",
    }[type(status)]


async def health(namespace: str, service: str, timeout: float | None = 5.0) -> HealthStatus:
    """Check the health of ``service`` in ``namespace``.

    Without a health check, a registered service is :class:`Healthy` (its process
    is alive: dead ones are not registered). With one, the check runs in the
    calling task, bounded by ``timeout`` seconds (None: no bound), and the result
    is :class:`Healthy`, :class:`Unhealthy` (what the check said),
    :class:`ProcessDead` (the process ended during the check, which is then
    cancelled), :class:`TimedOut` (the check was cancelled at the timeout) or
    :class:`CheckCrashed` (it raised, or returned something else than a bool,
    ``Healthy`` or ``Unhealthy``; logged, never raised here).

    Raises :class:`ServiceNotFound` if the service is not registered, and
    :class:`TypeError` / :class:`ValueError` naming a malformed argument.
    Cancellation of the caller cancels the check and propagates.
    """
    what = "services.health()"
    key = (_name(namespace, "namespace", what), _name(service, "service", what))
    seconds = _timeout(timeout, what)
    node = current_node()
    state = _state(what)
    found = state.info(key)
    process = None if found is None else node.lookup(found.pid, name_must_exist=False)
    if found is None or process is None:
        await trio.lowlevel.checkpoint()
        raise ServiceNotFound(namespace, service)
    started = trio.current_time()
    status: HealthStatus
    if found.health_check is None:
        await trio.lowlevel.checkpoint()
        status = Healthy()
    else:
        status = await _run_check(found, process, seconds)
    telemetry.execute(
        "services.registry.health_checked",
        {"duration": trio.current_time() - started},
        {
            "namespace": namespace,
            "service": service,
            "pid": found.pid,
            "status": _status_name(status),
        },
    )
    return status


async def _run_check(found: ServiceInfo, process: Process, seconds: float) -> HealthStatus:
    check = found.health_check
    assert check is not None
    status: HealthStatus = TimedOut(seconds)
    async with trio.open_nursery() as nursery:

        async def watch_exit() -> None:
            await process.wait_exited()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_exit)
        with trio.move_on_after(seconds):
            try:
                result = await check(found.pid)
            except Exception as error:
                logger.warning(
                    "health check of service %r in namespace %r raised",
                    found.service,
                    found.namespace,
                    exc_info=True,
                )
                status = CheckCrashed(error)
            else:
                status = _as_status(found, result)
        nursery.cancel_scope.cancel()
    if not process.alive:
        return ProcessDead(found.pid, process.exit_reason)
    return status


def _as_status(found: ServiceInfo, result: object) -> HealthStatus:
    if result is True:
        return Healthy()
    if result is False:
        return Unhealthy("health check returned False")
    if isinstance(result, Healthy | Unhealthy):
        return result
    error = TypeError(
        f"health check of service {found.service!r} in namespace {found.namespace!r} "
        f"returned {result!r}; it must return a bool, Healthy() or Unhealthy(detail)"
    )
    logger.warning("%s", error)
    return CheckCrashed(error)


def _timeout(timeout: object, what: str) -> float:
    seconds = check_timeout(timeout, what)
    if seconds < 0:
        raise ValueError(f"{what}: timeout must be 0 or more seconds, got {timeout!r}")
    return seconds


async def wait_for(namespace: str, service: str, timeout: float | None = 5.0) -> Pid:
    """Wait until ``service`` in ``namespace`` is registered; return its pid.

    Returns at once if it is. Otherwise the caller sleeps until the registry's
    listener sees the registration (no polling), up to ``timeout`` seconds (None:
    for ever), then raises :class:`ServiceWaitTimeout`. If the registered process
    dies before the caller runs again, the caller keeps waiting for the next one.
    Cancellation propagates and leaves nothing behind.
    """
    what = "services.wait_for()"
    key = (_name(namespace, "namespace", what), _name(service, "service", what))
    seconds = _timeout(timeout, what)
    state = _state(what)
    pid = state.table.whereis(key)
    if pid is not None:
        await trio.lowlevel.checkpoint()
        return pid
    with trio.move_on_after(seconds):
        while pid is None:
            event = state.waiters.get(key)
            if event is None:
                event = state.waiters[key] = trio.Event()
            try:
                await event.wait()
            finally:
                # The last waiter to give up drops the event: nothing is left behind.
                if not event.is_set() and event.statistics().tasks_waiting == 0:
                    state.waiters.pop(key, None)
            pid = state.table.whereis(key)
    if pid is not None:
        return pid
    raise ServiceWaitTimeout(namespace, service, seconds)


__all__ = [
    "SERVER_NAME",
    "CheckCrashed",
    "HealthCheck",
    "HealthStatus",
    "Healthy",
    "ProcessDead",
    "ServiceAlreadyRegistered",
    "ServiceInfo",
    "ServiceNotFound",
    "ServiceRegistry",
    "ServiceWaitTimeout",
    "TimedOut",
    "Unhealthy",
    "boot",
    "discover",
    "health",
    "info",
    "list_services",
    "lookup",
    "register",
    "unregister",
    "wait_for",
]
