"""The wire codec of remote processes (``ft.wire``): typed envelopes and message bodies.

Everything one node says to another about processes is an **envelope**: a msgspec
``Struct`` from a closed, tagged union (:data:`Envelope`), encoded as a msgpack array
(the tag first, then the fields in order). Decoding is strict: a frame that is not
exactly one known envelope with fields of the right types raises :class:`WireError`,
and the link it came from is closed; the node carries on.

An envelope's **body** (the message of a ``send``, the request of a ``call`` or
``cast``, a reply) is user data, encoded separately and carried as raw msgpack
bytes. A body may be made of:

- ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``, ``bytes``;
- ``list``, ``tuple``, ``dict``, ``set`` and ``frozenset`` of bodies (a tuple stays a
  tuple, a set a set);
- enum members, which arrive as their values (the receiver converts them back);
- :class:`~foundation_trio.Pid` and :class:`~foundation_trio.Ref`, the exit reasons
  (``NORMAL``, ``SHUTDOWN``, ``Shutdown(detail)``, ``KILLED``), ``Down`` and ``Exit``;
- instances of attrs classes registered with :func:`register` (converted with cattrs,
  identified on the wire by their registered name);
- exceptions, which arrive as :class:`RemoteError` records (type name, message,
  traceback text), except :class:`~foundation_trio.NoProcess`,
  :class:`~foundation_trio.NodeDown` and :class:`RemoteError` itself, which arrive as
  themselves.

Anything else raises :class:`TypeError` in the sender, before anything is sent.
Nothing is ever pickled: a body names only types from this list and the explicit
registry, so decoding network input never runs code the receiver did not register.
"""

from __future__ import annotations

import enum
import traceback as traceback_module
from collections.abc import Hashable, Mapping
from typing import Any, Final, TypeAlias, TypeVar, cast

import attrs
import cattrs
import msgspec
from msgspec import Raw, Struct
from msgspec.msgpack import Ext

from ..runtime.errors import FoundationError, NodeDown, NoProcess
from ..runtime.pid import (
    KILLED,
    NORMAL,
    Down,
    Exit,
    ExitReason,
    Killed,
    Normal,
    Pid,
    Ref,
    Shutdown,
)

T = TypeVar("T")

MAX_TRACEBACK: Final = 8192
"""Characters of traceback text a :class:`RemoteError` keeps (the last ones)."""


class WireError(FoundationError, ValueError):
    """A frame or body could not be decoded: malformed, of an unknown envelope, or
    naming a type that is not registered here. The link it came from is closed."""


