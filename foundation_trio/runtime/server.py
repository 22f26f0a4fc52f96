"""GenServer: a process that serves calls, casts and other messages one at a time.

Subclass :class:`GenServer` and override the ``async`` callbacks you need::

    class Counter(GenServer):
        async def init(self, start: int = 0) -> None:
            self.count = start

        async def handle_call(self, request, caller):
            if request == "get":
                return self.count

A server handles one message at a time, in arrival order, and drains its
mailbox without yielding between messages (it still yields every
``BATCH_SIZE`` messages so that it never starves other tasks).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Coroutine, Mapping
from typing import Any, ClassVar, Final

import outcome
import trio
from trio.lowlevel import (
    Abort,
    Task,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from .checks import check_mailbox_size, check_timeout
from .context import request_context
from .errors import CallTimeout, CallToSelf, NoProcess, ServerExited
from .mailbox import is_nothing
from .pid import NORMAL, ExitReason, Pid
from .process import Body, Process, StartGate, Target, current_process, deliver, run_process
from .remote import split_remote

logger = logging.getLogger("foundation_trio.server")

DEFAULT_CALL_TIMEOUT: Final = 5.0
"""Seconds :func:`call` waits for a reply unless told otherwise."""

INFINITY: Final = math.inf
"""No time limit: as a call timeout, or as a child's shutdown time."""

_current_context = request_context.get
"""The caller's request context, carried by each call and cast (bound once: hot path)."""

BATCH_SIZE: Final = 64
"""Messages a server handles back to back before it yields to other tasks."""


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOREPLY"


NOREPLY: Final = _NoReply()
"""Returned by ``handle_call`` to reply later with :func:`reply`."""


class Caller:
    """Who is waiting for a reply: passed to ``handle_call``, used by :func:`reply`.

    ``pid`` is the calling process. A caller gets at most one reply; replies after
    the first, and replies after the caller gave up (timeout or cancellation),
    are dropped.
    """

    __slots__ = ("_server", "_task", "pid")

    def __init__(self, server: Process, pid: Pid, task: Task) -> None:
        self._server = server
        self._task: Task | None = task
        self.pid = pid

    def __repr__(self) -> str:
        return f"<Caller {self.pid}>"

    @property
    def waiting(self) -> bool:
        """Whether the caller still waits for its reply."""
        return self._task is not None

    def reply(self, value: object) -> bool:
        """Wake the caller with ``value``. Returns False if it no longer waits."""
        return self._finish(outcome.Value(value))

    def fail_server_exited(self, server: Pid, reason: ExitReason) -> None:
        self._finish(outcome.Error(ServerExited(server, reason)))

    def expire(self, target: object, timeout: float) -> None:
        """The call's time is up: the caller gets :class:`CallTimeout`."""
        self._finish(outcome.Error(CallTimeout(target, timeout)))

    def _finish(self, result: outcome.Outcome[object]) -> bool:
        task = self._task
        if task is None:
            return False
        self._task = None
        open_calls = self._server.open_calls
        if open_calls is not None:
            open_calls.discard(self)
        reschedule(task, result)
        return True

    def _abort(self, _: Any) -> Abort:
        self._task = None
        if self._server.open_calls is not None:
            self._server.open_calls.discard(self)
        return Abort.SUCCEEDED


class _Call:
    __slots__ = ("caller", "context", "request")

    def __init__(self, request: object, caller: Caller, context: Mapping[str, object]) -> None:
        self.request = request
        self.caller = caller
        self.context = context


class _Cast:
    __slots__ = ("context", "request")

    def __init__(self, request: object, context: Mapping[str, object]) -> None:
        self.request = request
        self.context = context


def make_call(request: object, caller: Caller, context: Mapping[str, object]) -> object:
    """The mailbox message of a call made elsewhere (see ``remote.queue_call``)."""
    return _Call(request, caller, context)


def make_cast(request: object, context: Mapping[str, object]) -> object:
    """The mailbox message of a cast made elsewhere (see ``remote.make_cast``)."""
    return _Cast(request, context)


