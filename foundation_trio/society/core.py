"""Process societies: a supervised coordinator with worker pools.

A society is one supervisor (``ONE_FOR_ALL``) with, in start order, one
``DynamicSupervisor`` per pool, the coordinator (a GenServer), and one ticker
per autoscaled pool::

    society supervisor (ONE_FOR_ALL)
      pool "a" (DynamicSupervisor) -- worker, worker, ...   (PERMANENT children)
      pool "b" (DynamicSupervisor) -- worker, ...
      coordinator (GenServer): starts the workers, autoscales the pools
      ticker "b": casts a tick to the coordinator every scale_interval

Each worker owns a *slot*: a bounded job queue that outlives the worker's
process. Routing happens in the submitting task, against the pools' live
tables (no hop through the coordinator): the job goes into the chosen slot's
queue, and the submitter waits on the job. When a worker crashes, the job it
was running fails with :class:`JobFailed`; its supervisor restarts it, and the
new process takes the same slot, so the jobs queued behind the crash are run,
not lost. When the society stops, the jobs still queued fail with
:class:`SocietyStopped`.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import logging
import math
import os
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import attrs
import outcome
import trio
from trio.lowlevel import (
    Abort,
    ParkingLot,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from .._validation import structure_options
from ..runtime.errors import CallToSelf, NoNodeError, NoProcess, NoSuchChild
from ..runtime.mailbox import is_nothing
from ..runtime.node import Node, current_node
from ..runtime.pid import SHUTDOWN, ExitReason, Pid, is_orderly
from ..runtime.process import Process, current_process, send
from ..runtime.process import exit as exit_process
from ..runtime.registry import Registry, Via
from ..runtime.server import GenServer, cast, stop
from ..runtime.spec import ONE_FOR_ALL, PERMANENT, ChildSpec, DynamicSupervisorSpec, SupervisorSpec
from ..runtime.supervisor import start_child, terminate_child
from ..services import telemetry
from .autoscale import scale_decision
from .errors import JobFailed, NotAMember, QueueFull, SocietyStopped
from .options import PoolOptions, SocietyOptions
from .topology import neighbour_positions

logger = logging.getLogger("foundation_trio.society")

JOBS_PER_YIELD: Final = 64
"""Jobs a worker runs back to back (when its handler never waits) before it yields."""


# -- workers ------------------------------------------------------------------------


class Worker:
    """Base class of a pool's workers, for workers that keep state.

    The runtime creates one instance per incarnation of the worker (a restart
    starts a fresh one) and calls :meth:`init` with the pool's ``args``. Then
    it runs the jobs of the worker's queue one at a time with
    :meth:`handle_job`, and hands any message sent to the worker's pid (for
    example by :meth:`send_neighbours`) to :meth:`handle_message`.

    Error semantics: an exception in ``init`` fails the start of the worker; an
    exception in ``handle_job`` or ``handle_message`` crashes the worker (let it
    crash): the job it was running fails with :class:`JobFailed` and the pool's
    supervisor starts a new instance, which continues with the queue.

    Stopping: asked to stop (by its supervisor, the society's stop, or
    ``ft.stop``), a worker finishes the job in hand, runs :meth:`terminate`, and
    exits with the stop's reason. If the job outlasts the pool's ``shutdown``
    time the worker is killed and the job fails with :class:`JobFailed`.
    """

    society: Society
    """The society this worker belongs to."""
    pool: str
    """The name of this worker's pool."""
    pid: Pid
    """This incarnation's pid (a restart gets a new one)."""

    async def init(self, *args: Any) -> None:
        """Set up state before the first job. Raising fails the worker's start."""

    async def handle_job(self, job: Any) -> Any:
        """Run one job and return its result."""
        raise NotImplementedError(
            f"{type(self).__qualname__} received job {job!r} but defines no handle_job"
        )

    async def handle_message(self, message: Any) -> None:
        """Handle a message sent to this worker's pid. Default: log and drop it."""
        logger.warning(
            "society worker %s (%s) dropped message %r", self.pid, type(self).__qualname__, message
        )

    async def terminate(self, reason: ExitReason) -> None:
        """Clean up on an orderly stop, after the last job. Not run when the worker
        crashed or was killed. An exception here is logged and ignored."""

    async def send_neighbours(self, message: Any) -> int:
        """Send ``message`` to this worker's neighbours in the society's topology;
        return how many were sent to."""
        return await self.society.send_neighbours(self.pid, message)


