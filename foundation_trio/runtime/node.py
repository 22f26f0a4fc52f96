"""The node: the process table, the name registry, the root supervisor and the
``open_node`` block that owns them all.

``async with open_node("demo") as node:`` starts a root supervisor, makes the
body of the block a process (like the Erlang shell: it can ``receive``,
``monitor`` and ``link``), and on the way out stops everything in order:
first the unsupervised processes, newest first, then the root supervisor, which
stops its supervisors in reverse start order. It returns only when every task
is gone.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar

import attrs
import trio

from .._validation import structure_options
from .errors import AlreadyStarted, ExitSignal, NoProcess
from .events import LifecycleEvent, ProcessExited
from .mailbox import DEFAULT_MAILBOX_SIZE
from .pid import KILLED, NORMAL, SHUTDOWN, ExitReason, Pid, Ref
from .process import (
    Process,
    ProcessResolver,
    current_process,
    log_exit,
    notify_exit,
    reset_current_process,
    run_process,
    set_current_process,
)
from .remote import RemoteRouter
from .timers import CallTimers

logger = logging.getLogger("foundation_trio.node")

E = TypeVar("E")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be 0 or more, got {value!r}")


@attrs.frozen(kw_only=True)
class NodeOptions:
    """Options of :func:`open_node`, validated on entry."""

    mailbox_size: int = attrs.field(default=DEFAULT_MAILBOX_SIZE, validator=_positive)
    """Default mailbox capacity of the node's processes."""

    shutdown_timeout: float = attrs.field(default=5.0, validator=_non_negative)
    """Seconds each shutdown phase may take before what is left is cancelled."""