async def call(
    target: Target, request: object, timeout: float | None = DEFAULT_CALL_TIMEOUT
) -> Any:
    """Send ``request`` to the server ``target`` and wait for its reply.

    Raises :class:`NoProcess` at once if no live process is ``target``;
    :class:`ServerExited` as soon as the server ends before replying;
    :class:`CallTimeout` after ``timeout`` seconds (``None`` or :data:`INFINITY`:
    wait for ever). A reply that arrives after the timeout or after the caller
    was cancelled is dropped. Cancelling the caller abandons the call; the
    server may still handle the request. A server on another node is called
    through the node's cluster, which adds :class:`NodeDown` (docs/cluster.md).
    """
    caller = current_process("call()")
    if (timeout is not None and type(timeout) is not float) or (
        timeout is not None and timeout != timeout
    ):
        timeout = check_timeout(timeout, "call()")
    node = caller.node
    if type(target) is Pid and target.node == node.name:
        server = node.processes.get(target.id)
    else:
        server = node.lookup(target, name_must_exist=False)
    if server is None:
        remote = node.remote
        if remote is not None:
            where = split_remote(node.name, target)
            if where is not None:
                return await remote.call(
                    caller, where[0], where[1], request, math.inf if timeout is None else timeout
                )
        raise NoProcess(target)
    if server is caller:
        raise CallToSelf(f"process {caller.pid} called itself; it would wait for ever")
    mailbox = server.mailbox
    while mailbox.is_full():
        await mailbox.wait_for_room()
        if not server.alive:
            raise NoProcess(target)
    slot = Caller(server, caller.pid, current_task())
    mailbox.put(_Call(request, slot, _current_context()))
    open_calls = server.open_calls
    if open_calls is None:
        open_calls = server.open_calls = set()
    open_calls.add(slot)
    if timeout is not None and timeout != math.inf:
        node.call_timers.add(slot, target, timeout)
    # Parking is the checkpoint: a caller already cancelled gives up here.
    return await wait_task_rescheduled(slot._abort)


async def cast(target: Target, request: object) -> None:
    """Send ``request`` to the server ``target`` without waiting for an answer.

    Never fails because the target is missing (the request is then dropped);
    waits only while the target's mailbox is full.
    """
    await checkpoint_if_cancelled()
    sender = current_process("cast()")
    node = sender.node
    server = node.lookup(target, name_must_exist=False)
    if server is not None:
        await deliver(server, _Cast(request, _current_context()))
    elif node.remote is not None:
        where = split_remote(node.name, target)
        if where is not None:
            await node.remote.cast(sender, where[0], where[1], request)
            return
    await trio.lowlevel.cancel_shielded_checkpoint()


def reply(caller: Caller, value: object) -> bool:
    """Reply to a call whose ``handle_call`` returned :data:`NOREPLY`.

    Returns False if the caller no longer waits (it timed out or was cancelled).
    """
    if not isinstance(caller, Caller):
        raise TypeError(
            f"reply() takes the Caller that handle_call received, not {type(caller).__name__}"
        )
    return caller.reply(value)