class _FunctionWorker(Worker):
    """A stateless worker: ``await fn(job, *args)`` per job."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self._fn = fn
        self._args: tuple[Any, ...] = ()

    async def init(self, *args: Any) -> None:
        self._args = args

    async def handle_job(self, job: Any) -> Any:
        return await self._fn(job, *self._args)


WorkerFactory = type[Worker] | Callable[..., Awaitable[Any]]
"""A :class:`Worker` subclass, or an async function ``fn(job, *args)``."""


# -- pool specs -----------------------------------------------------------------------


@attrs.frozen
class PoolSpec:
    """A pool to start in a society. Build it with :func:`pool`."""

    name: str
    worker: WorkerFactory
    args: tuple[Any, ...]
    options: PoolOptions


def pool(name: str, worker: WorkerFactory, *args: Any, **options: Any) -> PoolSpec:
    """Describe a worker pool: ``name``, the ``worker`` (a :class:`Worker`
    subclass, or an async function called as ``await worker(job, *args)``),
    ``args`` for the worker, and :class:`PoolOptions` as keywords.

    ``count=N`` or ``count="cpus"`` (``os.cpu_count()``) fixes the size;
    ``min=`` and ``max=`` autoscale it. Raises :class:`TypeError` naming
    ``name`` or ``worker`` when they are of the wrong kind, and
    :class:`~foundation_trio.ConfigError` naming the option when an option is
    unknown, mistyped or inconsistent.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"pool(): name must be a non-empty str, got {name!r}")
    if isinstance(worker, type):
        if not issubclass(worker, Worker):
            raise TypeError(
                f"pool({name!r}): worker must be a Worker subclass or an async function, "
                f"got class {worker.__qualname__}"
            )
        for method in ("init", "handle_job", "handle_message", "terminate"):
            if not inspect.iscoroutinefunction(getattr(worker, method)):
                raise TypeError(
                    f"pool({name!r}): {worker.__qualname__}.{method} must be an async "
                    "method (async def)"
                )
    elif not inspect.iscoroutinefunction(worker) and not inspect.iscoroutinefunction(
        getattr(worker, "__call__", None)  # noqa: B004 - async callable objects qualify
    ):
        raise TypeError(
            f"pool({name!r}): worker must be a Worker subclass or an async function "
            f"(async def), got {worker!r}"
        )
    if options.get("count") == "cpus":
        options = {**options, "count": os.cpu_count() or 1}
    return PoolSpec(name, worker, args, structure_options(PoolOptions, options, f"pool({name!r})"))


# -- health records -----------------------------------------------------------------------


@attrs.frozen
class Percentiles:
    """Percentiles of recent measurements (seconds), by the nearest-rank method.

    ``samples`` is how many measurements they come from; with none, the
    figures are None rather than a made-up zero.
    """

    samples: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Percentiles:
        ordered = sorted(values)
        n = len(ordered)
        if not n:
            return cls(0, None, None, None, None)

        def rank(p: float) -> float:
            return ordered[max(0, math.ceil(p * n) - 1)]

        return cls(n, rank(0.50), rank(0.90), rank(0.99), ordered[-1])


HealthStatus = Literal["ok", "saturated", "degraded", "stopped"]
"""``ok``; ``saturated`` (submitters are waiting for queue room: backpressure is
on); ``degraded`` (a worker or the coordinator is not running, e.g. between a
crash and its restart); ``stopped`` (the society is not running)."""

_SEVERITY: dict[HealthStatus, int] = {"ok": 0, "saturated": 1, "degraded": 2, "stopped": 3}


@attrs.frozen
class PoolHealth:
    """A pool's state, as measured when :meth:`Society.health` was called."""

    name: str
    workers: int
    """Workers that take new jobs."""
    running: int
    """Workers whose process is running now (the others are between a crash and
    their restart)."""
    retiring: int
    """Workers removed by scale-down that are finishing their queue."""
    queued: int
    """Jobs waiting in the workers' queues."""
    in_flight: int
    """Jobs being run."""
    blocked: int
    """Submitters waiting for queue room."""
    completed: int
    failed: int
    restarts: int
    """Worker restarts since the society started."""
    latency: Percentiles
    """Submission to result, over the last ``latency_window`` completed jobs."""
    run_time: Percentiles
    """Start of the job to its result, over the same jobs."""
    status: HealthStatus


@attrs.frozen
class SocietyHealth:
    """The health of a society: one :class:`PoolHealth` per pool, and the worst status."""

    name: str
    running: bool
    coordinator: Pid | None
    pools: tuple[PoolHealth, ...]
    status: HealthStatus


# -- jobs, slots and pools --------------------------------------------------------------


class _Job:
    """One job: its payload, where it is queued, and who waits for its result."""

    __slots__ = ("payload", "replies", "result", "slot", "started", "submitted", "waiter")

    def __init__(self, payload: Any, replies: bool, now: float) -> None:
        self.payload = payload
        self.replies = replies  # False for a cast: nobody will wait
        self.waiter: Task | None = None
        self.result: outcome.Outcome[Any] | None = None
        self.slot: _Slot | None = None
        self.submitted = now
        self.started = math.nan

    def finish(self, result: outcome.Outcome[Any]) -> None:
        self.result = result
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            reschedule(waiter)

    async def wait(self) -> Any:
        """The job's result (or error), once it has one.

        Parks the calling task directly (as ``call`` does), which costs less
        than an Event. Cancelled while the job is still queued, the job is
        withdrawn; while it runs, it runs on and its result is dropped.
        """
        if self.result is None:
            self.waiter = current_task()
            await wait_task_rescheduled(self._abort)
        else:
            await trio.lowlevel.checkpoint()
        assert self.result is not None
        return self.result.unwrap()

    def withdraw(self) -> None:
        """Take the job out of its queue if it is still there (nobody wants it now)."""
        self.waiter = None
        slot = self.slot
        if slot is not None and self.result is None:
            # Not in the queue means it is running: it finishes, the result is dropped.
            with contextlib.suppress(ValueError):
                slot.queue.remove(self)

    def _abort(self, _: Any) -> Abort:
        self.withdraw()
        return Abort.SUCCEEDED


