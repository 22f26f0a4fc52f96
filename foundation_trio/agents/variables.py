"""Universal variables: named, typed values with a domain, an access rule and a version.

::

    await ft.agents.define_variable(
        ft.agents.VariableSpec("temperature", ft.agents.FloatRange(0.0, 2.0), default=0.7)
    )
    current = ft.agents.get_variable("temperature")          # value 0.7, version 0
    ft.agents.set_variable("temperature", 0.9, expected_version=current.version)

**Writes are compare-and-set** on the version: a write names the version it
expects and commits only if the variable is still at that version; the version
then rises by exactly 1. Otherwise :class:`~.errors.VersionConflict`. Values
outside the domain raise :class:`~.errors.OutOfDomain`; writers the access rule
does not allow raise :class:`~.errors.PermissionDenied`. The writer is who calls:
the agent id when the calling process is an agent, else its pid; ``coordinate``
commits as ``"coordinate:<strategy>"`` (allowed unless ``coordinated=False``).

**Subscriptions** (:func:`subscribe_variable`) receive every committed version in
order, exactly once, or, for a subscriber too slow to keep its buffer from filling,
a :class:`~foundation_trio.services.subscribers.Lagged` record saying how many
versions it missed, followed by the next ones. A subscriber that closes its channel
is dropped at the next commit; the subscriptions of a process end when it exits
(a dead agent's subscriptions are released).

**Partitions**: a variable given ``members`` (the names of the nodes whose majority
it needs) refuses writes, :func:`set_variable` and a ``coordinate`` commit alike,
with :class:`~.errors.ReadOnly` while its node cannot see a strict majority of them
(itself plus the members it has a link to, :func:`~foundation_trio.nodes`); reads
still work. This is a write guard, not replication: the value lives on the node
that defined the variable and is not copied to the other members.

Variables live on the node (a node extension). Not done yet: replication across
a cluster.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

import attrs
import trio

from ..cluster.remote import nodes
from ..runtime.node import current_node
from ..runtime.process import current_process
from ..services.subscribers import DEFAULT_BUFFER, Lagged, Subscribers, check_buffer
from .errors import (
    DuplicateVariable,
    NotAMember,
    OutOfDomain,
    PermissionDenied,
    ReadOnly,
    VariableNotFound,
    VersionConflict,
)
from .telemetry import VARIABLE_UPDATED, emit

__all__ = [
    "Choice",
    "Composite",
    "Domain",
    "FloatRange",
    "IntRange",
    "Lagged",
    "VariableSpec",
    "VariableUpdate",
    "define_variable",
    "get_variable",
    "set_variable",
    "subscribe_variable",
    "variable_history",
]


def _outside(domain: Domain) -> ValueError:
    """The (internal) signal that a value is not in ``domain``; callers turn it into
    :class:`~.errors.OutOfDomain` naming the variable."""
    return ValueError(domain.describe())


def _real(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


@attrs.frozen
class FloatRange:
    """Floats in ``[low, high]`` (ints are accepted and stored as floats)."""

    low: float
    high: float

    def __attrs_post_init__(self) -> None:
        if not (_real(self.low) and _real(self.high)):
            raise TypeError(f"FloatRange bounds are numbers, got {self.low!r}, {self.high!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"FloatRange needs finite low <= high, got {self.low}, {self.high}")

    def check(self, value: object) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _outside(self)
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise _outside(self)
        return float(value)

    def clamp(self, value: float) -> float:
        return float(min(max(value, self.low), self.high))

    def describe(self) -> str:
        return f"a float in [{self.low}, {self.high}]"


@attrs.frozen
class IntRange:
    """Ints in ``[low, high]``."""

    low: int
    high: int

    def __attrs_post_init__(self) -> None:
        for bound in (self.low, self.high):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise TypeError(f"IntRange bounds are ints, got {bound!r}")
        if self.low > self.high:
            raise ValueError(f"IntRange needs low <= high, got {self.low}, {self.high}")

    def check(self, value: object) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not self.low <= value <= self.high
        ):
            raise _outside(self)
        return value

    def clamp(self, value: float) -> int:
        """The nearest int in range (halves round to even, as :func:`round`)."""
        return min(max(round(value), self.low), self.high)

    def describe(self) -> str:
        return f"an int in [{self.low}, {self.high}]"


@attrs.frozen
class Choice:
    """One of ``options`` (distinct hashable values)."""

    options: tuple[Hashable, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not self.options:
            raise ValueError("Choice needs at least one option")
        for option in self.options:
            hash(option)
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"Choice options must be distinct, got {self.options!r}")

    def check(self, value: object) -> Hashable:
        try:
            if value in self.options:
                return value
        except TypeError:
            pass
        raise _outside(self)

    def describe(self) -> str:
        return f"one of {list(self.options)!r}"


def _frozen_fields(fields: Mapping[str, Domain]) -> Mapping[str, Domain]:
    return MappingProxyType(dict(fields))


@attrs.frozen
class Composite:
    """A mapping with exactly the keys of ``fields``, each value in its field's domain.
    Stored read-only."""

    fields: Mapping[str, Domain] = attrs.field(converter=_frozen_fields)

    def __attrs_post_init__(self) -> None:
        if not self.fields:
            raise ValueError("Composite needs at least one field")
        for key, domain in self.fields.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"Composite field names are non-empty str, got {key!r}")
            if not isinstance(domain, FloatRange | IntRange | Choice | Composite):
                raise TypeError(f"Composite field {key!r}: not a domain: {domain!r}")

    def check(self, value: object) -> Mapping[str, Any]:
        if not isinstance(value, Mapping) or set(value) != set(self.fields):
            raise _outside(self)
        checked: dict[str, Any] = {}
        for key, domain in self.fields.items():
            try:
                checked[key] = domain.check(value[key])
            except ValueError as exc:
                raise ValueError(f"field {key!r}: {exc}") from None
        return MappingProxyType(checked)

    def describe(self) -> str:
        inner = ", ".join(f"{k}: {d.describe()}" for k, d in self.fields.items())
        return f"a mapping {{{inner}}}"


Domain: TypeAlias = FloatRange | IntRange | Choice | Composite


def _to_writers(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(
            f"VariableSpec.writers is None or a collection of agent ids, got {value!r}"
        )
    writers = frozenset(value)
    for writer in writers:
        if not isinstance(writer, str) or not writer:
            raise TypeError(f"VariableSpec.writers holds agent ids (str), got {writer!r}")
    return writers


def _to_members(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(
            f"VariableSpec.members is None or a collection of node names, got {value!r}"
        )
    members = frozenset(value)
    for member in members:
        if not isinstance(member, str) or not member:
            raise TypeError(f"VariableSpec.members holds node names (str), got {member!r}")
    if not members:
        raise ValueError("VariableSpec.members must name at least one node (or be None)")
    return members


def _check_name(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"VariableSpec.name must be a non-empty str, got {value!r}")


def _check_domain(_: object, attribute: attrs.Attribute[Domain], value: object) -> None:
    if not isinstance(value, FloatRange | IntRange | Choice | Composite):
        raise TypeError(
            f"VariableSpec.domain must be a FloatRange, IntRange, Choice or Composite, "
            f"got {value!r}"
        )


def _check_history(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"VariableSpec.history must be an int >= 1, got {value!r}")


@attrs.frozen
class VariableSpec:
    """A universal variable: ``name``, ``domain`` (its type), ``default`` (must be in the
    domain), ``writers`` (agent ids allowed to write directly; None: anyone),
    ``coordinated`` (whether :func:`~foundation_trio.agents.coordinate` may commit),
    ``history`` (how many committed versions are kept), ``members`` (the names of the
    nodes whose strict majority this node must see to write, this node among them;
    None: a node-local variable, always writable)."""

    name: str = attrs.field(validator=_check_name)
    domain: Domain = attrs.field(validator=_check_domain)
    default: Any = attrs.field()
    writers: frozenset[str] | None = attrs.field(default=None, converter=_to_writers, kw_only=True)
    coordinated: bool = attrs.field(default=True, kw_only=True)
    history: int = attrs.field(default=100, validator=_check_history, kw_only=True)
    members: frozenset[str] | None = attrs.field(default=None, converter=_to_members, kw_only=True)

    def __attrs_post_init__(self) -> None:
        try:
            object.__setattr__(self, "default", self.domain.check(self.default))
        except ValueError as exc:
            raise OutOfDomain(self.name, self.default, f"the default must be {exc}") from None

    def access(self) -> str:
        """The access rule in words."""
        who = "anyone" if self.writers is None else f"agents {sorted(self.writers)}"
        how = "and coordinate()" if self.coordinated else "(coordinate() may not)"
        return f"{who} {how}"


@attrs.frozen
class VariableUpdate:
    """A committed version of a variable: ``value`` at ``version``, written by ``writer``
    at trio time ``at``. Version 0 is the default, written at definition."""

    name: str
    value: Any
    version: int
    writer: str
    at: float


class _Variable:
    def __init__(self, spec: VariableSpec, now: float) -> None:
        self.spec = spec
        self.current = VariableUpdate(spec.name, spec.default, 0, "default", now)
        self.history: deque[VariableUpdate] = deque([self.current], maxlen=spec.history)
        self.subscribers: Subscribers[VariableUpdate] = Subscribers(f"variable {spec.name!r}")
        self.changed = trio.Event()


class VariableStore:
    """The node's universal variables (a node extension). Use the module functions."""

    def __init__(self) -> None:
        self.variables: dict[str, _Variable] = {}

    def get(self, name: object) -> _Variable:
        if not isinstance(name, str):
            raise TypeError(f"a variable name is a str, got {name!r}")
        found = self.variables.get(name)
        if found is None:
            raise VariableNotFound(name)
        return found

    def commit(
        self, name: str, value: object, expected_version: int, writer: str, coordinated: bool
    ) -> VariableUpdate:
        """The one compare-and-set every write goes through."""
        variable = self.get(name)
        spec = variable.spec
        if coordinated:
            if not spec.coordinated:
                raise PermissionDenied(name, writer, spec.access())
        elif spec.writers is not None and writer not in spec.writers:
            raise PermissionDenied(name, writer, spec.access())
        if spec.members is not None:
            # this node is a member (checked at definition), so it counts itself
            reachable = 1 + len(spec.members.intersection(nodes()))
            needed = len(spec.members) // 2 + 1
            if reachable < needed:
                raise ReadOnly(name, writer, reachable, needed)
        try:
            checked = spec.domain.check(value)
        except ValueError as exc:
            raise OutOfDomain(name, value, str(exc)) from None
        if variable.current.version != expected_version:
            raise VersionConflict(name, expected_version, variable.current.version)
        update = VariableUpdate(
            name, checked, variable.current.version + 1, writer, trio.current_time()
        )
        variable.current = update
        variable.history.append(update)
        changed, variable.changed = variable.changed, trio.Event()
        changed.set()
        variable.subscribers.publish(update)
        emit(
            VARIABLE_UPDATED,
            {"version": update.version},
            {"variable": name, "writer": writer, "value": checked},
        )
        return update

    async def wait_changed(self, name: str, version: int) -> VariableUpdate:
        """Wait until ``name`` is at a version other than ``version``; return it."""
        variable = self.get(name)
        while variable.current.version == version:
            await variable.changed.wait()
        return variable.current


