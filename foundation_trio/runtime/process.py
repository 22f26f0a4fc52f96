"""Processes: spawn, send, receive, links, monitors and exit signals.

A process is a trio task with a :class:`~.mailbox.Mailbox`, a :class:`~.pid.Pid`
and a cancel scope. It ends in one of three ways: its body returns (reason
:data:`NORMAL`), its body raises (the exception is the reason), or it is
cancelled by an exit signal, a kill or its owner's shutdown (the signal's
reason, :data:`KILLED`, or :data:`SHUTDOWN`). Whatever the way, the runtime then
drops its names, tells its monitors and links, and fails the calls waiting on it,
all before anything else runs.

Functions here that only do bookkeeping (``spawn``, ``link``, ``monitor``,
``self_pid``, ``send_nowait``, ``exit``) are plain functions; those that may
wait (``send``, ``receive``) are async and are trio checkpoints.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from .checks import check_mailbox_size
from .errors import MailboxFull, NoNodeError, NoProcess, StartError
from .events import ProcessStarted
from .mailbox import Mailbox, Match
from .pid import (
    KILLED,
    NORMAL,
    SHUTDOWN,
    Down,
    Exit,
    ExitReason,
    Killed,
    Normal,
    Pid,
    Ref,
    Shutdown,
)
from .remote import split_remote

if TYPE_CHECKING:
    from .node import Node
    from .server import Caller

logger = logging.getLogger("foundation_trio.process")


class ProcessResolver(Protocol):
    """Anything that names a process indirectly, such as :class:`~.registry.Via`."""

    def resolve_process(self, node: Node) -> Process | None: ...


Target: TypeAlias = "Pid | str | tuple[str, str] | ProcessResolver"
"""What ``send``, ``call``, ``cast``, ``monitor`` and ``link`` accept: a pid, a
registered name, a ``(name, node)`` pair, or a resolver such as ``Via``."""


class Stoppable(Protocol):
    """A behaviour that stops in order when asked (GenServer, supervisors)."""

    def request_stop(self, reason: ExitReason) -> None: ...


class Process:
    """The runtime's record of one process. Users hold its :class:`Pid`, not this."""

    __slots__ = (
        "alive",
        "behaviour",
        "exit_hooks",
        "exit_reason",
        "exited",
        "kill_reason",
        "killed_by",
        "links",
        "mailbox",
        "monitored_by",
        "monitoring",
        "names",
        "node",
        "open_calls",
        "parent",
        "pid",
        "scope",
        "trap_exits",
    )

    def __init__(self, node: Node, pid: Pid, mailbox_size: int, parent: Pid | None = None) -> None:
        self.node = node
        self.pid = pid
        self.mailbox = Mailbox(mailbox_size)
        self.parent = parent
        self.alive = True
        self.trap_exits = False
        self.scope: trio.CancelScope | None = None
        self.kill_reason: ExitReason | None = None
        self.killed_by: Pid | None = None
        self.exit_reason: ExitReason | None = None
        self.behaviour: Stoppable | None = None
        # The collections below are created on first use: most processes
        # never link, monitor or register, and an idle process should be small.
        self.links: set[Process] | None = None
        self.monitored_by: dict[Ref, Process] | None = None
        self.monitoring: dict[Ref, Process] | None = None
        self.names: list[str] | None = None
        self.open_calls: set[Caller] | None = None
        self.exit_hooks: list[Callable[[Process, ExitReason], None]] | None = None
        self.exited: trio.Event | None = None

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self.exit_reason!r}"
        return f"<Process {self.pid} {state}>"

    # -- ending the process ---------------------------------------------------

    def kill(self, reason: ExitReason = KILLED) -> None:
        """Cancel the process now; it ends with ``reason``. Idempotent."""
        if not self.alive or self.kill_reason is not None:
            return
        self.kill_reason = reason
        if self.scope is not None:
            self.scope.cancel()

    def stop(self, reason: ExitReason = SHUTDOWN) -> None:
        """Ask the process to stop in order: a GenServer finishes its current message
        and runs ``terminate``; a plain function process is cancelled."""
        if not self.alive:
            return
        if self.behaviour is not None:
            self.behaviour.request_stop(reason)
        else:
            self.kill(reason)

    async def wait_exited(self) -> None:
        """Wait until the process has ended and its exit has been fully handled."""
        if not self.alive:
            await trio.lowlevel.checkpoint()
            return
        if self.exited is None:
            self.exited = trio.Event()
        await self.exited.wait()

    def add_exit_hook(self, hook: Callable[[Process, ExitReason], None]) -> None:
        """Call ``hook(process, reason)`` synchronously when the process ends."""
        if self.exit_hooks is None:
            self.exit_hooks = []
        self.exit_hooks.append(hook)

    def remove_exit_hook(self, hook: Callable[[Process, ExitReason], None]) -> None:
        if self.exit_hooks is not None and hook in self.exit_hooks:
            self.exit_hooks.remove(hook)

    # -- signals --------------------------------------------------------------

    def exit_signal(self, sender: Pid, reason: ExitReason) -> None:
        """Deliver an exit signal: a message when trapping exits, ignored when
        ``reason`` is :data:`NORMAL`, otherwise the process ends with ``reason``."""
        if not self.alive:
            return
        if self.trap_exits:
            self.mailbox.put(Exit(sender, reason))
        elif not isinstance(reason, Normal):
            if self.kill_reason is None:
                self.killed_by = sender
            self.kill(reason)


