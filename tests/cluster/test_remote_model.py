"""Remote monitors against a model, over in-memory links in virtual time.

Hypothesis draws a sequence of operations: start a process on node b, monitor one
from node a (by pid), demonitor one of those monitors, link or unlink node a's
(trapping) shell with one, end a process on b with some reason, cut the link (which
comes straight back; a worker linked to a's shell then ends too, as the link's
other end). The model says which ``Down`` each monitor must get: exactly
one, with the process's reason if it ended first, with a ``NodeDown`` if the link was
cut first, with ``NoProcess`` if the process was gone when the monitor was set, and
none once demonitored; and likewise which ``Exit`` messages the links bring. Before
the end, both nodes' books must hold exactly the monitors and links the model has
live; at the end, none.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memlinks import Network, mem_cluster_boot

import foundation_trio as ft
from foundation_trio.cluster.remote import ClusterService
from foundation_trio.runtime.node import open_node

REASONS = [ft.NORMAL, ft.SHUTDOWN, ft.Shutdown("detail"), ft.KILLED, "error"]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("start")),
        st.tuples(st.just("monitor"), st.integers(0, 7)),
        st.tuples(st.just("demonitor"), st.integers(0, 15)),
        st.tuples(st.just("end"), st.integers(0, 7), st.sampled_from(range(len(REASONS)))),
        st.tuples(st.just("cut")),
        st.tuples(st.just("link"), st.integers(0, 7)),
        st.tuples(st.just("unlink"), st.integers(0, 7)),
    ),
    max_size=30,
)


async def _worker() -> None:
    while True:
        message = await ft.receive()
        if message == "error":
            raise RuntimeError("asked to fail")
        if isinstance(message, ft.Normal):
            return


def _kind(reason: object) -> object:
    if isinstance(reason, ft.RemoteError):
        return ("error", reason.type_name)
    if isinstance(reason, ft.NodeDown):
        return "nodedown"
    if isinstance(reason, ft.NoProcess):
        return "noproc"
    return reason


async def _run(ops: list[tuple[Any, ...]]) -> None:
    network = Network()
    boot, links = mem_cluster_boot(network)
    results: dict[str, Any] = {}
    b_ready = trio.Event()
    done = trio.Event()
    b_node: dict[str, Any] = {}

    async def node_b() -> None:
        async with open_node("b", boot=[boot]) as node:
            b_node["node"] = node
            b_ready.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(node_b)
        await b_ready.wait()
        async with open_node("a", boot=[boot]) as a:
            await links["a"].connect("mem:b")
            workers: list[ft.Pid] = []
            alive: list[bool] = []
            monitors: list[tuple[ft.Ref, int]] = []
            expected: dict[ft.Ref, object] = {}
            watching: dict[ft.Ref, int] = {}  # live monitors -> worker index
            b = b_node["node"]
            ft.trap_exits(True)
            linked: set[int] = set()
            exits: list[tuple[int, object]] = []  # the Exit messages expected
            for op in ops:
                if op[0] == "start":
                    token = _as_process_of(b)  # spawn on node b
                    try:
                        workers.append(ft.spawn(_worker))
                    finally:
                        _reset(token)
                    alive.append(True)
                elif op[0] == "monitor" and workers:
                    index = op[1] % len(workers)
                    ref = ft.monitor(workers[index])
                    monitors.append((ref, index))
                    if alive[index]:
                        watching[ref] = index
                    else:
                        expected[ref] = "noproc"
                elif op[0] == "demonitor" and monitors:
                    ref, _ = monitors[op[1] % len(monitors)]
                    ft.demonitor(ref, flush=True)
                    watching.pop(ref, None)
                    expected.pop(ref, None)
                elif op[0] == "end" and workers:
                    index = op[1] % len(workers)
                    if alive[index]:
                        reason = REASONS[op[2]]
                        await _end(b, workers[index], reason)
                        alive[index] = False
                        kind = ("error", "RuntimeError") if reason == "error" else reason
                        if index in linked:
                            linked.discard(index)
                            exits.append((index, kind))
                        for ref, watched in list(watching.items()):
                            if watched == index:
                                expected[ref] = kind
                                del watching[ref]
                elif op[0] == "cut":
                    links["a"].sever("b", "cut by the test")
                    for ref in list(watching):
                        expected[ref] = "nodedown"
                        del watching[ref]
                    exits.extend((index, "nodedown") for index in sorted(linked))
                    for index in linked:
                        # the other end of a link sees the loss too: the worker,
                        # which does not trap exits, ends (Erlang's noconnection)
                        alive[index] = False
                    linked.clear()
                    await links["a"].connect("mem:b")
                elif op[0] == "link" and workers:
                    index = op[1] % len(workers)
                    ft.link(workers[index])
                    if not alive[index]:
                        exits.append((index, "noproc"))
                    else:
                        linked.add(index)
                elif op[0] == "unlink" and workers:
                    index = op[1] % len(workers)
                    ft.unlink(workers[index])
                    linked.discard(index)
                await trio.sleep(0.01)
            # the books of both nodes hold exactly the monitors still watching
            await trio.sleep(1)
            a_books = a.find_extension(ClusterService)
            b_books = b.find_extension(ClusterService)
            assert a_books is not None
            assert b_books is not None
            assert set(a_books._monitors) == set(watching)
            assert {ref for _, ref in b_books._watched} == {ref.id for ref in watching}
            me = ft.self_pid()
            assert a_books._links.get(a.shell, set()) == {workers[i] for i in linked}
            b_links = {p.pid for p, pids in b_books._links.items() if me in pids}
            assert b_links == {workers[i] for i in linked}
            # end the rest; every monitor still watching gets NORMAL
            for index, pid in enumerate(workers):
                if alive[index]:
                    await _end(b, pid, ft.NORMAL)
                    if index in linked:
                        exits.append((index, ft.NORMAL))
                    for ref, watched in list(watching.items()):
                        if watched == index:
                            expected[ref] = ft.NORMAL
                            del watching[ref]
            await trio.sleep(1)
            got: dict[ft.Ref, list[object]] = {}
            while True:
                try:
                    down = await ft.receive(lambda m: isinstance(m, ft.Down), timeout=0)
                except ft.ReceiveTimeout:
                    break
                got.setdefault(down.ref, []).append(_kind(down.reason))
            got_exits = []
            while True:
                try:
                    signal = await ft.receive(lambda m: isinstance(m, ft.Exit), timeout=0)
                except ft.ReceiveTimeout:
                    break
                got_exits.append((workers.index(signal.pid), _kind(signal.reason)))
            results["exits"] = (sorted(got_exits, key=repr), sorted(exits, key=repr))
            results["got"] = got
            results["expected"] = {ref: [kind] for ref, kind in expected.items()}
            results["a_service"] = a.find_extension(ClusterService)
            results["b_service"] = b.find_extension(ClusterService)
        done.set()
    assert results["got"] == results["expected"]
    got_exits, expected_exits = results["exits"]
    assert got_exits == expected_exits
    for service in (results["a_service"], results["b_service"]):
        assert not service._monitors
        assert not service._watched
        assert not any(service._watchers.values())
        assert not service.pending
        assert not any(service._links.values())


def _as_process_of(node: Any) -> Any:
    from foundation_trio.runtime.process import set_current_process

    return set_current_process(node.shell)


def _reset(token: Any) -> None:
    from foundation_trio.runtime.process import reset_current_process

    reset_current_process(token)


async def _end(b: Any, pid: ft.Pid, reason: object) -> None:
    """End ``pid`` on node b with ``reason`` and wait until it has ended."""
    process = b.processes.get(pid.id)
    assert process is not None
    if reason == "error" or isinstance(reason, ft.Normal):
        process.mailbox.put(reason)  # the worker raises, or returns
    else:
        process.kill(reason)
    await process.wait_exited()


@given(operations)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_remote_monitors_match_the_model(ops: list[tuple[Any, ...]]) -> None:
    trio.run(_run, ops, clock=trio.testing.MockClock(autojump_threshold=0))