class _Slot:
    """One worker's place in a pool: its queue outlives the worker's process."""

    __slots__ = ("current", "id", "idle", "pool", "process", "queue", "retiring", "starts")

    def __init__(self, pool: _Pool, slot_id: int) -> None:
        self.pool = pool
        self.id = slot_id
        self.queue: deque[_Job] = deque()
        self.current: _Job | None = None
        self.process: Process | None = None
        self.retiring = False
        self.starts = 0
        self.idle = False  # the worker waits for work

    @property
    def load(self) -> int:
        return len(self.queue) + (self.current is not None)

    def push(self, job: _Job) -> None:
        job.slot = self
        self.queue.append(job)
        if self.process is not None and self.idle:
            self.process.mailbox.wake()
        elif self.pool.steals:
            self.pool.wake_idle()

    def attach(self, process: Process) -> None:
        self.process = process
        self.starts += 1
        if self.starts > 1:
            self.pool.restarts += 1
            self.pool.society.emit(
                "society.worker.restarted",
                {"restarts": float(self.starts - 1)},
                {"pool": self.pool.name, "worker": process.pid},
            )
        process.add_exit_hook(self.exited)

    def exited(self, process: Process, reason: ExitReason) -> None:
        """Exit hook of the worker's process: runs synchronously as it ends."""
        if self.process is process:
            self.process = None
        job, self.current = self.current, None
        if job is not None:
            error = JobFailed(self.pool.name, process.pid, reason)
            if isinstance(reason, BaseException):
                error.__cause__ = reason
            self.pool.fail(job, error)
        if self.retiring and is_orderly(reason):
            # Stopped after it drained (or with its society): anything it still
            # held is routed to the others.
            self.pool.remove(self)