_current: ContextVar[Process] = ContextVar("foundation_trio.current_process")


def current_process(what: str = "this call") -> Process:
    """The process the calling task belongs to, or :class:`NoNodeError`."""
    try:
        return _current.get()
    except LookupError:
        raise NoNodeError(what) from None


def set_current_process(process: Process) -> Any:
    """Make ``process`` the calling task's process; return the token to reset it."""
    return _current.set(process)


def reset_current_process(token: Any) -> None:
    _current.reset(token)


def self_pid() -> Pid:
    """The pid of the calling process. Raises :class:`NoNodeError` outside a node."""
    return current_process("self_pid()").pid


# -- running a process ------------------------------------------------------------


class StartGate:
    """Wraps trio's task status to remember whether the process reported readiness."""

    __slots__ = ("_status", "pid", "ready")

    def __init__(self, status: trio.TaskStatus[Pid], pid: Pid) -> None:
        self._status = status
        self.pid = pid
        self.ready = False

    def started(self, value: Any = None) -> None:
        # Drop trio's task status at once: it holds the temporary start nursery,
        # which would otherwise live (about 1.2 KB) as long as the process.
        status, self._status = self._status, trio.TASK_STATUS_IGNORED
        self.ready = True
        status.started(self.pid)


Body = Callable[[StartGate], Awaitable[object]]
"""A process body: it reports readiness through the gate and may return its exit
reason (anything else, including None, means :data:`NORMAL`)."""

_REASONS = (Normal, Shutdown, Killed, BaseException)


def _failure_of(exc: BaseException) -> BaseException | None:
    """The part of ``exc`` that is a failure rather than trio cancellation, or None."""
    if isinstance(exc, trio.Cancelled | KeyboardInterrupt | SystemExit):
        return None
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(lambda e: not isinstance(e, trio.Cancelled | BaseExceptionGroup))
    return exc


