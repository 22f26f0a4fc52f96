"""User registries: processes registered under keys, with values, cleaned up on exit.

The node's own name registry (``register``/``whereis``) lives in ``node.py``;
this module adds Elixir-style registries for users::

    sessions = Registry(keys="unique")
    sessions.register("user:42", {"since": now})       # the calling process
    [(pid, value)] = sessions.lookup("user:42")

    topics = Registry(keys="duplicate")                   # local pubsub
    topics.register("news")
    topics.dispatch("news", lambda entries: [send_nowait(p, msg) for p, _ in entries])

A registry is plain data owned by no task, usable from any process of any node.
Entries leave the moment their process ends (not lazily on lookup). Give it
to a supervisor with :meth:`Registry.child_spec` to tie its lifetime to a child:
when that child stops, the registry is cleared and closed until it runs again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, Literal, TypeVar

import attrs
import trio

from .errors import AlreadyStarted, FoundationError, NoProcess
from .pid import ExitReason, Pid
from .process import Process, Target, current_process
from .spec import ChildSpec, Restart

T = TypeVar("T")


class RegistryClosed(FoundationError):
    """The registry's owning child is not running."""


class _Entry:
    """One registration: a process and its value (mutable for ``update_value``)."""

    __slots__ = ("process", "value")

    def __init__(self, process: Process, value: Any) -> None:
        self.process = process
        self.value = value


@attrs.frozen(slots=True)
class RegistryEvent:
    """Sent to a registry's listeners: ``kind`` is ``"register"`` or ``"unregister"``."""

    kind: Literal["register", "unregister"]
    registry: str
    key: Hashable
    pid: Pid
    value: Any = None


@attrs.frozen(slots=True)
class Via:
    """A name held in a unique-key :class:`Registry`, usable wherever a target is.

    ``ChildSpec(..., name=Via(reg, "worker-1"))`` registers each incarnation of the
    child; ``call(Via(reg, "worker-1"), ...)`` reaches it.
    """

    registry: Registry = attrs.field()
    key: Hashable

    @registry.validator
    def _unique_only(self, _: attrs.Attribute[Registry], registry: Registry) -> None:
        if not isinstance(registry, Registry) or registry.kind != "unique":
            raise ValueError(f"Via needs a unique-key Registry, got {registry!r}")

    def check_free(self) -> None:
        """Raise :class:`AlreadyStarted` (or :class:`RegistryClosed`) if the key is
        taken, before anything is started under it."""
        self.registry._check_free(self.key)

    def resolve_process(self, node: Any) -> Process | None:
        entries = self.registry._entries.get(self.key)
        if not entries:
            return None
        process = entries[0].process
        return process if process.node is node and process.alive else None

    def register_process(self, process: Process) -> None:
        self.registry._add(self.key, process, None)

    def __str__(self) -> str:
        return f"Via({self.registry.name}, {self.key!r})"


