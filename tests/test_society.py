"""Process societies: pools, routing, crashes and restarts, backpressure, autoscaling,
topologies and health. Everything here runs under the mock clock."""

from __future__ import annotations

import os
import random
from collections import Counter

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import foundation_trio as ft
from foundation_trio import society as soc
from foundation_trio.society import neighbour_positions


async def whoami(job):
    """A worker that answers with its own pid after ``job`` seconds."""
    await trio.sleep(job)
    return ft.self_pid()


async def echo(job):
    if isinstance(job, Exception):
        raise job
    if isinstance(job, tuple) and job[0] == "sleep":
        await trio.sleep(job[1])
        return job
    return job


class Gate:
    """A job that waits until the test opens it."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.opened = trio.Event()
        self.by: ft.Pid | None = None


async def gated(job):
    if isinstance(job, Gate):
        job.by = ft.self_pid()
        job.entered.set()
        await job.opened.wait()
        return "gate"
    return job


# -- options and bad input -----------------------------------------------------------


def test_pool_rejects_bad_input():
    with pytest.raises(TypeError, match="name"):
        soc.pool("", echo, count=1)
    with pytest.raises(TypeError, match="worker"):
        soc.pool("p", lambda job: job, count=1)
    with pytest.raises(TypeError, match="worker"):
        soc.pool("p", dict, count=1)

    class SyncJob(soc.Worker):
        def handle_job(self, job):  # type: ignore[override]
            return job

    with pytest.raises(TypeError, match=r"SyncJob.handle_job must be an async method"):
        soc.pool("p", SyncJob, count=1)
    with pytest.raises(ft.ConfigError, match="unknown option 'size'"):
        soc.pool("p", echo, size=1)
    with pytest.raises(ft.ConfigError, match="count: expected int"):
        soc.pool("p", echo, count="2")
    with pytest.raises(ft.ConfigError, match="count must be 1 or more"):
        soc.pool("p", echo, count=0)
    with pytest.raises(ft.ConfigError, match="not both"):
        soc.pool("p", echo, count=2, min=1, max=2)
    with pytest.raises(ft.ConfigError, match="min and max"):
        soc.pool("p", echo, min=1)
    with pytest.raises(ft.ConfigError, match="must not exceed"):
        soc.pool("p", echo, min=3, max=2)
    with pytest.raises(ft.ConfigError, match="hysteresis"):
        soc.pool("p", echo, min=1, max=2, scale_up_depth=1.0, scale_down_depth=1.0)
    with pytest.raises(ft.ConfigError, match="routing"):
        soc.pool("p", echo, count=1, routing="random")


def test_pool_count_cpus_is_the_cpu_count():
    assert soc.pool("p", echo, count="cpus").options.count == (os.cpu_count() or 1)


async def test_start_rejects_bad_input(autojump_clock):
    async with ft.open_node("t"):
        with pytest.raises(TypeError, match="pools"):
            await soc.start([])
        with pytest.raises(TypeError, match="pools"):
            await soc.start(["p"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="two pools named 'p'"):
            await soc.start([soc.pool("p", echo, count=1), soc.pool("p", echo, count=1)])
        with pytest.raises(ft.ConfigError, match="topology"):
            await soc.start(soc.pool("p", echo, count=1), topology="star")
        with pytest.raises(ft.ConfigError, match="fanout must be 1 or more"):
            await soc.start(soc.pool("p", echo, count=1), fanout=0)
        s = await soc.start(soc.pool("p", echo, count=1), name="jobs")
        with pytest.raises(ValueError, match="'jobs' is taken"):
            await soc.start(soc.pool("p", echo, count=1), name="jobs")
        assert soc.lookup("jobs") is s
        with pytest.raises(LookupError, match="nope"):
            soc.lookup("nope")


async def test_start_outside_a_node_fails():
    with pytest.raises(ft.NoNodeError):
        await soc.start(soc.pool("p", echo, count=1))


async def test_submit_rejects_bad_pool_and_key(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(
            [soc.pool("a", echo, count=1), soc.pool("h", echo, count=2, routing="hash")]
        )
        with pytest.raises(ValueError, match="name one with pool="):
            await s.submit(1)
        with pytest.raises(LookupError, match="no pool 'zz'"):
            await s.submit(1, pool="zz")
        with pytest.raises(ValueError, match="pass key="):
            await s.submit(1, pool="h")
        with pytest.raises(TypeError, match="key must be a str, bytes or int"):
            await s.submit(1, pool="h", key=(1, 2))
        with pytest.raises(ValueError, match="only used by hash routing"):
            await s.submit(1, pool="a", key="k")
        assert await s.submit(5, pool="a") == 5
        assert await s.submit(6, pool="h", key="k") == 6


# -- results, failures and restarts ----------------------------------------------------------


class Accumulator(soc.Worker):
    """A stateful worker: init arguments and state kept between jobs."""

    async def init(self, start, step):
        self.total = start
        self.step = step

    async def handle_job(self, job):
        if job == "crash":
            raise RuntimeError("asked to crash")
        self.total += job * self.step
        return self.total


async def test_worker_class_keeps_state_and_a_restart_starts_fresh(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("acc", Accumulator, 100, 2, count=1))
        assert await s.submit(1) == 102
        assert await s.submit(3) == 108
        with pytest.raises(soc.JobFailed) as failed:
            await s.submit("crash")
        assert isinstance(failed.value.reason, RuntimeError)
        assert failed.value.__cause__ is failed.value.reason
        assert await s.submit(1) == 102  # a new incarnation, init ran again
        assert s.health().pools[0].restarts == 1


async def test_worker_init_failure_fails_start(autojump_clock):
    class Broken(soc.Worker):
        async def init(self):
            raise OSError("no resource")

    async with ft.open_node("t"):
        with pytest.raises(ft.StartError) as error:
            await soc.start(soc.pool("b", Broken, count=2), name="b")
        assert isinstance(error.value.reason, OSError)
        with pytest.raises(LookupError):
            soc.lookup("b")


async def test_crash_fails_only_the_running_job_and_queued_jobs_still_run(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", echo, count=1))
        before = s.members()
        results: dict[int, object] = {}

        async def submit(index, job):
            try:
                results[index] = await s.submit(job)
            except soc.JobFailed as error:
                results[index] = error

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit, 0, ("sleep", 1.0))
            await trio.sleep(0.1)
            nursery.start_soon(submit, 1, ValueError("bad job"))
            await trio.sleep(0.1)
            nursery.start_soon(submit, 2, ("sleep", 1.0))
            nursery.start_soon(submit, 3, "after")
            await trio.sleep(0.1)
            assert s.health().pools[0].queued == 3
        assert results[0] == ("sleep", 1.0)
        assert isinstance(results[1], soc.JobFailed)
        assert results[1].worker == before[0]
        assert isinstance(results[1].reason, ValueError)
        assert results[2] == ("sleep", 1.0)
        assert results[3] == "after"
        assert s.members() != before
        health = s.health().pools[0]
        assert (health.completed, health.failed, health.restarts) == (3, 1, 1)


async def test_killed_worker_fails_its_job_with_killed(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", gated, count=1))
        gate = Gate()
        async with trio.open_nursery() as nursery:

            async def victim():
                with pytest.raises(soc.JobFailed) as failed:
                    await s.submit(gate)
                assert failed.value.reason is ft.KILLED

            nursery.start_soon(victim)
            await gate.entered.wait()
            ft.exit(s.members()[0], ft.KILLED)
        assert await s.submit("alive") == "alive"


async def test_pool_that_gives_up_restarts_the_society_and_queued_jobs_survive(
    autojump_clock,
):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", echo, count=1, max_restarts=1))
        before = {c.id: c.pid for c in await ft.which_children(s.pid)}
        await s.cast(ValueError("first"))
        await s.cast(ValueError("second"))
        # queued behind two crashes: the second makes the pool's supervisor give
        # up, and the society restarts as a whole (ONE_FOR_ALL)
        assert await s.submit("ok") == "ok"
        after = {c.id: c.pid for c in await ft.which_children(s.pid)}
        assert after.keys() == before.keys()
        assert after[("pool", "p")] != before[("pool", "p")]
        assert after["coordinator"] != before["coordinator"]
        assert s.running
        assert len(s.members()) == 1
        health = s.health().pools[0]
        assert (health.failed, health.completed, health.restarts) == (2, 1, 2)


async def test_society_that_gives_up_stops_and_fails_what_is_queued(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", echo, count=1, max_restarts=0), max_restarts=0)
        ref = ft.monitor(s.pid)
        with pytest.raises(soc.JobFailed):
            await s.submit(ValueError("x"))
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.reason == ft.GAVE_UP
        assert not s.running
        assert s.health().status == "stopped"
        with pytest.raises(soc.SocietyStopped):
            await s.submit("late")


async def test_stop_fails_queued_jobs_and_later_submissions(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", gated, count=1), name="s")
        gate = Gate()
        outcomes = []

        async def submit(job):
            try:
                outcomes.append(await s.submit(job))
            except soc.SocietyError as error:
                outcomes.append(type(error))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit, gate)
            await gate.entered.wait()
            nursery.start_soon(submit, "queued")
            await trio.sleep(0.1)
            await s.stop()
        # the running job's worker was stopped; the queued one never ran
        assert sorted(map(str, outcomes)) == sorted([str(soc.JobFailed), str(soc.SocietyStopped)])
        with pytest.raises(soc.SocietyStopped):
            await s.submit("late")
        with pytest.raises(soc.SocietyStopped):
            s.cast_nowait("late")
        await s.stop()  # stopping again is a no-op
        with pytest.raises(LookupError):
            soc.lookup("s")


async def test_node_close_stops_the_society(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", echo, count=2))
        assert s.running
    assert not s.running


async def test_cancelled_submit_withdraws_its_queued_job(autojump_clock):
    seen = []

    async def record(job):
        seen.append(job)
        await trio.sleep(1.0)
        return job

    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", record, count=1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.submit, "first")
            await trio.sleep(0.1)
            with trio.move_on_after(0.2):
                await s.submit("withdrawn")
            assert s.health().pools[0].queued == 0
        assert seen == ["first"]


async def test_cast_runs_without_a_reply_and_failed_casts_are_counted(autojump_clock):
    done = trio.Event()

    async def work(job):
        if job == "bad":
            raise ValueError("bad cast")
        done.set()

    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", work, count=1))
        await s.cast("bad")
        await s.cast("good")
        await done.wait()
        health = s.health().pools[0]
        assert (health.failed, health.completed, health.restarts) == (1, 1, 1)


# -- routing ------------------------------------------------------------------------------


async def test_round_robin_spreads_evenly(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", whoami, count=3))
        pids = [await s.submit(0) for _ in range(9)]
        assert Counter(pids) == Counter({pid: 3 for pid in s.members()})
        assert pids[:3] == s.members()


async def test_least_loaded_avoids_busy_workers(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", whoami, count=3, routing="least_loaded"))
        first, second, third = s.members()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.submit, 10.0)  # the first worker is busy for 10 s
            await trio.sleep(0.1)
            quick = [await s.submit(0.5) for _ in range(6)]
            assert first not in quick
            assert set(quick) == {second, third}
            nursery.start_soon(s.submit, 10.0)  # now two are busy
            await trio.sleep(0.1)
            assert {await s.submit(0.5) for _ in range(3)} == {third}
            nursery.cancel_scope.cancel()


async def test_least_loaded_measures_queue_depth(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", gated, count=2, routing="least_loaded"))
        gates = [Gate() for _ in range(3)]
        async with trio.open_nursery() as nursery:
            for gate in gates:
                nursery.start_soon(s.submit, gate)
                await trio.sleep(0.1)
            # 3 jobs on 2 workers: least loaded put 2 on one and 1 on the other,
            # so the next job goes to the one with 1.
            health = s.health().pools[0]
            assert (health.in_flight, health.queued) == (2, 1)
            for gate in gates:
                gate.opened.set()
        assert s.health().pools[0].completed == 3


async def test_hash_routing_is_stable_and_survives_restarts(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", whoami, count=4, routing="hash"))
        keys = [f"user-{i}" for i in range(40)] + [7, b"raw"]
        first = {key: await s.submit(0, key=key) for key in keys}
        assert len(set(first.values())) > 1  # keys spread over several workers
        again = {key: await s.submit(0, key=key) for key in keys}
        assert again == first
        # a crash gives one member a new pid; its keys follow its position
        victim = s.members()[1]
        position = {pid: i for i, pid in enumerate(s.members())}
        ft.exit(victim, ValueError("crash"))
        await trio.sleep(0.1)
        members = s.members()
        assert victim not in members
        after = {key: await s.submit(0, key=key) for key in keys}
        assert {k: members.index(p) for k, p in after.items()} == {
            k: position[p] for k, p in first.items()
        }


async def test_hash_routing_is_the_same_in_another_society(autojump_clock):
    async with ft.open_node("t"):
        keys = [f"k{i}" for i in range(30)]
        layouts = []
        for _ in range(2):
            s = await soc.start(soc.pool("p", whoami, count=3, routing="hash"))
            members = s.members()
            layouts.append([members.index(await s.submit(0, key=k)) for k in keys])
            await s.stop()
        assert layouts[0] == layouts[1]


async def test_broadcast_reaches_every_worker(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", whoami, count=3, routing="broadcast"))
        assert await s.submit(0) == s.members()
        await s.cast(0.0)
        s.cast_nowait(0.0)
        await trio.sleep(0.1)
        assert s.health().pools[0].completed == 9


# -- backpressure -------------------------------------------------------------------------


async def test_full_queues_make_submitters_wait(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", gated, count=1, queue_size=2))
        gate = Gate()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.submit, gate)
            await gate.entered.wait()
            await s.cast("q1")
            await s.cast("q2")  # the queue (2) is now full
            with pytest.raises(soc.QueueFull, match="queue_size"):
                s.cast_nowait("q3")
            blocked_done = trio.Event()

            async def blocked():
                await s.cast("q3")
                blocked_done.set()

            nursery.start_soon(blocked)
            await trio.sleep(1.0)
            health = s.health()
            assert health.pools[0].blocked == 1
            assert health.status == "saturated"
            assert not blocked_done.is_set()
            gate.opened.set()
            await blocked_done.wait()
        assert s.health().pools[0].completed == 4
        assert s.health().status == "ok"


# -- autoscaling --------------------------------------------------------------------------


async def test_autoscale_up_then_down_with_hysteresis(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(
            soc.pool(
                "p",
                echo,
                min=1,
                max=3,
                scale_interval=1.0,
                scale_samples=3,
                scale_up_depth=4.0,
                scale_down_depth=0.5,
                queue_size=100,
            )
        )
        start = trio.current_time()
        sizes: list[tuple[float, int]] = []

        async def watch():
            last = None
            while True:
                size = s.health().pools[0].workers
                if size != last:
                    sizes.append((trio.current_time() - start, size))
                    last = size
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            for _ in range(60):  # 60 s of work for one worker
                await s.cast(("sleep", 1.0))
            await trio.sleep(40.0)
            nursery.cancel_scope.cancel()
        # it grows by one per 3 samples (3 s), never above max
        assert [size for _, size in sizes] == [1, 2, 3, 2, 1]
        up1, up2 = sizes[1][0], sizes[2][0]
        assert 2.9 <= up1 < 3.1
        assert 5.9 <= up2 - 0 < 6.1
        # shrinking waits until the queues are drained and three idle samples agree
        assert sizes[3][0] > sizes[2][0] + 3
        assert s.health().pools[0].completed == 60
        assert s.health().pools[0].failed == 0


async def test_autoscale_holds_between_the_thresholds(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(
            soc.pool("p", echo, min=1, max=4, scale_up_depth=3.0, scale_down_depth=0.5)
        )

        async def feeder():
            while True:  # keep about 2 jobs per worker: between the thresholds
                if s.health().pools[0].queued + s.health().pools[0].in_flight < 2:
                    await s.cast(("sleep", 1.0))
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feeder)
            await trio.sleep(20.0)
            assert s.health().pools[0].workers == 1
            nursery.cancel_scope.cancel()


async def test_idle_workers_steal_from_long_queues(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", whoami, count=2))
        _, second = s.members()
        start = trio.current_time()
        await s.cast(3.0)  # round robin: to the first worker
        await s.cast(0.5)  # to the second
        # to the first again, behind 3 s of work; the second is idle at 0.5 s and
        # steals it
        assert await s.submit(1.0) == second
        assert trio.current_time() - start == pytest.approx(1.5)


async def test_hash_pools_do_not_steal(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", whoami, count=2, routing="hash"))
        first = s.members()[0]
        key = 0
        while await s.submit(0, key=key) != first:
            key += 1
        start = trio.current_time()
        await s.cast(3.0, key=key)
        # the other worker is idle, but the key stays on its worker
        assert await s.submit(1.0, key=key) == first
        assert trio.current_time() - start == pytest.approx(4.0)


async def test_retiring_worker_finishes_its_job_before_it_leaves(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(
            soc.pool(
                "p",
                gated,
                min=1,
                max=2,
                scale_samples=1,
                scale_up_depth=4.0,
                scale_down_depth=1.5,
            )
        )
        first = s.members()[0]
        gates = [Gate() for _ in range(4)]
        results = []

        async def submit(gate):
            results.append(await s.submit(gate))

        async def running_on(pid):
            await trio.sleep(0.01)
            return [
                g for g in gates if g.by == pid and g.entered.is_set() and not g.opened.is_set()
            ]

        async with trio.open_nursery() as nursery:
            for gate in gates:
                nursery.start_soon(submit, gate)
            # t=1: depth 4 on one worker -> a second worker, which steals a job
            await trio.sleep(1.1)
            second = s.members()[1]
            assert len(await running_on(second)) == 1
            # the first worker finishes two jobs: 1 + 1 left, a depth of 1 per worker
            for _ in range(2):
                [gate] = await running_on(first)
                gate.opened.set()
            # t=2: shrinking to one worker leaves a depth of 2 (< 4): retire the
            # newest of the idlest, the second, which is still running its job
            await trio.sleep(1.0)
            health = s.health().pools[0]
            assert (health.workers, health.retiring, health.running) == (1, 1, 2)
            [stolen] = await running_on(second)
            stolen.opened.set()
            await trio.sleep(0.1)
            health = s.health().pools[0]
            assert (health.workers, health.retiring, health.running) == (1, 0, 1)
            assert s.members() == [first]
            [last] = await running_on(first)
            last.opened.set()
        assert results == ["gate"] * 4
        assert s.health().pools[0].failed == 0


# -- topologies ------------------------------------------------------------------------------


def test_neighbour_positions_by_topology():
    assert neighbour_positions("mesh", 2, 4, 2) == [0, 1, 3]
    assert neighbour_positions("ring", 0, 5, 2) == [1, 4]
    assert neighbour_positions("ring", 0, 2, 2) == [1]
    assert neighbour_positions("ring", 0, 1, 2) == []
    assert neighbour_positions("tree", 0, 7, 2) == [1, 2]
    assert neighbour_positions("tree", 2, 7, 2) == [0, 5, 6]
    assert neighbour_positions("tree", 6, 7, 2) == [2]
    assert neighbour_positions("tree", 1, 10, 3) == [0, 4, 5, 6]
    with pytest.raises(ValueError, match="outside"):
        neighbour_positions("ring", 5, 5, 2)


@given(
    topology=st.sampled_from(["mesh", "ring", "tree"]),
    size=st.integers(1, 40),
    fanout=st.integers(1, 5),
)
def test_neighbour_relation_is_symmetric_and_connected(topology, size, fanout):
    adjacency = {p: neighbour_positions(topology, p, size, fanout) for p in range(size)}
    for p, near in adjacency.items():
        assert p not in near
        for q in near:
            assert p in adjacency[q]
    seen, frontier = {0}, [0]
    while frontier:
        for q in adjacency[frontier.pop()]:
            if q not in seen:
                seen.add(q)
                frontier.append(q)
    assert seen == set(range(size))
    edges = sum(len(n) for n in adjacency.values()) // 2
    if topology == "tree":
        assert edges == size - 1
    elif topology == "ring":
        assert edges == min(size, size * (size - 1) // 2)


@pytest.mark.parametrize(
    ("topology", "expected"),
    [
        ("mesh", {0: [1, 2, 3, 4], 2: [0, 1, 3, 4]}),
        ("ring", {0: [1, 4], 2: [1, 3], 4: [0, 3]}),
        ("tree", {0: [1, 2], 1: [0, 3, 4], 4: [1]}),
    ],
)
async def test_live_neighbours_follow_positions_across_a_restart(
    topology, expected, autojump_clock
):
    async with ft.open_node("t"):
        s = await soc.start(
            [soc.pool("a", echo, count=2), soc.pool("b", echo, count=3)], topology=topology
        )
        members = s.members()
        assert len(members) == 5
        for position, near in expected.items():
            assert s.neighbours(members[position]) == [members[i] for i in near]
        old = members[1]
        ft.exit(old, ValueError("crash"))
        await trio.sleep(0.1)
        renewed = s.members()
        assert renewed[1] != old
        assert renewed[:1] + renewed[2:] == members[:1] + members[2:]
        for position, near in expected.items():
            assert s.neighbours(renewed[position]) == [renewed[i] for i in near]
        with pytest.raises(soc.NotAMember):
            s.neighbours(old)
        with pytest.raises(TypeError):
            s.neighbours("a")  # type: ignore[arg-type]


class Gossip(soc.Worker):
    """Forwards a rumour to its neighbours once, and remembers it."""

    heard: dict[ft.Pid, list[str]] = {}

    async def handle_job(self, job):
        return await self.send_neighbours(("rumour", job))

    async def handle_message(self, message):
        Gossip.heard.setdefault(self.pid, []).append(message[1])


async def test_send_neighbours_delivers_to_handle_message(autojump_clock):
    Gossip.heard = {}
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("g", Gossip, count=4), topology="ring")
        members = s.members()
        sent = await s.submit("hello")  # runs on member 0 (round robin)
        assert sent == 2
        await trio.sleep(0.1)
        assert Gossip.heard == {members[1]: ["hello"], members[3]: ["hello"]}


async def test_default_handle_message_drops_and_logs(caplog, autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", echo, count=1))
        await ft.send(s.members()[0], "stray")
        assert await s.submit(1) == 1
    assert "dropped message 'stray'" in caplog.text


# -- health ------------------------------------------------------------------------------


def test_percentiles_nearest_rank():
    assert soc.Percentiles.of([]) == soc.Percentiles(0, None, None, None, None)
    values = [float(v) for v in range(1, 101)]
    p = soc.Percentiles.of(reversed(values))
    assert (p.samples, p.p50, p.p90, p.p99, p.max) == (100, 50.0, 90.0, 99.0, 100.0)
    assert soc.Percentiles.of([3.0]).p99 == 3.0


async def test_health_is_measured(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", echo, count=1, latency_window=4))
        empty = s.health().pools[0]
        assert empty.latency.samples == 0
        assert empty.latency.p50 is None
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(s.submit, ("sleep", 2.0))
        pool = s.health().pools[0]
        # one worker, three 2 s jobs submitted together: they wait 0, 2 and 4 s
        assert pool.run_time.samples == 3
        assert pool.run_time.p50 == pytest.approx(2.0)
        assert pool.latency.p50 == pytest.approx(4.0)
        assert pool.latency.max == pytest.approx(6.0)
        for _ in range(5):
            await s.submit(("sleep", 1.0))
        assert s.health().pools[0].latency.samples == 4  # the window keeps the last 4
        assert s.health().pools[0].latency.max == pytest.approx(1.0)


class SlowRestart(soc.Worker):
    """A worker whose restarts take a second to initialise."""

    starts = 0

    async def init(self):
        SlowRestart.starts += 1
        if SlowRestart.starts > 2:
            await trio.sleep(1.0)

    async def handle_job(self, job):
        return job


async def test_health_reports_a_worker_being_restarted_as_degraded(autojump_clock):
    SlowRestart.starts = 0
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", SlowRestart, count=2))
        health = s.health()
        assert health.status == "ok"
        assert health.coordinator is not None
        assert (health.pools[0].workers, health.pools[0].running) == (2, 2)
        ft.exit(s.members()[0], ValueError("crash"))
        await trio.sleep(0.5)
        health = s.health()
        assert health.status == "degraded"
        assert (health.pools[0].workers, health.pools[0].running) == (2, 1)
        await trio.sleep(1.0)
        health = s.health()
        assert health.status == "ok"
        assert health.pools[0].restarts == 1


# -- telemetry ---------------------------------------------------------------------------


async def test_society_emits_telemetry_events(autojump_clock):
    events = []

    def handler(name, measurements, metadata):
        events.append((name, dict(measurements), dict(metadata)))

    async with ft.open_node("t"):
        ft.telemetry.attach(
            "society-test",
            [
                "society.job.completed",
                "society.job.failed",
                "society.worker.restarted",
                "society.pool.scaled",
                "society.stopped",
            ],
            handler,
        )
        s = await soc.start(
            soc.pool("p", echo, min=1, max=2, scale_samples=1, scale_up_depth=2.0),
            name="tele",
        )
        assert await s.submit(("sleep", 0.5)) == ("sleep", 0.5)
        with pytest.raises(soc.JobFailed):
            await s.submit(ValueError("bad"))
        for _ in range(4):
            await s.cast(("sleep", 1.0))
        await trio.sleep(1.5)
        await s.stop()
    names = [name for name, _, _ in events]
    assert names[:3] == ["society.job.completed", "society.job.failed", "society.worker.restarted"]
    assert "society.pool.scaled" in names
    assert names[-1] == "society.stopped"
    completed = events[0]
    assert completed[1] == {"latency": 0.5, "queue_time": 0.0, "run_time": 0.5}
    assert completed[2]["society"] == "tele"
    assert completed[2]["pool"] == "p"
    failed = events[1][2]
    assert failed["reason"] == "ValueError('bad')"
    scaled = next(e for e in events if e[0] == "society.pool.scaled")
    assert scaled[1]["workers_before"] == 1.0
    assert scaled[1]["workers"] == 2.0
    assert scaled[2]["direction"] == "up"


# -- the autoscaling rule ----------------------------------------------------------------

scaling_options = st.builds(
    lambda low, extra, down, gap, samples: (
        soc.pool(
            "p",
            echo,
            min=low,
            max=low + extra,
            scale_down_depth=down,
            scale_up_depth=down + gap,
            scale_samples=samples,
        ).options
    ),
    st.integers(1, 4),
    st.integers(0, 6),
    st.floats(0.0, 4.0),
    st.floats(0.01, 8.0),
    st.integers(1, 4),
)


@given(
    options=scaling_options,
    workers=st.integers(1, 12),
    depth=st.integers(0, 200),
    history=st.lists(st.floats(0.0, 50.0), max_size=5),
)
def test_scale_decision_respects_bounds_thresholds_and_never_flaps(
    options, workers, depth, history
):
    samples = [*history, depth / workers]
    decision = soc.scale_decision(options, samples, workers, depth)
    window = samples[-options.scale_samples :]
    if len(window) < options.scale_samples:
        assert decision == 0
    if decision == 1:
        assert workers < options.max
        assert all(s >= options.scale_up_depth for s in window)
    if decision == -1:
        assert workers > options.min
        assert all(s <= options.scale_down_depth for s in window)
        # the state it shrinks into, measured again and again, never grows
        after = depth / (workers - 1)
        assert soc.scale_decision(options, [after] * 5, workers - 1, depth) != 1
    if decision == 0 and len(window) == options.scale_samples:
        grows = all(s >= options.scale_up_depth for s in window) and workers < options.max
        assert not grows


def test_scale_decision_needs_an_autoscaled_pool():
    with pytest.raises(ValueError, match="autoscaled"):
        soc.scale_decision(soc.pool("p", echo, count=2).options, [9.0], 2, 18)


# -- random crashes, kills and scaling: no job is lost ------------------------------------


async def chaos_worker(job):
    kind, value = job
    await trio.sleep(value)
    if kind == "crash":
        raise ValueError("crash job")
    return value


@pytest.mark.parametrize("seed", range(6))
async def test_random_crashes_kills_and_scaling_lose_no_job(seed, autojump_clock):
    from _helpers import all_tasks

    rng = random.Random(seed)
    routing = rng.choice(["round_robin", "least_loaded", "hash"])
    jobs = [
        (
            rng.uniform(0, 20),
            ("crash" if rng.random() < 0.1 else "ok", round(rng.uniform(0.0, 1.5), 3)),
            rng.randrange(50),
        )
        for _ in range(120)
    ]
    kills = sorted(rng.uniform(0, 20) for _ in range(8))
    before = all_tasks()
    async with ft.open_node("t"):
        s = await soc.start(
            soc.pool(
                "p",
                chaos_worker,
                min=1,
                max=4,
                routing=routing,
                queue_size=rng.randint(1, 6),
                scale_interval=0.5,
                scale_samples=1,
                scale_up_depth=2.0,
                scale_down_depth=0.5,
                max_restarts=1000,
            )
        )
        outcomes: dict[int, object] = {}
        sizes = set()

        async def submit(index, at, job, key):
            await trio.sleep(at)
            try:
                keyed = {"key": key} if routing == "hash" else {}
                outcomes[index] = await s.submit(job, **keyed)
            except soc.JobFailed as error:
                outcomes[index] = error

        async def killer():
            now = 0.0
            for at in kills:
                await trio.sleep(at - now)
                now = at
                members = s.members()
                if members:
                    ft.exit(rng.choice(members), ft.KILLED)
                sizes.add(s.health().pools[0].workers)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(killer)
            for index, (at, job, key) in enumerate(jobs):
                nursery.start_soon(submit, index, at, job, key)
        assert len(outcomes) == len(jobs)  # every submission ended, none hangs
        for index, (_, (kind, value), _) in enumerate(jobs):
            result = outcomes[index]
            if kind == "crash":
                assert isinstance(result, soc.JobFailed)
            elif isinstance(result, soc.JobFailed):
                assert result.reason is ft.KILLED  # only a kill fails a good job
            else:
                assert result == value
        failed = sum(isinstance(r, soc.JobFailed) for r in outcomes.values())
        await trio.sleep(5.0)  # idle: it shrinks back to min
        health = s.health().pools[0]
        assert (health.completed, health.failed) == (len(jobs) - failed, failed)
        assert (health.queued, health.in_flight, health.blocked) == (0, 0, 0)
        assert (health.workers, health.retiring, health.running) == (1, 0, 1)
        assert all(1 <= size <= 4 for size in sizes)
        assert max(sizes) > 1  # the load made it grow
        assert health.restarts >= failed  # every failure restarted its worker
        assert s.health().status == "ok"
    assert all_tasks() == before


async def test_cancelled_broadcast_withdraws_the_copies_still_queued(autojump_clock):
    runs = []

    async def record(job):
        runs.append(ft.self_pid())
        await trio.sleep(job)

    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", record, count=3, routing="broadcast"))
        first = s.members()[0]
        await s.cast(5.0)  # every worker busy for 5 s
        with trio.move_on_after(1.0):
            await s.submit(1.0)
        assert s.health().pools[0].queued == 0
        await trio.sleep(10.0)
        assert len(runs) == 3  # only the cast ran
        assert first in runs


class Recursive(soc.Worker):
    """A worker that submits to its own pool: fan-out of sub-jobs."""

    async def handle_job(self, job):
        if job == "split":
            return [await self.society.submit(("part", i)) for i in range(3)]
        if job == "key":
            return await self.society.submit("leaf", key=self.own_key)
        if job == "broadcast":
            return await self.society.submit("leaf")
        return (job, self.pid)


async def test_a_worker_submitting_to_its_own_pool_never_waits_for_itself(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", Recursive, count=2))
        _, second = s.members()
        parts = await s.submit("split")  # runs on the first worker
        assert [p[1] for p in parts] == [second] * 3
        # alone in its pool, the worker is told at once instead of waiting for ever
        single = await soc.start(soc.pool("p", Recursive, count=1))
        with pytest.raises(soc.JobFailed) as failed:
            await single.submit("split")
        assert isinstance(failed.value.reason, ft.CallToSelf)
        assert "only worker" in str(failed.value.reason)
        assert (await single.submit("ok"))[0] == "ok"


async def test_own_key_and_broadcast_to_own_pool_raise_call_to_self(autojump_clock):
    async with ft.open_node("t"):
        hashed = await soc.start(soc.pool("h", Recursive, count=2, routing="hash"))
        key_of = {}
        for key in range(20):
            _, pid = await hashed.submit(key, key=key)
            key_of.setdefault(pid, key)
        assert len(key_of) == 2
        for key in key_of.values():
            Recursive.own_key = key
            with pytest.raises(soc.JobFailed) as failed:
                await hashed.submit("key", key=key)
            assert "routes to itself" in str(failed.value.reason)
        everyone = await soc.start(soc.pool("b", Recursive, count=2, routing="broadcast"))
        with pytest.raises(soc.JobFailed) as failed:
            await everyone.submit("broadcast")
        assert isinstance(failed.value.reason, ft.CallToSelf)


async def test_a_worker_stopped_from_outside_is_restarted_and_keeps_its_keys(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", whoami, count=2, routing="hash"))
        key = 0
        first = s.members()[0]
        while await s.submit(0, key=key) != first:
            key += 1
        await ft.stop(first)  # an orderly stop by someone else
        assert await s.submit(0, key=key) == s.members()[0] != first
        ft.exit(s.members()[0], ft.SHUTDOWN)
        await trio.sleep(0.1)
        assert len(s.members()) == 2
        assert s.health().status == "ok"
        assert s.health().pools[0].restarts == 2


class Careful(soc.Worker):
    """Records its terminate calls; a job is ("sleep", seconds)."""

    terminated: list[object] = []
    fail_terminate = False

    async def handle_job(self, job):
        await trio.sleep(job)
        return job

    async def terminate(self, reason):
        Careful.terminated.append(reason)
        if Careful.fail_terminate:
            raise RuntimeError("terminate failed")


async def test_stop_lets_the_running_job_finish_and_runs_terminate(autojump_clock):
    Careful.terminated = []
    Careful.fail_terminate = False
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", Careful, count=1))
        worker = s.members()[0]
        ref = ft.monitor(worker)
        async with trio.open_nursery() as nursery:
            results = []

            async def submit(job):
                results.append(await s.submit(job))

            nursery.start_soon(submit, 2.0)
            await trio.sleep(0.5)
            start = trio.current_time()
            await s.stop()  # waits for the job (2 s) within the 5 s shutdown
            assert trio.current_time() - start == pytest.approx(1.5)
        assert results == [2.0]
        assert Careful.terminated == [ft.SHUTDOWN]
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
        assert down.reason == ft.SHUTDOWN


async def test_a_job_longer_than_the_shutdown_time_is_killed(autojump_clock):
    Careful.terminated = []
    Careful.fail_terminate = True
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", Careful, count=1, shutdown=1.0))
        async with trio.open_nursery() as nursery:

            async def submit():
                with pytest.raises(soc.JobFailed) as failed:
                    await s.submit(30.0)
                assert failed.value.reason is ft.KILLED

            nursery.start_soon(submit)
            await trio.sleep(0.5)
            start = trio.current_time()
            await s.stop()
            assert trio.current_time() - start == pytest.approx(1.0)
        assert Careful.terminated == []  # killed: terminate does not run


async def test_a_raising_terminate_is_logged_and_the_restart_goes_on(autojump_clock, caplog):
    Careful.terminated = []
    Careful.fail_terminate = True
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", Careful, count=1))
        old = s.members()[0]
        await ft.stop(old)  # an orderly stop from outside: it is restarted
        assert await s.submit(0.1) == 0.1
        assert s.members()[0] != old
    assert Careful.terminated[0] == ft.NORMAL
    assert "terminate() of society worker" in caplog.text


async def test_more_bad_input_is_named(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", echo, count=2))
        with pytest.raises(TypeError, match="pool must be a pool name"):
            await s.submit(1, pool=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="name must be a str"):
            soc.lookup(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="name must be a non-empty str"):
            await soc.start(soc.pool("p", echo, count=1), name="")
        outsider = ft.spawn(trio.sleep_forever)
        with pytest.raises(soc.NotAMember, match="not a running worker"):
            await s.send_neighbours(outsider, "hi")
        hashed = await soc.start(soc.pool("h", echo, count=1, routing="hash"))
        with pytest.raises(ValueError, match="pass key="):
            hashed.cast_nowait(1)
        with pytest.raises(TypeError, match="key must be a str, bytes or int"):
            await hashed.cast(1, key=1.5)


class Touchy(soc.Worker):
    async def handle_job(self, job):
        return job

    async def handle_message(self, message):
        raise RuntimeError(f"cannot handle {message!r}")


async def test_a_raising_handle_message_crashes_and_restarts_the_worker(autojump_clock):
    async with ft.open_node("t"):
        s = await soc.start(soc.pool("p", Touchy, count=1))
        old = s.members()[0]
        await s.cast("queued")
        await ft.send(old, "poison")
        await trio.sleep(0.1)
        assert s.members()[0] != old
        health = s.health().pools[0]
        assert (health.restarts, health.failed) == (1, 0)
        assert await s.submit("after") == "after"