class RemoteError(FoundationError):
    """An exception that crossed a node boundary, as a record.

    ``type_name`` is the original exception's qualified type name (``"ValueError"``,
    ``"myapp.errors.Overdrawn"``), ``message`` its ``str()``, ``traceback`` the text of
    its traceback on the node where it happened (empty when there was none). The
    original type is never re-created on the receiving node.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __repr__(self) -> str:
        return f"RemoteError({self.type_name!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteError):
            return NotImplemented
        return (self.type_name, self.message, self.traceback) == (
            other.type_name,
            other.message,
            other.traceback,
        )

    def __hash__(self) -> int:
        return hash((RemoteError, self.type_name, self.message))

    @classmethod
    def from_exception(cls, exc: BaseException) -> RemoteError:
        """The record of ``exc``: its type name, message and formatted traceback."""
        if isinstance(exc, RemoteError):
            return exc
        kind = type(exc)
        module = kind.__module__
        name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
        text = ""
        if exc.__traceback__ is not None:
            text = "".join(traceback_module.format_exception(exc))[-MAX_TRACEBACK:]
        return cls(name, str(exc), text)


# -- exit reasons ----------------------------------------------------------------------


class ReasonNormal(Struct, tag=0, array_like=True, forbid_unknown_fields=True):
    pass


class ReasonShutdown(Struct, tag=1, array_like=True, forbid_unknown_fields=True):
    detail: Raw
    """The detail, encoded as a body (``nil`` for plain ``SHUTDOWN``)."""


class ReasonKilled(Struct, tag=2, array_like=True, forbid_unknown_fields=True):
    pass


class ReasonError(Struct, tag=3, array_like=True, forbid_unknown_fields=True):
    type_name: str
    message: str
    traceback: str


class ReasonNoProcess(Struct, tag=4, array_like=True, forbid_unknown_fields=True):
    target: str


class ReasonNodeDown(Struct, tag=5, array_like=True, forbid_unknown_fields=True):
    node: str
    reason: str


Reason: TypeAlias = (
    ReasonNormal | ReasonShutdown | ReasonKilled | ReasonError | ReasonNoProcess | ReasonNodeDown
)

_NIL: Final = b"\xc0"


def encode_reason(reason: ExitReason) -> Reason:
    """The wire form of an exit reason (or of any exception). Never fails: a
    ``Shutdown`` detail that is not a body travels as its ``repr``."""
    if isinstance(reason, Normal):
        return ReasonNormal()
    if isinstance(reason, Killed):
        return ReasonKilled()
    if isinstance(reason, Shutdown):
        if reason.detail is None:
            return ReasonShutdown(Raw(_NIL))
        try:
            detail = encode_body(reason.detail)
        except TypeError:
            detail = encode_body(repr(reason.detail))
        return ReasonShutdown(Raw(detail))
    if isinstance(reason, NodeDown):
        return ReasonNodeDown(reason.node, reason.reason)
    if isinstance(reason, NoProcess):
        return ReasonNoProcess(str(reason.target))
    error = RemoteError.from_exception(reason)
    return ReasonError(error.type_name, error.message, error.traceback)


def decode_reason(reason: Reason) -> ExitReason:
    """The exit reason an encoded reason stands for. Raises :class:`WireError`
    for a ``Shutdown`` detail that does not decode."""
    if isinstance(reason, ReasonNormal):
        return NORMAL
    if isinstance(reason, ReasonKilled):
        return KILLED
    if isinstance(reason, ReasonShutdown):
        return Shutdown(decode_body(reason.detail))
    if isinstance(reason, ReasonNodeDown):
        return NodeDown(reason.node, reason.reason)
    if isinstance(reason, ReasonNoProcess):
        return NoProcess(reason.target)
    return RemoteError(reason.type_name, reason.message, reason.traceback)


# -- envelopes ---------------------------------------------------------------------------

WirePid: TypeAlias = tuple[str, int]
"""A pid on the wire: ``(node, id)``."""

WireTarget: TypeAlias = WirePid | str
"""A pid, or a name registered on the receiving node."""

Context: TypeAlias = dict[str, str | int | float | bool | None]
"""A request-context snapshot (``ft.context.current()``)."""


class Send(Struct, tag=1, array_like=True, forbid_unknown_fields=True):
    """``send`` / ``send_nowait`` of ``body`` to ``target``."""

    sender: WirePid
    target: WireTarget
    body: Raw


class Cast(Struct, tag=2, array_like=True, forbid_unknown_fields=True):
    """``cast`` of the request ``body`` to the server ``target``."""

    sender: WirePid
    target: WireTarget
    context: Context
    body: Raw


class Call(Struct, tag=3, array_like=True, forbid_unknown_fields=True):
    """``call``: the request ``body`` for ``target``; answered by a :class:`Reply` or a
    :class:`CallFailed` carrying the same ``ref``."""

    ref: int
    caller: WirePid
    target: WireTarget
    context: Context
    body: Raw


class Reply(Struct, tag=4, array_like=True, forbid_unknown_fields=True):
    ref: int
    body: Raw


class CallFailed(Struct, tag=5, array_like=True, forbid_unknown_fields=True):
    """A call ended without a reply: no such process (``server`` None and a
    :class:`ReasonNoProcess`), the server exited (its pid and exit reason), or the
    reply could not be encoded (``server`` set and a :class:`ReasonError`, with
    ``exited`` False)."""

    ref: int
    server: WirePid | None
    exited: bool
    reason: Reason


class Monitor(Struct, tag=6, array_like=True, forbid_unknown_fields=True):
    """``watcher`` (on the sending node) monitors ``target``; ``ref`` is the id of the
    watcher node's :class:`~foundation_trio.Ref`."""

    ref: int
    watcher: WirePid
    target: WireTarget


class Demonitor(Struct, tag=7, array_like=True, forbid_unknown_fields=True):
    ref: int


class DownSignal(Struct, tag=8, array_like=True, forbid_unknown_fields=True):
    """The process monitored under ``ref`` ended (``pid`` is the name monitored when no
    process had it)."""

    ref: int
    pid: WireTarget
    reason: Reason


class Link(Struct, tag=9, array_like=True, forbid_unknown_fields=True):
    sender: WirePid
    target: WirePid


class Unlink(Struct, tag=10, array_like=True, forbid_unknown_fields=True):
    sender: WirePid
    target: WirePid


class ExitSignal(Struct, tag=11, array_like=True, forbid_unknown_fields=True):
    """An exit signal from ``sender`` to ``target``: through a link (``linked``, only
    delivered while the link exists) or from ``ft.exit``."""

    sender: WirePid
    target: WireTarget
    reason: Reason
    linked: bool