class Node:
    """A running node. Obtain one from :func:`open_node`; do not construct it."""

    def __init__(self, name: str, options: NodeOptions) -> None:
        self.name = name
        self.options = options
        self.processes: dict[int, Process] = {}
        self.names: dict[str, Process] = {}
        self._process_ids = itertools.count(1)
        self._ref_ids = itertools.count(1)
        self.lifecycle_hooks: list[Callable[[LifecycleEvent], None]] = []
        self.call_timers = CallTimers()
        self._extensions: dict[type[Any], object] = {}
        self.remote: RemoteRouter | None = None
        """Reaches processes on other nodes; installed by the cluster layer."""
        self.spawn_nursery: trio.Nursery
        self.root: Process
        self.shell: Process

    def __repr__(self) -> str:
        return f"<Node {self.name!r} processes={len(self.processes)}>"

    # -- processes and references ---------------------------------------------------

    def new_process(
        self, mailbox_size: int | None, parent: Pid | None, name: str | None = None
    ) -> Process:
        """Create the record of a process about to start, registered as ``name``.

        Raises :class:`AlreadyStarted` (creating nothing) if ``name`` is taken.
        """
        if name is not None:
            self._check_name_free(name)
        pid = Pid(self.name, next(self._process_ids))
        process = Process(self, pid, mailbox_size or self.options.mailbox_size, parent)
        self.processes[pid.id] = process
        if name is not None:
            self.register_name(name, process)
        return process

    def _check_name_free(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a registered name is a non-empty str, got {name!r}")
        holder = self.names.get(name)
        if holder is not None:
            raise AlreadyStarted(name, holder.pid)

    def new_ref(self) -> Ref:
        return Ref(self.name, next(self._ref_ids))

    def lookup(self, target: object, *, name_must_exist: bool) -> Process | None:
        """The live local process ``target`` names, or None.

        An unregistered name raises :class:`NoProcess` when ``name_must_exist``
        (Erlang's ``send`` to an unknown name fails; to a dead pid it does not).
        A target of another shape raises :class:`TypeError`.
        """
        if isinstance(target, Pid):
            if target.node != self.name:
                return None
            return self.processes.get(target.id)
        if isinstance(target, str):
            found = self.names.get(target)
            if found is None and name_must_exist:
                raise NoProcess(target)
            return found
        if isinstance(target, tuple) and len(target) == 2:
            name, node_name = target
            if node_name == self.name:
                return self.lookup(name, name_must_exist=name_must_exist)
            if not isinstance(name, str) or not isinstance(node_name, str):
                raise TypeError(f"a (name, node) target is a pair of str, got {target!r}")
            # With a cluster, the caller hands a remote pair to ``self.remote``.
            if name_must_exist and self.remote is None:
                raise NoProcess(f"{name!r} on node {node_name!r} (not connected)")
            return None
        resolve = getattr(target, "resolve_process", None)
        if resolve is not None:
            found_via: Process | None = resolve(self)
            if found_via is None and name_must_exist:
                raise NoProcess(target)
            return found_via
        raise TypeError(
            "a target is a Pid, a registered name (str), a (name, node) pair or a Via; "
            f"got {target!r}"
        )

    def whereis(self, name: str | tuple[str, str]) -> Pid | None:
        if isinstance(name, tuple) and len(name) == 2:
            local_name, node_name = name
            if not isinstance(local_name, str) or not isinstance(node_name, str):
                raise TypeError(f"whereis() takes a name or a (name, node) pair, got {name!r}")
            if node_name != self.name:
                return None if self.remote is None else self.remote.whereis(node_name, local_name)
            name = local_name
        if not isinstance(name, str):
            raise TypeError(f"whereis() takes a name or a (name, node) pair, got {name!r}")
        process = self.names.get(name)
        return None if process is None else process.pid

    def register_name(self, name: str, process: Process) -> None:
        self._check_name_free(name)
        if not process.alive:
            raise NoProcess(process.pid)
        self.names[name] = process
        if process.names is None:
            process.names = []
        process.names.append(name)
        if self.remote is not None:
            self.remote.names_changed(name, process.pid)

    def unregister_name(self, name: str) -> bool:
        process = self.names.pop(name, None)
        if process is None:
            return False
        if process.names is not None and name in process.names:
            process.names.remove(name)
        if self.remote is not None:
            self.remote.names_changed(name, None)
        return True

    # -- exits and lifecycle events --------------------------------------------------------

    def process_exited(self, process: Process, reason: ExitReason, *, log: bool = True) -> None:
        """Handle the end of ``process``: called exactly once, by its runner."""
        if not process.alive:
            return
        process.alive = False
        process.exit_reason = reason
        self.processes.pop(process.pid.id, None)
        if process.names:
            for name in process.names:
                if self.names.get(name) is process:
                    del self.names[name]
                    if self.remote is not None:
                        self.remote.names_changed(name, None)
            process.names = None
        if process.exit_hooks:
            hooks, process.exit_hooks = process.exit_hooks, None
            for hook in hooks:
                try:
                    hook(process, reason)
                except Exception:
                    logger.exception("exit hook %r failed for %s", hook, process.pid)
        notify_exit(process, reason)
        # A supervised process's exit is reported once, by its supervisor.
        if log and process.parent is None:
            log_exit(process, reason)
        if self.lifecycle_hooks:
            self.emit(ProcessExited(pid=process.pid, reason=reason))

    def add_hook(self, hook: Callable[[LifecycleEvent], None]) -> None:
        """Call ``hook(event)`` for every lifecycle event of this node (see ``events``)."""
        self.lifecycle_hooks.append(hook)

    def remove_hook(self, hook: Callable[[LifecycleEvent], None]) -> None:
        if hook in self.lifecycle_hooks:
            self.lifecycle_hooks.remove(hook)

    def emit(self, event: LifecycleEvent) -> None:
        for hook in list(self.lifecycle_hooks):
            try:
                hook(event)
            except Exception:
                logger.exception("lifecycle hook %r raised; it is removed", hook)
                self.remove_hook(hook)

    # -- extensions ---------------------------------------------------------------------

    def set_extension(self, key: type[E], value: E) -> None:
        """Attach ``value`` to this node under its type ``key``.

        Layers above the runtime (services, cluster, agents) keep their per-node
        state here, so that their module-level functions find it through
        :func:`current_node`. Raises :class:`ValueError` if ``key`` is taken.
        """
        if key in self._extensions:
            raise ValueError(f"node {self.name!r} already has a {key.__name__}")
        self._extensions[key] = value

    def find_extension(self, key: type[E]) -> E | None:
        """The value attached under ``key``, or None."""
        # No typing.cast here: it is a call, and telemetry looks up its state per event.
        return self._extensions.get(key)  # type: ignore[return-value]

    def extension(self, key: type[E], what: str) -> E:
        """The value attached under ``key``; :class:`LookupError` naming ``what`` if none."""
        value = self.find_extension(key)
        if value is None:
            raise LookupError(
                f"{what} is not running on node {self.name!r}: open the node with "
                "foundation_trio.open_node(...), which starts it"
            )
        return value

    def remove_extension(self, key: type[Any]) -> None:
        """Detach what is attached under ``key``, if anything."""
        self._extensions.pop(key, None)

    # -- supervisors ----------------------------------------------------------------------

    async def start_supervisor(
        self,
        spec: Any,
        *,
        id: object = None,
        name: str | None = None,
        **options: Any,
    ) -> Pid:
        """Start a supervisor under the node's root supervisor; return its pid.

        ``spec`` is a :class:`SupervisorSpec`, a :class:`DynamicSupervisorSpec`, or a
        list of :class:`ChildSpec` (then ``options`` are the :class:`SupervisorSpec`
        options: ``strategy``, ``max_restarts``, ``max_seconds``, ``auto_shutdown``).
        The supervisor is a temporary child of the root: if it gives up it is not
        restarted; monitor or link it to react. Invalid specs raise
        :class:`InvalidChildSpec` here; a child that fails to start raises
        :class:`StartError`.
        """
        from .supervisor import start_supervisor_under

        return await start_supervisor_under(self.root.pid, spec, id=id, name=name, **options)

    def _spawned(self) -> list[Process]:
        return [
            p
            for p in self.processes.values()
            if p.parent is None and p is not self.root and p is not self.shell
        ]


_NAME_ALLOWED = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-@:")


def _check_node_name(name: object) -> str:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_ALLOWED:
        raise TypeError(
            "a node name is a non-empty str of letters, digits and _-@: "
            f"(it appears in every pid, like <demo.42>); got {name!r}"
        )
    return name


BootStep: TypeAlias = Callable[[Node], Awaitable[None]]
"""A step of a node's start: an async function of the node, run by :func:`open_node`."""


@asynccontextmanager
async def open_node(
    name: str = "nonode", *, boot: Sequence[BootStep] = (), **options: Any
) -> AsyncIterator[Node]:
    """Run a node for the duration of the ``async with`` block.

    The block's body runs as a process of the node. Leaving the block stops
    everything in order and waits for every task: unsupervised processes first
    (asked to stop, newest first, then cancelled after ``shutdown_timeout``), then
    the root supervisor's tree in reverse start order. An exception from the body
    is re-raised after that orderly shutdown; if a linked process or ``exit()``
    ended the body, :class:`ExitSignal` is raised. If the block is cancelled from
    outside, only the body sees it: the same orderly shutdown then runs, shielded,
    bounded by twice ``shutdown_timeout``, and the cancellation propagates.

    ``boot`` steps run in order, in the body's process, after the root supervisor
    is up and before the body; they start what every node of a layer above needs
    (``foundation_trio.open_node`` passes the services and the cluster here). Their
    supervisors are the root's first children, so they stop after the body's. If a
    step raises, the body does not run: what was started is stopped in order and
    the exception propagates.

    Options (validated; a bad one raises :class:`ConfigError` naming it):
    ``mailbox_size`` (default 1024) and ``shutdown_timeout`` (default 5.0 s).
    """
    node = Node(_check_node_name(name), structure_options(NodeOptions, options, "open_node()"))

    killer: Pid | None = None
    reason: ExitReason = NORMAL
    body_error: BaseException | None = None
    async with trio.open_nursery() as keeper_nursery:
        closed = trio.Event()
        # Shielded: in an already-cancelled scope trio would leave the keeper in its
        # temporary start nursery, and start() would wait for it for ever.
        with trio.CancelScope(shield=True):
            await keeper_nursery.start(_keep_processes, node, closed)
        shell = node.new_process(None, parent=None)
        node.shell = shell
        token = set_current_process(shell)
        try:
            with trio.CancelScope() as shell_scope:
                shell.scope = shell_scope
                try:
                    for step in boot:
                        await step(node)
                except BaseException as exc:
                    body_error = exc
                else:
                    try:
                        yield node
                    except BaseException as exc:
                        body_error = exc
            if shell_scope.cancelled_caught and shell.kill_reason is not None:
                reason = shell.kill_reason
                killer = shell.killed_by or shell.pid
            elif body_error is not None:
                reason = body_error if isinstance(body_error, Exception) else SHUTDOWN
            # The body's own exception is re-raised below; logging it too would
            # report one failure twice.
            node.process_exited(shell, reason, log=False)
            with trio.CancelScope(shield=True):
                await _stop_all(node._spawned(), node.options.shutdown_timeout)
                await _stop_all([node.root], node.options.shutdown_timeout)
        finally:
            reset_current_process(token)
            closed.set()
    if body_error is not None:
        raise body_error
    if killer is not None:
        raise ExitSignal(killer, reason)


async def _keep_processes(
    node: Node, closed: trio.Event, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Own the node's process nurseries until ``closed`` is set.

    They sit under a shield in a task of their own, so that a cancellation of the
    ``open_node`` block from outside reaches only the block's body; the orderly
    shutdown then runs as for any other exit, and only after it are the nurseries
    cancelled.
    """
    from .supervisor import Supervisor, SupervisorSpec, server_body

    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as system_nursery:
            system_nursery.start_soon(node.call_timers.run)
            root = node.new_process(None, parent=None)
            node.root = root
            root_body = server_body(Supervisor, (SupervisorSpec([], max_restarts=0),), {})
            await system_nursery.start(run_process, root, root_body)
            async with trio.open_nursery() as spawn_nursery:
                node.spawn_nursery = spawn_nursery
                task_status.started()
                await closed.wait()
                spawn_nursery.cancel_scope.cancel()
            system_nursery.cancel_scope.cancel()


async def _stop_all(processes: Sequence[Process], timeout: float) -> None:
    """Ask ``processes`` to stop, newest first; cancel those still running after
    ``timeout``; return when all have ended."""
    for process in reversed(processes):
        process.stop(SHUTDOWN)
    with trio.move_on_after(timeout):
        for process in processes:
            await process.wait_exited()
    for process in processes:
        process.kill(KILLED)
    for process in processes:
        await process.wait_exited()


def whereis(name: str | tuple[str, str]) -> Pid | None:
    """The pid registered as ``name`` on this node, or None.

    A ``(name, node)`` pair naming another node answers from the names that node
    announced to this one (see ``docs/cluster.md``): None when that node is not
    connected or has no such name. It never waits.
    """
    return current_process("whereis()").node.whereis(name)


def register(name: str, pid: Pid | None = None) -> None:
    """Register ``pid`` (default: the calling process) as ``name`` on this node.

    Raises :class:`AlreadyStarted` if the name is taken and :class:`NoProcess` if
    the pid is not a live local process. The name is dropped when the process ends.
    """
    caller = current_process("register()")
    process = caller if pid is None else caller.node.lookup(pid, name_must_exist=False)
    if process is None:
        raise NoProcess(pid)
    caller.node.register_name(name, process)


def unregister(name: str) -> bool:
    """Drop the registration of ``name``; return whether it existed."""
    return current_process("unregister()").node.unregister_name(name)


def registered() -> list[str]:
    """The names registered on this node."""
    return list(current_process("registered()").node.names)


def current_node() -> Node:
    """The node of the calling process. Raises :class:`NoNodeError` outside one."""
    return current_process("current_node()").node


def processes() -> list[Pid]:
    """The pids of every live process on this node, oldest first."""
    return [p.pid for p in current_process("processes()").node.processes.values()]


def is_alive(pid: Pid) -> bool:
    """Whether ``pid`` is a live process of this node (False for other nodes' pids)."""
    return current_process("is_alive()").node.lookup(pid, name_must_exist=False) is not None


__all__ = [
    "BootStep",
    "Node",
    "NodeOptions",
    "ProcessResolver",
    "current_node",
    "is_alive",
    "open_node",
    "processes",
    "register",
    "registered",
    "unregister",
    "whereis",
]