def variable_store() -> VariableStore:
    """The calling node's variable store (created on first use)."""
    node = current_node()
    store = node.find_extension(VariableStore)
    if store is None:
        store = VariableStore()
        node.set_extension(VariableStore, store)
    return store


def _check_version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"expected_version must be an int >= 0, got {value!r}")
    return value


def _writer() -> str:
    """Who is calling: its agent id if the calling process is an agent, else its pid."""
    from .registry import _existing_system

    process = current_process("a variable write")
    system = _existing_system()
    if system is not None:
        keys = system.directory.keys(process.pid)
        if keys:
            return str(keys[0])
    return str(process.pid)


# -- the public API -------------------------------------------------------------------------


def define_variable(spec: VariableSpec) -> VariableUpdate:
    """Define a variable on this node at version 0 with its default; return that version.

    Raises :class:`~.errors.DuplicateVariable` if the name is taken,
    :class:`~.errors.NotAMember` if ``spec.members`` does not name this node.
    """
    if not isinstance(spec, VariableSpec):
        raise TypeError(f"define_variable() takes a VariableSpec, got {spec!r}")
    here = current_node().name
    if spec.members is not None and here not in spec.members:
        raise NotAMember(spec.name, here, spec.members)
    store = variable_store()
    if spec.name in store.variables:
        raise DuplicateVariable(spec.name)
    variable = _Variable(spec, trio.current_time())
    store.variables[spec.name] = variable
    return variable.current


