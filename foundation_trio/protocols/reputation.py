"""Reputation: a score in [0, 1] per agent from the quality of its reported tasks.

Every agent starts at ``initial`` (0.5). A report of quality ``q`` in [0, 1] for a task
moves the score by an exponentially decayed average::

    score <- decay * score + (1 - decay) * q

so old evidence fades geometrically (``decay`` in [0, 1)). A task id is counted once per
agent: a second report for the same ``(agent, task_id)`` is ignored and reported as such.
Scores are usable as vote weights (:meth:`ReputationBook.score`), as an auction gate
(:meth:`ReputationBook.eligible`) and as a tie-breaker (:meth:`ReputationBook.rank`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import attrs

from foundation_trio.protocols.coordination import AgentId, check_agent_id, check_amount

__all__ = ["ReputationBook", "ReputationConfig"]


@attrs.frozen(slots=True)
class ReputationConfig:
    """``initial`` score and the ``decay`` weight kept from the previous score."""

    initial: float = 0.5
    decay: float = 0.8

    def __attrs_post_init__(self) -> None:
        initial = check_amount(self.initial, "ReputationConfig.initial")
        decay = check_amount(self.decay, "ReputationConfig.decay")
        if not 0.0 <= initial <= 1.0:
            raise ValueError(f"ReputationConfig.initial must be in [0, 1], got {initial}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ReputationConfig.decay must be in [0, 1), got {decay}")


class ReputationBook:
    """Per-agent reputation scores; see the module docstring."""

    def __init__(self, config: ReputationConfig | None = None) -> None:
        self.config = config if config is not None else ReputationConfig()
        self._scores: dict[AgentId, float] = {}
        self._seen: set[tuple[AgentId, Hashable]] = set()
        self._counts: dict[AgentId, int] = {}

    def report(self, agent: AgentId, task_id: Hashable, quality: float) -> bool:
        """Record the quality of ``agent``'s task ``task_id``; ``False`` if already counted.

        Raises ``TypeError``/``ValueError`` for a bad agent id, an unhashable task id or a
        quality outside [0, 1].
        """
        check_agent_id(agent, "agent")
        if not isinstance(task_id, Hashable):
            raise TypeError(f"task_id must be hashable, got {type(task_id).__name__}")
        q = check_amount(quality, "quality")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality!r}")
        key = (agent, task_id)
        if key in self._seen:
            return False
        self._seen.add(key)
        decay = self.config.decay
        self._scores[agent] = decay * self.score(agent) + (1.0 - decay) * q
        self._counts[agent] = self._counts.get(agent, 0) + 1
        return True

    def score(self, agent: AgentId) -> float:
        """``agent``'s current score; ``initial`` if nothing was reported."""
        return self._scores.get(agent, self.config.initial)

    def reports(self, agent: AgentId) -> int:
        """How many distinct tasks of ``agent`` were counted."""
        return self._counts.get(agent, 0)

    def eligible(self, agents: Iterable[AgentId], minimum: float) -> frozenset[AgentId]:
        """The agents whose score is at least ``minimum``: an auction or vote gate."""
        threshold = check_amount(minimum, "minimum")
        return frozenset(a for a in agents if self.score(a) >= threshold)

    def rank(self, agents: Iterable[AgentId]) -> list[AgentId]:
        """``agents`` by descending score, then by id: a deterministic tie-breaker."""
        return sorted(agents, key=lambda a: (-self.score(a), a))
