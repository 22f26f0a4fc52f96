"""Lifecycle events: what the runtime reports to hooks (and, later, to telemetry).

Hooks are plain callables registered with :meth:`Node.add_hook`; they run
synchronously, in the task where the event happened, and must not block. A hook
that raises is removed and the error logged: it never breaks the runtime.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from .pid import ExitReason, Pid


@attrs.frozen(slots=True)
class ProcessStarted:
    """A process began running. ``parent`` is its supervisor, if any."""

    name: str = attrs.field(init=False, default="process.started")
    pid: Pid | None = None
    parent: Pid | None = None


@attrs.frozen(slots=True)
class ProcessExited:
    """A process ended with ``reason``."""

    name: str = attrs.field(init=False, default="process.exited")
    pid: Pid | None = None
    reason: ExitReason | None = None


@attrs.frozen(slots=True)
class ChildStarted:
    """A supervisor started (or restarted) child ``child_id`` as ``pid``."""

    name: str = attrs.field(init=False, default="supervisor.child_started")
    supervisor: Pid | None = None
    child_id: object = None
    pid: Pid | None = None


@attrs.frozen(slots=True)
class ChildExited:
    """A supervised child ended by itself (not because its supervisor stopped it)."""

    name: str = attrs.field(init=False, default="supervisor.child_exited")
    supervisor: Pid | None = None
    child_id: object = None
    pid: Pid | None = None
    reason: ExitReason | None = None


@attrs.frozen(slots=True)
class ChildRestarted:
    """A supervisor restarted child ``child_id``; ``pid`` is the successor."""

    name: str = attrs.field(init=False, default="supervisor.child_restarted")
    supervisor: Pid | None = None
    child_id: object = None
    pid: Pid | None = None
    strategy: str = ""


@attrs.frozen(slots=True)
class SupervisorGaveUp:
    """More than ``max_restarts`` restarts happened within ``max_seconds``."""

    name: str = attrs.field(init=False, default="supervisor.gave_up")
    supervisor: Pid | None = None
    max_restarts: int = 0
    max_seconds: float = 0.0


LifecycleEvent: TypeAlias = (
    ProcessStarted | ProcessExited | ChildStarted | ChildExited | ChildRestarted | SupervisorGaveUp
)
