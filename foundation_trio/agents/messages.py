"""Questions a round asks agents, and the typed refusal an agent may answer with.

A question is a frozen attrs record, subclass of :class:`Question`. An agent
answers it through **double dispatch**: the agent's ``handle_call`` calls
``await question.ask(agent)``, and the question calls the agent's hook named by
its ``hook`` class attribute (``VoteRequest.hook == "vote"`` → ``await
agent.vote(request)``). So a protocol adds a question record and a hook name;
neither the :class:`~foundation_trio.agents.Agent` base nor the round runner
changes::

    @attrs.frozen
    class BidRequest(Question):
        hook: ClassVar[str] = "bid"
        item: str

    class Bidder(Agent):
        async def bid(self, request: BidRequest) -> float: ...

An agent without the hook answers :class:`Refusal` (the round records it as
``Refused``); a hook may return a :class:`Refusal` itself to decline. A hook that
raises crashes the agent like any GenServer handler (its supervisor restarts it)
and the round records the participant as ``Crashed``.

Questions and :class:`Refusal` are registered wire records (``ft.wire.register``,
under ``"ft.agents.<class name>"``), so agents on other nodes answer them the same
way; a protocol that adds a question registers it likewise.

Every question carries the round's one absolute ``deadline`` (trio time,
``None`` outside a round): an agent may use it to bound its own work. The round
runner fills it in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from ..cluster import wire

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["HealthCheck", "Question", "Refusal", "ValueRequest", "VoteRequest"]


def _as_tuple(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(items)


@attrs.frozen
class Refusal:
    """An agent's typed "no": it will not (or cannot) answer this question."""

    reason: str


@attrs.frozen
class Question:
    """Base class of the records a round asks agents. Subclasses set ``hook``."""

    hook: ClassVar[str] = ""
    deadline: float | None = attrs.field(default=None, kw_only=True)

    async def ask(self, agent: Agent) -> Any:
        """Answer this question on ``agent`` by calling its hook (see the module doc)."""
        method = getattr(agent, self.hook, None) if self.hook else None
        if method is None or not callable(method):
            return Refusal(
                f"{type(agent).__qualname__} does not answer {type(self).__qualname__} "
                f"(it has no {self.hook or '?'!s} hook)"
            )
        return await method(self)

    def remaining(self, now: float) -> float:
        """Seconds left until the deadline at trio time ``now`` (inf without one)."""
        return math.inf if self.deadline is None else self.deadline - now


@attrs.frozen
class HealthCheck(Question):
    """Asked every ``health_interval``; the ``health`` hook answers True when healthy."""

    hook: ClassVar[str] = "health"


@attrs.frozen
class VoteRequest(Question):
    """Vote on ``topic`` for one of ``options`` (or any value when ``options`` is empty).

    Answered by the ``vote`` hook with the chosen option (or a :class:`Refusal`).
    ``round_id`` names the voting round, so an agent can tell rounds apart.
    """

    hook: ClassVar[str] = "vote"
    topic: str
    options: tuple[Any, ...] = attrs.field(default=(), converter=_as_tuple)
    round_id: str = ""


@attrs.frozen
class ValueRequest(Question):
    """Which value the agent prefers for universal variable ``variable``.

    ``current`` is the committed value and ``version`` its version; ``domain`` a
    printable description of the allowed values, ``options`` the choices of a
    choice variable (empty otherwise). Answered by the ``preferred_value`` hook.
    """

    hook: ClassVar[str] = "preferred_value"
    variable: str
    current: Any
    version: int
    domain: str = ""
    options: tuple[Any, ...] = attrs.field(default=(), converter=_as_tuple)


# Questions and refusals cross nodes as registered wire records, under names that stay
# the same when the classes move. A protocol that adds a question registers it too.
for _record in (Refusal, HealthCheck, VoteRequest, ValueRequest):
    wire.register(_record, name=f"ft.agents.{_record.__name__}")