class GenServer:
    """Base class of servers. Override the callbacks; call nothing here directly
    except :meth:`stop` and :attr:`pid`.

    Instances are created with no arguments by the runtime; ``init`` receives the
    start arguments. Class attribute ``mailbox_size`` overrides the node default.

    Error semantics: an exception in ``init`` fails the start
    (:class:`StartError`); an exception in a handler ends the server with that
    exception as its reason, after ``terminate(reason)`` has run, and every
    caller waiting on it gets :class:`ServerExited`.
    """

    mailbox_size: ClassVar[int | None] = None

    _process: Process
    _stop_reason: ExitReason | None = None

    @property
    def pid(self) -> Pid:
        """This server's pid."""
        return self._process.pid

    async def init(self, *args: Any, **kwargs: Any) -> None:
        """Set up state before the server is ready. Raising fails the start."""

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        """Answer a :func:`call`. Return the reply, or :data:`NOREPLY` and call
        :func:`reply` later."""
        raise NotImplementedError(
            f"{type(self).__qualname__} received call {request!r} but defines no handle_call"
        )

    async def handle_cast(self, request: Any) -> None:
        """Handle a :func:`cast`."""
        raise NotImplementedError(
            f"{type(self).__qualname__} received cast {request!r} but defines no handle_cast"
        )

    async def handle_info(self, message: Any) -> None:
        """Handle any other message (``send``, ``Down``, ``Exit``). Default: log it."""
        logger.warning(
            "%s %s ignored unexpected message %r", type(self).__qualname__, self.pid, message
        )

    async def terminate(self, reason: ExitReason) -> None:
        """Clean up. Runs on an orderly stop and after a handler raised; not when the
        server is killed (brutal kill, or an exit signal while not trapping exits)."""

    def stop(self, reason: ExitReason = NORMAL) -> None:
        """Stop after the current message: ``terminate(reason)`` runs, then the server
        exits with ``reason``."""
        self.request_stop(reason)

    def request_stop(self, reason: ExitReason) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
            self._process.mailbox.wake()

    # -- the loop -------------------------------------------------------------------

    async def _serve(
        self, gate: StartGate, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ExitReason:
        """Run the server: ``init``, then messages until stopped, then ``terminate``.

        The message loop lives here rather than in a helper coroutine because
        every coroutine frame an idle server is parked under costs memory.
        """
        process = current_process("GenServer")
        self._process = process
        process.behaviour = self
        await self.init(*args, **kwargs)
        gate.started()
        mailbox = process.mailbox
        handled = 0
        # Requests carry their sender's request context; the server's own is set
        # (and reset) only when they differ, which they rarely do outside a bind.
        own_context = request_context.get()
        try:
            while self._stop_reason is None:
                message = mailbox.take_nowait()
                if is_nothing(message):
                    handled = 0
                    mailbox.claim_receiver()
                    await wait_task_rescheduled(mailbox.abort_wait)
                    continue
                kind = type(message)
                if kind is _Call:
                    if message.context is own_context:
                        answer = await self.handle_call(message.request, message.caller)
                    else:
                        token = request_context.set(message.context)
                        try:
                            answer = await self.handle_call(message.request, message.caller)
                        finally:
                            request_context.reset(token)
                    if answer is not NOREPLY:
                        message.caller.reply(answer)
                elif kind is _Cast:
                    if message.context is own_context:
                        await self.handle_cast(message.request)
                    else:
                        token = request_context.set(message.context)
                        try:
                            await self.handle_cast(message.request)
                        finally:
                            request_context.reset(token)
                else:
                    await self.handle_info(message)
                handled += 1
                if handled == BATCH_SIZE:
                    handled = 0
                    await checkpoint()
        except Exception as exc:
            await self._terminate(exc)
            raise
        reason = self._stop_reason
        await self._terminate(reason)
        return reason

    async def _terminate(self, reason: ExitReason) -> None:
        try:
            await self.terminate(reason)
        except Exception:
            logger.exception("terminate() of %s raised", self.pid)


class _ServerBody:
    """The body of a server process: a plain callable, so that it adds no
    coroutine frame of its own under the server's loop."""

    __slots__ = ("args", "cls", "kwargs")

    def __init__(self, cls: type[GenServer], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.cls = cls
        self.args = args
        self.kwargs = kwargs

    def __call__(self, gate: StartGate) -> Coroutine[Any, Any, ExitReason]:
        return self.cls()._serve(gate, self.args, self.kwargs)


def server_body(cls: type[GenServer], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Body:
    """The body of a process that runs a new ``cls()`` server."""
    return _ServerBody(cls, args, kwargs)


def _check_server_class(cls: object) -> type[GenServer]:
    if not (isinstance(cls, type) and issubclass(cls, GenServer)):
        raise TypeError(f"start_server() needs a GenServer subclass, got {cls!r}")
    return cls


async def start_server(
    cls: type[GenServer],
    *args: Any,
    name: str | None = None,
    link: bool = False,
    mailbox_size: int | None = None,
    **kwargs: Any,
) -> Pid:
    """Start an unsupervised server and return its pid once ``init`` has returned.

    The server belongs to the node and is stopped (``terminate`` runs) when the
    node closes. ``name`` is registered before ``init`` runs. Raises
    :class:`StartError` if ``init`` raises, :class:`AlreadyStarted` if the name is
    taken.
    """
    from .process import link_processes

    server_class = _check_server_class(cls)
    caller = current_process("start_server()")
    node = caller.node
    size = check_mailbox_size(mailbox_size, "start_server()") or server_class.mailbox_size
    process = node.new_process(size, None, name=name)
    pid: Pid = await node.spawn_nursery.start(
        run_process, process, server_body(server_class, args, kwargs)
    )
    if link and process.alive:
        link_processes(caller, process)
    return pid


async def stop(
    target: Target, reason: ExitReason = NORMAL, timeout: float | None = INFINITY
) -> None:
    """Stop a process in order and wait until it has ended (OTP's ``gen_server:stop``).

    A GenServer finishes its current message, runs ``terminate(reason)`` and exits
    with ``reason``; any other process is cancelled with that reason. A supervised
    process is then handled by its supervisor like any exit with ``reason``.
    Raises :class:`NoProcess` if ``target`` is not alive and :class:`CallTimeout`
    if it has not ended within ``timeout`` (it keeps stopping). A process on
    another node is stopped through the node's cluster, which adds
    :class:`NodeDown` (docs/cluster.md).
    """
    await checkpoint_if_cancelled()
    seconds = check_timeout(timeout, "stop()")
    caller = current_process("stop()")
    node = caller.node
    process = node.lookup(target, name_must_exist=False)
    if process is None:
        remote = node.remote
        where = split_remote(node.name, target)
        if remote is not None and where is not None:
            await remote.stop(caller, where[0], where[1], reason, seconds)
            return
        raise NoProcess(target)
    process.stop(reason)
    with trio.move_on_after(seconds):
        await process.wait_exited()
    if process.alive:
        raise CallTimeout(target, seconds)