class _Pool:
    def __init__(self, society: _State, spec: PoolSpec) -> None:
        self.society = society
        self.spec = spec
        self.name = spec.name
        self.options = spec.options
        self.slots: list[_Slot] = []
        self._ids = itertools.count()
        self._cursor = 0
        self.room = ParkingLot()
        self.blocked = 0
        self.completed = 0
        self.failed = 0
        self.restarts = 0
        self.latency: deque[float] = deque(maxlen=spec.options.latency_window)
        self.run_time: deque[float] = deque(maxlen=spec.options.latency_window)
        self.samples: deque[float] = deque(maxlen=spec.options.scale_samples)
        self.supervisor = Via(society.registry, ("pool", spec.name))
        # Hash pools keep each key on its worker, and broadcast jobs belong to
        # every worker: only the others balance by stealing.
        self.steals = spec.options.routing in ("round_robin", "least_loaded")

    def new_worker(self) -> Worker:
        factory = self.spec.worker
        if isinstance(factory, type):
            instance: Worker = factory()
            return instance
        return _FunctionWorker(factory)

    def add_slot(self) -> _Slot:
        slot = _Slot(self, next(self._ids))
        self.slots.append(slot)
        self.room.unpark_all()
        return slot

    def remove(self, slot: _Slot) -> None:
        """Drop a retired slot; anything left in its queue is routed again."""
        if slot in self.slots:
            self.slots.remove(slot)
        leftover, slot.queue = list(slot.queue), deque()
        for job in leftover:
            target = self.choose_any()
            if target is None:
                self.fail(job, SocietyStopped(self.society.name, SHUTDOWN))
            else:
                target.push(job)

    def routable(self) -> list[_Slot]:
        return [s for s in self.slots if not s.retiring]

    def has_room(self, slot: _Slot) -> bool:
        return len(slot.queue) < self.options.queue_size

    def choose_any(self) -> _Slot | None:
        """The least loaded routable slot, ignoring capacity (for re-routing)."""
        slots = self.routable()
        return min(slots, key=lambda s: s.load) if slots else None

    def choose(self, key: Hashable, exclude: _Slot | None = None) -> _Slot | None:
        """The slot the pool's routing picks for a job, or None if it must wait.

        ``exclude`` is the slot of a worker that submits to its own pool and
        waits: the job must go elsewhere (see :meth:`Society.submit`).
        """
        slots = self.routable()
        if not slots:
            return None
        routing = self.options.routing
        if routing == "hash":
            slot = max(slots, key=lambda s: _rendezvous(key, s.id))
            if slot is exclude:
                raise CallToSelf(
                    f"worker {exclude.process.pid if exclude.process else '?'} of pool "
                    f"{self.name!r} submitted a job whose key routes to itself and waits for "
                    "it: it would wait for ever (use cast, or another key)"
                )
            return slot if self.has_room(slot) else None
        if exclude is not None:
            slots = [s for s in slots if s is not exclude]
            if not slots:
                raise CallToSelf(
                    f"the only worker of pool {self.name!r} submitted a job to its own pool "
                    "and waits for it: it would wait for ever (use cast)"
                )
        n = len(slots)
        start = self._cursor % n
        rotation = slots[start:] + slots[:start]
        if routing == "least_loaded":
            candidates = [s for s in rotation if self.has_room(s)]
            slot_or_none = min(candidates, key=lambda s: s.load) if candidates else None
        else:
            slot_or_none = next((s for s in rotation if self.has_room(s)), None)
        if slot_or_none is not None:
            self._cursor = slots.index(slot_or_none) + 1
        return slot_or_none

    def own_slot(self) -> _Slot | None:
        """The slot of the calling process, if it is one of this pool's workers."""
        try:
            me = current_process()
        except NoNodeError:
            return None
        for slot in self.slots:
            if slot.process is me:
                return slot
        return None

    def depth(self) -> int:
        """Jobs queued and running on the routable workers, plus submitters waiting
        for room: the demand on the workers that take new jobs. (Retiring workers
        finish their own jobs and take no new ones.)"""
        return sum(s.load for s in self.slots if not s.retiring) + self.blocked

    def next_job(self, slot: _Slot) -> _Job | None:
        """The next job for ``slot``'s worker: from its own queue, or else, in a
        pool that steals, the oldest job of the longest queue."""
        source = slot
        if not slot.queue:
            if not self.steals or slot.retiring:
                return None
            source = max(self.slots, key=lambda s: len(s.queue))
            if not source.queue:
                return None
        job = source.queue.popleft()
        job.slot = slot
        self.took(source)
        return job

    def wake_idle(self) -> None:
        """Wake one idle worker, so that it steals the job just queued elsewhere."""
        for slot in self.slots:
            if slot.idle and slot.process is not None and not slot.retiring:
                slot.process.mailbox.wake()
                return

    def took(self, slot: _Slot) -> None:
        if len(slot.queue) == self.options.queue_size - 1:
            self.room.unpark_all()

    def complete(self, job: _Job, value: Any, worker: Pid) -> None:
        now = trio.current_time()
        self.completed += 1
        latency = now - job.submitted
        run_time = now - job.started
        self.latency.append(latency)
        self.run_time.append(run_time)
        job.finish(outcome.Value(value))
        self.society.emit(
            "society.job.completed",
            {"latency": latency, "queue_time": latency - run_time, "run_time": run_time},
            {"pool": self.name, "worker": worker},
        )

    def fail(self, job: _Job, error: BaseException) -> None:
        self.failed += 1
        metadata: dict[str, object] = {"pool": self.name, "error": repr(error)}
        if isinstance(error, JobFailed):
            metadata["worker"] = error.worker
            metadata["reason"] = repr(error.reason)
        self.society.emit(
            "society.job.failed", {"queue_time": _queue_time(job, trio.current_time())}, metadata
        )
        job.finish(outcome.Error(error))
        if not job.replies:
            logger.warning("society %s: a cast job failed: %s", self.society.name, error)

    def health(self, running: bool) -> PoolHealth:
        routable = self.routable()
        alive = sum(1 for s in self.slots if s.process is not None)
        if not running:
            status: HealthStatus = "stopped"
        elif alive < len(self.slots):
            status = "degraded"
        elif self.blocked:
            status = "saturated"
        else:
            status = "ok"
        return PoolHealth(
            name=self.name,
            workers=len(routable),
            running=alive,
            retiring=len(self.slots) - len(routable),
            queued=sum(len(s.queue) for s in self.slots),
            in_flight=sum(1 for s in self.slots if s.current is not None),
            blocked=self.blocked,
            completed=self.completed,
            failed=self.failed,
            restarts=self.restarts,
            latency=Percentiles.of(self.latency),
            run_time=Percentiles.of(self.run_time),
            status=status,
        )

    def worker_spec(self, slot: _Slot) -> ChildSpec:
        return ChildSpec(
            ("worker", slot.id),
            _worker_main,
            args=(self, slot),
            restart=PERMANENT,
            shutdown=self.options.shutdown,
        )


def _queue_time(job: _Job, now: float) -> float:
    started = job.started if not math.isnan(job.started) else now
    return started - job.submitted


def _key_bytes(key: Hashable) -> bytes:
    if isinstance(key, str):
        return b"s" + key.encode("utf-8")
    if isinstance(key, bytes):
        return b"b" + key
    if isinstance(key, int):
        return b"i" + str(key).encode("ascii")
    raise TypeError(f"key must be a str, bytes or int for hash routing, got {key!r}")


def _rendezvous(key: Hashable, slot_id: int) -> bytes:
    """Highest-random-weight hashing: stable across runs and processes (unlike
    ``hash()``), and adding or removing a worker moves only the keys it wins or held."""
    digest = hashlib.blake2b(_key_bytes(key), digest_size=8, key=slot_id.to_bytes(8, "big"))
    return digest.digest()


