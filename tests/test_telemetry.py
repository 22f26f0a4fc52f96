"""Telemetry: execute/attach/detach, handler failures, per-node tables, the service."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.lowlevel

import foundation_trio as ft
from foundation_trio.runtime.node import open_node as open_runtime_node
from foundation_trio.services import telemetry
from foundation_trio.services.telemetry import HandlerExists, Telemetry, UnknownHandler


def recorder(into: list[tuple[str, dict[str, float], dict[str, object]]]):
    def handler(name, measurements, metadata):
        into.append((name, dict(measurements), dict(metadata)))

    return handler


async def test_attached_handler_gets_name_measurements_and_metadata_with_context():
    got: list = []
    async with ft.open_node("t"):
        ft.telemetry.attach("rec", ["app.job.done", "app.job.failed"], recorder(got))
        ft.telemetry.execute("app.job.done", {"duration": 0.5, "items": 3}, {"job": "j1"})
        with ft.context.bind(request_id="r1"):
            ft.telemetry.execute("app.job.failed", {"duration": 1})
        ft.telemetry.execute("app.job.other", {"duration": 2.0})
    assert got == [
        ("app.job.done", {"duration": 0.5, "items": 3}, {"job": "j1", "context": {}}),
        ("app.job.failed", {"duration": 1}, {"context": {"request_id": "r1"}}),
    ]


async def test_handlers_run_in_attach_order_in_the_calling_task():
    order: list[tuple[str, object]] = []
    async with ft.open_node("t"):
        me = trio.lowlevel.current_task()
        ft.telemetry.attach(
            "b", "x.y", lambda *_: order.append(("b", trio.lowlevel.current_task()))
        )
        ft.telemetry.attach(
            "a", "x.y", lambda *_: order.append(("a", trio.lowlevel.current_task()))
        )
        ft.telemetry.execute("x.y", {})
    assert order == [("b", me), ("a", me)]


async def test_handlers_receive_read_only_copies():
    seen: list = []

    def mutating(name, measurements, metadata):
        seen.append(1)
        with pytest.raises(TypeError):
            measurements["x"] = 2  # type: ignore[index]
        with pytest.raises(TypeError):
            metadata["k"] = "changed"  # type: ignore[index]

    measurements = {"x": 1}
    metadata = {"k": "v"}
    async with ft.open_node("t"):
        ft.telemetry.attach("m", "a.b", mutating)
        ft.telemetry.execute("a.b", measurements, metadata)
        assert ft.telemetry.handlers() == {"m": ("a.b",)}
    assert seen == [1]
    assert measurements == {"x": 1} and metadata == {"k": "v"}


async def test_a_raising_handler_is_detached_logged_and_the_others_still_run(caplog):
    got: list = []
    failures: list = []
    calls = 0

    def broken(name, measurements, metadata):
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    async with ft.open_node("t"):
        ft.telemetry.attach("broken", ["a.b", "a.c"], broken)
        ft.telemetry.attach("good", "a.b", recorder(got))
        ft.telemetry.attach("watch", telemetry.HANDLER_FAILED, recorder(failures))
        with caplog.at_level(logging.ERROR, logger="foundation_trio.telemetry"):
            ft.telemetry.execute("a.b", {"n": 1})  # does not raise
        ft.telemetry.execute("a.b", {"n": 2})
        ft.telemetry.execute("a.c", {"n": 3})
        assert set(ft.telemetry.handlers()) == {"good", "watch"}
        with pytest.raises(UnknownHandler):
            ft.telemetry.detach("broken")
    assert calls == 1
    assert [m["n"] for _, m, _ in got] == [1, 2]
    assert failures == [
        (
            "telemetry.handler.failed",
            {},
            {
                "context": {},
                "handler_id": "broken",
                "event_name": "a.b",
                "kind": "RuntimeError",
                "error": "RuntimeError('boom')",
            },
        )
    ]
    [record] = [r for r in caplog.records if r.name == "foundation_trio.telemetry"]
    assert "'broken'" in record.getMessage() and "detached" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


async def test_a_handler_failing_on_the_failure_event_does_not_loop():
    calls = 0

    def broken(*_):
        nonlocal calls
        calls += 1
        raise ValueError("again")

    async with ft.open_node("t"):
        ft.telemetry.attach("x", ["a.b", telemetry.HANDLER_FAILED], broken)
        ft.telemetry.execute("a.b", {})
        assert ft.telemetry.handlers() == {}
    assert calls == 1


async def test_a_handler_that_returns_a_coroutine_is_detached():
    async def later():
        raise AssertionError("never awaited")

    async with ft.open_node("t"):
        # A lambda hides the coroutine function from attach's check.
        ft.telemetry.attach("sneaky", "a.b", lambda *_: later())
        ft.telemetry.execute("a.b", {})
        assert ft.telemetry.handlers() == {}


async def test_detach_stops_delivery_and_unknown_ids_raise():
    got: list = []
    async with ft.open_node("t"):
        ft.telemetry.attach("r", "a.b", recorder(got))
        ft.telemetry.execute("a.b", {"n": 1})
        ft.telemetry.detach("r")
        ft.telemetry.execute("a.b", {"n": 2})
        with pytest.raises(UnknownHandler, match="'r'"):
            ft.telemetry.detach("r")
        with pytest.raises(LookupError):
            ft.telemetry.detach("never")
        # the id is free again
        ft.telemetry.attach("r", "a.b", recorder(got))
        ft.telemetry.execute("a.b", {"n": 3})
    assert [m["n"] for _, m, _ in got] == [1, 3]


async def test_a_handler_detached_during_dispatch_is_not_disturbing_the_rest():
    got: list = []
    async with ft.open_node("t"):

        def detach_other(*_):
            got.append("first")
            ft.telemetry.detach("second")

        ft.telemetry.attach("first", "a.b", detach_other)
        ft.telemetry.attach("second", "a.b", lambda *_: got.append("second"))
        ft.telemetry.execute("a.b", {})  # the dispatch in progress still sees both
        ft.telemetry.execute("a.b", {})
    assert got == ["first", "second", "first"]


async def test_duplicate_handler_id_is_refused():
    async with ft.open_node("t"):
        ft.telemetry.attach("r", "a.b", lambda *_: None)
        with pytest.raises(HandlerExists, match="'r'"):
            ft.telemetry.attach("r", "a.c", lambda *_: None)
        assert ft.telemetry.handlers() == {"r": ("a.b",)}


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", ValueError),
        ("Runtime.process", ValueError),
        ("runtime..process", ValueError),
        ("runtime.process.", ValueError),
        (".runtime", ValueError),
        ("runtime.1process", ValueError),
        ("runtime process", ValueError),
        ("runtime-process", ValueError),
        (b"runtime.process", TypeError),
        (None, TypeError),
        (["a.b"], TypeError),
    ],
)
async def test_bad_event_names_are_refused_by_execute_and_attach(name, error):
    async with ft.open_node("t"):
        with pytest.raises(error, match="event_name"):
            ft.telemetry.execute(name, {})
        with pytest.raises(error, match="event_names"):
            ft.telemetry.attach("h", [name], lambda *_: None)
        if not isinstance(name, list):
            with pytest.raises(error, match="event_names"):
                ft.telemetry.attach("h", name, lambda *_: None)
        assert ft.telemetry.handlers() == {}


async def test_bad_attach_arguments_name_the_argument():
    async def async_handler(*_):
        pass

    async with ft.open_node("t"):
        with pytest.raises(TypeError, match="handler_id"):
            ft.telemetry.attach("", "a.b", lambda *_: None)
        with pytest.raises(TypeError, match="handler_id"):
            ft.telemetry.attach(7, "a.b", lambda *_: None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="handler must be callable"):
            ft.telemetry.attach("h", "a.b", "not callable")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="async function"):
            ft.telemetry.attach("h", "a.b", async_handler)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="event_names is empty"):
            ft.telemetry.attach("h", [], lambda *_: None)
        with pytest.raises(TypeError, match="event_names"):
            ft.telemetry.attach("h", 5, lambda *_: None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="handler_id"):
            ft.telemetry.detach(None)  # type: ignore[arg-type]
        assert ft.telemetry.handlers() == {}


async def test_bad_measurements_and_metadata_are_refused_when_delivered():
    got: list = []
    async with ft.open_node("t"):
        ft.telemetry.attach("r", "a.b", recorder(got))
        with pytest.raises(TypeError, match="measurements"):
            ft.telemetry.execute("a.b", [1, 2])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"measurements\['n'\]"):
            ft.telemetry.execute("a.b", {"n": "1"})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match=r"measurements\['n'\]"):
            ft.telemetry.execute("a.b", {"n": True})
        with pytest.raises(TypeError, match="measurement names"):
            ft.telemetry.execute("a.b", {1: 1.0})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="metadata"):
            ft.telemetry.execute("a.b", {}, ["k"])  # type: ignore[arg-type]
        # the handler saw none of them and is still attached
        assert ft.telemetry.handlers() == {"r": ("a.b",)}
    assert got == []


async def test_handler_table_is_per_node():
    got_a: list = []
    got_b: list = []
    async with ft.open_node("a"):
        ft.telemetry.attach("r", "x.y", recorder(got_a))
        async with trio.open_nursery() as nursery:

            async def other_node():
                async with ft.open_node("b"):
                    ft.telemetry.attach("r", "x.y", recorder(got_b))
                    ft.telemetry.execute("x.y", {"node": 2})

            nursery.start_soon(other_node)
        ft.telemetry.execute("x.y", {"node": 1})
    assert [m for _, m, _ in got_a] == [{"node": 1}]
    assert [m for _, m, _ in got_b] == [{"node": 2}]


async def test_execute_in_processes_and_child_tasks_of_the_node():
    got: list = []
    async with ft.open_node("t"):
        ft.telemetry.attach("r", "a.b", recorder(got))

        async def worker(n):
            ft.telemetry.execute("a.b", {"n": n})

        ft.spawn(worker, 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, 2)
        await trio.sleep(0.01)
    assert sorted(m["n"] for _, m, _ in got) == [1, 2]


async def test_outside_a_node_the_api_raises_no_node_error():
    with pytest.raises(ft.NoNodeError):
        ft.telemetry.execute("a.b", {})
    with pytest.raises(ft.NoNodeError):
        ft.telemetry.attach("h", "a.b", lambda *_: None)
    with pytest.raises(ft.NoNodeError):
        ft.telemetry.detach("h")


async def test_on_a_bare_runtime_node_execute_is_a_no_op_and_attach_says_what_is_missing():
    async with open_runtime_node("bare"):
        ft.telemetry.execute("a.b", {"n": 1})
        with pytest.raises(ValueError, match="event_name"):
            ft.telemetry.execute("A", {})
        with pytest.raises(LookupError, match="telemetry service is not running"):
            ft.telemetry.attach("h", "a.b", lambda *_: None)


async def test_the_service_is_supervised_and_keeps_handlers_across_a_restart():
    got: list = []
    async with ft.open_node("t") as node:
        ft.telemetry.attach("r", "a.b", recorder(got))
        [sup] = [c for c in await ft.which_children(node.root.pid) if c.id == "ft.telemetry"]
        [server] = await ft.which_children(sup.pid)
        assert server.id == "server" and server.pid is not None
        ref = ft.monitor(server.pid)
        ft.exit(server.pid, ft.KILLED)
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        for _ in range(10):
            [restarted] = await ft.which_children(sup.pid)
            if restarted.pid is not None and restarted.pid != server.pid:
                break
            await trio.lowlevel.checkpoint()
        assert restarted.pid != server.pid and ft.is_alive(restarted.pid)
        ft.telemetry.execute("a.b", {"n": 1})
        state = node.find_extension(Telemetry)
    assert [m["n"] for _, m, _ in got] == [1]
    assert state is not None
    # closed with the node
    assert node.find_extension(Telemetry) is None


async def test_open_node_refuses_what_it_does_not_implement_yet():
    with pytest.raises(ft.ConfigError, match="unknown key 'a'"):
        async with ft.open_node("t", config={"a": 1}):
            pass
    with pytest.raises(TypeError, match="cluster"):
        async with ft.open_node("t", cluster="everywhere"):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="boot steps"):
        async with ft.open_node("t", boot=[]):
            pass
    with pytest.raises(ft.ConfigError, match="mailbox_sise"):
        async with ft.open_node("t", mailbox_sise=3):
            pass
