"""The config service (issue 3, item 1): loading with precedence, validation errors
that name the source and the path, runtime updates of declared paths only,
subscriptions that never block, atomic persistence across restarts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import foundation_trio as ft
from foundation_trio.runtime.node import open_node
from foundation_trio.services import config
from foundation_trio.services.config import (
    ConfigChange,
    ConfigSource,
    NotUpdatable,
    UnknownConfigPath,
)
from foundation_trio.services.subscribers import Lagged


@attrs.frozen
class Limits:
    burst: int = attrs.field(default=10, metadata=config.UPDATABLE)
    rate: float = 1.0


@attrs.frozen
class App:
    greeting: str = attrs.field(default="hello", metadata=config.UPDATABLE)
    workers: int = 4
    tags: list[str] = attrs.field(factory=list, metadata={"updatable": True})
    limits: Limits = attrs.field(factory=Limits)
    timeout: float = attrs.field(default=5.0, metadata=config.UPDATABLE)


@attrs.frozen
class Required:
    token: str


def node(source: Any = None, name: str = "cfg") -> Any:
    return open_node(name, boot=[config.boot_step(source)])


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- loading and precedence ------------------------------------------------------------


async def test_defaults_and_get():
    async with node(ConfigSource(schema=App)):
        assert config.get("events.store") == "memory"
        assert config.get("events.max_age") == 86_400.0
        assert config.get("app.greeting") == "hello"
        assert config.get("app.limits") == Limits()
        assert config.get("app.limits.burst") == 10
        assert config.get("app") == App()
        assert config.updatable_paths() == (
            "events.max_events",
            "events.max_age",
            "app.greeting",
            "app.tags",
            "app.limits.burst",
            "app.timeout",
        )


async def test_get_unknown_path_lists_what_exists_and_default_covers_it():
    async with node(ConfigSource(schema=App)):
        with pytest.raises(UnknownConfigPath, match=r"'app.nope': app has greeting, workers"):
            config.get("app.nope")
        with pytest.raises(UnknownConfigPath, match=r"app\.workers is a value, not a section"):
            config.get("app.workers.x")
        assert config.get("app.nope", 42) == 42
        assert config.get("app.workers", 42) == 4
        with pytest.raises(TypeError, match="path must be a non-empty str"):
            config.get(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="path must be a non-empty str"):
            config.get("")


@attrs.frozen
class MaybeApp:
    name: str | None = None


async def test_get_default_replaces_a_none_value():
    async with node(ConfigSource(schema=MaybeApp)):
        assert config.get("app.name") is None
        assert config.get("app.name", "anon") == "anon"


async def test_values_override_defaults(tmp_path):
    async with node({"events": {"max_events": 5}}):
        assert config.get("events.max_events") == 5
        assert config.get("events.max_age") == 86_400.0


async def test_file_overrides_values(tmp_path):
    file = write(tmp_path / "app.toml", '[app]\ngreeting = "from file"\n[app.limits]\nrate = 2\n')
    source = ConfigSource(
        schema=App, values={"app": {"greeting": "from code", "workers": 8}}, file=file
    )
    async with node(source):
        assert config.get("app.greeting") == "from file"
        assert config.get("app.workers") == 8  # the file does not say: values win over defaults
        assert config.get("app.limits.rate") == 2.0
        assert isinstance(config.get("app.limits.rate"), float)


async def test_env_overrides_file(tmp_path):
    file = write(tmp_path / "app.toml", '[app]\ngreeting = "from file"\nworkers = 2\n')
    environ = {
        "MYAPP_APP__GREETING": "from env",
        "MYAPP_APP__TAGS": '["a", "b"]',
        "MYAPP_EVENTS__STORE": "sqlite",
        "MYAPP_EVENTS__MAX_AGE": "60",
        "OTHER_APP__WORKERS": "99",
    }
    source = ConfigSource(schema=App, file=file, env_prefix="MYAPP_", environ=environ)
    async with node(source):
        assert config.get("app.greeting") == "from env"
        assert config.get("app.workers") == 2
        assert config.get("app.tags") == ["a", "b"]
        assert config.get("events.store") == "sqlite"
        assert config.get("events.max_age") == 60.0


async def test_env_read_from_os_environ_when_not_given(monkeypatch):
    monkeypatch.setenv("FTTEST_APP__WORKERS", "12")
    async with node(ConfigSource(schema=App, env_prefix="FTTEST_")):
        assert config.get("app.workers") == 12


async def test_persisted_updates_override_env(tmp_path):
    persist = tmp_path / "state.json"
    environ = {"MYAPP_APP__GREETING": "from env"}
    source = ConfigSource(schema=App, env_prefix="MYAPP_", environ=environ, persist=persist)
    async with node(source):
        assert config.get("app.greeting") == "from env"
        await config.update("app.greeting", "updated")
    async with node(source):
        assert config.get("app.greeting") == "updated"


async def test_config_argument_forms(tmp_path):
    file = write(tmp_path / "node.toml", "[events]\nmax_events = 7\n")
    async with node(str(file)):
        assert config.get("events.max_events") == 7
    async with node(file):
        assert config.get("events.max_events") == 7
    async with node(None):
        assert config.get("events.max_events") == 100_000
    with pytest.raises(TypeError, match="config must be None, a mapping"):
        config.as_source(42)


# -- load errors name the source, the path and the expected type ------------------------------


async def expect_start_error(source: Any, pattern: str) -> str:
    with pytest.raises(ft.ConfigError, match=pattern) as info:
        async with node(source):
            pytest.fail("the node started with a bad config")
    return str(info.value)


async def test_file_with_a_wrong_type_names_the_path(tmp_path):
    file = write(tmp_path / "app.toml", '[events]\nmax_age = "x"\n')
    message = await expect_start_error(
        ConfigSource(file=file), "events.max_age: expected float, got str 'x'"
    )
    assert f"config file {file}" in message


async def test_file_with_a_wrong_nested_type(tmp_path):
    file = write(tmp_path / "app.toml", "[app.limits]\nburst = 1.5\n")
    await expect_start_error(
        ConfigSource(schema=App, file=file), r"app\.limits\.burst: expected int, got float 1\.5"
    )


async def test_file_with_an_unknown_key(tmp_path):
    file = write(tmp_path / "app.toml", "[events]\nmax_size = 3\n")
    await expect_start_error(
        ConfigSource(file=file),
        r"unknown key 'events.max_size': events has store, path, max_events, max_age",
    )
    file = write(tmp_path / "app2.toml", "[nosuch]\nx = 1\n")
    await expect_start_error(ConfigSource(file=file), "unknown key 'nosuch': the config tree has")


async def test_file_with_a_bad_literal_and_missing_file_and_bad_toml(tmp_path):
    file = write(tmp_path / "app.toml", '[events]\nstore = "disk"\n')
    await expect_start_error(ConfigSource(file=file), "events.store: disk not in literal")
    await expect_start_error(ConfigSource(file=tmp_path / "nope.toml"), "does not exist")
    bad = write(tmp_path / "bad.toml", "[events\n")
    await expect_start_error(ConfigSource(file=bad), "is not valid TOML")


async def test_validator_failure_names_the_section():
    await expect_start_error({"events": {"max_events": 0}}, "max_events must be greater than 0")


async def test_env_errors_name_the_variable():
    message = await expect_start_error(
        ConfigSource(env_prefix="X_", environ={"X_EVENTS__MAX_AGE": "soon"}),
        "events.max_age: expected float, got str 'soon'",
    )
    assert "environment variable X_EVENTS__MAX_AGE" in message
    await expect_start_error(
        ConfigSource(env_prefix="X_", environ={"X_EVENTS__COLOUR": "red"}),
        "environment variable X_EVENTS__COLOUR: unknown config path 'events.colour'",
    )


async def test_missing_required_field_of_the_schema():
    await expect_start_error(ConfigSource(schema=Required), "required option 'token' is missing")
    async with node(ConfigSource(schema=Required, values={"app": {"token": "t"}})):
        assert config.get("app.token") == "t"


def test_config_source_checks_its_arguments():
    with pytest.raises(TypeError, match="schema must be an attrs class"):
        ConfigSource(schema=dict)
    with pytest.raises(ValueError, match="one of the node's own sections"):
        ConfigSource(schema=App, section="events")
    with pytest.raises(TypeError, match="section must be an identifier"):
        ConfigSource(schema=App, section="my app")
    with pytest.raises(TypeError, match="file must be a path"):
        ConfigSource(file=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="env_prefix must be a non-empty str"):
        ConfigSource(env_prefix="")
    with pytest.raises(TypeError, match="values must be a mapping"):
        ConfigSource(values=[("events", {})])  # type: ignore[arg-type]


# -- updates --------------------------------------------------------------------------------


async def test_update_changes_the_value_and_notifies():
    async with node(ConfigSource(schema=App)):
        changes = config.subscribe()
        change = await config.update("app.greeting", "hi")
        assert change == ConfigChange("app.greeting", "hello", "hi")
        assert config.get("app.greeting") == "hi"
        assert config.get("app").greeting == "hi"
        assert changes.receive_nowait() == change
        # the same value again is no change: nothing published
        assert await config.update("app.greeting", "hi") is None
        with pytest.raises(trio.WouldBlock):
            changes.receive_nowait()


async def test_update_of_a_non_updatable_path_lists_the_updatable_ones():
    async with node(ConfigSource(schema=App)):
        with pytest.raises(NotUpdatable) as info:
            await config.update("app.workers", 8)
        message = str(info.value)
        assert "'app.workers' cannot be changed at runtime" in message
        assert "events.max_events, events.max_age, app.greeting, app.tags" in message
        assert info.value.updatable == config.updatable_paths()
        with pytest.raises(NotUpdatable):
            await config.update("events.store", "sqlite")
        with pytest.raises(UnknownConfigPath):
            await config.update("app.nope", 1)
        assert config.get("app.workers") == 4


async def test_update_validates_against_the_field_type():
    async with node(ConfigSource(schema=App)):
        with pytest.raises(ft.ConfigError, match=r"app\.timeout: expected float, got str '3'"):
            await config.update("app.timeout", "3")
        with pytest.raises(ft.ConfigError, match=r"app\.tags: expected str, got int 1"):
            await config.update("app.tags", ["a", 1])
        with pytest.raises(ft.ConfigError, match="max_events must be greater than 0"):
            await config.update("events.max_events", 0)
        assert config.get("events.max_events") == 100_000
        change = await config.update("app.timeout", 3)
        assert change is not None
        assert change.new == 3.0
        assert type(config.get("app.timeout")) is float
        await config.update("app.limits.burst", 20)
        assert config.get("app.limits") == Limits(burst=20)


async def test_reset_drops_runtime_updates_and_notifies(tmp_path):
    persist = tmp_path / "state.json"
    source = ConfigSource(schema=App, values={"app": {"greeting": "base"}}, persist=persist)
    async with node(source):
        await config.update("app.greeting", "one")
        await config.update("app.timeout", 9.0)
        changes = config.subscribe()
        done = await config.reset()
        assert done == [
            ConfigChange("app.greeting", "one", "base"),
            ConfigChange("app.timeout", 9.0, 5.0),
        ]
        assert [changes.receive_nowait(), changes.receive_nowait()] == done
        assert config.get("app.greeting") == "base"
        assert json.loads(persist.read_text())["updates"] == {}
        assert await config.reset() == []
    async with node(source):
        assert config.get("app.greeting") == "base"


# -- subscriptions -----------------------------------------------------------------------------


async def test_subscribe_to_a_path():
    async with node(ConfigSource(schema=App)):
        limits = config.subscribe("app.limits")
        greeting = config.subscribe("app.greeting")
        await config.update("app.limits.burst", 3)
        await config.update("app.greeting", "x")
        assert limits.receive_nowait().path == "app.limits.burst"
        assert greeting.receive_nowait().path == "app.greeting"
        with pytest.raises(trio.WouldBlock):
            limits.receive_nowait()
        with pytest.raises(trio.WouldBlock):
            greeting.receive_nowait()
        with pytest.raises(UnknownConfigPath):
            config.subscribe("app.nope")
        with pytest.raises(ValueError, match="buffer must be an int of at least 1"):
            config.subscribe(buffer=0)


async def test_a_subscriber_that_stops_reading_lags_but_never_blocks_updates():
    async with node(ConfigSource(schema=App)):
        slow = config.subscribe(buffer=2)
        fast = config.subscribe(buffer=1000)
        for n in range(1, 101):
            with trio.fail_after(1):
                await config.update("app.timeout", float(n))
        assert [fast.receive_nowait().new for _ in range(100)] == [float(n) for n in range(1, 101)]
        assert slow.receive_nowait().new == 1.0
        assert slow.receive_nowait().new == 2.0
        with pytest.raises(trio.WouldBlock):
            slow.receive_nowait()
        await config.update("app.timeout", 500.0)
        assert slow.receive_nowait() == Lagged(98)
        assert slow.receive_nowait() == ConfigChange("app.timeout", 100.0, 500.0)
        with pytest.raises(trio.WouldBlock):
            slow.receive_nowait()


async def test_closed_subscriptions_are_dropped_and_node_stop_ends_the_others():
    async with node(ConfigSource(schema=App)):
        gone = config.subscribe()
        gone.close()
        service = ft.current_node().extension(config.ConfigService, "config")
        kept = config.subscribe()
        assert len(service.subscribers) == 2
        await config.update("app.greeting", "x")
        assert len(service.subscribers) == 1
    assert (await kept.receive()).new == "x"
    with pytest.raises(trio.EndOfChannel):
        await kept.receive()


async def test_a_raising_filter_is_contained(caplog):
    async with node(ConfigSource(schema=App)):
        service = ft.current_node().extension(config.ConfigService, "config")

        def broken(change: ConfigChange) -> bool:
            raise RuntimeError("filter bug")

        bad = service.subscribers.subscribe(4, broken)
        good = config.subscribe()
        await config.update("app.greeting", "x")
        assert good.receive_nowait().new == "x"
        with pytest.raises(trio.EndOfChannel):
            bad.receive_nowait()
        assert "subscription filter raised" in caplog.text


# -- persistence ---------------------------------------------------------------------------------


async def test_updates_survive_a_restart(tmp_path):
    persist = tmp_path / "state.json"
    source = ConfigSource(schema=App, persist=persist)
    async with node(source):
        await config.update("app.tags", ["x", "y"])
        await config.update("app.limits.burst", 99)
        await config.update("events.max_age", 60)
    assert json.loads(persist.read_text()) == {
        "format": 1,
        "updates": {"app.tags": ["x", "y"], "app.limits.burst": 99, "events.max_age": 60.0},
    }
    async with node(source):
        assert config.get("app.tags") == ["x", "y"]
        assert config.get("app.limits.burst") == 99
        assert config.get("events.max_age") == 60.0
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


async def test_a_failed_write_leaves_the_old_file_and_value(tmp_path, monkeypatch):
    persist = tmp_path / "state.json"
    source = ConfigSource(schema=App, persist=persist)
    async with node(source):
        await config.update("app.greeting", "kept")
        before = persist.read_bytes()

        def crash(src: Any, dst: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", crash)
        changes = config.subscribe()
        with pytest.raises(OSError, match="No space left"):
            await config.update("app.greeting", "lost")
        monkeypatch.undo()
        assert config.get("app.greeting") == "kept"
        assert persist.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
        with pytest.raises(trio.WouldBlock):
            changes.receive_nowait()
        # the server survived the failed write
        await config.update("app.greeting", "next")
    async with node(source):
        assert config.get("app.greeting") == "next"


async def test_a_persisted_file_is_checked_at_start(tmp_path):
    persist = tmp_path / "state.json"
    persist.write_text(json.dumps({"format": 1, "updates": {"app.workers": 3}}))
    await expect_start_error(
        ConfigSource(schema=App, persist=persist), "'app.workers' cannot be changed at runtime"
    )
    persist.write_text(json.dumps({"format": 1, "updates": {"app.greeting": 3}}))
    await expect_start_error(
        ConfigSource(schema=App, persist=persist), "app.greeting: expected str, got int 3"
    )
    persist.write_text("{not json")
    await expect_start_error(ConfigSource(schema=App, persist=persist), "cannot be read")
    persist.write_text(json.dumps({"updates": {}}))
    await expect_start_error(ConfigSource(schema=App, persist=persist), "not a file written by")


def test_write_atomically_replaces_the_whole_file(tmp_path):
    target = tmp_path / "f.json"
    config.write_atomically(target, "one")
    config.write_atomically(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


# -- the server ---------------------------------------------------------------------------------


async def test_the_config_server_is_supervised_and_keeps_the_tree_across_a_restart():
    async with node(ConfigSource(schema=App)):
        await config.update("app.greeting", "before")
        first = ft.whereis(config.SERVER_NAME)
        assert first is not None
        ref = ft.monitor(first)
        ft.exit(first, RuntimeError("simulated crash"))
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref, timeout=5)
        with trio.fail_after(5):
            while ft.whereis(config.SERVER_NAME) in (None, first):
                await trio.lowlevel.checkpoint()
        assert config.get("app.greeting") == "before"
        await config.update("app.greeting", "after")
        assert config.get("app.greeting") == "after"


async def test_outside_a_node_and_without_the_service():
    with pytest.raises(ft.NoNodeError):
        config.get("events.store")
    async with open_node("bare"):
        with pytest.raises(LookupError, match="the config service"):
            config.get("events.store")
        with pytest.raises(LookupError, match="the config service"):
            await config.update("events.max_age", 1.0)


# -- random sequences against a model ------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("update"), st.just("app.greeting"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("update"), st.just("app.timeout"), st.sampled_from([1.0, 2.0, 5.0])),
        st.tuples(st.just("update"), st.just("app.limits.burst"), st.integers(1, 3)),
        st.tuples(st.just("reset"), st.none(), st.none()),
        st.tuples(st.just("restart"), st.none(), st.none()),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(ops=OPS)
def test_updates_resets_and_restarts_against_a_model(tmp_path_factory, ops):
    """Any sequence of updates, resets and restarts (with persistence) leaves
    the tree as a dict model says, and each change published matches the model."""
    persist = tmp_path_factory.mktemp("state") / "state.json"
    base = {"app.greeting": "hello", "app.timeout": 5.0, "app.limits.burst": 10}
    source = ConfigSource(schema=App, persist=persist)

    async def run() -> None:
        model = dict(base)
        seen: list[ConfigChange] = []
        expected: list[ConfigChange] = []
        remaining = list(ops)
        while True:
            async with node(source):
                changes = config.subscribe(buffer=100)
                assert {path: config.get(path) for path in model} == model
                while remaining:
                    op, path, value = remaining.pop(0)
                    if op == "restart":
                        break
                    if op == "update":
                        assert path is not None
                        if model[path] != value:
                            expected.append(ConfigChange(path, model[path], value))
                        model[path] = value
                        await config.update(path, value)
                    else:
                        for p, v in model.items():
                            if v != base[p]:
                                expected.append(ConfigChange(p, v, base[p]))
                        await config.reset()
                        model = dict(base)
                    assert {p: config.get(p) for p in model} == model
                while True:
                    try:
                        got = changes.receive_nowait()
                    except trio.WouldBlock:
                        break
                    assert isinstance(got, ConfigChange)
                    seen.append(got)
            if not remaining:
                break
        assert sorted(seen, key=repr) == sorted(expected, key=repr)

    trio.run(run)