class _StopRequest:
    """A worker process's behaviour for the runtime: how it is asked to stop in order
    (the runtime calls :meth:`request_stop` instead of cancelling it)."""

    __slots__ = ("mailbox", "reason")

    def __init__(self, process: Process) -> None:
        self.mailbox = process.mailbox
        self.reason: ExitReason | None = None

    def request_stop(self, reason: ExitReason) -> None:
        if self.reason is None:
            self.reason = reason
            self.mailbox.wake()

    def requested(self) -> bool:
        return self.reason is not None


async def _worker_main(
    pool: _Pool, slot: _Slot, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The body of a worker process: run the slot's jobs and the mailbox's messages."""
    process = current_process("a society worker")
    worker = pool.new_worker()
    worker.society = pool.society.handle
    worker.pool = pool.name
    worker.pid = process.pid
    await worker.init(*pool.spec.args)
    stop = _StopRequest(process)
    process.behaviour = stop
    slot.attach(process)
    task_status.started()
    mailbox = process.mailbox
    run = 0
    reported_drained = False
    while not stop.requested():
        # One message, then one job: neither starves the other.
        message = mailbox.take_nowait()
        if not is_nothing(message):
            await worker.handle_message(message)
        job = pool.next_job(slot)
        if job is not None:
            slot.current = job
            job.started = trio.current_time()
            result = await worker.handle_job(job.payload)
            slot.current = None
            pool.complete(job, result, process.pid)
            run += 1
            if run >= JOBS_PER_YIELD:
                run = 0
                await trio.lowlevel.checkpoint()
            continue
        if is_nothing(message):
            if slot.retiring and not reported_drained:
                # Its supervisor restarts it whatever its exit (PERMANENT), so
                # a drained retiring worker asks the coordinator to remove it.
                reported_drained = True
                await cast(pool.society.coordinator, _Drained(pool.name, slot.id, process.pid))
            if stop.requested():
                break
            run = 0
            slot.idle = True
            try:
                await mailbox.wait()
            finally:
                slot.idle = False
    reason = stop.reason
    assert reason is not None
    try:
        await worker.terminate(reason)
    except Exception:
        logger.exception("terminate() of society worker %s raised", process.pid)
    # End with the stop's reason, as a GenServer does: an exit signal to itself
    # (a NORMAL one is ignored, and returning is a normal exit anyway).
    exit_process(process.pid, reason)
    await trio.lowlevel.checkpoint()


# -- the coordinator ------------------------------------------------------------------------


@attrs.frozen
class _Tick:
    pool: str


@attrs.frozen
class _Drained:
    """A retiring worker has finished every job it held."""

    pool: str
    slot: int
    pid: Pid


class _Coordinator(GenServer):
    """Starts the workers of every slot and autoscales the pools."""

    async def init(self, state: _State) -> None:
        self.state = state
        for pool_state in state.pools.values():
            # A copy: a retiring worker's exit removes its slot meanwhile.
            for slot in list(pool_state.slots):
                if slot.process is not None:
                    continue
                if slot.retiring and not slot.queue:
                    pool_state.remove(slot)  # nothing left for it to finish
                else:
                    await start_child(pool_state.supervisor, pool_state.worker_spec(slot))

    async def handle_cast(self, request: Any) -> None:
        if isinstance(request, _Tick):
            await self._autoscale(self.state.pools[request.pool])
            return
        if isinstance(request, _Drained):
            pool_state = self.state.pools[request.pool]
            slot = next((s for s in pool_state.slots if s.id == request.slot), None)
            if (
                slot is not None
                and slot.retiring
                and slot.process is not None
                and slot.process.pid == request.pid
                and slot.load == 0
            ):
                # Its exit hook removes the slot.
                with contextlib.suppress(NoSuchChild):
                    await terminate_child(pool_state.supervisor, request.pid)
            return
        await super().handle_cast(request)

    async def _autoscale(self, pool_state: _Pool) -> None:
        routable = pool_state.routable()
        before = len(routable)
        depth = pool_state.depth()
        per_worker = depth / max(1, before)
        samples = pool_state.samples
        samples.append(per_worker)
        decision = scale_decision(pool_state.options, samples, before, depth)
        if decision == 1:
            slot = pool_state.add_slot()
            samples.clear()
            await start_child(pool_state.supervisor, pool_state.worker_spec(slot))
            direction = "up"
        elif decision == -1:
            # Retire the idlest worker (the newest among equals): it leaves routing
            # now and is stopped once it has run what it holds, so no job is dropped.
            slot = min(reversed(routable), key=lambda s: s.load)
            slot.retiring = True
            samples.clear()
            if slot.process is not None:
                slot.process.mailbox.wake()
            direction = "down"
        else:
            return
        after = len(pool_state.routable())
        logger.info(
            "society %s: pool %r scaled %s from %d to %d workers (depth per worker %.2f)",
            self.state.name,
            pool_state.name,
            direction,
            before,
            after,
            per_worker,
        )
        self.state.emit(
            "society.pool.scaled",
            {"workers_before": float(before), "workers": float(after), "depth": per_worker},
            {"pool": pool_state.name, "direction": direction},
        )


async def _ticker(coordinator: Via, pool_name: str, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        await cast(coordinator, _Tick(pool_name))


# -- the society ------------------------------------------------------------------------------


class _Societies:
    """The societies running on a node, by name (a node extension)."""

    def __init__(self) -> None:
        self.by_name: dict[str, _State] = {}
        self.ids = itertools.count(1)


class _State:
    def __init__(self, node: Node, name: str, options: SocietyOptions) -> None:
        self.node = node
        self.name = name
        self.options = options
        self.registry = Registry("unique", name=f"society {name}")
        self.coordinator = Via(self.registry, "coordinator")
        self.pools: dict[str, _Pool] = {}
        self.closed: ExitReason | None = None
        self.supervisor: Pid | None = None
        self.handle = Society(self)

    def emit(
        self, event: str, measurements: Mapping[str, float], metadata: Mapping[str, object]
    ) -> None:
        """Report a telemetry event, with the society's name in its metadata (see
        docs/society.md for the names). Costs a lookup when nobody listens."""
        telemetry.execute(event, measurements, {"society": self.name, **metadata})

    def supervisor_exited(self, _process: Process, reason: ExitReason) -> None:
        """Exit hook of the society's supervisor."""
        self.close(reason)

    def close(self, reason: ExitReason) -> None:
        """The society is gone: fail what can no longer run, wake who waits."""
        self.closed = reason
        self.emit("society.stopped", {}, {"reason": repr(reason)})
        registry = self.node.find_extension(_Societies)
        if registry is not None and registry.by_name.get(self.name) is self:
            del registry.by_name[self.name]
        for pool_state in self.pools.values():
            for slot in pool_state.slots:
                queued, slot.queue = list(slot.queue), deque()
                for job in queued:
                    pool_state.fail(job, SocietyStopped(self.name, reason))
            pool_state.room.unpark_all()

    def check_open(self) -> None:
        if self.closed is not None:
            raise SocietyStopped(self.name, self.closed)

    def member_slots(self) -> list[_Slot]:
        return [s for p in self.pools.values() for s in p.slots if not s.retiring]