class Names(Struct, tag=12, array_like=True, forbid_unknown_fields=True):
    """Every name registered on the sending node, sent when a link comes up."""

    names: list[tuple[str, int]]


class NameChanged(Struct, tag=13, array_like=True, forbid_unknown_fields=True):
    """A name was registered on the sending node (``id`` of the pid), or dropped (None)."""

    name: str
    id: int | None


class Ping(Struct, tag=14, array_like=True, forbid_unknown_fields=True):
    seq: int


class Pong(Struct, tag=15, array_like=True, forbid_unknown_fields=True):
    seq: int


class BulkChunk(Struct, tag=16, array_like=True, forbid_unknown_fields=True):
    """A piece of a large ``bytes`` message being streamed on ``bulk`` (``stream``
    numbers the message among the sending node's streams)."""

    stream: int
    data: bytes


class BulkSend(Struct, tag=19, array_like=True, forbid_unknown_fields=True):
    """The last piece of a streamed ``bytes`` message, and the ``send`` it belongs to:
    the message is every piece of ``stream`` in order, then ``data``."""

    stream: int
    sender: WirePid
    target: WireTarget
    data: bytes


class BulkAbort(Struct, tag=20, array_like=True, forbid_unknown_fields=True):
    """The sender gave up on ``stream`` (it was cancelled): drop its pieces."""

    stream: int


class Stop(Struct, tag=21, array_like=True, forbid_unknown_fields=True):
    """``stop``: stop ``target`` in order with ``reason``; answered by a :class:`Reply`
    (``nil``) once it has ended, or a :class:`CallFailed` if there is no such process."""

    ref: int
    target: WireTarget
    reason: Reason


class Leaving(Struct, tag=17, array_like=True, forbid_unknown_fields=True):
    """The sending node is stopping; sent on ``data`` after everything else. The
    receiver treats it as the node going down and answers :class:`LeavingAck`."""


class LeavingAck(Struct, tag=18, array_like=True, forbid_unknown_fields=True):
    pass


Envelope: TypeAlias = (
    Send
    | BulkChunk
    | BulkSend
    | BulkAbort
    | Cast
    | Call
    | Reply
    | CallFailed
    | Monitor
    | Demonitor
    | DownSignal
    | Link
    | Unlink
    | ExitSignal
    | Names
    | NameChanged
    | Ping
    | Pong
    | Leaving
    | LeavingAck
    | Stop
)
"""Every envelope one node sends another about processes."""

_envelope_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    """The frame of ``envelope`` (its body must already be encoded)."""
    return _envelope_encoder.encode(envelope)


def decode_envelope(frame: bytes | bytearray | memoryview) -> Envelope:
    """The envelope in ``frame``; :class:`WireError` if it is not exactly one valid
    envelope. The body stays encoded (:func:`decode_body`)."""
    try:
        envelope: Envelope = _envelope_decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # incl. ValidationError
        raise WireError(f"malformed envelope: {exc}") from None
    return envelope


def wire_pid(pid: Pid) -> WirePid:
    return (pid.node, pid.id)


def unwire_pid(pid: WirePid) -> Pid:
    return Pid(pid[0], pid[1])


# -- bodies -------------------------------------------------------------------------------

_EXT_TUPLE: Final = 1
_EXT_SET: Final = 2
_EXT_FROZENSET: Final = 3
_EXT_PID: Final = 4
_EXT_REF: Final = 5
_EXT_RECORD: Final = 6
_EXT_REASON: Final = 7
_EXT_DOWN: Final = 8
_EXT_EXIT: Final = 9
_EXT_DICT: Final = 10

_PLAIN: Final = frozenset({str, int, float, bool, bytes, type(None)})

_registered_by_name: dict[str, type[Any]] = {}
_registered_by_type: dict[type[Any], str] = {}


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    # Pids, refs and the other wire-native values inside a registered class pass
    # through cattrs untouched; the body encoder turns them into their own
    # extension types, so they round-trip whatever the field's annotation says.
    for native in (Pid, Ref, Down, Exit, Normal, Shutdown, Killed):
        converter.register_unstructure_hook(native, lambda value: value)
        converter.register_structure_hook(native, _structure_native)
    # A field typed ``Any`` (or ``Hashable``) holds any body: it passes through cattrs
    # untouched and the body encoder keeps its exact types (a tuple stays a tuple, a
    # registered record stays that record) instead of cattrs flattening it to a dict.
    converter.register_unstructure_hook_func(_is_open_type, _identity)
    converter.register_structure_hook_func(lambda kind: kind is Hashable, _pass_through)
    return converter


