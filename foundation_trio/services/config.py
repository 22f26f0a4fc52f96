"""The config service: one validated configuration tree per node.

The tree has the node's own sections (``events``, see :mod:`.settings`) and,
optionally, the application's section (``app`` by default) described by the
user's own attrs class. It is loaded once at node start from, in increasing
precedence::

    attrs defaults < ConfigSource.values < the TOML file < environment variables
                   < runtime updates persisted by an earlier run

and validated with cattrs: a value of the wrong type or an unknown key fails the
node's start with a :class:`ConfigError` that names where it came from, its
path and the expected type (``config file app.toml: events.max_age: expected
float, got str 'x'``).

At runtime, only the fields declared updatable (attrs metadata
``{"updatable": True}``, see :data:`UPDATABLE`) may change, through
:func:`update`; every change is published to :func:`subscribe`-rs and, with
``persist=``, written atomically to a JSON file that the next start applies on
top of everything else.

Reads (:func:`get`) look at the node's current tree directly, without a message
round trip: the tree is an immutable attrs value that the config server swaps
in one assignment. Writes (:func:`update`, :func:`reset`) go through the config
server, a supervised :class:`GenServer`, so they are applied, persisted and
published one at a time in arrival order.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeAlias

import attrs
import outcome
import trio

from .._validation import converter, structure_options, structure_value
from ..runtime.errors import ConfigError, FoundationError
from ..runtime.node import BootStep, Node, current_node
from ..runtime.pid import ExitReason, Shutdown
from ..runtime.server import GenServer, call
from ..runtime.spec import ChildSpec
from .settings import NODE_SECTIONS, UPDATABLE, EventsSettings, is_updatable
from .subscribers import DEFAULT_BUFFER, Lagged, Subscribers, check_buffer

SERVER_NAME: Final = "foundation_trio.config"
"""The name the config server is registered under on its node."""

PERSIST_FORMAT: Final = 1
"""Version of the JSON layout of the persisted updates file."""

StrPath: TypeAlias = "str | os.PathLike[str]"


class UnknownConfigPath(FoundationError, LookupError):
    """A config path names no field of the tree. The message lists what exists there."""


class NotUpdatable(FoundationError):
    """:func:`update` of a path not declared updatable. ``updatable`` lists those that are."""

    def __init__(self, path: str, updatable: tuple[str, ...]) -> None:
        listed = ", ".join(updatable) if updatable else "none"
        super().__init__(
            f"config path {path!r} cannot be changed at runtime; updatable paths: {listed} "
            '(declare a field updatable with attrs metadata {"updatable": True})'
        )
        self.path = path
        self.updatable = updatable


@attrs.frozen
class ConfigChange:
    """A runtime change of the value at ``path`` (received from :func:`subscribe`)."""

    path: str
    old: Any
    new: Any


# -- the source description ------------------------------------------------------------


def _check_schema(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not (isinstance(value, type) and attrs.has(value)):
        raise TypeError(f"ConfigSource: schema must be an attrs class or None, got {value!r}")


def _check_section(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.isidentifier():
        raise TypeError(f"ConfigSource: section must be an identifier str, got {value!r}")
    if value in NODE_SECTIONS:
        raise ValueError(
            f"ConfigSource: section {value!r} is one of the node's own sections "
            f"({', '.join(NODE_SECTIONS)}); choose another name"
        )


def _check_path(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str | os.PathLike):
        raise TypeError(f"ConfigSource: {attribute.name} must be a path or None, got {value!r}")


def _check_mapping(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(f"ConfigSource: {attribute.name} must be a mapping, got {value!r}")


def _check_prefix(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"ConfigSource: env_prefix must be a non-empty str or None, got {value!r}")


@attrs.frozen(kw_only=True)
class ConfigSource:
    """Where a node's configuration comes from; give it as ``open_node(config=...)``.

    ``schema`` is the application's attrs class, found in the tree under
    ``section``. ``values`` is a nested mapping of sections given in code (e.g.
    ``{"events": {"store": "sqlite"}}``), overridden by ``file`` (TOML, one table
    per section), overridden by environment variables named ``env_prefix`` +
    path with ``__`` between segments (``MYAPP_EVENTS__MAX_AGE=60``; read from
    ``environ``, default ``os.environ``; not read at all when ``env_prefix`` is
    None), overridden by the runtime updates persisted in ``persist`` (a JSON
    file written by this service; created on the first update).
    """

    schema: type[Any] | None = attrs.field(default=None, validator=_check_schema)
    section: str = attrs.field(default="app", validator=_check_section)
    values: Mapping[str, Any] = attrs.field(factory=dict, validator=_check_mapping)
    file: StrPath | None = attrs.field(default=None, validator=_check_path)
    env_prefix: str | None = attrs.field(default=None, validator=_check_prefix)
    environ: Mapping[str, str] | None = attrs.field(default=None, validator=_check_mapping)
    persist: StrPath | None = attrs.field(default=None, validator=_check_path)


def as_source(config: object) -> ConfigSource:
    """What ``open_node(config=...)`` accepts, as a :class:`ConfigSource`: None (the
    defaults), a mapping (``values``), a path (a TOML ``file``) or a ConfigSource."""
    if config is None:
        return ConfigSource()
    if isinstance(config, ConfigSource):
        return config
    if isinstance(config, Mapping):
        return ConfigSource(values=config)
    if isinstance(config, str | os.PathLike):
        return ConfigSource(file=config)
    raise TypeError(
        "open_node(): config must be None, a mapping of sections, a path to a TOML file "
        f"or a foundation_trio.ConfigSource, got {config!r}"
    )


# -- the tree's shape ---------------------------------------------------------------------


def _resolve_types(kind: type[Any], seen: set[type[Any]]) -> None:
    """Turn string annotations (``from __future__ import annotations``) into types,
    in ``kind`` and the attrs classes of its fields: paths are walked by type."""
    if kind in seen:
        return
    seen.add(kind)
    try:
        attrs.resolve_types(kind)
    except NameError as error:
        raise ConfigError(
            f"config schema {kind.__qualname__}: cannot resolve the type annotations: {error}"
        ) from None
    for field in attrs.fields(kind):
        if _is_section(field.type):
            _resolve_types(field.type, seen)


def root_class(source: ConfigSource) -> type[Any]:
    """The attrs class of the whole tree: the node's sections, then the user's."""
    seen: set[type[Any]] = set()
    for kind in NODE_SECTIONS.values():
        _resolve_types(kind, seen)
    fields: dict[str, Any] = {
        name: attrs.field(type=kind, default=attrs.Factory(kind))
        for name, kind in NODE_SECTIONS.items()
    }
    if source.schema is not None:
        schema = source.schema
        _resolve_types(schema, seen)
        if all(f.default is not attrs.NOTHING or not f.init for f in attrs.fields(schema)):
            fields[source.section] = attrs.field(type=schema, default=attrs.Factory(schema))
        else:
            fields[source.section] = attrs.field(type=schema)
    return attrs.make_class("Config", fields, frozen=True, kw_only=True)


def _is_section(kind: object) -> bool:
    return isinstance(kind, type) and attrs.has(kind)


def _describe_fields(kind: type[Any]) -> str:
    return ", ".join(f.name for f in attrs.fields(kind) if f.init) or "no fields"


def _split(path: object, what: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise TypeError(
            f"{what}: path must be a non-empty str like 'events.max_age', got {path!r}"
        )
    return path.split(".")


def field_at(root: type[Any], path: str, what: str) -> attrs.Attribute[Any]:
    """The attrs field that ``path`` names, or :class:`UnknownConfigPath`."""
    kind = root
    field: attrs.Attribute[Any] | None = None
    walked: list[str] = []
    for segment in _split(path, what):
        if not _is_section(kind):
            raise UnknownConfigPath(
                f"{what}: config path {path!r}: {'.'.join(walked)} is a value, not a section"
            )
        by_name = {f.name: f for f in attrs.fields(kind) if f.init}
        field = by_name.get(segment)
        if field is None:
            where = ".".join(walked) or "the config tree"
            raise UnknownConfigPath(
                f"{what}: unknown config path {path!r}: {where} has {_describe_fields(kind)}"
            )
        walked.append(segment)
        kind = field.type
    assert field is not None
    return field


def updatable_paths_of(root: type[Any], prefix: str = "") -> Iterator[str]:
    """The updatable paths under ``root``, in declaration order."""
    for field in attrs.fields(root):
        if not field.init:
            continue
        path = f"{prefix}{field.name}"
        if is_updatable(field):
            yield path
        if _is_section(field.type):
            yield from updatable_paths_of(field.type, path + ".")


def value_at(tree: Any, path: str) -> Any:
    value = tree
    for segment in path.split("."):
        value = getattr(value, segment)
    return value


def replace_at(tree: Any, path: str, new: Any) -> Any:
    """``tree`` with the value at ``path`` replaced; attrs validators run on the way up."""
    head, _, rest = path.partition(".")
    replacement = replace_at(getattr(tree, head), rest, new) if rest else new
    return attrs.evolve(tree, **{head: replacement})


# -- loading -------------------------------------------------------------------------------

Layer: TypeAlias = dict[str, Any]
"""Leaves of one source by path (``{"events.max_age": 60.0}``), raw, validated."""


def _layer_from_mapping(
    root: type[Any], mapping: Mapping[str, Any], origin: str, prefix: str = ""
) -> Layer:
    """Flatten one source's nested mapping along the schema, checking every leaf."""
    layer: Layer = {}
    kind: Any = field_at(root, prefix[:-1], origin).type if prefix else root
    by_name = {f.name: f for f in attrs.fields(kind) if f.init}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        field = by_name.get(key) if isinstance(key, str) else None
        if field is None:
            where = prefix[:-1] or "the config tree"
            raise ConfigError(
                f"{origin}: unknown key {path!r}: {where} has {_describe_fields(kind)}"
            )
        if _is_section(field.type) and not is_updatable(field) and isinstance(value, Mapping):
            layer.update(_layer_from_mapping(root, value, origin, path + "."))
        else:
            _structure_leaf(field, value, path, origin)
            layer[path] = value
    return layer