class Society:
    """A running society. Get one from :func:`start`; do not construct it.

    Every method must be called from inside the society's node.
    """

    def __init__(self, state: _State) -> None:
        self._state = state

    def __repr__(self) -> str:
        return f"<Society {self._state.name!r} pools={list(self._state.pools)}>"

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def pid(self) -> Pid:
        """The society's supervisor."""
        pid = self._state.supervisor
        assert pid is not None
        return pid

    @property
    def pools(self) -> list[str]:
        """The pool names, in start order."""
        return list(self._state.pools)

    @property
    def running(self) -> bool:
        return self._state.closed is None

    # -- work -------------------------------------------------------------------------

    def _pool(self, pool_name: str | None, key: Hashable) -> _Pool:
        pools = self._state.pools
        if pool_name is None:
            if len(pools) != 1:
                raise ValueError(
                    f"society {self.name!r} has pools {list(pools)}: name one with pool="
                )
            found = next(iter(pools.values()))
        else:
            if not isinstance(pool_name, str):
                raise TypeError(f"pool must be a pool name (str), got {pool_name!r}")
            try:
                found = pools[pool_name]
            except KeyError:
                raise LookupError(
                    f"society {self.name!r} has no pool {pool_name!r}; it has {list(pools)}"
                ) from None
        routing = found.options.routing
        if routing == "hash":
            if key is None:
                raise ValueError(f"pool {found.name!r} routes by hash: pass key=")
            _key_bytes(key)
        elif key is not None:
            raise ValueError(
                f"key= is only used by hash routing; pool {found.name!r} routes by {routing}"
            )
        return found

    async def _place(
        self, pool_state: _Pool, job: _Job, key: Hashable, exclude: _Slot | None = None
    ) -> None:
        """Put ``job`` in the queue routing picks, waiting for room there."""
        while True:
            self._state.check_open()
            slot = pool_state.choose(key, exclude)
            if slot is not None:
                slot.push(job)
                return
            pool_state.blocked += 1
            try:
                await pool_state.room.park()
            finally:
                pool_state.blocked -= 1

    async def submit(self, job: Any, *, pool: str | None = None, key: Hashable = None) -> Any:
        """Run ``job`` on a worker of ``pool`` and return its result.

        ``pool`` may be left out when the society has one pool. ``key`` is
        required by ``hash`` routing (a str, bytes or int; equal keys go to the
        same worker while the pool's size does not change) and refused by the
        others. With ``broadcast`` routing the job goes to every worker and the
        results come back as a list, in member order.

        Waits while the chosen worker's queue is full (backpressure). A
        worker that submits to its own pool is never given its own job (it
        would wait for itself); where it is the only choice (a pool of one, a
        key that routes to it, broadcast) :class:`~foundation_trio.CallToSelf`
        is raised instead. Raises :class:`JobFailed` if the worker running the job exits before
        finishing it (its handler raised: the exception is the cause), and
        :class:`SocietyStopped` if the society stops first. Cancellation while
        the job is still queued withdraws it; once a worker runs it, it runs to
        the end and its result is dropped.
        """
        await checkpoint_if_cancelled()
        pool_state = self._pool(pool, key)
        own = pool_state.own_slot()
        if pool_state.options.routing == "broadcast":
            if own is not None:
                raise CallToSelf(
                    f"a worker of broadcast pool {pool_state.name!r} submitted a job to its "
                    "own pool and waits for it: it would wait for ever (use cast)"
                )
            return await self._broadcast(pool_state, job)
        record = _Job(job, True, trio.current_time())
        await self._place(pool_state, record, key, own)
        return await record.wait()

    async def _broadcast(self, pool_state: _Pool, payload: Any) -> list[Any]:
        self._state.check_open()
        now = trio.current_time()
        records: list[_Job] = []
        try:
            for slot in pool_state.routable():
                record = _Job(payload, True, now)
                while not pool_state.has_room(slot) and not slot.retiring:
                    pool_state.blocked += 1
                    try:
                        await pool_state.room.park()
                    finally:
                        pool_state.blocked -= 1
                    self._state.check_open()
                slot.push(record)
                records.append(record)
            return [await record.wait() for record in records]
        except BaseException:
            for record in records:
                record.withdraw()
            raise

    async def cast(self, job: Any, *, pool: str | None = None, key: Hashable = None) -> None:
        """Queue ``job`` without waiting for its result (waits only for queue room).

        Arguments as for :meth:`submit`. A cast job that fails is logged and
        reported as a ``society.job.failed`` telemetry event.
        """
        await checkpoint_if_cancelled()
        pool_state = self._pool(pool, key)
        if pool_state.options.routing == "broadcast":
            for slot in pool_state.routable():
                while not pool_state.has_room(slot) and not slot.retiring:
                    pool_state.blocked += 1
                    try:
                        await pool_state.room.park()
                    finally:
                        pool_state.blocked -= 1
                    self._state.check_open()
                slot.push(_Job(job, False, trio.current_time()))
        else:
            await self._place(pool_state, _Job(job, False, trio.current_time()), key)
        await cancel_shielded_checkpoint()

    def cast_nowait(self, job: Any, *, pool: str | None = None, key: Hashable = None) -> None:
        """Like :meth:`cast`, but raise :class:`QueueFull` instead of waiting."""
        pool_state = self._pool(pool, key)
        self._state.check_open()
        now = trio.current_time()
        if pool_state.options.routing == "broadcast":
            slots = pool_state.routable()
            if not all(pool_state.has_room(s) for s in slots):
                raise QueueFull(pool_state.name, pool_state.options.queue_size)
            for slot in slots:
                slot.push(_Job(job, False, now))
            return
        chosen = pool_state.choose(key)
        if chosen is None:
            raise QueueFull(pool_state.name, pool_state.options.queue_size)
        chosen.push(_Job(job, False, now))

    # -- members and topology ---------------------------------------------------------

    def members(self) -> list[Pid]:
        """The pids of the running workers, in member order (pool order, then the
        order the workers were added). Retiring workers are not members."""
        return [s.process.pid for s in self._state.member_slots() if s.process is not None]

    def neighbours(self, pid: Pid) -> list[Pid]:
        """The running members adjacent to ``pid`` in the society's topology.

        A member keeps its position when it is restarted, so a restarted worker
        has the same neighbours under its new pid; a neighbour that is between a
        crash and its restart is left out until it runs again. Raises
        :class:`NotAMember` if ``pid`` is not a running member.
        """
        if not isinstance(pid, Pid):
            raise TypeError(f"neighbours() takes a Pid, got {pid!r}")
        slots = self._state.member_slots()
        position = next(
            (i for i, s in enumerate(slots) if s.process is not None and s.process.pid == pid),
            None,
        )
        if position is None:
            raise NotAMember(self.name, pid)
        options = self._state.options
        found = []
        for index in neighbour_positions(options.topology, position, len(slots), options.fanout):
            process = slots[index].process
            if process is not None:
                found.append(process.pid)
        return found

    async def send_neighbours(self, pid: Pid, message: Any) -> int:
        """Send ``message`` from member ``pid`` to each of its neighbours (waiting
        for mailbox room); return how many were sent to. Workers get it in
        :meth:`Worker.handle_message`."""
        targets = self.neighbours(pid)
        for target in targets:
            await send(target, message)
        return len(targets)

    # -- health and lifetime ------------------------------------------------------------

    def health(self) -> SocietyHealth:
        """Measure the society now: queue depths, running workers, restarts and
        latency percentiles of every pool (see :class:`PoolHealth`)."""
        state = self._state
        running = state.closed is None
        coordinator = state.coordinator.resolve_process(state.node)
        pools = tuple(p.health(running) for p in state.pools.values())
        worst: HealthStatus = "ok" if running else "stopped"
        if running and coordinator is None:
            worst = "degraded"
        for pool_health in pools:
            if _SEVERITY[pool_health.status] > _SEVERITY[worst]:
                worst = pool_health.status
        return SocietyHealth(
            name=state.name,
            running=running,
            coordinator=None if coordinator is None else coordinator.pid,
            pools=pools,
            status=worst,
        )

    async def stop(self) -> None:
        """Stop the society in order and wait until it has: workers, coordinator,
        then its supervisor. Jobs still queued fail with :class:`SocietyStopped`.
        Stopping a stopped society does nothing."""
        pid = self._state.supervisor
        if self._state.closed is not None or pid is None:
            await trio.lowlevel.checkpoint()
            return
        with contextlib.suppress(NoProcess):  # it ended meanwhile
            await stop(pid, SHUTDOWN)


