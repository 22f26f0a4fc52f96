"""The wire codec: envelopes and bodies round-trip; anything else is a WireError."""

from __future__ import annotations

import pickle
from typing import Any

import attrs
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import foundation_trio as ft
from foundation_trio.cluster import wire

names = st.text(st.characters(codec="utf-8"), max_size=12)
node_names = st.from_regex(r"[a-z][a-z0-9_@-]{0,8}", fullmatch=True)
ids = st.integers(min_value=1, max_value=2**63 - 1)
pids = st.builds(ft.Pid, node_names, ids)
refs = st.builds(ft.Ref, node_names, ids)
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)


@attrs.frozen
class Point:
    x: int
    y: float
    label: str = ""


@attrs.frozen
class Job:
    owner: ft.Pid
    points: tuple[Point, ...]
    tags: frozenset[str]
    extra: dict[str, Any] = attrs.field(factory=dict)


wire.register(Point, name="tests.wire.Point")
wire.register(Job, name="tests.wire.Job")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(allow_nan=False),
    names,
    st.binary(max_size=16),
)
hashables = st.recursive(
    st.one_of(scalars, pids, refs),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
reasons = st.one_of(
    st.just(ft.NORMAL),
    st.just(ft.SHUTDOWN),
    st.just(ft.KILLED),
    st.builds(ft.Shutdown, scalars),
    st.builds(ft.NodeDown, node_names, names),
    st.builds(wire.RemoteError, names, names, names),
)
points = st.builds(Point, ints, st.floats(allow_nan=False), names)
records = st.one_of(
    points,
    st.builds(
        Job,
        pids,
        st.lists(points, max_size=3).map(tuple),
        st.frozensets(names, max_size=3),
        st.dictionaries(names, scalars, max_size=3),
    ),
    st.builds(ft.Down, refs, pids, reasons),
    st.builds(ft.Exit, pids, reasons),
)
bodies = st.recursive(
    st.one_of(scalars, pids, refs, reasons, records),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(names, inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=3),
        st.sets(hashables, max_size=3),
    ),
    max_leaves=20,
)


@given(bodies)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@example(("add", 2))
@example({(1, ft.Pid("a", 1)): [ft.Ref("b", 2)]})
def test_bodies_round_trip(body: Any) -> None:
    assert wire.decode_body(wire.encode_body(body)) == body


context = st.dictionaries(
    st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True),
    st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False), names),
    max_size=3,
)
wire_pids = st.tuples(node_names, ids)
targets = st.one_of(wire_pids, names)
raw_bodies = bodies.map(lambda b: wire.Raw(wire.encode_body(b)))
wire_reasons = reasons.map(wire.encode_reason)
envelopes = st.one_of(
    st.builds(wire.Send, wire_pids, targets, raw_bodies),
    st.builds(wire.Cast, wire_pids, targets, context, raw_bodies),
    st.builds(wire.Call, ids, wire_pids, targets, context, raw_bodies),
    st.builds(wire.Reply, ids, raw_bodies),
    st.builds(wire.CallFailed, ids, st.none() | wire_pids, st.booleans(), wire_reasons),
    st.builds(wire.Monitor, ids, wire_pids, targets),
    st.builds(wire.Demonitor, ids),
    st.builds(wire.DownSignal, ids, targets, wire_reasons),
    st.builds(wire.Link, wire_pids, wire_pids),
    st.builds(wire.Unlink, wire_pids, wire_pids),
    st.builds(wire.ExitSignal, wire_pids, targets, wire_reasons, st.booleans()),
    st.builds(wire.Names, st.lists(st.tuples(names, ids), max_size=4)),
    st.builds(wire.NameChanged, names, st.none() | ids),
    st.builds(wire.Ping, ids),
    st.builds(wire.Pong, ids),
    st.builds(wire.BulkChunk, ids, st.binary(max_size=64)),
    st.builds(wire.BulkSend, ids, wire_pids, targets, st.binary(max_size=64)),
    st.builds(wire.BulkAbort, ids),
    st.just(wire.Leaving()),
    st.just(wire.LeavingAck()),
)


def _plain(envelope: Any) -> Any:
    """The envelope's fields, with raw bodies decoded (Raw compares by identity)."""
    return tuple(
        wire.decode_body(value) if isinstance(value, msgspec.Raw) else value
        for value in msgspec.structs.astuple(envelope)
    )


@given(envelopes)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_envelopes_round_trip(envelope: wire.Envelope) -> None:
    decoded = wire.decode_envelope(wire.encode_envelope(envelope))
    assert type(decoded) is type(envelope)
    assert _plain(decoded) == _plain(envelope)


@given(reasons)
def test_exit_reasons_round_trip(reason: ft.ExitReason) -> None:
    assert wire.decode_reason(wire.encode_reason(reason)) == reason


def test_exceptions_become_remote_errors_with_their_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        error = exc
    got = wire.decode_body(wire.encode_body(error))
    assert isinstance(got, wire.RemoteError)
    assert (got.type_name, got.message) == ("KeyError", "'missing'")
    assert 'raise KeyError("missing")' in got.traceback

    class Custom(Exception):
        pass

    got = wire.decode_reason(wire.encode_reason(Custom("x")))
    assert isinstance(got, wire.RemoteError)
    assert got.type_name.endswith("Custom") and got.traceback == ""
    no_process = wire.decode_body(wire.encode_body(ft.NoProcess("counter")))
    assert isinstance(no_process, ft.NoProcess) and no_process.target == "counter"


