"""Child and supervisor specifications, and their validation.

Specs are plain frozen records; nothing is checked when they are built. They are
checked, whole tree at once, when a supervisor is started or a child added, and
a bad one raises :class:`InvalidChildSpec` naming the child and the field.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from .errors import InvalidChildSpec

if TYPE_CHECKING:
    from .registry import Via


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one exits."""

    ONE_FOR_ONE = "one_for_one"
    """Only the exited child."""
    ONE_FOR_ALL = "one_for_all"
    """All children: the others are stopped (reverse order), then all start (in order)."""
    REST_FOR_ONE = "rest_for_one"
    """The exited child and the children started after it."""


class Restart(enum.Enum):
    """When a child is restarted."""

    PERMANENT = "permanent"
    """Always, even after a normal exit."""
    TRANSIENT = "transient"
    """Only after an abnormal exit (not ``NORMAL``, not a ``Shutdown``)."""
    TEMPORARY = "temporary"
    """Never; its spec is dropped when it exits, even as collateral of a sibling."""


class ChildType(enum.Enum):
    WORKER = "worker"
    SUPERVISOR = "supervisor"


class AutoShutdown(enum.Enum):
    """When a supervisor stops itself because significant children exited."""

    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    ALL_SIGNIFICANT = "all_significant"


class _BrutalKill:
    __slots__ = ()

    def __repr__(self) -> str:
        return "BRUTAL_KILL"


BRUTAL_KILL: Final = _BrutalKill()
"""Shutdown spec: cancel the child at once; its ``terminate`` does not run."""

ONE_FOR_ONE: Final = Strategy.ONE_FOR_ONE
ONE_FOR_ALL: Final = Strategy.ONE_FOR_ALL
REST_FOR_ONE: Final = Strategy.REST_FOR_ONE
PERMANENT: Final = Restart.PERMANENT
TRANSIENT: Final = Restart.TRANSIENT
TEMPORARY: Final = Restart.TEMPORARY
WORKER: Final = ChildType.WORKER
SUPERVISOR: Final = ChildType.SUPERVISOR
NEVER: Final = AutoShutdown.NEVER
ANY_SIGNIFICANT: Final = AutoShutdown.ANY_SIGNIFICANT
ALL_SIGNIFICANT: Final = AutoShutdown.ALL_SIGNIFICANT

DEFAULT_WORKER_SHUTDOWN: Final = 5.0


def _as_tuple(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(items)


def _as_children(children: Iterable[ChildSpec]) -> tuple[ChildSpec, ...]:
    return tuple(children)


@attrs.frozen
class ChildSpec:
    """How to start, restart and stop one child.

    ``start`` is a :class:`GenServer` subclass (``args``/``kwargs`` go to its
    ``init``), an async function (the process body, called with ``*args,
    **kwargs``; if it takes ``task_status`` it reports readiness itself), or a
    :class:`SupervisorSpec` / :class:`DynamicSupervisorSpec`.

    ``shutdown`` is seconds to wait after asking the child to stop, before it is
    cancelled; :data:`INFINITY`; or :data:`BRUTAL_KILL`. ``None`` means 5 s for
    workers and ``INFINITY`` for supervisors. ``type=None`` is inferred from
    ``start``. ``name`` registers each incarnation of the child (a ``str`` on the
    node, or a :class:`Via`).
    """

    id: Hashable
    start: Any
    args: tuple[Any, ...] = attrs.field(default=(), kw_only=True, converter=_as_tuple)
    kwargs: Mapping[str, Any] | None = attrs.field(default=None, kw_only=True)
    restart: Restart = attrs.field(default=Restart.PERMANENT, kw_only=True)
    shutdown: float | _BrutalKill | None = attrs.field(default=None, kw_only=True)
    type: ChildType | None = attrs.field(default=None, kw_only=True)
    significant: bool = attrs.field(default=False, kw_only=True)
    name: str | Via | None = attrs.field(default=None, kw_only=True)
    mailbox_size: int | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class SupervisorSpec:
    """A supervisor with ``children`` started in order.

    At most ``max_restarts`` restarts within ``max_seconds`` (one window for the
    whole supervisor); one more and it stops all children and exits with
    ``Shutdown("reached_max_restart_intensity")``.
    """

    children: tuple[ChildSpec, ...] = attrs.field(converter=_as_children)
    strategy: Strategy = attrs.field(default=Strategy.ONE_FOR_ONE, kw_only=True)
    max_restarts: int = attrs.field(default=3, kw_only=True)
    max_seconds: float = attrs.field(default=5.0, kw_only=True)
    auto_shutdown: AutoShutdown = attrs.field(default=AutoShutdown.NEVER, kw_only=True)


@attrs.frozen
class DynamicSupervisorSpec:
    """A one-for-one supervisor of children added at run time with ``start_child``.

    ``max_children=None`` means no limit. At shutdown all children stop at once.
    """

    max_children: int | None = attrs.field(default=None, kw_only=True)
    max_restarts: int = attrs.field(default=3, kw_only=True)
    max_seconds: float = attrs.field(default=5.0, kw_only=True)


# -- validation --------------------------------------------------------------------


class ChildKind(enum.Enum):
    SERVER = "server"
    FUNCTION = "function"
    SUPERVISOR = "supervisor"
    DYNAMIC_SUPERVISOR = "dynamic_supervisor"


@attrs.frozen
class CheckedChild:
    """A validated child spec with its defaults filled in."""

    spec: ChildSpec
    kind: ChildKind
    type: ChildType
    restart: Restart
    shutdown: float | _BrutalKill


def _enum(value: object, kind: type[enum.Enum], child_id: object, field: str) -> Any:
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.name for m in kind)
        raise InvalidChildSpec(child_id, field, f"{value!r} is not one of {allowed}") from None


