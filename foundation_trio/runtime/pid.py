"""Process identifiers, references, exit reasons and the signal records.

These are the values a process sees: a :class:`Pid` names a process, a
:class:`Ref` names a monitor, an exit reason says why a process ended, and
:class:`Down` / :class:`Exit` arrive in a mailbox when a watched process ends.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs


@attrs.frozen(slots=True, order=True)
class Pid:
    """A process on a node: the node's name and an id unique on that node.

    Pids are hashable and compare by value, so they work as dict keys and in
    sets. They print like Erlang's, ``<demo.42>``.
    """

    node: str
    id: int

    def __str__(self) -> str:
        return f"<{self.node}.{self.id}>"

    def __repr__(self) -> str:
        return f"Pid({self.node!r}, {self.id})"


@attrs.frozen(slots=True)
class Ref:
    """A unique reference, returned by :func:`monitor` and carried by its :class:`Down`."""

    node: str
    id: int

    def __str__(self) -> str:
        return f"#Ref<{self.node}.{self.id}>"


@attrs.frozen(slots=True)
class Normal:
    """The exit reason of a process that finished its work: its function returned."""

    def __repr__(self) -> str:
        return "NORMAL"


@attrs.frozen(slots=True)
class Shutdown:
    """The exit reason of a process asked to stop, by its supervisor or its node.

    ``detail`` says more when there is more to say (``SHUTDOWN`` has none); any
    ``Shutdown`` counts as an orderly exit for transient children.
    """

    detail: object = None

    def __repr__(self) -> str:
        return "SHUTDOWN" if self.detail is None else f"Shutdown({self.detail!r})"


@attrs.frozen(slots=True)
class Killed:
    """The exit reason of a process that was killed: cancelled without cleanup."""

    def __repr__(self) -> str:
        return "KILLED"


NORMAL = Normal()
SHUTDOWN = Shutdown()
KILLED = Killed()

ExitReason: TypeAlias = Normal | Shutdown | Killed | BaseException
"""Why a process ended: :data:`NORMAL`, a :class:`Shutdown`, :data:`KILLED`, or the
exception that ended it."""


def is_orderly(reason: ExitReason) -> bool:
    """True for :data:`NORMAL` and any :class:`Shutdown`: the exits a transient child
    is not restarted for. (A linked process ignores only :data:`NORMAL`.)"""
    return isinstance(reason, Normal | Shutdown)


@attrs.frozen(slots=True)
class Down:
    """Delivered to a monitor's owner when the monitored process ends.

    ``pid`` is the process that ended, or the name that was monitored when no
    process had it (``reason`` is then a :class:`~foundation_trio.NoProcess`).
    """

    ref: Ref
    pid: Pid | str
    reason: ExitReason


@attrs.frozen(slots=True)
class Exit:
    """An exit signal delivered as a message, to a process that traps exits."""

    pid: Pid
    reason: ExitReason
