"""The runtime's hook for processes on other nodes.

The runtime knows nothing of networks. When a target names a process on another
node (a :class:`~.pid.Pid` whose ``node`` is not this node's name, or a
``(name, node)`` pair naming another node), the runtime's entry points hand the
operation to ``node.remote``, an object implementing :class:`RemoteRouter`, which
the cluster layer installs when the node joins a cluster. Without one, remote
targets behave as they always did: a pid of another node names no live process
and a ``(name, node)`` pair raises :class:`~.errors.NoProcess`.

The local paths pay nothing for this: the router is consulted only after the
local lookup found no process.

The helpers at the end let the router hand requests that arrived from another
node to local processes exactly as a local ``call`` or ``cast`` would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .pid import ExitReason, Pid, Ref

if TYPE_CHECKING:
    from .process import Process
    from .server import Caller


class RemoteRouter(Protocol):
    """What the cluster layer provides to reach processes on other nodes.

    ``node`` is the other node's name; ``dest`` is a pid of that node or a name
    registered there. Each method has the semantics of the runtime function of
    the same name, as documented for remote targets in ``docs/cluster.md``.
    """

    async def send(self, sender: Process, node: str, dest: Pid | str, message: object) -> None: ...

    def send_nowait(
        self, sender: Process, node: str, dest: Pid | str, message: object
    ) -> None: ...

    async def call(
        self, caller: Process, node: str, dest: Pid | str, request: object, timeout: float
    ) -> Any: ...

    async def cast(self, sender: Process, node: str, dest: Pid | str, request: object) -> None: ...

    def monitor(self, watcher: Process, ref: Ref, node: str, dest: Pid | str) -> None: ...

    def demonitor(self, watcher: Process, ref: Ref) -> bool: ...

    def link(self, process: Process, node: str, dest: Pid | str) -> None: ...

    def unlink(self, process: Process, node: str, dest: Pid | str) -> None: ...

    def exit(self, sender: Process, node: str, dest: Pid | str, reason: ExitReason) -> None: ...

    def whereis(self, node: str, name: str) -> Pid | None: ...

    async def stop(
        self, caller: Process, node: str, dest: Pid | str, reason: ExitReason, timeout: float
    ) -> None: ...

    def names_changed(self, name: str, pid: Pid | None) -> None:
        """A local name was registered to ``pid`` or, with ``None``, dropped."""


def split_remote(local_node: str, target: object) -> tuple[str, Pid | str] | None:
    """``(node, pid_or_name)`` when ``target`` names a process on another node, else None."""
    if isinstance(target, Pid):
        return None if target.node == local_node else (target.node, target)
    if isinstance(target, tuple) and len(target) == 2:
        name, node = target
        if isinstance(name, str) and isinstance(node, str) and node != local_node:
            return node, name
    return None


def shown_target(node: str, dest: Pid | str) -> Pid | tuple[str, str]:
    """The target as the user wrote it: the pid, or the ``(name, node)`` pair."""
    return dest if isinstance(dest, Pid) else (dest, node)


def queue_call(
    server: Process, request: object, caller: Caller, context: Mapping[str, object]
) -> None:
    """Put a call from another node in ``server``'s mailbox (which the caller
    checked has room), as :func:`~.server.call` does for a local caller.

    ``caller`` is a :class:`~.server.Caller` subclass whose ``reply`` answers over
    the network; the server's exit fails it like a local caller.
    """
    from .server import make_call

    server.mailbox.put(make_call(request, caller, context))
    if server.open_calls is None:
        server.open_calls = set()
    server.open_calls.add(caller)


def make_cast(request: object, context: Mapping[str, object]) -> object:
    """The mailbox message of a cast from another node, to put in a mailbox
    with :func:`~.process.deliver`."""
    from .server import make_cast as make

    return make(request, context)


__all__ = ["RemoteRouter", "make_cast", "queue_call", "shown_target", "split_remote"]