def test_shutdown_detail_that_is_not_a_body_travels_as_its_repr() -> None:
    reason = wire.decode_reason(wire.encode_reason(ft.Shutdown(object)))
    assert reason == ft.Shutdown(repr(object))


@pytest.mark.parametrize(
    "value",
    [object(), Point, lambda: 1, 2**64, -(2**63) - 1, attrs.make_class("Unregistered", ["a"])(1)],
)
def test_what_is_not_a_body_is_refused_before_sending(value: object) -> None:
    with pytest.raises(TypeError, match="cannot send"):
        wire.encode_body(value)
    with pytest.raises(TypeError, match="cannot send"):
        wire.encode_body({"nested": [value]})


def test_enum_members_travel_as_their_values() -> None:
    import enum

    class Color(enum.IntEnum):
        RED = 1

    assert wire.decode_body(wire.encode_body(Color.RED)) == 1

    class Side(enum.Enum):
        BUY = "buy"
        ODD = (1, 2)

    assert wire.decode_body(wire.encode_body([(Side.BUY, 3)])) == [("buy", 3)]
    assert wire.decode_body(wire.encode_body(Side.ODD)) == (1, 2)

    class Opaque(enum.Enum):
        THING = object()

    with pytest.raises(TypeError, match="cannot send"):
        wire.encode_body(Opaque.THING)


def test_register_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="attrs class"):
        wire.register(dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already taken"):
        wire.register(attrs.make_class("Other", ["a"]), name="tests.wire.Point")
    with pytest.raises(ValueError, match="already registered"):
        wire.register(Point, name="another.name")
    with pytest.raises(TypeError, match="name"):
        wire.register(attrs.make_class("Third", ["a"]), name="")
    assert wire.register(Point, name="tests.wire.Point") is Point
    assert wire.registered()["tests.wire.Point"] is Point


def test_unknown_and_mismatched_records_are_wire_errors() -> None:
    Temp = attrs.make_class("Temp", {"a": attrs.field(type=int)})
    wire.register(Temp, name="tests.wire.Temp")
    frame = wire.encode_body([Temp(1)])
    wire.unregister(Temp)
    with pytest.raises(wire.WireError, match="not registered"):
        wire.decode_body(frame)
    Strict = attrs.make_class("Strict", {"a": attrs.field(type=int)})
    wire.register(Strict, name="tests.wire.Temp")
    try:
        assert wire.decode_body(frame) == [Strict(1)]
    finally:
        wire.unregister(Strict)
    Loose = attrs.make_class("Loose", {"a": attrs.field(type=str)})
    wire.register(Loose, name="tests.wire.Temp")
    loose = wire.encode_body(Loose("x"))
    wire.unregister(Loose)
    wire.register(Strict, name="tests.wire.Temp")
    try:
        with pytest.raises(wire.WireError, match="does not fit"):
            wire.decode_body(loose)
    finally:
        wire.unregister(Strict)


@given(st.binary(max_size=64))
@settings(max_examples=500)
def test_random_bytes_never_escape_as_anything_but_wire_error(data: bytes) -> None:
    for decode in (wire.decode_envelope, wire.decode_body):
        try:
            decode(data)
        except wire.WireError:
            pass


@given(envelopes, st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_frames_decode_or_fail_cleanly(
    envelope: wire.Envelope, data: st.DataObject
) -> None:
    frame = bytearray(wire.encode_envelope(envelope))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(frame) - 1))
        frame[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(frame)))
    try:
        decoded = wire.decode_envelope(bytes(frame[:cut]))
    except wire.WireError:
        return
    for value in msgspec.structs.astuple(decoded):
        if isinstance(value, msgspec.Raw):
            try:
                wire.decode_body(value)
            except wire.WireError:
                pass


def test_a_pickle_in_a_frame_is_never_unpickled(monkeypatch: pytest.MonkeyPatch) -> None:
    class Boom:
        def __reduce__(self) -> Any:
            return (pytest.fail, ("unpickled!",))

    payload = pickle.dumps(Boom())
    calls: list[object] = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append(a))
    frames = [
        payload,
        wire.encode_envelope(wire.Send(("a", 1), "x", wire.Raw(payload))),
        wire.encode_envelope(wire.Send(("a", 1), "x", wire.Raw(wire.encode_body(payload)))),
    ]
    for frame in frames:
        try:
            envelope = wire.decode_envelope(frame)
            assert isinstance(envelope, wire.Send)
            body = wire.decode_body(envelope.body)
        except wire.WireError:
            continue
        assert body == payload  # bytes stay bytes
    assert calls == []


def test_envelope_is_small() -> None:
    frame = wire.encode_envelope(
        wire.Call(1, ("a", 2), "counter", {}, wire.Raw(wire.encode_body(("add", 2))))
    )
    assert len(frame) < 32