def _structure_leaf(field: attrs.Attribute[Any], value: object, path: str, origin: str) -> Any:
    try:
        return structure_value(field.type, value, path)
    except ConfigError as error:
        raise ConfigError(f"{origin}: {error}") from None


def _layer_from_file(root: type[Any], file: StrPath) -> Layer:
    origin = f"config file {os.fspath(file)}"
    try:
        with open(file, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{origin} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin} is not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{origin} cannot be read: {error}") from None
    return _layer_from_mapping(root, data, origin)


def _parse_env_value(field: attrs.Attribute[Any], raw: str, path: str, origin: str) -> Any:
    """A variable's text as the field's type: as is if the type takes it (``str``,
    a ``Literal`` of strings), else read as a TOML value (``60``, ``true``,
    ``["a", "b"]``)."""
    try:
        structure_value(field.type, raw, path)
    except ConfigError as as_text:
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"{origin}: {as_text}") from None
        _structure_leaf(field, value, path, origin)
        return value
    return raw


def _layer_from_env(root: type[Any], prefix: str, environ: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for name in sorted(environ):
        if not name.startswith(prefix) or name == prefix:
            continue
        origin = f"environment variable {name}"
        path = ".".join(segment.lower() for segment in name[len(prefix) :].split("__"))
        try:
            field = field_at(root, path, origin)
        except (UnknownConfigPath, TypeError) as error:
            raise ConfigError(str(error)) from None
        layer[path] = _parse_env_value(field, environ[name], path, origin)
    return layer


def _layer_from_persisted(root: type[Any], file: StrPath) -> Layer:
    origin = f"persisted config updates {os.fspath(file)}"
    try:
        with open(file, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"{origin} cannot be read: {error}") from None
    if (
        not isinstance(data, dict)
        or data.get("format") != PERSIST_FORMAT
        or not isinstance(data.get("updates"), dict)
    ):
        raise ConfigError(
            f"{origin}: not a file written by this version of the config service "
            f'(expected {{"format": {PERSIST_FORMAT}, "updates": {{...}}}})'
        )
    updatable = tuple(updatable_paths_of(root))
    layer: Layer = {}
    for path, value in data["updates"].items():
        try:
            field = field_at(root, path, origin)
        except (UnknownConfigPath, TypeError) as error:
            raise ConfigError(str(error)) from None
        if path not in updatable:
            raise ConfigError(f"{origin}: {NotUpdatable(path, updatable)}")
        _structure_leaf(field, value, path, origin)
        layer[path] = value
    return layer


def _nest(layers: list[Layer]) -> dict[str, Any]:
    """One nested mapping from flat layers, later layers winning."""
    nested: dict[str, Any] = {}
    for layer in layers:
        for path, value in layer.items():
            *parents, leaf = path.split(".")
            node = nested
            for segment in parents:
                child = node.get(segment)
                if not isinstance(child, dict):
                    child = node[segment] = {}
                node = child
            node[leaf] = value
    return nested


def build_tree(root: type[Any], layers: list[Layer]) -> Any:
    """Structure the merged ``layers`` into ``root`` (attrs validators included)."""
    nested = _nest(layers)
    for field in attrs.fields(root):
        # An absent section is structured from nothing, so that a required field
        # of the user's schema is reported by its own path.
        nested.setdefault(field.name, {})
    return structure_options(root, nested, "config")


@attrs.frozen
class Loaded:
    """A configuration as loaded at start: the layers below runtime updates, the
    persisted updates, and the tree they give."""

    root: type[Any]
    base: list[Layer]
    updates: Layer
    tree: Any


def load(source: ConfigSource) -> Loaded:
    """Read and validate every layer of ``source`` (blocking file I/O).

    Raises :class:`ConfigError` naming the source, the path and the problem.
    """
    root = root_class(source)
    base = [_layer_from_mapping(root, source.values, "ConfigSource.values")]
    if source.file is not None:
        base.append(_layer_from_file(root, source.file))
    if source.env_prefix is not None:
        environ = os.environ if source.environ is None else source.environ
        base.append(_layer_from_env(root, source.env_prefix, environ))
    updates = {} if source.persist is None else _layer_from_persisted(root, source.persist)
    return Loaded(root, base, updates, build_tree(root, [*base, updates]))


# -- persistence ---------------------------------------------------------------------------


def write_atomically(path: StrPath, text: str) -> None:
    """Replace the file at ``path`` with ``text`` so that a crash at any point
    leaves either the old content or the new, never a mix: write a temporary file
    in the same directory, fsync it, ``os.replace`` it over ``path``, then fsync
    the directory so the rename itself is durable."""
    target = Path(path)
    directory = target.parent
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _persisted_text(updates: Layer) -> str:
    return json.dumps({"format": PERSIST_FORMAT, "updates": updates}, indent=2) + "\n"


# -- the service -----------------------------------------------------------------------------


class ConfigService:
    """The config of one node: attached to the node, served by :class:`ConfigServer`."""

    def __init__(self, source: ConfigSource, loaded: Loaded) -> None:
        self.source = source
        self.root = loaded.root
        self.base = loaded.base
        self.updates: Layer = dict(loaded.updates)
        self.tree: Any = loaded.tree
        self.updatable = tuple(updatable_paths_of(loaded.root))
        self.subscribers: Subscribers[ConfigChange] = Subscribers("config")

    @property
    def events(self) -> EventsSettings:
        """The ``events`` section, as it is now."""
        settings: EventsSettings = self.tree.events
        return settings

    def check_update(self, path: object, value: object) -> tuple[str, Any]:
        """Validate an update in the caller: (path, value as the field's type)."""
        field = field_at(self.root, path, "config.update()")  # type: ignore[arg-type]
        assert isinstance(path, str)
        if path not in self.updatable:
            raise NotUpdatable(path, self.updatable)
        kind: Any = field.type
        if _is_section(kind) and isinstance(value, kind):
            return path, value
        return path, _structure_leaf(field, value, path, "config.update()")

    async def apply_update(self, path: str, value: Any) -> ConfigChange | None:
        old = value_at(self.tree, path)
        if old == value:
            return None
        try:
            tree = replace_at(self.tree, path, value)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config.update(): {path}: {error}") from None
        updates = {p: v for p, v in self.updates.items() if not p.startswith(path + ".")}
        updates.pop(path, None)
        updates[path] = converter.unstructure(value)
        await self._persist(updates)
        self.tree, self.updates = tree, updates
        change = ConfigChange(path, old, value)
        self.subscribers.publish(change)
        return change

    async def apply_reset(self) -> list[ConfigChange]:
        tree = build_tree(self.root, self.base)
        changes = [
            ConfigChange(path, value_at(self.tree, path), value_at(tree, path))
            for path in self.updates
        ]
        await self._persist({})
        self.tree, self.updates = tree, {}
        changed = [c for c in changes if c.old != c.new]
        for change in changed:
            self.subscribers.publish(change)
        return changed

    async def _persist(self, updates: Layer) -> None:
        if self.source.persist is not None:
            text = _persisted_text(updates)
            await trio.to_thread.run_sync(write_atomically, self.source.persist, text)


@attrs.frozen
class _Update:
    path: str
    value: Any


@attrs.frozen
class _Reset:
    pass


class ConfigServer(GenServer):
    """Serializes the writes of one node's config: updates and resets are applied,
    persisted and published one at a time. A failed write is returned to its
    caller; it does not crash the server."""

    service: ConfigService

    async def init(self, service: ConfigService) -> None:
        self.service = service

    async def handle_call(self, request: Any, caller: Any) -> outcome.Outcome[Any]:
        match request:
            case _Update(path, value):
                return await outcome.acapture(self.service.apply_update, path, value)
            case _Reset():
                return await outcome.acapture(self.service.apply_reset)
        raise TypeError(f"config server: unknown request {request!r}")

    async def terminate(self, reason: ExitReason) -> None:
        # Only when the node stops: a restarted server keeps the tree and the
        # subscriptions, which live in the service.
        if isinstance(reason, Shutdown):
            self.service.subscribers.close()
            current_node().remove_extension(ConfigService)


def boot_step(config: object = None) -> BootStep:
    """The boot step that loads ``config`` (see :func:`as_source`) and starts the
    config server. ``foundation_trio.open_node`` runs it first, before the other
    services, which read their sections from it. A bad config fails the node's
    start with :class:`ConfigError`."""
    source = as_source(config)

    async def start_config(node: Node) -> None:
        if source.file is None and source.persist is None:
            # Nothing to read: no worker thread (whose wait would also let a
            # MockClock jump).
            await trio.lowlevel.checkpoint()
            loaded = load(source)
        else:
            loaded = await trio.to_thread.run_sync(load, source)
        service = ConfigService(source, loaded)
        node.set_extension(ConfigService, service)
        await node.start_supervisor(
            [ChildSpec("config", ConfigServer, args=(service,), name=SERVER_NAME)],
            name="ft.config",
        )

    return start_config


# -- the module-level API ---------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


_MISSING: Final = _Missing()


def _service(what: str) -> ConfigService:
    return current_node().extension(ConfigService, f"the config service (used by {what})")


def get(path: str, default: Any = _MISSING) -> Any:
    """The current value at ``path`` (``"events.max_age"``, ``"app"``).

    Without ``default``, an unknown path raises :class:`UnknownConfigPath` listing
    the fields that exist there; with it, ``default`` is returned for an unknown
    path or a value that is None. Reads the node's tree directly: no waiting,
    no message. Raises :class:`LookupError` outside a node with the config service.
    """
    service = _service("config.get()")
    try:
        field_at(service.root, path, "config.get()")
    except UnknownConfigPath:
        if default is _MISSING:
            raise
        return default
    value = value_at(service.tree, path)
    if value is None and default is not _MISSING:
        return default
    return value


async def update(path: str, value: Any) -> ConfigChange | None:
    """Set the updatable field at ``path`` to ``value``; return the change, or None
    if the value was already that.

    Validation happens here, before anything changes: an unknown path raises
    :class:`UnknownConfigPath`, a path not declared updatable
    :class:`NotUpdatable` (listing the updatable ones), a value of the wrong type
    or refused by a field validator :class:`ConfigError` naming the path and the
    expected type. Values are not coerced (``"60"`` is not a float; an ``int`` is
    accepted for a ``float``). The change is then persisted, if the node
    persists updates (an ``OSError`` there leaves the value unchanged and is
    raised here), applied and published to subscribers. Waits for the config
    server, without a timeout; cancelling the wait does not undo an update the
    server has started.
    """
    service = _service("config.update()")
    checked_path, checked = service.check_update(path, value)
    result: outcome.Outcome[ConfigChange | None] = await call(
        SERVER_NAME, _Update(checked_path, checked), timeout=None
    )
    return result.unwrap()


async def reset() -> list[ConfigChange]:
    """Drop every runtime update (the persisted ones too): the tree goes back to
    what the defaults, values, file and environment give. Returns the changes,
    each also published to subscribers."""
    _service("config.reset()")
    result: outcome.Outcome[list[ConfigChange]] = await call(SERVER_NAME, _Reset(), timeout=None)
    return result.unwrap()


def updatable_paths() -> tuple[str, ...]:
    """The paths :func:`update` accepts, in the tree's order."""
    return _service("config.updatable_paths()").updatable


def subscribe(
    path: str | None = None, *, buffer: int = DEFAULT_BUFFER
) -> trio.MemoryReceiveChannel[ConfigChange | Lagged]:
    """A channel receiving every later :class:`ConfigChange` (those at, under or
    above ``path`` when it is given).

    Never slows down updates: at most ``buffer`` changes wait in the channel;
    beyond that they are dropped, and the next one the subscriber does get is
    preceded by a :class:`Lagged` record with the number dropped. Close the channel
    to unsubscribe; it ends (``trio.EndOfChannel``) when the node stops.
    """
    service = _service("config.subscribe()")
    size = check_buffer(buffer, "config.subscribe()")
    accepts: Callable[[ConfigChange], bool] | None = None
    if path is not None:
        field_at(service.root, path, "config.subscribe()")
        watched = path

        def accepts(change: ConfigChange) -> bool:
            return (
                change.path == watched
                or change.path.startswith(watched + ".")
                or watched.startswith(change.path + ".")
            )

    return service.subscribers.subscribe(size, accepts)


__all__ = [
    "SERVER_NAME",
    "UPDATABLE",
    "ConfigChange",
    "ConfigService",
    "ConfigSource",
    "EventsSettings",
    "Lagged",
    "NotUpdatable",
    "UnknownConfigPath",
    "as_source",
    "boot_step",
    "get",
    "reset",
    "subscribe",
    "updatable_paths",
    "update",
]
