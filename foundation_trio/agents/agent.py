"""Agents: supervised GenServers with an id, capabilities and hooks that answer questions.

An agent is described by an :class:`AgentSpec` and runs as an :class:`Agent`
subclass under its own supervisor (see ``registry.py``). Subclass :class:`Agent`,
override :meth:`Agent.setup` for start-up and the hooks of the protocols it takes
part in (``vote``, ``preferred_value``, ``health``, and the hooks other protocols
add); every hook it does not override answers with a typed
:class:`~foundation_trio.agents.messages.Refusal`::

    class Voter(ft.agents.Agent):
        async def setup(self, choice: str) -> None:
            self.choice = choice

        async def vote(self, request: ft.agents.VoteRequest) -> str:
            return self.choice
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ..runtime.pid import ExitReason
from ..runtime.server import Caller, GenServer
from ..runtime.spec import Restart
from .messages import HealthCheck, Question, Refusal, ValueRequest, VoteRequest

__all__ = ["Agent", "AgentSpec", "AgentStatus"]


class AgentStatus(enum.Enum):
    """Where an agent is in its life (see :func:`~foundation_trio.agents.agent_status`)."""

    STARTING = "starting"
    """``start_agent`` is running the agent's ``setup``."""
    RUNNING = "running"
    """Up and answering."""
    STOPPING = "stopping"
    """``stop_agent`` is stopping it."""
    STOPPED = "stopped"
    """Registered but not running: never started, stopped, or ended normally."""
    FAILED = "failed"
    """Ended abnormally and will not be restarted: its restart limits were exhausted
    (a crash storm), its ``setup`` failed, or it is temporary and crashed."""
    RESTARTING = "restarting"
    """Crashed; its supervisor is restarting it."""


def _check_id(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"AgentSpec.id must be a non-empty str, got {value!r}")


def _check_agent_class(_: object, attribute: attrs.Attribute[type], value: object) -> None:
    if not (isinstance(value, type) and issubclass(value, Agent)):
        raise TypeError(f"AgentSpec.agent must be an Agent subclass, got {value!r}")


def _to_capabilities(value: object) -> frozenset[str]:
    if isinstance(value, str):
        # A bare string would otherwise become a set of its letters.
        raise TypeError(
            f"AgentSpec.capabilities must be an iterable of str, got the str {value!r}; "
            f"write ({value!r},)"
        )
    try:
        items: frozenset[object] = frozenset(value)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"AgentSpec.capabilities must be an iterable of str, got {value!r}"
        ) from None
    checked: set[str] = set()
    for item in items:
        if not isinstance(item, str) or not item:
            raise TypeError(f"AgentSpec.capabilities holds non-empty str only, got {item!r}")
        checked.add(item)
    return frozenset(checked)


def _to_restart(value: object) -> Restart:
    if isinstance(value, Restart):
        return value
    try:
        return Restart(value)
    except ValueError:
        allowed = ", ".join(r.value for r in Restart)
        raise ValueError(f"AgentSpec.restart must be one of {allowed}, got {value!r}") from None


def _check_max_restarts(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"AgentSpec.max_restarts must be an int >= 0, got {value!r}")


def _check_max_seconds(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"AgentSpec.max_seconds must be finite seconds > 0, got {value!r}")