def check_child(
    spec: object, auto_shutdown: AutoShutdown, *, dynamic: bool = False
) -> CheckedChild:
    """Validate one child spec (and any supervisor spec it starts)."""
    from .server import GenServer

    if not isinstance(spec, ChildSpec):
        raise InvalidChildSpec(None, "spec", f"expected a ChildSpec, got {spec!r}")
    child_id = spec.id
    if child_id is None:
        raise InvalidChildSpec(None, "id", "every child needs an id (any hashable but None)")
    try:
        hash(child_id)
    except TypeError:
        raise InvalidChildSpec(child_id, "id", "the id must be hashable") from None
    start = spec.start
    kind: ChildKind
    if isinstance(start, SupervisorSpec):
        check_supervisor(start, child_id)
        kind = ChildKind.SUPERVISOR
    elif isinstance(start, DynamicSupervisorSpec):
        check_dynamic_supervisor(start, child_id)
        kind = ChildKind.DYNAMIC_SUPERVISOR
    elif isinstance(start, type):
        if not issubclass(start, GenServer):
            raise InvalidChildSpec(
                child_id, "start", f"class {start.__qualname__} is not a GenServer subclass"
            )
        kind = ChildKind.SERVER
    elif callable(start):
        kind = ChildKind.FUNCTION
    else:
        raise InvalidChildSpec(
            child_id,
            "start",
            f"{start!r} is neither a GenServer subclass, an async function, nor a supervisor spec",
        )
    if spec.kwargs is not None and not isinstance(spec.kwargs, Mapping):
        raise InvalidChildSpec(child_id, "kwargs", f"expected a mapping, got {spec.kwargs!r}")
    restart = _enum(spec.restart, Restart, child_id, "restart")
    inferred = (
        ChildType.SUPERVISOR
        if kind in (ChildKind.SUPERVISOR, ChildKind.DYNAMIC_SUPERVISOR)
        else ChildType.WORKER
    )
    child_type = inferred if spec.type is None else _enum(spec.type, ChildType, child_id, "type")
    shutdown = spec.shutdown
    if shutdown is None:
        shutdown = math.inf if child_type is ChildType.SUPERVISOR else DEFAULT_WORKER_SHUTDOWN
    elif not isinstance(shutdown, _BrutalKill) and (
        isinstance(shutdown, bool) or not isinstance(shutdown, int | float) or not shutdown >= 0
    ):
        raise InvalidChildSpec(
            child_id,
            "shutdown",
            f"expected seconds >= 0, INFINITY or BRUTAL_KILL, got {shutdown!r}",
        )
    if not isinstance(spec.significant, bool):
        raise InvalidChildSpec(child_id, "significant", "expected True or False")
    if spec.significant:
        if dynamic:
            raise InvalidChildSpec(
                child_id, "significant", "a DynamicSupervisor has no significant children"
            )
        if restart is Restart.PERMANENT:
            raise InvalidChildSpec(
                child_id, "significant", "a permanent child cannot be significant"
            )
        if auto_shutdown is AutoShutdown.NEVER:
            raise InvalidChildSpec(
                child_id,
                "significant",
                "significant children need auto_shutdown=ANY_SIGNIFICANT or ALL_SIGNIFICANT",
            )
    name = spec.name
    if name is not None and not (isinstance(name, str) and name) and not _is_via(name):
        raise InvalidChildSpec(
            child_id, "name", f"expected None, a non-empty str or a Via, got {name!r}"
        )
    if spec.mailbox_size is not None and (
        not isinstance(spec.mailbox_size, int) or spec.mailbox_size <= 0
    ):
        raise InvalidChildSpec(child_id, "mailbox_size", "expected a positive int")
    return CheckedChild(
        spec,
        kind,
        child_type,
        restart,
        float(shutdown) if not isinstance(shutdown, _BrutalKill) else shutdown,
    )


def _is_via(name: object) -> bool:
    from .registry import Via

    return isinstance(name, Via)


def _check_intensity(owner: object, max_restarts: object, max_seconds: object) -> None:
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise InvalidChildSpec(
            owner, "max_restarts", f"expected an int >= 0, got {max_restarts!r}"
        )
    if (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, int | float)
        or not 0 < max_seconds < math.inf
    ):
        raise InvalidChildSpec(
            owner, "max_seconds", f"expected finite seconds > 0, got {max_seconds!r}"
        )


def check_supervisor(spec: SupervisorSpec, owner: object = "supervisor") -> list[CheckedChild]:
    """Validate a supervisor spec and all its children; return the checked children."""
    _enum(spec.strategy, Strategy, owner, "strategy")
    auto = _enum(spec.auto_shutdown, AutoShutdown, owner, "auto_shutdown")
    _check_intensity(owner, spec.max_restarts, spec.max_seconds)
    checked: list[CheckedChild] = []
    seen: set[object] = set()
    for child in spec.children:
        result = check_child(child, auto)
        if result.spec.id in seen:
            raise InvalidChildSpec(result.spec.id, "id", "duplicate id in the same supervisor")
        seen.add(result.spec.id)
        checked.append(result)
    return checked


def check_dynamic_supervisor(spec: DynamicSupervisorSpec, owner: object = "supervisor") -> None:
    _check_intensity(owner, spec.max_restarts, spec.max_seconds)
    limit = spec.max_children
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidChildSpec(
            owner, "max_children", f"expected None or an int >= 0, got {limit!r}"
        )