async def run_process(
    process: Process,
    body: Body,
    task_status: trio.TaskStatus[Pid] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``body`` as ``process`` until it ends, then handle the exit.

    With a real ``task_status`` (``nursery.start``), a body that ends before it
    reports readiness raises :class:`StartError` to the starter.
    """
    set_current_process(process)
    node = process.node
    if node.lifecycle_hooks:
        node.emit(ProcessStarted(pid=process.pid, parent=process.parent))
    gate = StartGate(task_status, process.pid)
    reports_start = task_status is not trio.TASK_STATUS_IGNORED
    del task_status  # held by the gate until readiness, then released
    reason: ExitReason = SHUTDOWN
    try:
        with trio.CancelScope() as scope:
            process.scope = scope
            if process.kill_reason is not None:
                scope.cancel()
            try:
                result = await body(gate)
                reason = result if isinstance(result, _REASONS) else NORMAL
            except BaseException as exc:
                failure = _failure_of(exc)
                if failure is None:
                    raise
                reason = failure
        if scope.cancelled_caught:
            reason = process.kill_reason if process.kill_reason is not None else KILLED
    finally:
        # A start failure is raised to the starter; logging it here would report it twice.
        raised_to_starter = reports_start and not gate.ready
        process.node.process_exited(process, reason, log=not raised_to_starter)
    if reports_start and not gate.ready:
        if isinstance(reason, StartError):
            raise reason
        error = StartError(f"process {process.pid}", reason)
        if isinstance(reason, BaseException):
            raise error from reason
        raise error


def _check_async_callable(fn: object, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} needs an async function, got {fn!r}")


def _awaitable(result: object, fn: object) -> Awaitable[object]:
    if not inspect.isawaitable(result):
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"{name} returned {type(result).__name__}, not an awaitable: "
            "a process body must be an async function (async def)"
        )
    return result


def function_body(fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]) -> Body:
    """The body of a process that runs ``await fn(*args)``.

    If ``fn`` takes a ``task_status`` argument it must call
    ``task_status.started()`` to report readiness (as with ``nursery.start``);
    otherwise the process is ready as soon as it runs.
    """
    takes_status = _takes_task_status(fn)

    async def body(gate: StartGate) -> None:
        if takes_status:
            await _awaitable(fn(*args, task_status=gate), fn)
        else:
            gate.started()
            await _awaitable(fn(*args), fn)

    return body


def _takes_task_status(fn: Callable[..., object]) -> bool:
    try:
        return _takes_task_status_cached(fn)
    except TypeError:  # an unhashable callable object
        return _signature_has_task_status(fn)


# inspect.signature costs more than the rest of a spawn; most bodies repeat.
@functools.lru_cache(maxsize=4096)
def _takes_task_status_cached(fn: Callable[..., object]) -> bool:
    return _signature_has_task_status(fn)


def _signature_has_task_status(fn: Callable[..., object]) -> bool:
    try:
        return "task_status" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def spawn(
    fn: Callable[..., Awaitable[object]],
    *args: Any,
    name: str | None = None,
    link: bool = False,
    mailbox_size: int | None = None,
) -> Pid:
    """Start an unsupervised process running ``await fn(*args)``; return its pid.

    The process belongs to the node and ends with it at the latest. Returning
    from ``fn`` is a normal exit; raising is an abnormal exit with the exception
    as reason. ``name`` registers it (:class:`AlreadyStarted` if taken);
    ``link=True`` links it to the caller before it runs.
    """
    _check_async_callable(fn, "spawn()")
    caller = current_process("spawn()")
    node = caller.node
    size = check_mailbox_size(mailbox_size, "spawn()")
    process = node.new_process(size, parent=None, name=name)
    if link:
        link_processes(caller, process)
    node.spawn_nursery.start_soon(run_process, process, function_body(fn, args))
    return process.pid


# -- sending ------------------------------------------------------------------------


async def send(target: Target, message: object) -> None:
    """Put ``message`` in the target's mailbox, waiting while it is full.

    Sending to a pid that has exited is a silent no-op, as in Erlang; sending to a
    name nobody holds raises :class:`NoProcess`. If cancelled, nothing was sent.
    A target on another node goes through the node's cluster (``node.remote``),
    with the semantics of docs/cluster.md.
    """
    await checkpoint_if_cancelled()
    sender = current_process("send()")
    node = sender.node
    dest = node.lookup(target, name_must_exist=True)
    if dest is not None:
        await deliver(dest, message)
    elif node.remote is not None:
        remote = split_remote(node.name, target)
        if remote is not None:
            await node.remote.send(sender, remote[0], remote[1], message)
            return
    await cancel_shielded_checkpoint()


async def deliver(dest: Process, message: object) -> None:
    """Put ``message`` in ``dest``'s mailbox once it has room; drop it if ``dest``
    ends meanwhile. Waiting for room is the only checkpoint."""
    mailbox = dest.mailbox
    while mailbox.is_full() and dest.alive:
        await mailbox.wait_for_room()
    if dest.alive:
        mailbox.put(message)


def send_nowait(target: Target, message: object) -> None:
    """Like :func:`send`, but raise :class:`MailboxFull` instead of waiting."""
    sender = current_process("send_nowait()")
    node = sender.node
    dest = node.lookup(target, name_must_exist=True)
    if dest is None:
        if node.remote is not None:
            remote = split_remote(node.name, target)
            if remote is not None:
                node.remote.send_nowait(sender, remote[0], remote[1], message)
        return
    if dest.mailbox.is_full():
        raise MailboxFull(dest.pid, dest.mailbox.capacity)
    dest.mailbox.put(message)


async def receive(match: Match | None = None, timeout: float | None = None) -> Any:
    """Take the calling process's oldest message that ``match`` accepts.

    ``match`` is a predicate (default: any message). Messages it rejects stay in
    the mailbox in arrival order. Waits up to ``timeout`` seconds (``None``: for
    ever; ``0``: do not wait) and then raises :class:`ReceiveTimeout`.
    Cancellation leaves the mailbox as it was.
    """
    return await current_process("receive()").mailbox.receive(match, timeout)


# -- links, monitors, exit signals ------------------------------------------------------


def link_processes(a: Process, b: Process) -> None:
    if a is b:
        return
    if a.links is None:
        a.links = set()
    if b.links is None:
        b.links = set()
    a.links.add(b)
    b.links.add(a)


def link(target: Target) -> None:
    """Link the calling process with ``target``: an abnormal exit of either sends an
    exit signal to the other.

    If ``target`` is not alive, a process trapping exits receives
    ``Exit(pid, NoProcess)``; one not trapping gets :class:`NoProcess` raised. A
    target on another node is linked through the node's cluster (docs/cluster.md).
    """
    caller = current_process("link()")
    node = caller.node
    dest = node.lookup(target, name_must_exist=False)
    if dest is None:
        if node.remote is not None:
            remote = split_remote(node.name, target)
            if remote is not None:
                node.remote.link(caller, remote[0], remote[1])
                return
        if caller.trap_exits and isinstance(target, Pid):
            caller.mailbox.put(Exit(target, NoProcess(target)))
            return
        raise NoProcess(target)
    link_processes(caller, dest)


def unlink(target: Target) -> None:
    """Remove the link between the calling process and ``target``, if any."""
    caller = current_process("unlink()")
    node = caller.node
    dest = node.lookup(target, name_must_exist=False)
    if dest is None:
        if node.remote is not None:
            remote = split_remote(node.name, target)
            if remote is not None:
                node.remote.unlink(caller, remote[0], remote[1])
        return
    if caller.links is None:
        return
    caller.links.discard(dest)
    if dest.links is not None:
        dest.links.discard(caller)


def monitor(target: Target) -> Ref:
    """Watch ``target``; when it ends the caller receives ``Down(ref, pid, reason)``.

    A target that is not alive yields ``Down`` with a :class:`NoProcess` reason at once.
    A target on another node is watched through the node's cluster (docs/cluster.md):
    a lost link yields ``Down`` with a ``NodeDown`` reason.
    """
    watcher = current_process("monitor()")
    node = watcher.node
    ref = node.new_ref()
    dest = node.lookup(target, name_must_exist=False)
    if dest is None:
        if node.remote is not None:
            remote = split_remote(node.name, target)
            if remote is not None:
                node.remote.monitor(watcher, ref, remote[0], remote[1])
                return ref
        shown: Pid | str = target if isinstance(target, Pid | str) else str(target)
        watcher.mailbox.put(Down(ref, shown, NoProcess(target)))
        return ref
    if dest.monitored_by is None:
        dest.monitored_by = {}
    dest.monitored_by[ref] = watcher
    if watcher.monitoring is None:
        watcher.monitoring = {}
    watcher.monitoring[ref] = dest
    return ref


def demonitor(ref: Ref, *, flush: bool = False) -> bool:
    """Stop the monitor ``ref``. With ``flush``, also drop its ``Down`` if it already
    arrived. Returns True if the monitor was active."""
    watcher = current_process("demonitor()")
    active = False
    if watcher.monitoring is not None:
        dest = watcher.monitoring.pop(ref, None)
        if dest is not None and dest.monitored_by is not None:
            active = dest.monitored_by.pop(ref, None) is not None
    if not active and watcher.node.remote is not None:
        active = watcher.node.remote.demonitor(watcher, ref)
    if flush:
        watcher.mailbox.flush(lambda m: isinstance(m, Down) and m.ref == ref)
    return active


def trap_exits(flag: bool = True) -> bool:
    """Make exit signals to the calling process arrive as :class:`Exit` messages
    (``True``) or end it (``False``). Returns the previous setting."""
    process = current_process("trap_exits()")
    previous = process.trap_exits
    process.trap_exits = flag
    return previous


def exit(target: Target, reason: ExitReason) -> None:
    """Send an exit signal with ``reason`` from the calling process to ``target``.

    ``KILLED`` cannot be trapped: the target ends at once with reason ``KILLED``.
    Any other reason behaves as a linked process's exit would. No-op for a target
    that is not alive.
    """
    sender = current_process("exit()")
    node = sender.node
    dest = node.lookup(target, name_must_exist=False)
    if dest is None:
        if node.remote is not None:
            remote = split_remote(node.name, target)
            if remote is not None:
                node.remote.exit(sender, remote[0], remote[1], reason)
        return
    if reason == KILLED:
        if dest.kill_reason is None:
            dest.killed_by = sender.pid
        dest.kill(KILLED)
    else:
        dest.exit_signal(sender.pid, reason)


# -- the exit path, called by the node once per process -------------------------------------


def notify_exit(process: Process, reason: ExitReason) -> None:
    """Tell everyone who asked that ``process`` ended with ``reason``."""
    pid = process.pid
    if process.open_calls:
        for slot in list(process.open_calls):
            slot.fail_server_exited(pid, reason)
        process.open_calls = None
    if process.monitoring:
        for ref, dest in process.monitoring.items():
            if dest.monitored_by is not None:
                dest.monitored_by.pop(ref, None)
        process.monitoring = None
    if process.monitored_by:
        for ref, watcher in process.monitored_by.items():
            if watcher.alive:
                watcher.mailbox.put(Down(ref, pid, reason))
                if watcher.monitoring is not None:
                    watcher.monitoring.pop(ref, None)
        process.monitored_by = None
    if process.links:
        links, process.links = process.links, None
        for other in links:
            if other.links is not None:
                other.links.discard(process)
            other.exit_signal(pid, reason)
    process.mailbox.close()
    if process.exited is not None:
        process.exited.set()


def log_exit(process: Process, reason: ExitReason) -> None:
    if isinstance(reason, BaseException):
        logger.error("process %s exited: %r", process.pid, reason, exc_info=reason)
    elif reason is not NORMAL and not isinstance(reason, Normal):
        logger.debug("process %s exited: %r", process.pid, reason)
