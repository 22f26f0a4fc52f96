"""Records, errors and rules shared by the sans-IO coordination protocols.

Auctions, markets, Contract Net and negotiation (``auctions.py``, ``combinatorial.py``,
``markets.py``, ``contract_net.py``, ``negotiation.py``) are pure: they never ask an
agent anything themselves. A driver in ``foundation_trio.agents`` asks the agents
(concurrently, under one deadline), feeds their answers in together with the receipt
order and the time, and applies what comes out.

Agent ids are opaque strings. Amounts are finite floats; quantities are ints.

**Tie-break order** (every protocol here): the better amount wins; between equal amounts
the earlier receipt sequence number (``seq``, assigned by the driver in the order answers
arrived); between equal ``seq`` the smaller agent id. :func:`priority_key` is that order
for "higher is better" amounts.

The errors here are the protocol cores' own. They derive from :class:`CoordinationError`
and the built-in class that fits (``ValueError``, ``LookupError``, ``RuntimeError``), as
the cores import nothing of the package outside ``protocols``.
"""

from __future__ import annotations

import math
from typing import TypeAlias

from .._errors import FoundationError

__all__ = [
    "AgentId",
    "CoordinationError",
    "InstanceTooLarge",
    "InvalidBid",
    "InvalidOffer",
    "InvalidOrder",
    "NotAParticipant",
    "SessionClosed",
    "check_agent_id",
    "check_amount",
    "check_seq",
    "priority_key",
]

AgentId: TypeAlias = str


class CoordinationError(FoundationError):
    """Base class of the errors the coordination protocol cores raise on purpose."""


class InvalidBid(CoordinationError, ValueError):
    """A bid is malformed: not a finite number, negative, an empty or unknown bundle..."""

    def __init__(self, agent: AgentId, reason: str) -> None:
        super().__init__(f"invalid bid from {agent!r}: {reason}")
        self.agent = agent
        self.reason = reason


class InvalidOrder(CoordinationError, ValueError):
    """A market order is malformed (side, quantity or limit price)."""


class InvalidOffer(CoordinationError, ValueError):
    """An offer is outside the negotiation's outcome space."""


class NotAParticipant(CoordinationError, LookupError):
    """The agent was not invited to this session."""

    def __init__(self, agent: AgentId, session: str) -> None:
        super().__init__(f"agent {agent!r} is not a participant of {session}")
        self.agent = agent
        self.session = session


class SessionClosed(CoordinationError, RuntimeError):
    """The session has already concluded; nothing more can be fed to it."""


class InstanceTooLarge(CoordinationError, ValueError):
    """The instance is over the exact solver's size limit; it is refused, not approximated."""


def check_agent_id(agent: object, what: str) -> AgentId:
    """Return ``agent`` if it is a non-empty string, else raise ``TypeError``/``ValueError``."""
    if not isinstance(agent, str):
        raise TypeError(f"{what} must be an agent id (str), got {type(agent).__name__}")
    if not agent:
        raise ValueError(f"{what} must be a non-empty agent id")
    return agent


def check_amount(value: object, what: str, *, minimum: float | None = None) -> float:
    """Return ``value`` as a float if it is a finite real (not a bool), else raise.

    ``TypeError`` for a non-number, ``ValueError`` for NaN, infinities or a value below
    ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if minimum is not None and result < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return result


def check_seq(seq: object, what: str) -> int:
    """Return ``seq`` if it is an int >= 0, else raise ``TypeError``/``ValueError``."""
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise TypeError(f"{what} must be an int receipt sequence number, got {seq!r}")
    if seq < 0:
        raise ValueError(f"{what} must be >= 0, got {seq}")
    return seq


def priority_key(amount: float, seq: int, agent: AgentId) -> tuple[float, int, AgentId]:
    """Sort key putting the best of several (amount, seq, agent) first: see the module doc.

    Higher amounts sort first; use ``priority_key(-cost, ...)`` when lower is better.
    """
    return (-amount, seq, agent)
