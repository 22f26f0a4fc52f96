"""The node's agent system: the agents supervisor, the agent directory and health checks.

Each agent runs under **its own supervisor** (restart intensity from its
:class:`~foundation_trio.agents.AgentSpec`), a temporary child of the node's
agents supervisor. A crash storm makes the agent's supervisor give up; that
escalates to the agents supervisor, which does not restart it: the agent is
marked ``failed``, and the other agents are untouched. Nothing retries for ever.

The directory is a unique-key runtime :class:`~foundation_trio.Registry`: an
agent's entry is added when its process starts and removed, synchronously, the
moment it exits. Lookups and capability searches go through it, so a dead agent
is never handed out, even in the instant between its crash and its supervisor
hearing of it.

The system starts on the node with the first call that needs it
(:func:`register_agent`, ...). Status changes come from the supervisors'
agents themselves (an :class:`~.agent.Agent` reports when its ``setup`` has
returned) and from exit hooks on their processes and on their supervisors, so
they are exact at every instant and cost nothing to the rest of the node.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import trio

from ..runtime.errors import CallTimeout, NoProcess, ServerExited, StartError
from ..runtime.node import Node, current_node
from ..runtime.pid import ExitReason, Pid, Shutdown, is_orderly
from ..runtime.process import Process
from ..runtime.registry import Registry, Via
from ..runtime.server import call
from ..runtime.spec import (
    ANY_SIGNIFICANT,
    NEVER,
    ChildSpec,
    Restart,
    SupervisorSpec,
)
from ..runtime.supervisor import GAVE_UP, start_child, terminate_child
from ..services import telemetry
from . import telemetry as tm
from .agent import AgentSpec, AgentStatus
from .errors import AgentAlreadyRunning, AgentNotFound, AgentNotRunning, DuplicateAgent
from .messages import HealthCheck
from .rounds import Participant
from .telemetry import emit

logger = logging.getLogger("foundation_trio.agents")

__all__ = [
    "AgentInfo",
    "Health",
    "agent_info",
    "agent_name",
    "agent_on",
    "agent_status",
    "find_agents",
    "list_agents",
    "register_agent",
    "start_agent",
    "stop_agent",
    "unregister_agent",
    "whereis_agent",
]

_RUNNING_LIKE = (AgentStatus.STARTING, AgentStatus.RUNNING, AgentStatus.RESTARTING)


@attrs.frozen
class Health:
    """The last health check of an agent. ``healthy`` is None before the first one."""

    healthy: bool | None = None
    checked_at: float | None = None
    consecutive_failures: int = 0
    detail: str = ""


@attrs.frozen
class AgentInfo:
    """A snapshot of one registered agent."""

    id: str
    status: AgentStatus
    pid: Pid | None
    capabilities: frozenset[str]
    restarts: int
    health: Health
    last_exit: object
    spec: AgentSpec


@attrs.define
class _Record:
    spec: AgentSpec
    status: AgentStatus = AgentStatus.STOPPED
    supervisor: Pid | None = None
    restarts: int = 0
    health: Health = Health()
    next_check: float = math.inf
    last_exit: object = None


_EVENT_OF = {
    "started": tm.AGENT_STARTED,
    "restarted": tm.AGENT_RESTARTED,
    "crashed": tm.AGENT_CRASHED,
    "exited": tm.AGENT_STOPPED,
    "stopped": tm.AGENT_STOPPED,
    "failed": tm.AGENT_FAILED,
}


class AgentSystem:
    """Per-node state of the agents layer (a node extension). Use the module functions."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.directory = Registry("unique", name=f"agents@{node.name}")
        self.records: dict[str, _Record] = {}
        self.supervisor: Pid | None = None
        self.ready = trio.Event()
        self.start_error: BaseException | None = None
        self._health_wakeup = trio.Event()
        # ``listener(agent_id, what, reason)`` on every status change of an agent
        # ("started", "restarted", "crashed", "exited", "stopped", "failed"), called
        # synchronously; variables release subscriptions, telemetry reports it.
        self.exit_listeners: list[Callable[[str, str, object], None]] = []

    # -- lookups --------------------------------------------------------------------------

    def record(self, agent_id: object) -> _Record:
        if not isinstance(agent_id, str):
            raise TypeError(f"an agent id is a str, got {agent_id!r}")
        found = self.records.get(agent_id)
        if found is None:
            raise AgentNotFound(agent_id)
        return found

    def live_pid(self, agent_id: str) -> Pid | None:
        """The agent's pid if its process is alive right now (directory entry)."""
        return self.directory.whereis(agent_id)

    def target(self, agent_id: str) -> Via:
        return Via(self.directory, agent_id)

    # -- lifecycle, reported by the agents themselves and by exit hooks --------------------

    def agent_ready(self, agent_id: str, process: Process) -> None:
        """Called by :meth:`Agent.init` once ``setup`` has returned, in the agent's process.

        Only an incarnation started by this system counts: its process holds the
        agent's directory entry (registered by its supervisor before ``init``).
        """
        record = self.records.get(agent_id)
        if record is None or self.directory.whereis(agent_id) != process.pid:
            return
        restarted = record.status is AgentStatus.RESTARTING
        if restarted:
            record.restarts += 1
        record.status = AgentStatus.RUNNING
        interval = record.spec.health_interval
        if interval is not None:
            record.next_check = trio.current_time() + interval
            self._health_wakeup.set()
        process.add_exit_hook(lambda _, reason: self._exited(agent_id, record, reason))
        # A node-wide name too, so that other nodes reach it as (name, node).
        name = agent_name(agent_id)
        holder = self.node.names.get(name)
        if holder is None:
            self.node.register_name(name, process)
        elif holder is not process:
            logger.warning(
                "agent %r: the name %r is taken by %s; other nodes cannot reach the agent",
                agent_id,
                name,
                holder.pid,
            )
        self._tell(agent_id, "restarted" if restarted else "started", None)

    def supervisor_started(self, agent_id: str, record: _Record, pid: Pid) -> None:
        """Watch the agent's own supervisor: its giving up is the escalation that marks
        the agent failed."""
        record.supervisor = pid
        process = self.node.processes.get(pid.id)
        if process is None:
            # It gave up (or was stopped) before start_agent got its pid back.
            self._gave_up(agent_id, record, pid)
            return
        process.add_exit_hook(
            lambda _, reason: self._supervisor_exited(agent_id, record, pid, reason)
        )

    def _supervisor_exited(
        self, agent_id: str, record: _Record, pid: Pid, reason: ExitReason
    ) -> None:
        if reason == GAVE_UP:
            self._gave_up(agent_id, record, pid)

    def _gave_up(self, agent_id: str, record: _Record, pid: Pid) -> None:
        if self.records.get(agent_id) is not record or record.supervisor != pid:
            return
        if record.status is AgentStatus.STOPPING:
            return
        record.status = AgentStatus.FAILED
        logger.error("agent %r failed: its restart intensity was exceeded", agent_id)
        self._tell(agent_id, "failed", record.last_exit)

    def _exited(self, agent_id: str, record: _Record, reason: ExitReason | None) -> None:
        """Runs synchronously as the agent's process exits (a process exit hook)."""
        record.last_exit = reason
        record.next_check = math.inf
        if record.status is AgentStatus.STOPPING or self.records.get(agent_id) is not record:
            return
        restart = record.spec.restart
        crashed = reason is None or not is_orderly(reason)
        if crashed:
            will_restart = restart is not Restart.TEMPORARY
        else:
            # A Shutdown is its supervisor (or the node) stopping it: no restart.
            will_restart = restart is Restart.PERMANENT and not isinstance(reason, Shutdown)
        if will_restart:
            record.status = AgentStatus.RESTARTING
        elif crashed:
            record.status = AgentStatus.FAILED
        else:
            record.status = AgentStatus.STOPPED
        self._tell(agent_id, "crashed" if crashed else "exited", reason)

    def _tell(self, agent_id: str, what: str, reason: object) -> None:
        event = _EVENT_OF[what]
        record = self.records.get(agent_id)
        measurements = {"restarts": record.restarts} if record is not None else {}
        metadata: dict[str, object] = {"agent": agent_id}
        if what in ("crashed", "exited", "failed"):
            metadata["reason"] = reason
        emit(event, measurements, metadata)
        for listener in list(self.exit_listeners):
            try:
                listener(agent_id, what, reason)
            except Exception:
                logger.exception("agent listener %r failed on %r %s", listener, agent_id, what)

    # -- health checks ------------------------------------------------------------------

    async def health_loop(self) -> None:
        """Check each running agent every ``health_interval``; runs until cancelled."""
        while True:
            now = trio.current_time()
            due = [
                (agent_id, record)
                for agent_id, record in self.records.items()
                if record.status is AgentStatus.RUNNING and record.next_check <= now
            ]
            if due:
                async with trio.open_nursery() as nursery:
                    for agent_id, record in due:
                        nursery.start_soon(self._check, agent_id, record)
            self._health_wakeup = trio.Event()
            wake = min(
                (r.next_check for r in self.records.values() if r.status is AgentStatus.RUNNING),
                default=math.inf,
            )
            with trio.move_on_at(wake):
                await self._health_wakeup.wait()

    async def _check(self, agent_id: str, record: _Record) -> None:
        interval = record.spec.health_interval
        assert interval is not None
        started = trio.current_time()
        record.next_check = started + interval
        pid = self.live_pid(agent_id)
        detail = ""
        healthy = False
        if pid is None:
            detail = "not running"
        else:
            try:
                answer = await call(pid, HealthCheck(deadline=started + interval), interval)
            except CallTimeout:
                detail = f"no answer within {interval} s"
            except (ServerExited, NoProcess) as exc:
                detail = f"exited during the check: {exc}"
            else:
                healthy = answer is True
                if not healthy:
                    detail = f"health() answered {answer!r}"
        failures = 0 if healthy else record.health.consecutive_failures + 1
        if not healthy:
            logger.warning("agent %r is unhealthy: %s", agent_id, detail)
            emit(
                tm.AGENT_UNHEALTHY,
                {"consecutive_failures": failures},
                {"agent": agent_id, "detail": detail},
            )
        record.health = Health(healthy, trio.current_time(), failures, detail)