class Registry:
    """A registry of processes by key: ``keys="unique"`` (one process per key) or
    ``"duplicate"`` (many; a process may register a key more than once).

    ``listeners`` are targets sent a :class:`RegistryEvent` on every register and
    unregister (including the automatic ones when a process ends); these
    notifications ignore mailbox capacity, like monitors' ``Down``.
    """

    def __init__(
        self,
        keys: Literal["unique", "duplicate"] = "unique",
        *,
        name: str = "registry",
        listeners: Iterable[Target] = (),
    ) -> None:
        if keys not in ("unique", "duplicate"):
            raise ValueError(f"keys must be 'unique' or 'duplicate', got {keys!r}")
        self.kind = keys
        self.name = name
        self.listeners = list(listeners)
        # key -> process -> values (a list: duplicate registries allow repeats)
        # key -> entries in registration order (one at most in a unique registry)
        self._entries: dict[Hashable, list[_Entry]] = {}
        self._by_process: dict[Process, set[Hashable]] = {}
        self._keys_by_pid: dict[Pid, set[Hashable]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<Registry {self.name!r} keys={self.kind} entries={self.count()}>"

    # -- writing (always the calling process) -------------------------------------

    def register(self, key: Hashable, value: Any = None, *, pid: Pid | None = None) -> None:
        """Register the calling process (or the live local process ``pid``) under
        ``key`` with ``value``.

        In a unique registry a taken key raises :class:`AlreadyStarted` with the
        holder's pid; a ``pid`` that is not a live process of this node raises
        :class:`NoProcess`. The entry leaves when that process ends.
        """
        self._add(key, self._process_of(pid, "Registry.register()"), value)

    def unregister(self, key: Hashable, *, pid: Pid | None = None) -> None:
        """Remove the entries of the calling process (or of ``pid``) under ``key``;
        no error if there are none."""
        if pid is not None and not isinstance(pid, Pid):
            raise TypeError(f"Registry.unregister(): pid must be a Pid or None, got {pid!r}")
        caller = current_process("Registry.unregister()")
        if pid is None:
            self._remove(key, caller)
            return
        for entry in list(self._entries.get(key, ())):
            if entry.process.pid == pid:
                self._remove(key, entry.process)
                return

    @staticmethod
    def _process_of(pid: Pid | None, what: str) -> Process:
        caller = current_process(what)
        if pid is None:
            return caller
        if not isinstance(pid, Pid):
            raise TypeError(f"{what}: pid must be a Pid or None, got {pid!r}")
        process = caller.node.lookup(pid, name_must_exist=False)
        if process is None:
            raise NoProcess(pid)
        return process

    def update_value(self, key: Hashable, update: Callable[[Any], Any]) -> Any:
        """Unique registries: replace the calling process's value under ``key`` with
        ``update(old)``; return the new value. :class:`NoProcess` if it holds none."""
        process = current_process("Registry.update_value()")
        for entry in self._entries.get(key, ()):
            if entry.process is process:
                entry.value = update(entry.value)
                return entry.value
        raise NoProcess(f"{key!r} in {self.name} (not registered by {process.pid})")

    def _check_free(self, key: Hashable) -> None:
        if self._closed:
            raise RegistryClosed(f"registry {self.name!r} is closed: its owner is not running")
        entries = self._entries.get(key)
        if self.kind == "unique" and entries:
            raise AlreadyStarted(key, entries[0].process.pid)

    def _add(self, key: Hashable, process: Process, value: Any) -> None:
        self._check_free(key)
        if not process.alive:
            raise NoProcess(process.pid)
        self._entries.setdefault(key, []).append(_Entry(process, value))
        keys = self._by_process.get(process)
        if keys is None:
            keys = self._by_process[process] = self._keys_by_pid[process.pid] = set()
            process.add_exit_hook(self._on_exit)
        keys.add(key)
        self._notify("register", key, process, value)

    def _remove(self, key: Hashable, process: Process) -> None:
        entries = self._entries.get(key)
        if not entries:
            return
        values = [e.value for e in entries if e.process is process]
        if not values:
            return
        kept = [e for e in entries if e.process is not process]
        if kept:
            self._entries[key] = kept
        else:
            del self._entries[key]
        keys = self._by_process.get(process)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_process[process]
                del self._keys_by_pid[process.pid]
                process.remove_exit_hook(self._on_exit)
        for value in values:
            self._notify("unregister", key, process, value)

    def _on_exit(self, process: Process, reason: ExitReason) -> None:
        for key in list(self._by_process.get(process, ())):
            self._remove(key, process)

    def _notify(
        self, kind: Literal["register", "unregister"], key: Hashable, owner: Process, value: Any
    ) -> None:
        if not self.listeners:
            return
        event = RegistryEvent(kind, self.name, key, owner.pid, value)
        for listener in self.listeners:
            process = owner.node.lookup(listener, name_must_exist=False)
            if process is not None:
                process.mailbox.put(event)

    # -- reading -------------------------------------------------------------------------

    def lookup(self, key: Hashable) -> list[tuple[Pid, Any]]:
        """``(pid, value)`` for every entry under ``key``, in registration order."""
        return [(e.process.pid, e.value) for e in self._entries.get(key, ())]

    def whereis(self, key: Hashable) -> Pid | None:
        """Unique registries: the pid under ``key``, or None."""
        entries = self._entries.get(key)
        return entries[0].process.pid if entries else None

    def dispatch(self, key: Hashable, fn: Callable[[list[tuple[Pid, Any]]], T]) -> T | None:
        """Call ``fn(entries)`` in the calling task with the entries under ``key``;
        return its result, or None (without calling it) when there are none."""
        entries = self.lookup(key)
        return fn(entries) if entries else None

    def match(self, key: Hashable, predicate: Callable[[Any], bool]) -> list[tuple[Pid, Any]]:
        """The entries under ``key`` whose value satisfies ``predicate``."""
        return [(pid, value) for pid, value in self.lookup(key) if predicate(value)]

    def count(self, key: Hashable | None = None) -> int:
        """The number of entries (under ``key``, or in all)."""
        if key is not None:
            return len(self._entries.get(key, ()))
        return sum(len(entries) for entries in self._entries.values())

    def keys(self, pid: Pid) -> list[Hashable]:
        """The keys ``pid`` is registered under."""
        return list(self._keys_by_pid.get(pid, ()))

    def all_keys(self) -> list[Hashable]:
        return list(self._entries)

    # -- lifetime --------------------------------------------------------------------------

    def clear(self) -> None:
        """Drop every entry (listeners are told of each)."""
        for process, keys in list(self._by_process.items()):
            for key in list(keys):
                self._remove(key, process)

    def child_spec(self, id: Hashable | None = None) -> ChildSpec:
        """A child spec whose process owns this registry: the registry opens when the
        child starts and is cleared and closed when it stops."""

        async def own(task_status: Any) -> None:
            self._closed = False
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.clear()
                self._closed = True

        return ChildSpec(
            id if id is not None else f"registry:{self.name}", own, restart=Restart.PERMANENT
        )