def _is_open_type(kind: object) -> bool:
    return kind is Any or kind is Hashable


def _identity(value: object) -> object:
    return value


def _pass_through(value: object, _: object) -> object:
    return value


def _structure_native(value: object, kind: type[Any]) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"expected a {kind.__name__}, got {value!r}")
    return value


converter: Final = _make_converter()
"""The cattrs converter used for registered classes. Add hooks to it for field
types it cannot handle by default (before the first message of that class)."""


def register(cls: type[T], *, name: str | None = None) -> type[T]:
    """Allow instances of the attrs class ``cls`` in message bodies; return ``cls``
    (so it works as a class decorator).

    ``name`` identifies the class on the wire (default: its module and qualified
    name); every node that exchanges it must register a class under the same name.
    Registering the same class under the same name again does nothing. Raises
    :class:`TypeError` if ``cls`` is not an attrs class and :class:`ValueError` if
    the name is taken by another class or the class has another name.
    """
    if not (isinstance(cls, type) and attrs.has(cls)):
        raise TypeError(f"wire.register() takes an attrs class, got {cls!r}")
    if name is None:
        name = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(name, str) or not name:
        raise TypeError(f"wire.register(): name must be a non-empty str, got {name!r}")
    holder = _registered_by_name.get(name)
    if holder is not None and holder is not cls:
        raise ValueError(f"wire.register(): name {name!r} is already taken by {holder!r}")
    previous = _registered_by_type.get(cls)
    if previous is not None and previous != name:
        raise ValueError(
            f"wire.register(): {cls.__qualname__} is already registered as {previous!r}"
        )
    _registered_by_name[name] = cls
    _registered_by_type[cls] = name
    return cast("type[T]", cls)


def unregister(cls: type[Any]) -> None:
    """Forget ``cls`` (for tests and reloads); bodies naming it fail to decode after."""
    name = _registered_by_type.pop(cls, None)
    if name is not None:
        _registered_by_name.pop(name, None)


def registered() -> Mapping[str, type[Any]]:
    """The registered classes by wire name."""
    return dict(_registered_by_name)


def _wire_pid_ext(pid: Pid) -> Ext:
    return Ext(_EXT_PID, _plain_encoder.encode((pid.node, pid.id)))