async def _run_health(system: AgentSystem, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await system.health_loop()


async def agent_system() -> AgentSystem:
    """The calling node's agent system, started on first use.

    Raises :class:`~foundation_trio.NoNodeError` outside a node.
    """
    node = current_node()
    system = node.find_extension(AgentSystem)
    if system is None:
        if node.find_extension(telemetry.Telemetry) is not None:
            tm.declare_metrics()
        system = AgentSystem(node)
        node.set_extension(AgentSystem, system)
        try:
            system.supervisor = await node.start_supervisor(
                [ChildSpec("health", _run_health, args=(system,))],
                id="foundation_trio.agents",
                max_restarts=3,
                max_seconds=5.0,
            )
        except BaseException as exc:
            system.start_error = exc
            node.remove_extension(AgentSystem)
            raise
        finally:
            system.ready.set()
    elif not system.ready.is_set():
        await system.ready.wait()
        if system.start_error is not None:
            raise RuntimeError("the agents supervisor failed to start") from system.start_error
    return system


def _existing_system() -> AgentSystem | None:
    return current_node().find_extension(AgentSystem)


# -- the public API -----------------------------------------------------------------------


def agent_name(agent_id: str) -> str:
    """The node-wide name a running agent is registered under: ``"agent:<id>"``.

    Other nodes reach the agent as ``(agent_name(id), node)``; see :func:`agent_on`.
    """
    if not isinstance(agent_id, str) or not agent_id:
        raise TypeError(f"an agent id is a non-empty str, got {agent_id!r}")
    return f"agent:{agent_id}"


def agent_on(node: str, agent_id: str) -> Participant:
    """A round participant for agent ``agent_id`` on node ``node`` (this node or another),
    reached through the cluster as ``(agent_name(agent_id), node)``; its outcomes are
    recorded as ``"<agent_id>@<node>"``."""
    if not isinstance(node, str) or not node:
        raise TypeError(f"agent_on(): node must be a node name (str), got {node!r}")
    return Participant(f"{agent_id}@{node}", (agent_name(agent_id), node))


async def register_agent(spec: AgentSpec) -> None:
    """Add ``spec`` to the node's agent directory (status ``stopped``; start it with
    :func:`start_agent`). Raises :class:`DuplicateAgent` if the id is registered."""
    if not isinstance(spec, AgentSpec):
        raise TypeError(f"register_agent() takes an AgentSpec, got {spec!r}")
    system = await agent_system()
    if spec.id in system.records:
        raise DuplicateAgent(spec.id)
    system.records[spec.id] = _Record(spec)


async def start_agent(agent_id: str) -> Pid:
    """Start a registered agent under its own supervisor; return its pid once its
    ``setup`` has returned.

    Raises :class:`AgentNotFound` (not registered), :class:`AgentAlreadyRunning`
    (starting, running, restarting or stopping), or
    :class:`~foundation_trio.StartError` if ``setup`` raised (the agent is then
    ``failed``). Cancellation while starting leaves the agent as the supervisor
    has it (running if it started).
    """
    system = await agent_system()
    record = system.record(agent_id)
    if record.status in _RUNNING_LIKE or record.status is AgentStatus.STOPPING:
        raise AgentAlreadyRunning(agent_id, record.status.value)
    spec = record.spec
    permanent = spec.restart is Restart.PERMANENT
    agent_child = ChildSpec(
        agent_id,
        spec.agent,
        args=(spec,),
        restart=spec.restart,
        shutdown=spec.shutdown,
        name=system.target(agent_id),
        # A non-permanent agent that ends for good takes its supervisor along.
        significant=not permanent,
    )
    own_supervisor = SupervisorSpec(
        [agent_child],
        max_restarts=spec.max_restarts,
        max_seconds=spec.max_seconds,
        auto_shutdown=NEVER if permanent else ANY_SIGNIFICANT,
    )
    record.status = AgentStatus.STARTING
    record.restarts = 0
    record.health = Health()
    assert system.supervisor is not None
    try:
        supervisor = await start_child(
            system.supervisor,
            ChildSpec(("agent", agent_id), own_supervisor, restart=Restart.TEMPORARY),
        )
    except StartError as exc:
        record.status = AgentStatus.FAILED
        record.last_exit = exc.reason
        raise
    system.supervisor_started(agent_id, record, supervisor)
    pid = system.live_pid(agent_id)
    if pid is None:
        raise AgentNotRunning(agent_id, record.status.value)
    return pid


async def stop_agent(agent_id: str) -> None:
    """Stop a running (or restarting) agent in order; its status becomes ``stopped``.

    Raises :class:`AgentNotFound` and :class:`AgentNotRunning` (stopped, failed, or
    already stopping).
    """
    system = await agent_system()
    record = system.record(agent_id)
    if record.status not in _RUNNING_LIKE:
        raise AgentNotRunning(agent_id, record.status.value)
    record.status = AgentStatus.STOPPING
    assert system.supervisor is not None
    try:
        await terminate_child(system.supervisor, ("agent", agent_id))
    except LookupError:
        # Its supervisor ended by itself meanwhile (it gave up); nothing left to stop.
        pass
    finally:
        record.supervisor = None
        record.next_check = math.inf
        if record.status is AgentStatus.STOPPING:
            record.status = AgentStatus.STOPPED
    system._tell(agent_id, "stopped", None)


async def unregister_agent(agent_id: str) -> None:
    """Stop the agent if it runs, then forget it. Raises :class:`AgentNotFound`."""
    system = await agent_system()
    record = system.record(agent_id)
    if record.status in _RUNNING_LIKE:
        await stop_agent(agent_id)
    system.records.pop(agent_id, None)


def agent_status(agent_id: str) -> AgentStatus:
    """The agent's status. Raises :class:`AgentNotFound`."""
    system = _existing_system()
    if system is None:
        raise AgentNotFound(agent_id)
    return system.record(agent_id).status


def agent_info(agent_id: str) -> AgentInfo:
    """A snapshot of the agent: status, pid (None unless alive), health, restarts."""
    system = _existing_system()
    if system is None:
        raise AgentNotFound(agent_id)
    record = system.record(agent_id)
    return AgentInfo(
        id=agent_id,
        status=agent_status(agent_id),
        pid=system.live_pid(agent_id),
        capabilities=record.spec.capabilities,
        restarts=record.restarts,
        health=record.health,
        last_exit=record.last_exit,
        spec=record.spec,
    )


def whereis_agent(agent_id: str) -> Pid:
    """The pid of a live agent. Raises :class:`AgentNotFound` if it is unknown or not
    alive at this instant (never a dead agent's pid)."""
    system = _existing_system()
    if system is None:
        raise AgentNotFound(agent_id)
    system.record(agent_id)
    pid = system.live_pid(agent_id)
    if pid is None:
        raise AgentNotFound(agent_id, "not running")
    return pid


def list_agents() -> list[str]:
    """The ids of every registered agent, in registration order."""
    system = _existing_system()
    return [] if system is None else list(system.records)


def find_agents(capabilities: Iterable[str] | str = ()) -> list[str]:
    """Ids of the live agents that have **every** capability given (the
    intersection), in registration order. With none given: every live agent.

    Only agents whose process is alive at this instant are returned.
    """
    wanted = frozenset((capabilities,) if isinstance(capabilities, str) else capabilities)
    for item in wanted:
        if not isinstance(item, str):
            raise TypeError(f"find_agents(): capabilities are str, got {item!r}")
    system = _existing_system()
    if system is None:
        return []
    return [
        agent_id
        for agent_id, record in system.records.items()
        if wanted <= record.spec.capabilities and system.live_pid(agent_id) is not None
    ]
