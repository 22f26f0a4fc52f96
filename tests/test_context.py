"""The request context: bind/current/restore, validation, propagation, no leaks."""

from __future__ import annotations

import math
from types import MappingProxyType

import pytest
import trio
import trio.lowlevel

import foundation_trio as ft


def test_outside_any_bind_the_context_is_empty_and_immutable():
    assert ft.context.current() == {}
    assert ft.context.current() is ft.context.EMPTY
    with pytest.raises(TypeError):
        ft.context.current()["a"] = 1  # type: ignore[index]


def test_bind_adds_nests_overrides_and_is_gone_after_the_block():
    with ft.context.bind(request_id="r1", user_id=7) as snap:
        assert snap == {"request_id": "r1", "user_id": 7}
        assert ft.context.current() is snap
        with ft.context.bind(user_id=8, flag=True, ratio=0.5, nothing=None):
            assert ft.context.current() == {
                "request_id": "r1",
                "user_id": 8,
                "flag": True,
                "ratio": 0.5,
                "nothing": None,
            }
        assert ft.context.current() == {"request_id": "r1", "user_id": 7}
    assert ft.context.current() == {}


def test_bind_is_undone_when_the_block_raises():
    with pytest.raises(KeyError), ft.context.bind(request_id="r1"):
        raise KeyError("x")
    assert ft.context.current() == {}


def test_a_snapshot_does_not_change_when_the_context_does():
    with ft.context.bind(a=1):
        snap = ft.context.current()
        with ft.context.bind(a=2):
            pass
    assert snap == {"a": 1}
    assert isinstance(snap, MappingProxyType)


@pytest.mark.parametrize("value", [[1], {"a": 1}, (1,), b"x", object(), 1j])
def test_bind_refuses_values_that_are_not_scalars(value):
    with pytest.raises(TypeError, match="'bad'"), ft.context.bind(ok=1, bad=value):
        pass
    assert ft.context.current() == {}


def test_bind_refuses_keys_that_are_not_identifiers():
    with pytest.raises(TypeError, match="context key"), ft.context.bind(**{"not a key": 1}):
        pass


def test_restore_replaces_the_whole_context_for_the_block():
    with ft.context.bind(a=1):
        sent = ft.context.current()
    with ft.context.bind(b=2):
        with ft.context.restore(sent) as snap:
            assert ft.context.current() == {"a": 1}
            assert snap == {"a": 1}
        assert ft.context.current() == {"b": 2}
    with ft.context.restore({"from_wire": "x", "n": math.inf}):
        assert ft.context.current() == {"from_wire": "x", "n": math.inf}
        assert isinstance(ft.context.current(), MappingProxyType)
    assert ft.context.current() == {}


def test_restore_copies_a_plain_mapping():
    wire = {"a": 1}
    with ft.context.restore(wire):
        wire["a"] = 2
        assert ft.context.current() == {"a": 1}


@pytest.mark.parametrize(
    ("snapshot", "match"),
    [
        ([("a", 1)], "snapshot mapping"),
        ("a=1", "snapshot mapping"),
        ({1: "a"}, "context key"),
        ({"a": [1]}, "'a'"),
    ],
)
def test_restore_refuses_what_is_not_a_snapshot(snapshot, match):
    with pytest.raises(TypeError, match=match), ft.context.restore(snapshot):
        pass
    assert ft.context.current() == {}