def _to_wire(value: object) -> object:
    """``value`` as msgpack-native data with extension types; TypeError if impossible."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list:
        return [_to_wire(item) for item in value]  # type: ignore[attr-defined]
    if kind is dict:
        items: dict[Any, Any] = value  # type: ignore[assignment]
        if all(type(key) in _PLAIN for key in items):
            return {key: _to_wire(item) for key, item in items.items()}
        # Keys that need an extension type (tuples, pids) are not hashable on the
        # wire side: such a dict travels as a flat list of keys and values.
        flat = [part for key, item in items.items() for part in (_to_wire(key), _to_wire(item))]
        return Ext(_EXT_DICT, _plain_encoder.encode(flat))
    if kind is tuple:
        return Ext(_EXT_TUPLE, _plain_encoder.encode([_to_wire(item) for item in value]))  # type: ignore[attr-defined]
    if kind is Pid:
        return _wire_pid_ext(value)  # type: ignore[arg-type]
    if kind is Ref:
        return Ext(_EXT_REF, _plain_encoder.encode((value.node, value.id)))  # type: ignore[attr-defined]
    if kind is set or kind is frozenset:
        code = _EXT_SET if kind is set else _EXT_FROZENSET
        return Ext(code, _plain_encoder.encode([_to_wire(item) for item in value]))  # type: ignore[attr-defined]
    if kind in (Normal, Shutdown, Killed) or isinstance(value, BaseException):
        return Ext(_EXT_REASON, _envelope_encoder.encode(encode_reason(value)))  # type: ignore[arg-type]
    if kind is Down:
        down: Down = value  # type: ignore[assignment]
        parts = [_to_wire(down.ref), _to_wire(down.pid), _to_wire(down.reason)]
        return Ext(_EXT_DOWN, _plain_encoder.encode(parts))
    if kind is Exit:
        signal: Exit = value  # type: ignore[assignment]
        return Ext(
            _EXT_EXIT, _plain_encoder.encode([_to_wire(signal.pid), _to_wire(signal.reason)])
        )
    name = _registered_by_type.get(kind)
    if name is not None:
        fields = converter.unstructure(value, unstructure_as=kind)
        return Ext(_EXT_RECORD, _plain_encoder.encode([name, _to_wire(fields)]))
    if isinstance(value, int | float | str | bytes):
        # A subclass (an IntEnum, a str Enum): sent as its plain value.
        return _to_wire(_plain_value(value))
    if isinstance(value, enum.Enum):
        # Any other enum member travels as its value (when that is a body), as above:
        # the receiver's own code turns it back into the member it expects.
        return _to_wire(value.value)
    raise TypeError(
        f"cannot send a {kind.__module__}.{kind.__qualname__} to another node: message "
        "bodies are plain data (None, bool, int, float, str, bytes, list, tuple, dict, "
        "set), pids, refs, exit reasons, exceptions, or attrs classes registered with "
        "foundation_trio.wire.register()"
    )


def _plain_value(value: int | float | str | bytes) -> object:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return bytes(value)


_plain_encoder = msgspec.msgpack.Encoder()


def encode_body(value: object) -> bytes:
    """``value`` as msgpack bytes. Raises :class:`TypeError` (naming the type) for
    anything that is not a body, before anything is sent."""
    try:
        return _plain_encoder.encode(_to_wire(value))
    except (OverflowError, msgspec.EncodeError) as exc:
        raise TypeError(f"cannot send {type(value).__name__} to another node: {exc}") from None
    except RecursionError:
        raise TypeError("cannot send a body nested this deeply to another node") from None


_reason_decoder = msgspec.msgpack.Decoder(Reason)


def _from_ext(code: int, data: memoryview) -> object:
    if code == _EXT_TUPLE:
        return tuple(_list(data))
    if code == _EXT_PID:
        node, id = _pair(data)
        return Pid(node, id)
    if code == _EXT_REF:
        node, id = _pair(data)
        return Ref(node, id)
    if code == _EXT_RECORD:
        return _record(data)
    if code == _EXT_SET:
        return set(_list(data))
    if code == _EXT_FROZENSET:
        return frozenset(_list(data))
    if code == _EXT_REASON:
        return decode_reason(_reason_decoder.decode(data))
    if code == _EXT_DOWN:
        ref, pid, reason = _list(data, 3)
        if not isinstance(ref, Ref) or not isinstance(pid, Pid | str) or not _is_reason(reason):
            raise WireError("malformed Down in a body")
        return Down(ref, pid, reason)
    if code == _EXT_EXIT:
        pid, reason = _list(data, 2)
        if not isinstance(pid, Pid) or not _is_reason(reason):
            raise WireError("malformed Exit in a body")
        return Exit(pid, reason)
    if code == _EXT_DICT:
        flat = _list(data)
        if len(flat) % 2:
            raise WireError("malformed dict in a body")
        return dict(zip(flat[::2], flat[1::2], strict=True))
    raise WireError(f"unknown extension type {code} in a body")


def _is_reason(value: object) -> bool:
    return isinstance(value, Normal | Shutdown | Killed | BaseException)


def _list(data: memoryview, length: int | None = None) -> list[Any]:
    items = _body_decoder.decode(data)
    if not isinstance(items, list) or (length is not None and len(items) != length):
        raise WireError("malformed sequence in a body")
    return items


def _pair(data: memoryview) -> tuple[str, int]:
    items = _body_decoder.decode(data)
    if (
        not isinstance(items, list)
        or len(items) != 2
        or not isinstance(items[0], str)
        or type(items[1]) is not int
    ):
        raise WireError("malformed pid or ref in a body")
    return items[0], items[1]


def _record(data: memoryview) -> object:
    items = _list(data, 2)
    name, fields = items
    if not isinstance(name, str):
        raise WireError("malformed record in a body")
    cls = _registered_by_name.get(name)
    if cls is None:
        raise WireError(
            f"a body names the type {name!r}, which is not registered on this node "
            "(foundation_trio.wire.register)"
        )
    try:
        return converter.structure(fields, cls)
    except Exception as exc:
        raise WireError(f"a body's {name!r} record does not fit the class: {exc!r}") from None


_body_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(ext_hook=_from_ext)


def decode_body(data: bytes | bytearray | memoryview | Raw) -> Any:
    """The value encoded in ``data``; :class:`WireError` if it is malformed or names
    an unknown type."""
    try:
        return _body_decoder.decode(data)
    except WireError:
        raise
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise WireError(f"malformed body: {exc}") from None
    except RecursionError:
        raise WireError("a body is nested too deeply") from None


__all__ = [
    "Envelope",
    "Raw",
    "RemoteError",
    "WireError",
    "converter",
    "decode_body",
    "decode_envelope",
    "encode_body",
    "encode_envelope",
    "register",
    "registered",
    "unregister",
]
