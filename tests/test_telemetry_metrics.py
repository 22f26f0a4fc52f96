"""Telemetry spans, metrics, Prometheus exposition and the runtime's lifecycle events."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import foundation_trio as ft
from foundation_trio.runtime.node import open_node as open_runtime_node
from foundation_trio.services import telemetry
from foundation_trio.services.telemetry import (
    HistogramSample,
    MetricExists,
    MetricKind,
    Sample,
    UnknownMetric,
)


def recorder(into):
    def handler(name, measurements, metadata):
        into.append((name, dict(measurements), dict(metadata)))

    return handler


SPAN_EVENTS = ["job.run.start", "job.run.stop", "job.run.exception"]


# -- spans ---------------------------------------------------------------------------


async def test_async_span_emits_start_and_stop_with_the_duration(autojump_clock):
    got: list = []
    async with ft.open_node("t"):
        ft.telemetry.attach("r", SPAN_EVENTS, recorder(got))
        begin = trio.current_time()
        with ft.context.bind(request_id="r1"):
            async with ft.telemetry.span("job.run", {"job": "j1"}) as span:
                await trio.sleep(1.5)
                span.annotate(result="ok")
    [(start, start_m, start_md), (stop, stop_m, stop_md)] = got
    assert (start, stop) == ("job.run.start", "job.run.stop")
    assert start_m == {"monotonic_time": begin}
    assert start_md == {"job": "j1", "context": {"request_id": "r1"}}
    assert stop_m == {"duration": 1.5, "monotonic_time": begin + 1.5}
    assert stop_md == {"job": "j1", "result": "ok", "context": {"request_id": "r1"}}


async def test_sync_span_inside_trio_uses_the_trio_clock(autojump_clock):
    got: list = []
    async with ft.open_node("t"):
        ft.telemetry.attach("r", SPAN_EVENTS, recorder(got))
        with ft.telemetry.span("job.run"):
            autojump_clock.jump(0.25)
    assert [name for name, _, _ in got] == ["job.run.start", "job.run.stop"]
    assert got[1][1]["duration"] == 0.25


async def test_span_exception_path_reports_kind_and_duration_and_reraises(autojump_clock):
    got: list = []
    async with ft.open_node("t"):
        ft.telemetry.attach("r", SPAN_EVENTS, recorder(got))
        with pytest.raises(KeyError, match="missing"):
            async with ft.telemetry.span("job.run", {"job": "j2"}):
                await trio.sleep(2)
                raise KeyError("missing")
    [(_, _, _), (name, measurements, metadata)] = got
    assert name == "job.run.exception"
    assert measurements["duration"] == 2
    assert metadata["kind"] == "KeyError"
    assert metadata["error"] == "KeyError('missing')"
    assert metadata["job"] == "j2"


async def test_a_cancelled_span_reports_the_cancellation(autojump_clock):
    got: list = []
    async with ft.open_node("t"):
        ft.telemetry.attach("r", SPAN_EVENTS, recorder(got))
        with trio.move_on_after(3):
            async with ft.telemetry.span("job.run"):
                await trio.sleep_forever()
    assert [n for n, _, _ in got] == ["job.run.start", "job.run.exception"]
    assert got[1][1]["duration"] == 3
    assert got[1][2]["kind"] == "Cancelled"


async def test_span_refuses_bad_arguments():
    async with ft.open_node("t"):
        with pytest.raises(ValueError, match="event_prefix"):
            ft.telemetry.span("Job.Run")
        with pytest.raises(TypeError, match="metadata"):
            ft.telemetry.span("job.run", ["x"])  # type: ignore[arg-type]


def test_a_span_outside_trio_uses_perf_counter_and_still_needs_a_node():
    with pytest.raises(ft.NoNodeError), ft.telemetry.span("job.run"):
        pass


# -- metrics ---------------------------------------------------------------------------


async def test_counter_and_gauge_with_and_without_labels():
    async with ft.open_node("t"):
        ft.telemetry.counter("jobs_total", "Jobs run")
        ft.telemetry.counter("errors_total", "Errors", labels=["kind"])
        ft.telemetry.gauge("queue_depth", "Queued jobs", labels=("queue",))
        ft.telemetry.increment("jobs_total")
        ft.telemetry.increment("jobs_total", 2.5)
        ft.telemetry.increment("errors_total", labels={"kind": "timeout"})
        ft.telemetry.set_gauge("queue_depth", 7, {"queue": "a"})
        ft.telemetry.adjust_gauge("queue_depth", -2, {"queue": "a"})
        ft.telemetry.adjust_gauge("queue_depth", 1, {"queue": "b"})
        found = ft.telemetry.metrics()
    assert list(found) == ["errors_total", "jobs_total", "queue_depth"]
    assert found["jobs_total"].kind is MetricKind.COUNTER
    assert found["jobs_total"].samples == (Sample({}, 3.5),)
    assert found["errors_total"].samples == (Sample({"kind": "timeout"}, 1.0),)
    assert found["queue_depth"].samples == (
        Sample({"queue": "a"}, 5.0),
        Sample({"queue": "b"}, 1.0),
    )


async def test_histogram_counts_each_value_in_the_first_bucket_whose_bound_it_does_not_exceed():
    async with ft.open_node("t"):
        ft.telemetry.histogram("latency_seconds", "Latency", buckets=[0.1, 0.5, 1])
        for value in (0.05, 0.1, 0.1000001, 0.5, 0.7, 1.0, 3.0, math.inf, -1.0):
            ft.telemetry.observe("latency_seconds", value)
        [sample] = ft.telemetry.metrics()["latency_seconds"].samples
    assert isinstance(sample, HistogramSample)
    # le=0.1: 0.05, 0.1, -1.0; le=0.5: + 0.1000001, 0.5; le=1: + 0.7, 1.0; +Inf: + 3.0, inf
    assert sample.buckets == ((0.1, 3), (0.5, 5), (1.0, 7), (math.inf, 9))
    assert sample.count == 9
    assert sample.sum == math.inf


async def test_histogram_with_exponential_and_linear_buckets():
    assert ft.telemetry.exponential_buckets(0.001, 10, 4) == pytest.approx((0.001, 0.01, 0.1, 1.0))
    assert ft.telemetry.linear_buckets(1, 2, 3) == (1.0, 3.0, 5.0)
    async with ft.open_node("t"):
        ft.telemetry.histogram(
            "size_bytes", buckets=ft.telemetry.exponential_buckets(1, 2, 4), labels=["op"]
        )
        for value in (1, 2, 3, 8, 9):
            ft.telemetry.observe("size_bytes", value, {"op": "read"})
        ft.telemetry.observe("size_bytes", 4, {"op": "write"})
        samples = ft.telemetry.metrics()["size_bytes"].samples
    read, write = samples
    assert read.labels == {"op": "read"}
    assert read.buckets == ((1.0, 1), (2.0, 2), (4.0, 3), (8.0, 4), (math.inf, 5))
    assert (read.sum, read.count) == (23, 5)
    assert write.buckets == ((1.0, 0), (2.0, 0), (4.0, 1), (8.0, 1), (math.inf, 1))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ft.telemetry.exponential_buckets(0, 2, 3), ValueError, "start"),
        (lambda: ft.telemetry.exponential_buckets(1, 1, 3), ValueError, "factor"),
        (lambda: ft.telemetry.exponential_buckets(1, 2, 0), ValueError, "count"),
        (lambda: ft.telemetry.exponential_buckets(1, 2, 2.0), TypeError, "count"),
        (lambda: ft.telemetry.linear_buckets(0, 0, 3), ValueError, "width"),
        (lambda: ft.telemetry.linear_buckets("0", 1, 3), TypeError, "start"),
    ],
)
def test_bucket_helpers_refuse_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


async def test_metric_declarations_are_checked():
    async with ft.open_node("t"):
        with pytest.raises(ValueError, match="name"):
            ft.telemetry.counter("jobs.total")
        with pytest.raises(TypeError, match="name"):
            ft.telemetry.counter(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="description"):
            ft.telemetry.counter("x_total", 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="labels"):
            ft.telemetry.counter("x_total", labels="kind")
        with pytest.raises(ValueError, match="label name"):
            ft.telemetry.counter("x_total", labels=["__reserved"])
        with pytest.raises(ValueError, match="repeat"):
            ft.telemetry.counter("x_total", labels=["a", "a"])
        with pytest.raises(ValueError, match="'le' is reserved"):
            ft.telemetry.histogram("h", labels=["le"])
        with pytest.raises(ValueError, match="increase strictly"):
            ft.telemetry.histogram("h", buckets=[1, 1])
        with pytest.raises(ValueError, match="finite"):
            ft.telemetry.histogram("h", buckets=[1, math.inf])
        with pytest.raises(ValueError, match="empty"):
            ft.telemetry.histogram("h", buckets=[])
        with pytest.raises(TypeError, match="bucket"):
            ft.telemetry.histogram("h", buckets=["1"])
        with pytest.raises(ValueError, match="needs event"):
            ft.telemetry.counter("x_total", measurement="n")
        with pytest.raises(ValueError, match="needs measurement"):
            ft.telemetry.gauge("g", event="a.b")
        with pytest.raises(ValueError, match="event"):
            ft.telemetry.counter("x_total", event="A.B")
        assert ft.telemetry.metrics() == {}

        ft.telemetry.counter("x_total", "X")
        ft.telemetry.counter("x_total", "X")  # the same again: fine
        with pytest.raises(MetricExists, match="x_total"):
            ft.telemetry.counter("x_total", "another description")
        with pytest.raises(MetricExists):
            ft.telemetry.gauge("x_total", "X")


async def test_metric_updates_are_checked():
    async with ft.open_node("t"):
        ft.telemetry.counter("c_total", labels=["kind"])
        ft.telemetry.gauge("g")
        ft.telemetry.histogram("h", buckets=[1])
        with pytest.raises(UnknownMetric, match="nope"):
            ft.telemetry.increment("nope")
        with pytest.raises(LookupError):
            ft.telemetry.observe("nope", 1)
        with pytest.raises(TypeError, match="is a gauge"):
            ft.telemetry.increment("g")
        with pytest.raises(TypeError, match="is a counter"):
            ft.telemetry.observe("c_total", 1, {"kind": "a"})
        with pytest.raises(ValueError, match="only goes up"):
            ft.telemetry.increment("c_total", -1, {"kind": "a"})
        with pytest.raises(TypeError, match="amount"):
            ft.telemetry.increment("c_total", "1", {"kind": "a"})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="needs labels"):
            ft.telemetry.increment("c_total")
        with pytest.raises(ValueError, match="has labels"):
            ft.telemetry.increment("c_total", labels={"kind": "a", "extra": "b"})
        with pytest.raises(ValueError, match="has labels"):
            ft.telemetry.increment("c_total", labels={"other": "a"})
        with pytest.raises(TypeError, match="label 'kind' must be a str"):
            ft.telemetry.increment("c_total", labels={"kind": 3})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="value"):
            ft.telemetry.set_gauge("g", None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="NaN"):
            ft.telemetry.observe("h", math.nan)
        found = ft.telemetry.metrics()
    assert found["c_total"].samples == ()
    assert found["g"].samples == (Sample({}, 0.0),)
    assert found["h"].samples[0].count == 0


async def test_metrics_fed_by_events(caplog):
    async with ft.open_node("t"):
        ft.telemetry.counter("orders_total", event="shop.order.placed", labels=["region"])
        ft.telemetry.counter("revenue_total", event="shop.order.placed", measurement="amount")
        ft.telemetry.gauge("last_amount", event="shop.order.placed", measurement="amount")
        ft.telemetry.histogram(
            "amount", buckets=[10, 100], event="shop.order.placed", measurement="amount"
        )
        got: list = []
        ft.telemetry.attach("r", "shop.order.placed", recorder(got))
        ft.telemetry.execute("shop.order.placed", {"amount": 12}, {"region": "eu"})
        ft.telemetry.execute("shop.order.placed", {"amount": 150}, {"region": "us"})
        ft.telemetry.execute("shop.order.placed", {"amount": 3}, {"region": "eu"})
        with caplog.at_level(logging.WARNING, logger="foundation_trio.telemetry"):
            # no amount, and no region: counted, labelled "", the others skip it (logged once)
            ft.telemetry.execute("shop.order.placed", {})
            ft.telemetry.execute("shop.order.placed", {})
        found = ft.telemetry.metrics()
        assert ft.telemetry.handlers() == {"r": ("shop.order.placed",)}
    assert len(got) == 5
    assert found["orders_total"].samples == (
        Sample({"region": "eu"}, 2.0),
        Sample({"region": "us"}, 1.0),
        Sample({"region": ""}, 2.0),
    )
    assert found["orders_total"].event == "shop.order.placed"
    assert found["revenue_total"].samples == (Sample({}, 165.0),)
    assert found["last_amount"].samples == (Sample({}, 3.0),)
    [h] = found["amount"].samples
    assert h.buckets == ((10.0, 1), (100.0, 2), (math.inf, 3))
    warned = [r for r in caplog.records if r.name == "foundation_trio.telemetry"]
    assert len(warned) == 3  # once per metric that needs the measurement
    assert all("amount" in r.getMessage() for r in warned)


async def test_metrics_are_per_node_and_kept_across_a_server_restart():
    async with ft.open_node("t") as node:
        ft.telemetry.counter("c_total")
        ft.telemetry.increment("c_total")
        sups = await ft.which_children(node.root.pid)
        [sup] = [c for c in sups if c.id == "ft.telemetry"]
        [server] = await ft.which_children(sup.pid)
        ref = ft.monitor(server.pid)
        ft.exit(server.pid, ft.KILLED)
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        ft.telemetry.increment("c_total")
        assert ft.telemetry.metrics()["c_total"].samples == (Sample({}, 2.0),)
        async with ft.open_node("other"):
            assert ft.telemetry.metrics() == {}


async def test_metrics_need_the_service():
    async with open_runtime_node("bare"):
        with pytest.raises(LookupError, match="telemetry service"):
            ft.telemetry.counter("c_total")
        with pytest.raises(LookupError, match="telemetry service"):
            ft.telemetry.metrics()


# -- Prometheus --------------------------------------------------------------------------


async def test_prometheus_text_parses_back_with_the_official_parser():
    async with ft.open_node("t"):
        ft.telemetry.counter(
            "jobs_total", 'Jobs run, "all" of them\nper node \\ kind', labels=["kind"]
        )
        ft.telemetry.gauge("temperature", "Degrees")
        ft.telemetry.histogram("latency_seconds", "Latency", buckets=[0.1, 1], labels=["route"])
        ft.telemetry.increment("jobs_total", 3, {"kind": 'quote " back\\slash \n newline'})
        ft.telemetry.increment("jobs_total", labels={"kind": "plain"})
        ft.telemetry.set_gauge("temperature", -3.5)
        for value in (0.05, 0.5, 5):
            ft.telemetry.observe("latency_seconds", value, {"route": "/a"})
        text = ft.telemetry.prometheus_text()
    assert text.endswith("\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # the parser names a counter family without its _total suffix
    jobs = families["jobs"]
    assert jobs.type == "counter"
    assert jobs.documentation == 'Jobs run, "all" of them\nper node \\ kind'
    assert {s.labels["kind"]: s.value for s in jobs.samples} == {
        'quote " back\\slash \n newline': 3.0,
        "plain": 1.0,
    }
    assert [(s.name, s.value) for s in families["temperature"].samples] == [("temperature", -3.5)]
    latency = families["latency_seconds"]
    assert latency.type == "histogram"
    rows = [(s.name, s.labels.get("le"), s.value) for s in latency.samples]
    assert rows == [
        ("latency_seconds_bucket", "0.1", 1.0),
        ("latency_seconds_bucket", "1.0", 2.0),
        ("latency_seconds_bucket", "+Inf", 3.0),
        ("latency_seconds_sum", None, 5.55),
        ("latency_seconds_count", None, 3.0),
    ]
    assert all(s.labels["route"] == "/a" for s in latency.samples)


async def test_prometheus_text_lines():
    async with ft.open_node("t"):
        assert ft.telemetry.prometheus_text() == ""
        ft.telemetry.histogram("h", "H", buckets=[1])
        ft.telemetry.observe("h", 0.5)
        text = ft.telemetry.prometheus_text()
    assert text.splitlines() == [
        "# HELP h H",
        "# TYPE h histogram",
        'h_bucket{le="1.0"} 1',
        'h_bucket{le="+Inf"} 1',
        "h_sum 0.5",
        "h_count 1",
    ]
    assert telemetry.PROMETHEUS_CONTENT_TYPE.startswith("text/plain; version=0.0.4")


# -- the runtime's lifecycle events --------------------------------------------------------


class Crasher(ft.GenServer):
    async def handle_cast(self, request):
        raise RuntimeError("crash on purpose")


async def test_runtime_lifecycle_events_arrive_as_telemetry():
    got: list = []
    async with ft.open_node("t") as node:
        ft.telemetry.attach("r", sorted(telemetry.RUNTIME_EVENTS), recorder(got))
        sup = await node.start_supervisor(
            [ft.ChildSpec("c", Crasher)], max_restarts=1, max_seconds=60
        )
        [child] = await ft.which_children(sup)
        sup_ref = ft.monitor(sup)
        ref = ft.monitor(child.pid)
        await ft.cast(child.pid, "boom")
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        [child] = await ft.which_children(sup)  # restarted: one restart is allowed
        await ft.cast(child.pid, "boom")  # the second is one too many
        await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == sup_ref)
    names = [name for name, _, _ in got]
    assert names.count("runtime.supervisor.restart") == 1
    assert names.count("runtime.supervisor.give_up") == 1
    assert "runtime.process.start" in names and "runtime.process.exit" in names
    assert "runtime.supervisor.child_start" in names
    assert "runtime.supervisor.child_exit" in names
    [(_, give_up_m, give_up_md)] = [g for g in got if g[0] == "runtime.supervisor.give_up"]
    assert give_up_m == {"max_restarts": 1, "max_seconds": 60}
    assert give_up_md["supervisor"] == sup
    [restart] = [md for n, _, md in got if n == "runtime.supervisor.restart"]
    assert restart["child_id"] == "c" and restart["strategy"] == "ONE_FOR_ONE"
    exits = [md for n, _, md in got if n == "runtime.supervisor.child_exit"]
    assert [md["kind"] for md in exits][:2] == ["error", "error"]
    assert isinstance(exits[0]["reason"], RuntimeError)
    starts = [md for n, _, md in got if n == "runtime.process.start"]
    assert any(md["parent"] == sup for md in starts)


async def test_process_exit_kinds():
    got: list = []
    async with ft.open_node("t"):
        ft.telemetry.attach("r", "runtime.process.exit", recorder(got))

        async def normal():
            pass

        async def failing():
            raise ValueError("x")

        async def forever():
            await trio.sleep_forever()

        pids = {ft.spawn(normal): "normal", ft.spawn(failing): "error"}
        victim = ft.spawn(forever)
        pids[victim] = "killed"
        await trio.testing.wait_all_tasks_blocked()
        ft.exit(victim, ft.KILLED)
        await trio.testing.wait_all_tasks_blocked()
        kinds = {md["pid"]: md["kind"] for _, _, md in got}
    assert {pid: kinds[pid] for pid in pids} == pids


async def test_lifecycle_hook_is_installed_only_while_something_listens():
    async with ft.open_node("t") as node:
        hooks_before = list(node.lifecycle_hooks)
        ft.telemetry.attach("other", "app.event", lambda *_: None)
        assert node.lifecycle_hooks == hooks_before
        ft.telemetry.attach("r", "runtime.process.exit", lambda *_: None)
        assert len(node.lifecycle_hooks) == len(hooks_before) + 1
        ft.telemetry.counter("exits_total", event="runtime.process.exit", labels=["kind"])
        assert len(node.lifecycle_hooks) == len(hooks_before) + 1
        ft.telemetry.detach("r")
        # the counter still listens
        assert len(node.lifecycle_hooks) == len(hooks_before) + 1

        async def quick():
            pass

        ft.spawn(quick)
        await trio.testing.wait_all_tasks_blocked()
        [sample] = ft.telemetry.metrics()["exits_total"].samples
        assert sample == Sample({"kind": "normal"}, 1.0)
    # the hook leaves with the node's telemetry
    assert node.lifecycle_hooks == hooks_before


async def test_lifecycle_hook_goes_when_the_last_listener_detaches():
    async with ft.open_node("t") as node:
        before = list(node.lifecycle_hooks)
        ft.telemetry.attach("a", ["runtime.process.start", "runtime.process.exit"], print)
        ft.telemetry.attach("b", "runtime.supervisor.restart", print)
        ft.telemetry.detach("a")
        assert len(node.lifecycle_hooks) == len(before) + 1
        ft.telemetry.detach("b")
        assert node.lifecycle_hooks == before


# -- properties ------------------------------------------------------------------------------

bounds_strategy = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=8, unique=True
).map(sorted)
values_strategy = st.lists(st.floats(allow_nan=False, min_value=-1e7, max_value=1e7), max_size=40)
label_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(bounds=bounds_strategy, values=values_strategy, label=label_text)
def test_histogram_buckets_and_exposition_match_a_direct_count(bounds, values, label):
    """For any bounds, values and label value: each cumulative bucket counts the values
    <= its bound, and the exposition parses back (official parser) to the same figures."""

    async def scenario():
        async with ft.open_node("prop"):
            ft.telemetry.histogram("h", "property", buckets=bounds, labels=["l"])
            for value in values:
                ft.telemetry.observe("h", value, {"l": label})
            return ft.telemetry.metrics()["h"], ft.telemetry.prometheus_text()

    metric, text = trio.run(scenario)
    if not values:
        assert metric.samples == ()
        return
    [sample] = metric.samples
    expected = [(b, sum(1 for v in values if v <= b)) for b in bounds] + [(math.inf, len(values))]
    assert list(sample.buckets) == expected
    assert sample.count == len(values)
    assert sample.sum == pytest.approx(math.fsum(values), rel=1e-9, abs=1e-6)

    [family] = list(text_string_to_metric_families(text))
    buckets = [(float(s.labels["le"]), s.value) for s in family.samples if s.name == "h_bucket"]
    assert buckets == [(b, float(c)) for b, c in expected]
    assert all(s.labels["l"] == label for s in family.samples)
    [count] = [s.value for s in family.samples if s.name == "h_count"]
    assert count == len(values)


async def test_a_label_value_whose_str_raises_is_contained(caplog):
    class Nasty:
        def __str__(self):
            raise RuntimeError("no str for you")

    got: list = []
    async with ft.open_node("t"):
        ft.telemetry.counter("c_total", event="a.b", labels=["who"])
        ft.telemetry.attach("r", "a.b", recorder(got))
        with caplog.at_level(logging.ERROR, logger="foundation_trio.telemetry"):
            ft.telemetry.execute("a.b", {}, {"who": Nasty()})
        ft.telemetry.execute("a.b", {}, {"who": "ok"})
        samples = ft.telemetry.metrics()["c_total"].samples
    assert len(got) == 2  # the handler still got both
    assert samples == (Sample({"who": "ok"}, 1.0),)
    assert any("could not record" in r.getMessage() for r in caplog.records)


async def test_prometheus_text_of_a_given_snapshot_and_bad_input():
    async with ft.open_node("t"):
        ft.telemetry.counter("a_total", "A")
        snapshot = ft.telemetry.metrics()
        ft.telemetry.increment("a_total")
        # the snapshot, not the current values
        assert "a_total 0.0" in ft.telemetry.prometheus_text(snapshot)
        assert "a_total 1.0" in ft.telemetry.prometheus_text()
        with pytest.raises(TypeError, match="metrics_"):
            ft.telemetry.prometheus_text({"a_total": 1.0})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="metrics_"):
            ft.telemetry.prometheus_text(["a_total"])  # type: ignore[arg-type]