def get_variable(name: str) -> VariableUpdate:
    """The committed value and version of ``name``. :class:`~.errors.VariableNotFound`."""
    return variable_store().get(name).current


def variable_spec(name: str) -> VariableSpec:
    """The spec ``name`` was defined with."""
    return variable_store().get(name).spec


def set_variable(name: str, value: Any, *, expected_version: int) -> VariableUpdate:
    """Compare-and-set: commit ``value`` if ``name`` is at ``expected_version``; return the
    new version (``expected_version + 1``).

    Raises :class:`~.errors.VersionConflict` (another write committed first),
    :class:`~.errors.OutOfDomain`, :class:`~.errors.PermissionDenied` (the calling
    agent is not among ``writers``), :class:`~.errors.ReadOnly` (this node sees no
    strict majority of the variable's ``members``), :class:`~.errors.VariableNotFound`. Nothing
    is committed when it raises.
    """
    version = _check_version(expected_version)
    return variable_store().commit(name, value, version, _writer(), coordinated=False)


def variable_history(name: str) -> list[VariableUpdate]:
    """The last ``history`` committed versions of ``name``, oldest first."""
    return list(variable_store().get(name).history)


def subscribe_variable(
    name: str, *, buffer: int = DEFAULT_BUFFER
) -> trio.MemoryReceiveChannel[VariableUpdate | Lagged]:
    """A channel receiving every version of ``name`` committed from now on, in order.

    A subscriber that lets ``buffer`` versions pile up misses the next ones and then
    receives one :class:`Lagged` (``missed``: how many) before the versions that
    follow. Close the channel to unsubscribe; it is closed for you when the calling
    process exits.
    """
    size = check_buffer(buffer, "subscribe_variable()")
    variable = variable_store().get(name)
    channel = variable.subscribers.subscribe(size)
    current_process("subscribe_variable()").add_exit_hook(lambda _, __: channel.close())
    return channel
