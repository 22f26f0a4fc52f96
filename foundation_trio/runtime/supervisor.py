"""Supervisors: start children in order, restart them per strategy and intensity,
stop them in reverse order.

A supervisor is a :class:`GenServer` that traps exits and is linked to each child.
Its children run in its own nursery, so they never outlive it. Every point of
OTP's supervisor semantics holds (see ``docs/runtime.md``): one restart-intensity
window per supervisor, temporary children never restarted (not even as
collateral), significant children and auto-shutdown, and giving up by stopping
all children and exiting with ``Shutdown("reached_max_restart_intensity")``,
which the parent handles like any child exit.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable, Mapping
from typing import Any

import attrs
import outcome
import trio

from .context import request_context
from .errors import (
    ChildRunning,
    InvalidChildSpec,
    NoProcess,
    NoSuchChild,
    StartError,
    SupervisorError,
)
from .events import ChildExited, ChildRestarted, ChildStarted, LifecycleEvent, SupervisorGaveUp
from .pid import KILLED, SHUTDOWN, Exit, ExitReason, Pid, Shutdown, is_orderly
from .process import (
    Body,
    Process,
    StartGate,
    Target,
    current_process,
    function_body,
    link_processes,
    run_process,
    trap_exits,
)
from .server import INFINITY, Caller, GenServer, call, server_body
from .spec import (
    AutoShutdown,
    CheckedChild,
    ChildKind,
    ChildSpec,
    ChildType,
    DynamicSupervisorSpec,
    Restart,
    Strategy,
    SupervisorSpec,
    _BrutalKill,
    check_child,
    check_supervisor,
)

logger = logging.getLogger("foundation_trio.supervisor")

GAVE_UP = Shutdown("reached_max_restart_intensity")
"""The exit reason of a supervisor that exceeded its restart intensity."""


@attrs.frozen
class ChildInfo:
    """One row of :func:`which_children`: ``pid`` is None when the child is not running."""

    id: Hashable
    pid: Pid | None
    type: ChildType
    restart: Restart


@attrs.frozen
class ChildCount:
    """The answer of :func:`count_children`."""

    specs: int
    active: int
    supervisors: int
    workers: int


class _Child:
    """A supervisor's record of one child: its checked spec and current process."""

    __slots__ = ("checked", "process")

    def __init__(self, checked: CheckedChild) -> None:
        self.checked = checked
        self.process: Process | None = None

    @property
    def id(self) -> Hashable:
        return self.checked.spec.id

    def info(self) -> ChildInfo:
        pid = self.process.pid if self.process is not None else None
        return ChildInfo(self.id, pid, self.checked.type, self.checked.restart)


def child_body(checked: CheckedChild) -> Body:
    spec = checked.spec
    kwargs = dict(spec.kwargs or {})
    if checked.kind is ChildKind.SERVER:
        return server_body(spec.start, spec.args, kwargs)
    if checked.kind is ChildKind.SUPERVISOR:
        return server_body(Supervisor, (spec.start,), {})
    if checked.kind is ChildKind.DYNAMIC_SUPERVISOR:
        from .dynamic import DynamicSupervisor

        return server_body(DynamicSupervisor, (spec.start,), {})
    if kwargs:
        fn = spec.start

        async def with_kwargs(*args: Any, **extra: Any) -> object:
            return await fn(*args, **kwargs, **extra)

        with_kwargs.__signature__ = _signature_of(fn)  # type: ignore[attr-defined]
        return function_body(with_kwargs, spec.args)
    return function_body(spec.start, spec.args)


def _signature_of(fn: Any) -> Any:
    import inspect

    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return inspect.Signature()


def _should_restart(restart: Restart, reason: ExitReason) -> bool:
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return not is_orderly(reason)
    return False


# -- management requests (private messages to supervisors) -------------------------


@attrs.frozen
class _WhichChildren:
    pass


@attrs.frozen
class _CountChildren:
    pass


@attrs.frozen
class _StartChild:
    spec: ChildSpec


@attrs.frozen
class _TerminateChild:
    target: object


@attrs.frozen
class _RestartChild:
    id: Hashable


