"""Bad input gets a clear, typed error (issue 2, section 7).

Invalid specs are rejected when the supervisor starts (or the child is added)
with ``InvalidChildSpec`` naming the child and the field, before anything runs;
wrong-shaped arguments raise ``TypeError`` with a message that says what was
expected. Exception types are asserted exactly, so an ``AttributeError`` or
``KeyError`` from deep inside can never pass for the right error.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import foundation_trio as ft

# -- helpers ---------------------------------------------------------------------


INIT_LOG: list[str] = []


class Tracked(ft.GenServer):
    """Records in ``INIT_LOG`` that its ``init`` ran."""

    async def init(self, tag: str = "tracked") -> None:
        INIT_LOG.append(tag)

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        return ("echo", request)


class NotAServer:
    async def init(self) -> None:
        INIT_LOG.append("not a server")


@pytest.fixture(autouse=True)
def _clear_init_log():
    INIT_LOG.clear()
    yield
    INIT_LOG.clear()


def raises_exactly(kind: type[BaseException], **kwargs: Any) -> Any:
    """``pytest.raises`` that also checks the type is exactly ``kind``."""

    class _Exactly:
        def __enter__(self) -> Any:
            self._cm = pytest.raises(kind, **kwargs)
            self.info = self._cm.__enter__()
            return self.info

        def __exit__(self, *exc: Any) -> bool:
            result = self._cm.__exit__(*exc)
            assert type(self.info.value) is kind, (
                f"expected exactly {kind.__name__}, got {type(self.info.value).__name__}: "
                f"{self.info.value}"
            )
            return result

    return _Exactly()


def child(id: Any = "c", start: Any = Tracked, **options: Any) -> ft.ChildSpec:
    return ft.ChildSpec(id, start, **options)


# -- invalid specs at start_supervisor ---------------------------------------------------

# (children, supervisor options, expected child_id, expected field)
# ``"top"`` is the id the supervisor itself is started under.
SUPERVISOR_CASES = [
    pytest.param([child(None)], {}, None, "id", id="missing-id"),
    pytest.param([child("a"), child("b"), child("a")], {}, "a", "id", id="duplicate-id"),
    pytest.param([child()], {"strategy": "one_for_many"}, "top", "strategy", id="strategy"),
    pytest.param([child()], {"strategy": 3}, "top", "strategy", id="strategy-int"),
    pytest.param([child()], {"max_restarts": -1}, "top", "max_restarts", id="neg-restarts"),
    pytest.param([child()], {"max_restarts": 1.5}, "top", "max_restarts", id="float-restarts"),
    pytest.param([child()], {"max_restarts": True}, "top", "max_restarts", id="bool-restarts"),
    pytest.param([child()], {"max_seconds": 0}, "top", "max_seconds", id="zero-seconds"),
    pytest.param([child()], {"max_seconds": -5}, "top", "max_seconds", id="neg-seconds"),
    pytest.param([child()], {"max_seconds": "5"}, "top", "max_seconds", id="str-seconds"),
    pytest.param(
        [child()], {"auto_shutdown": "sometimes"}, "top", "auto_shutdown", id="auto-shutdown"
    ),
    pytest.param(
        [child("sig", significant=True)],
        {"auto_shutdown": ft.ANY_SIGNIFICANT},
        "sig",
        "significant",
        id="significant-permanent",
    ),
    pytest.param(
        [child("sig", significant=True, restart=ft.TRANSIENT)],
        {},
        "sig",
        "significant",
        id="significant-never",
    ),
    pytest.param(
        [child("sig", significant=True, restart=ft.TEMPORARY)],
        {"auto_shutdown": ft.NEVER},
        "sig",
        "significant",
        id="significant-never-explicit",
    ),
    pytest.param(
        [child("sig", significant="yes", restart=ft.TRANSIENT)],
        {"auto_shutdown": ft.ANY_SIGNIFICANT},
        "sig",
        "significant",
        id="significant-not-bool",
    ),
    pytest.param([child("n", 42)], {}, "n", "start", id="start-int"),
    pytest.param([child("n", "Tracked")], {}, "n", "start", id="start-str"),
    pytest.param([child("cls", NotAServer)], {}, "cls", "start", id="start-not-genserver"),
    pytest.param([child("s", shutdown=-1)], {}, "s", "shutdown", id="shutdown-negative"),
    pytest.param([child("s", shutdown="soon")], {}, "s", "shutdown", id="shutdown-str"),
    pytest.param([child("s", shutdown=True)], {}, "s", "shutdown", id="shutdown-bool"),
    pytest.param([child("r", restart="sometimes")], {}, "r", "restart", id="restart"),
    pytest.param([child("r", restart=None)], {}, "r", "restart", id="restart-none"),
    pytest.param([child("t", type="manager")], {}, "t", "type", id="type"),
    pytest.param([child("k", kwargs=[1, 2])], {}, "k", "kwargs", id="kwargs-not-mapping"),
    pytest.param([child("m", mailbox_size=0)], {}, "m", "mailbox_size", id="mailbox-zero"),
    pytest.param([child("m", mailbox_size="8")], {}, "m", "mailbox_size", id="mailbox-str"),
    pytest.param([child(["unhashable"])], {}, ["unhashable"], "id", id="unhashable-id"),
    pytest.param([("a", Tracked)], {}, None, "spec", id="not-a-childspec"),
    pytest.param(
        [child("ok"), child("inner", ft.SupervisorSpec([child("x"), child(None)]))],
        {},
        None,
        "id",
        id="nested-missing-id",
    ),
    pytest.param(
        [
            child("ok"),
            child("inner", ft.SupervisorSpec([child("x")], strategy="one_for_many")),
        ],
        {},
        "inner",
        "strategy",
        id="nested-strategy",
    ),
    pytest.param(
        [
            child("ok"),
            child(
                "mid",
                ft.SupervisorSpec(
                    [child("deep", ft.SupervisorSpec([child("leaf", 42)]))],
                ),
            ),
        ],
        {},
        "leaf",
        "start",
        id="deeply-nested-start",
    ),
    pytest.param(
        [child("ok"), child("dyn", ft.DynamicSupervisorSpec(max_children=-1))],
        {},
        "dyn",
        "max_children",
        id="nested-dynamic-max-children",
    ),
]


@pytest.mark.parametrize(("children", "options", "child_id", "field"), SUPERVISOR_CASES)
async def test_invalid_spec_rejected_at_start_supervisor(
    autojump_clock, children, options, child_id, field
):
    async with ft.open_node("bad") as node:
        before = set(ft.processes())
        with raises_exactly(ft.InvalidChildSpec) as info:
            await node.start_supervisor(children, id="top", **options)
        assert info.value.child_id == child_id
        assert info.value.field == field
        assert repr(child_id) in str(info.value)
        assert field in str(info.value)
        # the whole tree was checked before anything started
        assert INIT_LOG == []
        assert set(ft.processes()) == before


@pytest.mark.parametrize(("children", "options", "child_id", "field"), SUPERVISOR_CASES)
async def test_invalid_spec_rejected_as_supervisor_spec(
    autojump_clock, children, options, child_id, field
):
    """The same checks when a SupervisorSpec object is passed."""
    async with ft.open_node("bad") as node:
        with raises_exactly(ft.InvalidChildSpec) as info:
            await node.start_supervisor(ft.SupervisorSpec(children, **options), id="top")
        assert info.value.child_id == child_id
        assert info.value.field == field
        assert INIT_LOG == []


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (ft.DynamicSupervisorSpec(max_children=-1), "max_children"),
        (ft.DynamicSupervisorSpec(max_children="3"), "max_children"),
        (ft.DynamicSupervisorSpec(max_children=2.5), "max_children"),
        (ft.DynamicSupervisorSpec(max_restarts=-1), "max_restarts"),
        (ft.DynamicSupervisorSpec(max_seconds=0), "max_seconds"),
    ],
)
async def test_invalid_dynamic_supervisor_spec(autojump_clock, spec, field):
    async with ft.open_node("bad") as node:
        with raises_exactly(ft.InvalidChildSpec) as info:
            await node.start_supervisor(spec, id="dyn")
        assert info.value.child_id == "dyn"
        assert info.value.field == field


# -- invalid specs at start_child ----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "child_id", "field"),
    [
        (child(None), None, "id"),
        (child("n", 42), "n", "start"),
        (child("cls", NotAServer), "cls", "start"),
        (child("s", shutdown=-1), "s", "shutdown"),
        (child("s", shutdown="soon"), "s", "shutdown"),
        (child("r", restart="sometimes"), "r", "restart"),
        (child("sig", significant=True), "sig", "significant"),
        (child("sig", significant=True, restart=ft.TRANSIENT), "sig", "significant"),
        (child("inner", ft.SupervisorSpec([child("x"), child("x")])), "x", "id"),
        (Tracked, None, "spec"),
    ],
)
async def test_invalid_spec_rejected_at_start_child(autojump_clock, spec, child_id, field):
    async with ft.open_node("bad") as node:
        sup = await node.start_supervisor([child("existing")])
        INIT_LOG.clear()
        with raises_exactly(ft.InvalidChildSpec) as info:
            await ft.start_child(sup, spec)
        assert info.value.child_id == child_id
        assert info.value.field == field
        assert INIT_LOG == []
        # the supervisor is unharmed
        assert [c.id for c in await ft.which_children(sup)] == ["existing"]


async def test_start_child_with_existing_id_is_rejected(autojump_clock):
    async with ft.open_node("bad") as node:
        sup = await node.start_supervisor([child("a")])
        INIT_LOG.clear()
        with raises_exactly(ft.InvalidChildSpec) as info:
            await ft.start_child(sup, child("a"))
        assert info.value.child_id == "a"
        assert info.value.field == "id"
        assert INIT_LOG == []


@pytest.mark.parametrize(
    "spec",
    [
        child("sig", significant=True, restart=ft.TRANSIENT),
        child("sig", significant=True, restart=ft.TEMPORARY),
    ],
)
async def test_significant_child_under_dynamic_supervisor_is_rejected(autojump_clock, spec):
    async with ft.open_node("bad") as node:
        dyn = await node.start_supervisor(ft.DynamicSupervisorSpec())
        with raises_exactly(ft.InvalidChildSpec) as info:
            await ft.start_child(dyn, spec)
        assert info.value.child_id == "sig"
        assert info.value.field == "significant"
        assert INIT_LOG == []
        assert await ft.which_children(dyn) == []


async def test_child_name_of_wrong_type_is_rejected(autojump_clock):
    async with ft.open_node("bad") as node:
        with raises_exactly(ft.InvalidChildSpec) as info:
            await node.start_supervisor([child("w", name=5)])
        assert info.value.child_id == "w"
        assert info.value.field == "name"
        assert INIT_LOG == []


# -- start_supervisor's own arguments -----------------------------------------------------


async def test_options_with_a_supervisor_spec_raise_type_error(autojump_clock):
    async with ft.open_node("bad") as node:
        with raises_exactly(TypeError, match="strategy"):
            await node.start_supervisor(ft.SupervisorSpec([child()]), strategy=ft.ONE_FOR_ALL)
        with raises_exactly(TypeError, match="max_children"):
            await node.start_supervisor(ft.DynamicSupervisorSpec(), max_children=3)
        assert INIT_LOG == []


async def test_unknown_supervisor_options_raise_type_error(autojump_clock):
    async with ft.open_node("bad") as node:
        with raises_exactly(TypeError, match="bogus") as info:
            await node.start_supervisor([child()], bogus=1)
        assert "strategy" in str(info.value)  # lists the allowed options
        with raises_exactly(TypeError, match="intensity"):
            await ft.start_supervisor([child()], intensity=3)
        assert INIT_LOG == []


@pytest.mark.parametrize("spec", [42, "children", None, Tracked, child()])
async def test_start_supervisor_with_wrong_spec_type(autojump_clock, spec):
    async with ft.open_node("bad") as node:
        with raises_exactly(TypeError, match="SupervisorSpec"):
            await node.start_supervisor(spec)


# -- spawn and start_server --------------------------------------------------------------


@pytest.mark.parametrize("fn", [42, "main", None])
async def test_spawn_non_callable_raises_type_error(autojump_clock, fn):
    async with ft.open_node("bad"):
        before = set(ft.processes())
        with raises_exactly(TypeError, match="async function"):
            ft.spawn(fn)
        assert set(ft.processes()) == before


async def test_spawn_sync_function_ends_with_type_error_saying_async_def(autojump_clock):
    ran: list[str] = []

    def sync_body() -> int:
        ran.append("ran")
        return 1

    async with ft.open_node("bad"):
        pid = ft.spawn(sync_body)
        ref = ft.monitor(pid)
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert ran == ["ran"]
        assert type(down.reason) is TypeError
        assert "async def" in str(down.reason)
        assert "sync_body" in str(down.reason)


async def test_sync_function_as_child_exits_with_type_error_saying_async_def(autojump_clock):
    """A function child is ready as soon as it runs, so a sync function starts and
    then exits with the TypeError; its supervisor sees that reason."""

    def sync_body() -> None:
        return None

    events: list[Any] = []
    async with ft.open_node("bad") as node:
        node.add_hook(events.append)
        sup = await node.start_supervisor([child("sync", sync_body)], max_restarts=0)
        await trio.testing.wait_all_tasks_blocked()
        assert ft.ProcessExited(pid=sup, reason=ft.GAVE_UP) in events
        [exited] = [e for e in events if isinstance(e, ft.ChildExited) and e.supervisor == sup]
        assert exited.child_id == "sync"
        assert type(exited.reason) is TypeError
        assert "async def" in str(exited.reason)


@pytest.mark.parametrize("cls", [NotAServer, 42, Tracked()])
async def test_start_server_with_non_genserver_raises_type_error(autojump_clock, cls):
    async with ft.open_node("bad"):
        with raises_exactly(TypeError, match="GenServer"):
            await ft.start_server(cls)
        assert INIT_LOG == []


@pytest.mark.parametrize("name", [5, "", ("a", "b")])
async def test_registered_name_must_be_a_non_empty_str(autojump_clock, name):
    async with ft.open_node("bad"):
        with raises_exactly(TypeError, match="non-empty str"):
            ft.register(name)
        with raises_exactly(TypeError, match="non-empty str"):
            ft.spawn(trio.sleep_forever, name=name)


@pytest.mark.parametrize("size", ["8", -5, 2.5])
async def test_spawn_bad_mailbox_size_is_rejected(autojump_clock, size):
    async with ft.open_node("bad"):
        with pytest.raises((TypeError, ValueError), match="mailbox_size"):
            ft.spawn(trio.sleep_forever, mailbox_size=size)
        with pytest.raises((TypeError, ValueError), match="mailbox_size"):
            await ft.start_server(Tracked, mailbox_size=size)


# -- targets of the wrong shape ------------------------------------------------------------

BAD_TARGETS = [3.5, [1, 2], None, {"name": "x"}, ("a", "b", "c"), b"name", 7]


@pytest.mark.parametrize("target", BAD_TARGETS, ids=repr)
async def test_wrong_target_shape_raises_type_error(autojump_clock, target):
    async with ft.open_node("bad"):
        checks = {
            "send": lambda: ft.send(target, "m"),
            "call": lambda: ft.call(target, "m"),
            "cast": lambda: ft.cast(target, "m"),
        }
        for what, make in checks.items():
            with raises_exactly(TypeError, match="a target is a Pid") as info:
                await make()
            assert "registered name" in str(info.value), what
        for what, fn in {
            "send_nowait": lambda: ft.send_nowait(target, "m"),
            "monitor": lambda: ft.monitor(target),
            "link": lambda: ft.link(target),
            "exit": lambda: ft.exit(target, ft.SHUTDOWN),
        }.items():
            with raises_exactly(TypeError, match="a target is a Pid"):
                fn()
            assert what
        with raises_exactly(TypeError, match="a target is a Pid"):
            await ft.which_children(target)
        # nothing was delivered anywhere: our own mailbox is empty
        with raises_exactly(ft.ReceiveTimeout):
            await ft.receive(timeout=0)


async def test_target_names_nobody(autojump_clock):
    """Unknown names are NoProcess for send/call, silent for cast, Down for monitor."""
    async with ft.open_node("bad"):
        with raises_exactly(ft.NoProcess):
            await ft.send("nobody", "m")
        with raises_exactly(ft.NoProcess):
            await ft.call("nobody", "m")
        with raises_exactly(ft.NoProcess):
            await ft.call(("nobody", "other-node"), "m")
        await ft.cast("nobody", "m")
        ref = ft.monitor("nobody")
        down = await ft.receive(timeout=0)
        assert down.ref == ref
        assert type(down.reason) is ft.NoProcess


@pytest.mark.parametrize("registry", ["not a registry", None, ft.Registry(keys="duplicate")])
def test_via_needs_a_unique_registry(registry):
    with pytest.raises((TypeError, ValueError), match="unique-key Registry"):
        ft.Via(registry, "k")


async def test_reply_to_a_non_caller_raises_type_error(autojump_clock):
    async with ft.open_node("bad"):
        with raises_exactly(TypeError, match="Caller"):
            ft.reply(ft.self_pid(), "value")


# -- bad timeouts ------------------------------------------------------------------------


class Counter(ft.GenServer):
    async def init(self) -> None:
        self.n = 0

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        self.n += 1
        return (request, self.n)


@pytest.mark.parametrize("timeout", ["5", float("nan")], ids=repr)
async def test_call_with_bad_timeout_is_rejected_before_sending(autojump_clock, timeout):
    async with ft.open_node("bad"):
        server = await ft.start_server(Counter)
        other = await ft.start_server(Counter)
        with pytest.raises((TypeError, ValueError), match="timeout"):
            await ft.call(server, "first", timeout=timeout)
        # the servers are unharmed and answer their own calls only
        assert await ft.call(other, "to other") == ("to other", 1)
        assert await ft.call(server, "second") == ("second", 1)
        await trio.testing.wait_all_tasks_blocked()
        assert ft.is_alive(server)
        assert ft.is_alive(other)


async def test_receive_with_bad_timeout_names_the_argument(autojump_clock):
    async with ft.open_node("bad"):
        with pytest.raises(TypeError, match="timeout"):
            await ft.receive(timeout="1")


class Silent(ft.GenServer):
    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        return ft.NOREPLY


@pytest.mark.parametrize("timeout", [0, -1])
async def test_zero_or_negative_call_timeout_times_out_at_once(autojump_clock, timeout):
    async with ft.open_node("bad"):
        server = await ft.start_server(Silent)
        start = trio.current_time()
        with raises_exactly(ft.CallTimeout):
            await ft.call(server, "x", timeout=timeout)
        assert trio.current_time() == start
        assert ft.is_alive(server)


# -- management calls on the wrong process ----------------------------------------------

MANAGEMENT = {
    "which_children": lambda sup: ft.which_children(sup),
    "count_children": lambda sup: ft.count_children(sup),
    "start_child": lambda sup: ft.start_child(sup, child("new")),
    "terminate_child": lambda sup: ft.terminate_child(sup, "c"),
    "restart_child": lambda sup: ft.restart_child(sup, "c"),
    "delete_child": lambda sup: ft.delete_child(sup, "c"),
}


@pytest.mark.parametrize("what", sorted(MANAGEMENT))
async def test_management_call_on_a_non_supervisor_raises_supervisor_error(autojump_clock, what):
    async with ft.open_node("bad"):
        server = await ft.start_server(Tracked, name="server")
        plain = ft.spawn(trio.sleep_forever)
        for target in (server, "server", plain, ft.self_pid()):
            with raises_exactly(ft.SupervisorError, match="not a supervisor"):
                await MANAGEMENT[what](target)
        # the server was not disturbed
        assert await ft.call(server, "hi") == ("echo", "hi")
        assert INIT_LOG == ["tracked"]


@pytest.mark.parametrize("what", sorted(MANAGEMENT))
async def test_management_call_on_a_dead_pid_raises_no_process(autojump_clock, what):
    async with ft.open_node("bad") as node:
        sup = await node.start_supervisor([child("c")])
        ref = ft.monitor(sup)
        ft.exit(sup, ft.KILLED)
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        for target in (sup, ft.Pid("bad", 10_000), ft.Pid("elsewhere", 1), "no-such-name"):
            with raises_exactly(ft.NoProcess):
                await MANAGEMENT[what](target)


async def test_management_errors_on_a_real_supervisor_are_typed(autojump_clock):
    async with ft.open_node("bad") as node:
        sup = await node.start_supervisor([child("c")])
        with raises_exactly(ft.NoSuchChild):
            await ft.terminate_child(sup, "missing")
        with raises_exactly(ft.NoSuchChild):
            await ft.terminate_child(sup, ft.Pid("bad", 10_000))
        with raises_exactly(ft.NoSuchChild):
            await ft.restart_child(sup, "missing")
        with raises_exactly(ft.NoSuchChild):
            await ft.delete_child(sup, "missing")
        with raises_exactly(ft.ChildRunning):
            await ft.restart_child(sup, "c")
        with raises_exactly(ft.ChildRunning):
            await ft.delete_child(sup, "c")

        dyn = await node.start_supervisor(ft.DynamicSupervisorSpec(max_children=1))
        await ft.start_child(dyn, child("one"))
        with raises_exactly(ft.TooManyChildren):
            await ft.start_child(dyn, child("two"))
        with raises_exactly(ft.SupervisorError):
            await ft.restart_child(dyn, "one")
        with raises_exactly(ft.SupervisorError):
            await ft.delete_child(dyn, "one")
        with raises_exactly(ft.NoSuchChild):
            await ft.terminate_child(dyn, "one")  # by pid only
        # both supervisors still work
        assert [c.id for c in await ft.which_children(sup)] == ["c"]
        assert (await ft.count_children(dyn)).active == 1


def test_registry_bad_keys():
    with raises_exactly(ValueError, match="keys"):
        ft.Registry(keys="many")