def _check_name(name: object, societies: _Societies) -> str:
    if name is None:
        while True:
            candidate = f"society-{next(societies.ids)}"
            if candidate not in societies.by_name:
                return candidate
    if not isinstance(name, str) or not name:
        raise TypeError(f"start(): name must be a non-empty str or None, got {name!r}")
    if name in societies.by_name:
        raise ValueError(f"start(): name {name!r} is taken by a running society on this node")
    return name


async def start(
    pools: PoolSpec | Sequence[PoolSpec], *, name: str | None = None, **options: Any
) -> Society:
    """Start a supervised society on the current node and return its handle.

    ``pools`` is one :func:`pool` or a sequence of them (distinct names);
    ``name`` defaults to ``society-N``, unique on the node; ``options`` are
    :class:`SocietyOptions` (``topology``, ``fanout``, ``max_restarts``,
    ``max_seconds``).

    The society is a temporary child of the node's root supervisor. It returns
    once every worker has started. Raises :class:`TypeError` /
    :class:`ValueError` naming ``pools`` or ``name``,
    :class:`~foundation_trio.ConfigError` naming a bad option, and
    :class:`~foundation_trio.StartError` if a worker's ``init`` raised.
    """
    specs = [pools] if isinstance(pools, PoolSpec) else pools
    if not isinstance(specs, Sequence) or not specs:
        raise TypeError(
            f"start(): pools must be a pool() or a non-empty list of them, got {pools!r}"
        )
    names: set[str] = set()
    for spec in specs:
        if not isinstance(spec, PoolSpec):
            raise TypeError(f"start(): pools must hold pool(...) specs, got {spec!r}")
        if spec.name in names:
            raise ValueError(f"start(): pools has two pools named {spec.name!r}")
        names.add(spec.name)
    society_options = structure_options(SocietyOptions, options, "society.start()")
    node = current_node()
    societies = node.find_extension(_Societies)
    if societies is None:
        societies = _Societies()
        node.set_extension(_Societies, societies)
    state = _State(node, _check_name(name, societies), society_options)
    children: list[ChildSpec] = []
    for spec in specs:
        pool_state = _Pool(state, spec)
        state.pools[spec.name] = pool_state
        for _ in range(spec.options.initial_size):
            pool_state.add_slot()
        children.append(
            ChildSpec(
                ("pool", spec.name),
                DynamicSupervisorSpec(
                    max_restarts=spec.options.max_restarts, max_seconds=spec.options.max_seconds
                ),
                name=pool_state.supervisor,
            )
        )
    children.append(ChildSpec("coordinator", _Coordinator, args=(state,), name=state.coordinator))
    for spec in specs:
        if spec.options.autoscaled:
            children.append(
                ChildSpec(
                    ("ticker", spec.name),
                    _ticker,
                    args=(state.coordinator, spec.name, spec.options.scale_interval),
                )
            )
    societies.by_name[state.name] = state
    try:
        pid = await node.start_supervisor(
            SupervisorSpec(
                children,
                strategy=ONE_FOR_ALL,
                max_restarts=society_options.max_restarts,
                max_seconds=society_options.max_seconds,
            ),
            id=("society", state.name),
        )
    except BaseException:
        societies.by_name.pop(state.name, None)
        raise
    state.supervisor = pid
    process = node.lookup(pid, name_must_exist=False)
    if process is None:
        state.close(SHUTDOWN)
    else:
        process.add_exit_hook(state.supervisor_exited)
    return state.handle


def lookup(name: str) -> Society:
    """The running society called ``name`` on the current node.

    Raises :class:`LookupError` naming it if there is none.
    """
    if not isinstance(name, str):
        raise TypeError(f"lookup(): name must be a str, got {name!r}")
    societies = current_node().find_extension(_Societies)
    state = None if societies is None else societies.by_name.get(name)
    if state is None:
        raise LookupError(f"no society named {name!r} runs on this node")
    return state.handle


__all__ = [
    "JOBS_PER_YIELD",
    "HealthStatus",
    "Percentiles",
    "PoolHealth",
    "PoolSpec",
    "Society",
    "SocietyHealth",
    "Worker",
    "WorkerFactory",
    "lookup",
    "pool",
    "start",
]