@attrs.frozen
class _DeleteChild:
    id: Hashable


@attrs.frozen
class _Failed:
    """A management call failed; the caller re-raises ``error`` in its own task."""

    error: BaseException


_Request = (
    _WhichChildren | _CountChildren | _StartChild | _TerminateChild | _RestartChild | _DeleteChild
)


class _SupervisorBase(GenServer):
    """What both supervisors share: the children's nursery, starting and stopping a
    child, the restart-intensity window, and management calls."""

    _nursery: trio.Nursery
    _own_context: Mapping[str, object]
    _restarts: deque[float]
    _max_restarts: int
    _max_seconds: float

    async def _serve(
        self, gate: StartGate, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ExitReason:
        self._own_context = request_context.get()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # Capture rather than raise inside the nursery, so that the process's
            # exit reason is the exception itself, not a group around it.
            result = await outcome.acapture(super()._serve, gate, args, kwargs)
        return result.unwrap()

    def _set_intensity(self, max_restarts: int, max_seconds: float) -> None:
        self._restarts = deque()
        self._max_restarts = max_restarts
        self._max_seconds = max_seconds

    def _emit(self, event: LifecycleEvent) -> None:
        node = self._process.node
        if node.lifecycle_hooks:
            node.emit(event)

    # -- one child ----------------------------------------------------------------

    async def _start(self, child: _Child) -> Process:
        """Start ``child`` and wait until it is ready. Raises :class:`StartError`."""
        from .registry import Via

        checked = child.checked
        node = self._process.node
        name = checked.spec.name
        try:
            if isinstance(name, Via):
                name.check_free()
            process = node.new_process(
                checked.spec.mailbox_size or _server_mailbox(checked),
                parent=self.pid,
                name=name if isinstance(name, str) else None,
            )
            if isinstance(name, Via):
                name.register_process(process)
        except Exception as exc:
            raise StartError(f"child {child.id!r} of supervisor {self.pid}", exc) from exc
        link_processes(self._process, process)
        # A child runs with the supervisor's own request context, whether it is
        # started at boot, by a management call (which runs with its caller's
        # context) or by a restart: trio copies the starting task's context.
        token = request_context.set(self._own_context)
        try:
            await self._nursery.start(run_process, process, child_body(checked))
        except StartError as exc:
            self._flush_exit(process.pid)
            cause = exc.reason if isinstance(exc.reason, BaseException) else None
            raise StartError(f"child {child.id!r} of supervisor {self.pid}", exc) from cause
        finally:
            request_context.reset(token)
        child.process = process
        logger.debug("supervisor %s started child %r as %s", self.pid, child.id, process.pid)
        self._emit(ChildStarted(supervisor=self.pid, child_id=child.id, pid=process.pid))
        return process

    async def _stop(self, child: _Child) -> None:
        """Stop ``child`` per its shutdown spec and wait until it has ended.

        Its exit is not treated as a failure: the ``Exit`` it sends is dropped.
        """
        process = child.process
        child.process = None
        if process is None:
            return
        shutdown = child.checked.shutdown
        if process.alive:
            if isinstance(shutdown, _BrutalKill):
                process.kill(KILLED)
            else:
                process.stop(SHUTDOWN)
                with trio.move_on_after(shutdown):
                    await process.wait_exited()
                if process.alive:
                    logger.warning(
                        "child %r (%s) did not stop within %s s; killing it",
                        child.id,
                        process.pid,
                        shutdown,
                    )
                    process.kill(KILLED)
            await process.wait_exited()
        self._flush_exit(process.pid)

    def _flush_exit(self, pid: Pid) -> None:
        self._process.mailbox.flush(lambda m: type(m) is Exit and m.pid == pid)

    def _restart_allowed(self) -> bool:
        """Record a restart; False if it exceeds the intensity (then give up)."""
        now = trio.current_time()
        window = self._restarts
        window.append(now)
        while window and now - window[0] >= self._max_seconds:
            window.popleft()
        return len(window) <= self._max_restarts

    def _give_up(self) -> None:
        logger.error(
            "supervisor %s reached its restart intensity (%d in %s s); shutting down",
            self.pid,
            self._max_restarts,
            self._max_seconds,
        )
        self._emit(
            SupervisorGaveUp(
                supervisor=self.pid,
                max_restarts=self._max_restarts,
                max_seconds=self._max_seconds,
            )
        )
        self.stop(GAVE_UP)

    def _child_exited(self, child: _Child, reason: ExitReason) -> None:
        pid = child.process.pid if child.process is not None else None
        child.process = None
        if isinstance(reason, BaseException):
            what = "exited" if pid is not None else "failed to restart"
            logger.error(
                "supervisor %s: child %r (%s) %s: %r",
                self.pid,
                child.id,
                pid,
                what,
                reason,
                exc_info=reason,
            )
        else:
            logger.info("supervisor %s: child %r (%s) exited: %r", self.pid, child.id, pid, reason)
        self._emit(ChildExited(supervisor=self.pid, child_id=child.id, pid=pid, reason=reason))

    # -- messages ---------------------------------------------------------------------

    async def handle_info(self, message: Any) -> None:
        if type(message) is Exit:
            if not await self._on_exit(message.pid, message.reason) and (
                message.pid == self._process.parent
            ):
                self.stop(message.reason)
            return
        await super().handle_info(message)

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        try:
            return await self._manage(request)
        except (SupervisorError, InvalidChildSpec, StartError, NoProcess) as error:
            return _Failed(error)

    async def _on_exit(self, pid: Pid, reason: ExitReason) -> bool:
        """Handle a child's exit; False if ``pid`` is not a current child."""
        raise NotImplementedError

    async def _manage(self, request: _Request) -> Any:
        raise NotImplementedError


def _server_mailbox(checked: CheckedChild) -> int | None:
    if checked.kind is ChildKind.SERVER:
        size: int | None = checked.spec.start.mailbox_size
        return size
    return None


class Supervisor(_SupervisorBase):
    """A supervisor of an ordered list of children. Start one with
    :meth:`Node.start_supervisor` or as a child whose ``start`` is a
    :class:`SupervisorSpec`; do not subclass it."""

    _spec: SupervisorSpec
    _children: list[_Child]

    async def init(self, spec: SupervisorSpec) -> None:
        trap_exits(True)
        checked = check_supervisor(spec)
        self._spec = spec
        self._strategy = Strategy(spec.strategy)
        self._auto_shutdown = AutoShutdown(spec.auto_shutdown)
        self._set_intensity(spec.max_restarts, spec.max_seconds)
        self._children = [_Child(c) for c in checked]
        started: list[_Child] = []
        for child in self._children:
            try:
                await self._start(child)
            except StartError:
                for done in reversed(started):
                    await self._stop(done)
                raise
            started.append(child)

    async def terminate(self, reason: ExitReason) -> None:
        for child in reversed(self._children):
            await self._stop(child)

    def _find(self, pid: Pid) -> _Child | None:
        for child in self._children:
            if child.process is not None and child.process.pid == pid:
                return child
        return None

    async def _on_exit(self, pid: Pid, reason: ExitReason) -> bool:
        child = self._find(pid)
        if child is None:
            return False
        await self._failed(child, reason)
        return True

    async def _failed(
        self, child: _Child, reason: ExitReason, pending: frozenset[int] = frozenset()
    ) -> None:
        """``child`` ended by itself (or failed to restart) with ``reason``.

        ``pending`` holds (by ``id()``) children of an interrupted group restart
        that still have to be started along with it.
        """
        self._child_exited(child, reason)
        if not _should_restart(child.checked.restart, reason):
            if child.checked.restart is Restart.TEMPORARY:
                self._children.remove(child)
            if child.checked.spec.significant:
                self._maybe_auto_shutdown()
            return
        if not self._restart_allowed():
            self._give_up()
            return
        await self._restart(child, pending)

    def _maybe_auto_shutdown(self) -> None:
        auto = self._auto_shutdown
        if auto is AutoShutdown.ANY_SIGNIFICANT or (
            auto is AutoShutdown.ALL_SIGNIFICANT
            and not any(c.checked.spec.significant and c.process for c in self._children)
        ):
            logger.info("supervisor %s: significant children exited; shutting down", self.pid)
            self.stop(SHUTDOWN)

    async def _restart(self, child: _Child, pending: frozenset[int] = frozenset()) -> None:
        strategy = self._strategy
        if strategy is Strategy.ONE_FOR_ONE:
            affected: list[_Child] = []
        elif strategy is Strategy.ONE_FOR_ALL:
            affected = [c for c in self._children if c is not child]
        else:
            affected = self._children[self._children.index(child) + 1 :]
        collateral = [c for c in affected if c.process is not None or id(c) in pending]
        for other in reversed(collateral):
            await self._stop(other)
        for other in collateral:
            if other.checked.restart is Restart.TEMPORARY:
                self._children.remove(other)
        restarting = {id(child)} | {id(c) for c in collateral}
        group = [c for c in self._children if id(c) in restarting]
        for position, member in enumerate(group):
            try:
                process = await self._start(member)
            except StartError as error:
                # A failed restart is another failure of that child: it counts
                # against the intensity, so a child that can never start ends in
                # giving up rather than a loop. The rest of the group stays due.
                rest = frozenset(id(c) for c in group[position + 1 :])
                await self._failed(member, error.reason, rest)
                return
            self._emit(
                ChildRestarted(
                    supervisor=self.pid,
                    child_id=member.id,
                    pid=process.pid,
                    strategy=strategy.name,
                )
            )

    def _by_id(self, child_id: Hashable) -> _Child:
        for child in self._children:
            if child.id == child_id:
                return child
        raise NoSuchChild(f"supervisor {self.pid} has no child {child_id!r}")

    async def _manage(self, request: _Request) -> Any:
        if isinstance(request, _WhichChildren):
            return [c.info() for c in self._children]
        if isinstance(request, _CountChildren):
            return _count(self._children)
        if isinstance(request, _StartChild):
            checked = check_child(request.spec, self._auto_shutdown)
            if any(c.id == checked.spec.id for c in self._children):
                raise InvalidChildSpec(
                    checked.spec.id,
                    "id",
                    "a child with this id exists; use restart_child or delete_child",
                )
            child = _Child(checked)
            process = await self._start(child)
            self._children.append(child)
            return process.pid
        if isinstance(request, _TerminateChild):
            target = request.target
            if isinstance(target, Pid):
                found = self._find(target)
                if found is None:
                    raise NoSuchChild(f"supervisor {self.pid} has no child running as {target}")
            else:
                found = self._by_id(target)
            await self._stop(found)
            if found.checked.restart is Restart.TEMPORARY:
                self._children.remove(found)
            return None
        if isinstance(request, _RestartChild):
            child = self._by_id(request.id)
            if child.process is not None:
                raise ChildRunning(f"child {request.id!r} is running; terminate it first")
            return (await self._start(child)).pid
        if isinstance(request, _DeleteChild):
            child = self._by_id(request.id)
            if child.process is not None:
                raise ChildRunning(f"child {request.id!r} is running; terminate it first")
            self._children.remove(child)
            return None
        raise SupervisorError(f"unknown supervisor request {request!r}")


def _count(children: list[_Child]) -> ChildCount:
    return ChildCount(
        specs=len(children),
        active=sum(1 for c in children if c.process is not None),
        supervisors=sum(1 for c in children if c.checked.type is ChildType.SUPERVISOR),
        workers=sum(1 for c in children if c.checked.type is ChildType.WORKER),
    )


# -- the management API -------------------------------------------------------------------


async def _manage(supervisor: Target, request: _Request, timeout: float | None) -> Any:
    process = current_process("a supervisor call").node.lookup(supervisor, name_must_exist=False)
    if process is None:
        raise NoProcess(supervisor)
    if not isinstance(process.behaviour, _SupervisorBase):
        raise SupervisorError(f"{supervisor} ({process.pid}) is not a supervisor")
    answer = await call(process.pid, request, timeout)
    if isinstance(answer, _Failed):
        raise answer.error
    return answer


async def which_children(
    supervisor: Target, *, timeout: float | None = INFINITY
) -> list[ChildInfo]:
    """The supervisor's children in start order, with pid None for stopped ones."""
    result: list[ChildInfo] = await _manage(supervisor, _WhichChildren(), timeout)
    return result


async def count_children(supervisor: Target, *, timeout: float | None = INFINITY) -> ChildCount:
    """How many specs, running children, supervisors and workers the supervisor has."""
    result: ChildCount = await _manage(supervisor, _CountChildren(), timeout)
    return result


async def start_child(
    supervisor: Target, spec: ChildSpec, *, timeout: float | None = INFINITY
) -> Pid:
    """Add ``spec`` to the supervisor and start it; return the child's pid.

    Raises :class:`InvalidChildSpec` (bad spec, or the id exists),
    :class:`StartError` (the child failed to start; the spec is not kept), or
    :class:`TooManyChildren` (a DynamicSupervisor at ``max_children``).
    """
    result: Pid = await _manage(supervisor, _StartChild(spec), timeout)
    return result


async def terminate_child(
    supervisor: Target, child: Hashable | Pid, *, timeout: float | None = INFINITY
) -> None:
    """Stop a child (by id, or by pid) per its shutdown spec. It is not restarted;
    its spec stays (unless temporary) for :func:`restart_child`."""
    await _manage(supervisor, _TerminateChild(child), timeout)


async def restart_child(
    supervisor: Target, child_id: Hashable, *, timeout: float | None = INFINITY
) -> Pid:
    """Start a stopped child again. :class:`ChildRunning` if it runs."""
    result: Pid = await _manage(supervisor, _RestartChild(child_id), timeout)
    return result


async def delete_child(
    supervisor: Target, child_id: Hashable, *, timeout: float | None = INFINITY
) -> None:
    """Remove a stopped child's spec. :class:`ChildRunning` if it runs."""
    await _manage(supervisor, _DeleteChild(child_id), timeout)


_supervisor_ids = iter(range(1, 1 << 62))


async def start_supervisor_under(
    parent: Target,
    spec: Any,
    *,
    id: Hashable = None,
    name: str | None = None,
    **options: Any,
) -> Pid:
    """Start ``spec`` (a supervisor spec, or a list of child specs plus options) as a
    temporary child of ``parent``."""
    if isinstance(spec, SupervisorSpec | DynamicSupervisorSpec):
        if options:
            raise TypeError(
                f"options {sorted(options)} go inside the spec when you pass a "
                f"{type(spec).__name__}"
            )
        supervisor_spec: SupervisorSpec | DynamicSupervisorSpec = spec
    elif isinstance(spec, list | tuple):
        unknown = set(options) - {"strategy", "max_restarts", "max_seconds", "auto_shutdown"}
        if unknown:
            raise TypeError(
                f"unknown supervisor options {sorted(unknown)}; allowed: strategy, "
                "max_restarts, max_seconds, auto_shutdown, id, name"
            )
        supervisor_spec = SupervisorSpec(spec, **options)
    else:
        raise TypeError(
            "start_supervisor() takes a SupervisorSpec, a DynamicSupervisorSpec or a list "
            f"of ChildSpec, got {spec!r}"
        )
    child_id = id if id is not None else (name or f"supervisor-{next(_supervisor_ids)}")
    child = ChildSpec(child_id, supervisor_spec, restart=Restart.TEMPORARY, name=name)
    check_child(child, AutoShutdown.NEVER)
    return await start_child(parent, child)


async def start_supervisor(
    spec: Any,
    *,
    id: Hashable = None,
    name: str | None = None,
    **options: Any,
) -> Pid:
    """Start a supervisor under the current node's root; see :meth:`Node.start_supervisor`."""
    node = current_process("start_supervisor()").node
    return await start_supervisor_under(node.root.pid, spec, id=id, name=name, **options)


__all__ = [
    "GAVE_UP",
    "ChildCount",
    "ChildInfo",
    "Supervisor",
    "SupervisorSpec",
    "count_children",
    "delete_child",
    "restart_child",
    "server_body",
    "start_child",
    "start_supervisor",
    "terminate_child",
    "which_children",
]
