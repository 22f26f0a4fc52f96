"""The runtime's exceptions. Each message says what happened and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

# Re-exported: the runtime's errors derive from it, and users import it from here too.
from .._errors import FoundationError as FoundationError

if TYPE_CHECKING:
    from .pid import ExitReason, Pid


class NoNodeError(FoundationError, RuntimeError):
    """A runtime call was made outside a node."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs a running foundation_trio node: call it inside "
            "`async with foundation_trio.open_node(...)`, or in a process started there"
        )


class NoProcess(FoundationError, LookupError):
    """The target names no live process."""

    def __init__(self, target: object) -> None:
        super().__init__(f"no process is registered or alive as {target!s}")
        self.target = target


class MailboxFull(FoundationError):
    """``send_nowait`` found the target's mailbox at capacity."""

    def __init__(self, pid: Pid, capacity: int) -> None:
        super().__init__(
            f"mailbox of {pid} is full ({capacity} messages); use `await send(...)` "
            "to wait for room, or give the process a larger `mailbox_size`"
        )
        self.pid = pid
        self.capacity = capacity


class ReceiveTimeout(FoundationError, TimeoutError):
    """``receive`` found no matching message within its timeout."""


class CallTimeout(FoundationError, TimeoutError):
    """A ``call`` got no reply within its timeout. The server may still be working."""

    def __init__(self, target: object, timeout: float) -> None:
        super().__init__(f"call to {target!s} got no reply within {timeout} s")
        self.target = target
        self.timeout = timeout


class ServerExited(FoundationError):
    """The server of a ``call`` ended before it replied. ``reason`` is its exit reason."""

    def __init__(self, pid: Pid, reason: ExitReason) -> None:
        super().__init__(f"server {pid} exited before replying: {reason!r}")
        self.pid = pid
        self.reason = reason


class NodeDown(FoundationError, ConnectionError):
    """Another node is not connected, or the connection to it was lost.

    ``node`` is that node's name and ``reason`` says why the link went down
    (``"not connected"`` when there was none). Raised by ``call`` and ``ping`` to a
    process or node that cannot be reached; the exit reason of a remote process
    whose node was lost, as seen by its monitors (``Down``) and links (as in
    Erlang's ``noconnection``); and the message ``monitor_node`` delivers.
    """

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"node {node!r} is down: {reason}")
        self.node = node
        self.reason = reason

    def __repr__(self) -> str:
        return f"NodeDown({self.node!r}, {self.reason!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeDown):
            return NotImplemented
        return (self.node, self.reason) == (other.node, other.reason)

    def __hash__(self) -> int:
        return hash((NodeDown, self.node, self.reason))


class CallToSelf(FoundationError):
    """A process called itself; it would wait for its own reply forever."""


class AlreadyStarted(FoundationError):
    """A name is taken. ``pid`` is the process that holds it."""

    def __init__(self, name: object, pid: Pid) -> None:
        super().__init__(f"name {name!r} is already registered to {pid}")
        self.name = name
        self.pid = pid


class ExitSignal(FoundationError):
    """The node's body was ended by an exit signal from a linked process or ``exit()``."""

    def __init__(self, pid: Pid, reason: ExitReason) -> None:
        super().__init__(f"ended by an exit signal from {pid}: {reason!r}")
        self.pid = pid
        self.reason = reason


class InvalidChildSpec(FoundationError, ValueError):
    """A child or supervisor spec is malformed. Names the child and the field."""

    def __init__(self, child_id: object, field: str, problem: str) -> None:
        super().__init__(f"child {child_id!r}: {field}: {problem}")
        self.child_id = child_id
        self.field = field


class StartError(FoundationError):
    """A process failed to start: its ``init`` (or its start-up) raised or it exited.

    ``reason`` is the exit reason; when it is an exception it is also the ``__cause__``.
    """

    def __init__(self, what: str, reason: ExitReason) -> None:
        # A nested failure (a supervisor whose child failed) keeps the whole path
        # in the message and the root cause as ``reason``.
        detail = str(reason) if isinstance(reason, StartError) else repr(reason)
        super().__init__(f"{what} failed to start: {detail}")
        self.reason: ExitReason = reason.reason if isinstance(reason, StartError) else reason


class SupervisorError(FoundationError):
    """A supervisor management call could not be carried out."""


class NoSuchChild(SupervisorError, LookupError):
    """The supervisor has no child with that id or pid."""


class ChildRunning(SupervisorError):
    """The child is running; terminate it first."""


class TooManyChildren(SupervisorError):
    """A DynamicSupervisor already runs ``max_children`` children."""


class ConfigError(FoundationError, ValueError):
    """An option is missing, unknown or of the wrong type. The message names it."""