def _check_health_interval(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(
            f"AgentSpec.health_interval must be None or finite seconds > 0, got {value!r}"
        )


def _check_shutdown(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"AgentSpec.shutdown must be finite seconds >= 0, got {value!r}")


def _to_metadata(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"AgentSpec.metadata must be a mapping, got {value!r}")
    return MappingProxyType(dict(value))


def _to_args(value: object) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise TypeError(f"AgentSpec.args must be a tuple, got {value!r}")
    return tuple(value)


@attrs.frozen
class AgentSpec:
    """How to run one agent. Validated when built: a bad field raises
    :class:`TypeError` or :class:`ValueError` naming it.

    ``id``: unique on the node. ``agent``: the :class:`Agent` subclass; ``args`` and
    ``kwargs`` go to its :meth:`Agent.setup`. ``capabilities``: what it can do, for
    :func:`~foundation_trio.agents.find_agents`. ``restart``: ``PERMANENT``
    (restarted after any exit), ``TRANSIENT`` (after a crash only) or ``TEMPORARY``
    (never). ``max_restarts`` within ``max_seconds``: the agent's own restart
    intensity; one more crash and its supervisor gives up, escalating to the agents
    supervisor, which marks it ``failed``. ``health_interval``: seconds between
    health checks (None: none). ``shutdown``: seconds a stopping agent may take to
    finish the message it is handling (a hook still running then is cancelled), so
    one stuck agent cannot hold up a shutdown longer. ``metadata``: free-form,
    read-only.
    """

    id: str = attrs.field(validator=_check_id)
    agent: type[Agent] = attrs.field(validator=_check_agent_class)
    capabilities: frozenset[str] = attrs.field(
        default=frozenset(), converter=_to_capabilities, kw_only=True
    )
    restart: Restart = attrs.field(default=Restart.PERMANENT, converter=_to_restart, kw_only=True)
    max_restarts: int = attrs.field(default=3, validator=_check_max_restarts, kw_only=True)
    max_seconds: float = attrs.field(default=5.0, validator=_check_max_seconds, kw_only=True)
    health_interval: float | None = attrs.field(
        default=None, validator=_check_health_interval, kw_only=True
    )
    shutdown: float = attrs.field(default=5.0, validator=_check_shutdown, kw_only=True)
    metadata: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_to_metadata, kw_only=True, eq=False
    )
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_args, kw_only=True)
    kwargs: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_to_metadata, kw_only=True, eq=False
    )


class Agent(GenServer):
    """Base class of agents: a GenServer that answers protocol questions.

    ``handle_call`` answers every :class:`~foundation_trio.agents.messages.Question`
    by double dispatch (``await question.ask(self)`` calls the hook the question
    names); override ``handle_call`` for requests of your own and pass the rest to
    ``super().handle_call``. Hooks not overridden answer with a
    :class:`~foundation_trio.agents.messages.Refusal`. A hook that raises crashes
    the agent (its supervisor restarts it per its spec).

    Attributes set before :meth:`setup` runs: ``agent_id``, ``capabilities``,
    ``metadata`` and ``spec``.
    """

    agent_id: str
    capabilities: frozenset[str]
    metadata: Mapping[str, Any]
    spec: AgentSpec

    async def init(self, spec: AgentSpec) -> None:
        self.spec = spec
        self.agent_id = spec.id
        self.capabilities = spec.capabilities
        self.metadata = spec.metadata
        await self.setup(*spec.args, **spec.kwargs)
        from .registry import AgentSystem

        system = self._process.node.find_extension(AgentSystem)
        if system is not None:
            system.agent_ready(self.agent_id, self._process)

    async def setup(self, *args: Any, **kwargs: Any) -> None:
        """Prepare the agent's state. Raising fails the start (or the restart)."""

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        if isinstance(request, Question):
            return await request.ask(self)
        return await super().handle_call(request, caller)

    # -- hooks ------------------------------------------------------------------------

    async def health(self, check: HealthCheck) -> bool:
        """Whether the agent is healthy. Default: True (it answered, so it is alive)."""
        return True

    async def vote(self, request: VoteRequest) -> Any:
        """The agent's vote on ``request.topic``. Default: a refusal."""
        return Refusal(f"agent {self.agent_id!r} does not vote")

    async def preferred_value(self, request: ValueRequest) -> Any:
        """The value the agent prefers for a universal variable. Default: a refusal."""
        return Refusal(f"agent {self.agent_id!r} has no preferred value")

    async def terminate(self, reason: ExitReason) -> None:
        """Clean up; runs on an orderly stop and after a hook raised."""
