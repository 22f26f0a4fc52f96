"""The errors of the agents layer. Each message names what was wrong and with what.

Every error defined here derives from :class:`AgentsError` (itself a
:class:`~foundation_trio.FoundationError`) and from the built-in class that fits,
so ``except LookupError`` catches :class:`AgentNotFound` as well.
:class:`InsufficientParticipants` is the protocol cores' own (raised by the pure
voting core too), re-exported here so there is one class of that name.
"""

from __future__ import annotations

from collections.abc import Hashable

from ..protocols.voting import InsufficientParticipants
from ..runtime.errors import FoundationError

__all__ = [
    "AgentAlreadyRunning",
    "AgentNotFound",
    "AgentNotRunning",
    "AgentsError",
    "CoordinatorCrashed",
    "DuplicateAgent",
    "DuplicateVariable",
    "InsufficientParticipants",
    "NotAMember",
    "OutOfDomain",
    "PermissionDenied",
    "ReadOnly",
    "StrategyNotFound",
    "VariableNotFound",
    "VersionConflict",
]


class AgentsError(FoundationError):
    """Base class of the errors the agents layer raises on purpose."""


class DuplicateAgent(AgentsError, ValueError):
    """An agent with this id is already registered."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"an agent with id {agent_id!r} is already registered")
        self.agent_id = agent_id


class AgentNotFound(AgentsError, LookupError):
    """No agent is registered with this id (or it is not running, where one must be)."""

    def __init__(self, agent_id: object, detail: str = "") -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"no agent {agent_id!r}{suffix}")
        self.agent_id = agent_id


class AgentAlreadyRunning(AgentsError, RuntimeError):
    """``start_agent`` on an agent that is starting, running or restarting."""

    def __init__(self, agent_id: str, status: object) -> None:
        super().__init__(f"agent {agent_id!r} is already {status}; stop it first")
        self.agent_id = agent_id
        self.status = status


class AgentNotRunning(AgentsError, RuntimeError):
    """``stop_agent`` on an agent that is stopped or failed."""

    def __init__(self, agent_id: str, status: object) -> None:
        super().__init__(f"agent {agent_id!r} is {status}, not running: nothing to stop")
        self.agent_id = agent_id
        self.status = status


class CoordinatorCrashed(AgentsError, RuntimeError):
    """The process coordinating a round ended before the round had a result.

    Raised to every task waiting on the round. ``reason`` is the coordinator's
    exit reason (an exception, or ``KILLED`` / a ``Shutdown``).
    """

    def __init__(self, what: str, reason: object) -> None:
        super().__init__(f"the coordinator of {what} ended before a result: {reason!r}")
        self.reason = reason


class VersionConflict(AgentsError, RuntimeError):
    """A compare-and-set found another version than the one it expected."""

    def __init__(self, variable: str, expected: int, actual: int) -> None:
        super().__init__(
            f"variable {variable!r} is at version {actual}, not the expected {expected}: "
            "another write committed first"
        )
        self.variable = variable
        self.expected = expected
        self.actual = actual


class PermissionDenied(AgentsError, PermissionError):
    """The writer may not write this variable under its access rule."""

    def __init__(self, variable: str, writer: object, rule: str) -> None:
        super().__init__(f"{writer!r} may not write variable {variable!r} (access: {rule})")
        self.variable = variable
        self.writer = writer


class ReadOnly(PermissionDenied):
    """The variable's node cannot see a strict majority of the variable's ``members``
    (it is on the minority side of a partition): writes are refused, reads still work.

    ``reachable`` counts this node and the members it has a link to; ``needed`` is the
    strict majority of ``members``.
    """

    def __init__(self, variable: str, writer: object, reachable: int, needed: int) -> None:
        AgentsError.__init__(
            self,
            f"variable {variable!r} is read-only on this node: it reaches {reachable} of "
            f"its members, a write needs {needed} (a strict majority)",
        )
        self.variable = variable
        self.writer = writer
        self.reachable = reachable
        self.needed = needed


class NotAMember(AgentsError, ValueError):
    """A variable with ``members`` is defined on a node not among them."""

    def __init__(self, variable: str, node: str, members: frozenset[str]) -> None:
        super().__init__(
            f"variable {variable!r} has members {sorted(members)!r}, which do not include "
            f"this node {node!r}"
        )
        self.variable = variable
        self.node = node


class OutOfDomain(AgentsError, ValueError):
    """A value is outside the variable's domain (or of the wrong type)."""

    def __init__(self, variable: str, value: object, domain: str) -> None:
        super().__init__(f"{value!r} is outside the domain of variable {variable!r}: {domain}")
        self.variable = variable
        self.value = value


class VariableNotFound(AgentsError, LookupError):
    """No universal variable has this name on this node."""

    def __init__(self, name: Hashable) -> None:
        super().__init__(f"no variable named {name!r}")
        self.name = name


class DuplicateVariable(AgentsError, ValueError):
    """A variable with this name is already defined on this node."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a variable named {name!r} is already defined")
        self.name = name


class StrategyNotFound(AgentsError, LookupError):
    """``coordinate`` was given a strategy name nobody registered."""

    def __init__(self, name: object, known: list[str]) -> None:
        super().__init__(f"no coordination strategy {name!r}; known: {', '.join(known)}")
        self.name = name
