"""DynamicSupervisor: a one-for-one supervisor of children added at run time.

Children are keyed by pid and stopped concurrently at shutdown; ``max_children``
bounds how many run at once. Restarts follow the same intensity window as
:class:`~.supervisor.Supervisor`.
"""

from __future__ import annotations

from typing import Any

import trio

from .errors import NoSuchChild, StartError, SupervisorError, TooManyChildren
from .events import ChildRestarted
from .pid import ExitReason, Pid
from .process import trap_exits
from .spec import AutoShutdown, DynamicSupervisorSpec, check_child, check_dynamic_supervisor
from .supervisor import (
    _Child,
    _count,
    _CountChildren,
    _Request,
    _should_restart,
    _StartChild,
    _SupervisorBase,
    _TerminateChild,
    _WhichChildren,
)


class DynamicSupervisor(_SupervisorBase):
    """A one-for-one supervisor of children added with :func:`start_child`.

    Children are keyed by pid; a child that is not restarted is forgotten.
    ``restart_child`` and ``delete_child`` do not apply.
    """

    _children: dict[Pid, _Child]

    async def init(self, spec: DynamicSupervisorSpec) -> None:
        trap_exits(True)
        check_dynamic_supervisor(spec)
        self._max_children = spec.max_children
        self._set_intensity(spec.max_restarts, spec.max_seconds)
        self._children = {}

    async def terminate(self, reason: ExitReason) -> None:
        children, self._children = list(self._children.values()), {}
        async with trio.open_nursery() as nursery:
            for child in children:
                nursery.start_soon(self._stop, child)

    async def _on_exit(self, pid: Pid, reason: ExitReason) -> bool:
        child = self._children.pop(pid, None)
        if child is None:
            return False
        while True:
            self._child_exited(child, reason)
            if not _should_restart(child.checked.restart, reason):
                return True
            if not self._restart_allowed():
                self._give_up()
                return True
            try:
                process = await self._start(child)
            except StartError as error:
                reason = error.reason
                continue
            self._children[process.pid] = child
            self._emit(
                ChildRestarted(
                    supervisor=self.pid, child_id=child.id, pid=process.pid, strategy="ONE_FOR_ONE"
                )
            )
            return True

    async def _manage(self, request: _Request) -> Any:
        children = list(self._children.values())
        if isinstance(request, _WhichChildren):
            return [c.info() for c in children]
        if isinstance(request, _CountChildren):
            return _count(children)
        if isinstance(request, _StartChild):
            checked = check_child(request.spec, AutoShutdown.NEVER, dynamic=True)
            if self._max_children is not None and len(self._children) >= self._max_children:
                raise TooManyChildren(
                    f"dynamic supervisor {self.pid} already runs max_children="
                    f"{self._max_children} children"
                )
            child = _Child(checked)
            process = await self._start(child)
            self._children[process.pid] = child
            return process.pid
        if isinstance(request, _TerminateChild):
            if not isinstance(request.target, Pid):
                raise NoSuchChild("a DynamicSupervisor terminates children by pid")
            found = self._children.pop(request.target, None)
            if found is None:
                raise NoSuchChild(f"dynamic supervisor {self.pid} has no child {request.target}")
            await self._stop(found)
            return None
        raise SupervisorError(
            "a DynamicSupervisor supports start_child, terminate_child (by pid), "
            "which_children and count_children"
        )