async def test_child_tasks_inherit_the_context_and_do_not_leak_it_back():
    seen: list = []

    async def child():
        seen.append(dict(ft.context.current()))
        with ft.context.bind(inner=True):
            await trio.lowlevel.checkpoint()

    with ft.context.bind(request_id="r1"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
        assert ft.context.current() == {"request_id": "r1"}
    assert seen == [{"request_id": "r1"}]


async def test_the_context_of_concurrent_tasks_is_separate():
    seen: dict[str, object] = {}

    async def worker(name: str):
        with ft.context.bind(worker=name):
            await trio.sleep(0.01)
            seen[name] = ft.context.current()["worker"]

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            nursery.start_soon(worker, name)
    assert seen == {"a": "a", "b": "b", "c": "c"}


async def test_a_process_spawned_while_bound_runs_with_that_context():
    seen: dict[str, dict] = {}

    async def worker(tag):
        seen[tag] = dict(ft.context.current())

    async with ft.open_node("t"):
        with ft.context.bind(request_id="r1"):
            ft.spawn(worker, "bound")
        ft.spawn(worker, "unbound")
        await trio.sleep(0.01)
    assert seen == {"bound": {"request_id": "r1"}, "unbound": {}}


async def test_a_server_started_while_bound_runs_init_with_that_context():
    seen: list = []

    class Server(ft.GenServer):
        async def init(self):
            seen.append(dict(ft.context.current()))

    async with ft.open_node("t"):
        with ft.context.bind(request_id="r2"):
            await ft.start_server(Server)
        assert ft.context.current() == {}
    assert seen == [{"request_id": "r2"}]


class Recorder(ft.GenServer):
    """Records the request context each handler runs with."""

    async def init(self, seen):
        self.seen = seen

    async def handle_call(self, request, caller):
        self.seen.append(("call", request, dict(ft.context.current())))
        if request == "bind-inside":
            with ft.context.bind(inside=True):
                await trio.lowlevel.checkpoint()
        if request == "crash":
            raise RuntimeError("handler failed")
        return dict(ft.context.current())

    async def handle_cast(self, request):
        self.seen.append(("cast", request, dict(ft.context.current())))

    async def handle_info(self, message):
        self.seen.append(("info", message, dict(ft.context.current())))


async def test_calls_and_casts_are_handled_with_the_callers_context():
    seen: list = []
    async with ft.open_node("t"):
        with ft.context.bind(server_started="yes"):
            server = await ft.start_server(Recorder, seen)
        with ft.context.bind(request_id="r1"):
            assert await ft.call(server, "c1") == {"request_id": "r1"}
            await ft.cast(server, "k1")
        assert await ft.call(server, "c2") == {}
        await ft.cast(server, "k2")
        await ft.send(server, "plain message")
        with ft.context.bind(request_id="r3"):
            await ft.call(server, "bind-inside")
        # the server's own context is back between requests
        assert await ft.call(server, "c3") == {}
    assert seen == [
        ("call", "c1", {"request_id": "r1"}),
        ("cast", "k1", {"request_id": "r1"}),
        ("call", "c2", {}),
        ("cast", "k2", {}),
        # plain messages carry no context: the server's own (from its start) applies
        ("info", "plain message", {"server_started": "yes"}),
        ("call", "bind-inside", {"request_id": "r3"}),
        ("call", "c3", {}),
    ]


async def test_a_server_whose_own_context_is_bound_sees_the_callers_instead():
    seen: list = []
    async with ft.open_node("t"):
        with ft.context.bind(server_started="yes"):
            server = await ft.start_server(Recorder, seen)
        assert await ft.call(server, "x") == {}
        with ft.context.bind(server_started="yes"):
            # an equal context, but not the server's own snapshot
            assert await ft.call(server, "y") == {"server_started": "yes"}
    assert [s[2] for s in seen] == [{}, {"server_started": "yes"}]


async def test_the_context_is_reset_when_a_handler_raises():
    seen: list = []

    class Terminating(Recorder):
        async def terminate(self, reason):
            seen.append(("terminate", dict(ft.context.current())))

    async with ft.open_node("t"):
        server = await ft.start_server(Terminating, seen)
        with ft.context.bind(request_id="r9"), pytest.raises(ft.ServerExited):
            await ft.call(server, "crash")
    assert seen[-1] == ("terminate", {})


async def test_supervised_children_run_with_their_supervisors_context_not_a_callers():
    seen: list = []

    class Child(ft.GenServer):
        async def init(self, tag):
            seen.append((tag, dict(ft.context.current())))

        async def handle_cast(self, request):
            raise RuntimeError("crash")

    async with ft.open_node("t") as node:
        with ft.context.bind(started_by="boot"):
            sup = await node.start_supervisor([ft.ChildSpec("a", Child, args=("a",))])
            dyn = await node.start_supervisor(ft.DynamicSupervisorSpec())
        with ft.context.bind(request_id="r1"):
            await ft.start_child(sup, ft.ChildSpec("b", Child, args=("b",)))
            pid = await ft.start_child(dyn, ft.ChildSpec("c", Child, args=("c",)))
            ref = ft.monitor(pid)
            await ft.cast(pid, "crash")
            await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        await ft.which_children(dyn)
    # Supervisors are children of the root, whose context is empty; so are theirs,
    # whoever asked: a restart must not depend on who started the first incarnation.
    assert seen == [("a", {}), ("b", {}), ("c", {}), ("c", {})]
