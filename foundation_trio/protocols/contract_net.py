"""Contract Net (FIPA SC00029H), manager side, as a pure state machine.

The manager issues a call for proposals (cfp) to the participants with a deadline. Each
participant answers ``propose`` (with a numeric ``value``: a cost, or a bid when the
objective is to maximise), ``refuse`` or ``not-understood``. When the deadline passes the
driver calls :meth:`ContractNet.close_proposals`: the best proposal (by the objective,
then receipt ``seq``, then agent id) gets ``accept-proposal``; the next ``standby``
proposals are held in reserve; every other proposer gets ``reject-proposal``. The
contractor then reports ``inform-done`` / ``inform-result`` (:meth:`ContractNet.done`) or
``failure`` (:meth:`ContractNet.failure`). On a failure the next proposal held in reserve
is accepted (reassignment to the next best); when none is left the contract fails. On
completion (or cancellation, :meth:`ContractNet.cancel`) every proposal still held gets
its reject. So **every proposer gets exactly one accept or reject**: late proposals are
rejected on arrival without being evaluated, invalid ones are rejected at the close, and a
second proposal from the same agent gets no answer at all.

Every feeding method returns the effects to send, in order: :class:`Accept`,
:class:`Reject`, :class:`Cancel`. :attr:`ContractNet.result` is set once the contract is
over. Iterated rounds (re-issuing a cfp after rejections) are not provided: run a new
:class:`ContractNet`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import TypeAlias

import attrs

from foundation_trio.protocols.coordination import (
    AgentId,
    SessionClosed,
    check_agent_id,
    check_amount,
    check_seq,
    priority_key,
)

__all__ = [
    "Accept",
    "Cancel",
    "ContractNet",
    "ContractNetConfig",
    "ContractNetResult",
    "ContractNetStatus",
    "Effect",
    "Objective",
    "Proposal",
    "Reject",
]


class Objective(enum.Enum):
    """Which proposal value is best."""

    MINIMIZE = "minimize"
    """Costs: the lowest wins."""
    MAXIMIZE = "maximize"
    """Bids or quality: the highest wins."""


class ContractNetStatus(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    NO_PROPOSALS = "no_proposals"
    CANCELLED = "cancelled"


@attrs.frozen(slots=True)
class Proposal:
    """``agent`` proposes ``value``; ``content`` is opaque to the protocol."""

    agent: AgentId
    value: float
    seq: int
    received_at: float
    content: object = None


@attrs.frozen(slots=True)
class Accept:
    """Send ``accept-proposal`` to ``agent`` for ``proposal``."""

    agent: AgentId
    proposal: Proposal


@attrs.frozen(slots=True)
class Reject:
    """Send ``reject-proposal`` to ``agent`` with ``reason``."""

    agent: AgentId
    reason: str


@attrs.frozen(slots=True)
class Cancel:
    """Send ``cancel`` to the working contractor ``agent``."""

    agent: AgentId
    reason: str


Effect: TypeAlias = Accept | Reject | Cancel


@attrs.frozen(slots=True)
class ContractNetConfig:
    """``objective`` ranks proposals; ``standby`` proposals are held for reassignment."""

    objective: Objective = Objective.MINIMIZE
    standby: int = 1

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.objective, Objective):
            raise TypeError(
                f"ContractNetConfig.objective must be an Objective, got {self.objective!r}"
            )
        if isinstance(self.standby, bool) or not isinstance(self.standby, int) or self.standby < 0:
            raise ValueError(
                f"ContractNetConfig.standby must be an int >= 0, got {self.standby!r}"
            )


@attrs.frozen(slots=True)
class ContractNetResult:
    """The immutable outcome: status, the contractor and its result, everyone by outcome."""

    status: ContractNetStatus
    contractor: AgentId | None
    result: object
    proposals: tuple[Proposal, ...]
    refused: tuple[tuple[AgentId, str], ...]
    not_understood: tuple[AgentId, ...]
    late: tuple[AgentId, ...]
    invalid: tuple[AgentId, ...]
    failures: tuple[tuple[AgentId, str], ...]
    reason: str | None = None


class _Phase(enum.Enum):
    CALLING = "calling"
    EXECUTING = "executing"
    OVER = "over"


class ContractNet:
    """Manager side of one Contract Net interaction; see the module docstring."""

    def __init__(
        self,
        participants: Iterable[AgentId],
        *,
        deadline: float,
        config: ContractNetConfig | None = None,
    ) -> None:
        if isinstance(participants, str):
            raise TypeError("participants must be an iterable of agent ids, not a single str")
        self.participants = frozenset(check_agent_id(a, "participants item") for a in participants)
        if not self.participants:
            raise ValueError("participants must name at least one agent")
        self.deadline = check_amount(deadline, "deadline")
        self.config = config if config is not None else ContractNetConfig()
        self._phase = _Phase.CALLING
        self._proposals: dict[AgentId, Proposal] = {}
        self._answered: set[AgentId] = set()
        self._refused: list[tuple[AgentId, str]] = []
        self._not_understood: list[AgentId] = []
        self._late: list[AgentId] = []
        self._invalid: list[AgentId] = []
        self._failures: list[tuple[AgentId, str]] = []
        self._ranked: tuple[Proposal, ...] = ()
        self._standby: list[Proposal] = []
        self.contractor: AgentId | None = None
        self.result: ContractNetResult | None = None

    def _key(self, proposal: Proposal) -> tuple[float, int, AgentId]:
        value = proposal.value if self.config.objective is Objective.MAXIMIZE else -proposal.value
        return priority_key(value, proposal.seq, proposal.agent)

    def _check_open(self) -> None:
        if self._phase is _Phase.OVER:
            raise SessionClosed("the contract net interaction is over")

    def _first_answer(self, agent: AgentId) -> bool:
        check_agent_id(agent, "agent")
        if agent not in self.participants or agent in self._answered:
            return False
        self._answered.add(agent)
        return True

    def propose(
        self, agent: AgentId, value: object, *, seq: int, now: float, content: object = None
    ) -> tuple[Effect, ...]:
        """``agent`` proposes ``value``. A late proposal is rejected at once, unevaluated,
        even after the interaction is over (the result is not changed by it).

        Proposals from non-participants and second answers are ignored (no effect).
        """
        check_seq(seq, "seq")
        now = check_amount(now, "now")
        if not self._first_answer(agent):
            return ()
        if self._phase is not _Phase.CALLING or now > self.deadline:
            if self._phase is not _Phase.OVER:
                self._late.append(agent)
            return (Reject(agent, "late: proposals closed before it arrived"),)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self._invalid.append(agent)
            return ()
        self._proposals[agent] = Proposal(agent, float(value), seq, now, content)
        return ()

    def has_proposal(self, agent: AgentId) -> bool:
        """Whether a valid, in-time proposal from ``agent`` was recorded."""
        return agent in self._proposals

    def refuse(self, agent: AgentId, reason: str = "refused") -> tuple[Effect, ...]:
        """``agent`` refuses the cfp; it gets no accept or reject (it made no proposal)."""
        self._check_open()
        if self._first_answer(agent):
            self._refused.append((agent, str(reason)))
        return ()

    def not_understood(self, agent: AgentId) -> tuple[Effect, ...]:
        """``agent`` did not understand the cfp."""
        self._check_open()
        if self._first_answer(agent):
            self._not_understood.append(agent)
        return ()

    def close_proposals(self) -> tuple[Effect, ...]:
        """Evaluate the proposals received in time: accept the best, hold ``standby``,
        reject the rest (and every invalid proposal)."""
        self._check_open()
        if self._phase is not _Phase.CALLING:
            raise SessionClosed("proposals are already closed")
        self._ranked = tuple(sorted(self._proposals.values(), key=self._key))
        effects: list[Effect] = [Reject(a, "invalid proposal") for a in self._invalid]
        if not self._ranked:
            self._finish(ContractNetStatus.NO_PROPOSALS, None, "no valid proposal in time")
            return tuple(effects)
        best, *rest = self._ranked
        keep = self.config.standby
        self._standby = rest[:keep]
        effects.extend(Reject(p.agent, "not selected") for p in rest[keep:])
        effects.insert(0, Accept(best.agent, best))
        self.contractor = best.agent
        self._phase = _Phase.EXECUTING
        return tuple(effects)

    def _release_standby(self, reason: str) -> list[Effect]:
        effects: list[Effect] = [Reject(p.agent, reason) for p in self._standby]
        self._standby = []
        return effects

    def _check_contractor(self, agent: AgentId) -> None:
        self._check_open()
        if self._phase is not _Phase.EXECUTING or agent != self.contractor:
            raise ValueError(f"{agent!r} is not the working contractor ({self.contractor!r})")

    def done(self, agent: AgentId, result: object = None) -> tuple[Effect, ...]:
        """The contractor reports ``inform-done`` / ``inform-result``: the contract completes."""
        self._check_contractor(agent)
        effects = self._release_standby(f"contract completed by {agent!r}")
        self._finish(ContractNetStatus.COMPLETED, result, None)
        return tuple(effects)

    def failure(self, agent: AgentId, reason: str) -> tuple[Effect, ...]:
        """The contractor failed (``failure``, a crash or a timeout): reassign or fail."""
        self._check_contractor(agent)
        self._failures.append((agent, str(reason)))
        if self._standby:
            nxt = self._standby.pop(0)
            self.contractor = nxt.agent
            return (Accept(nxt.agent, nxt),)
        self._finish(
            ContractNetStatus.FAILED,
            None,
            f"contractor {agent!r} failed ({reason}) and no proposal is left to reassign to",
        )
        return ()

    def cancel(self, reason: str = "cancelled by the manager") -> tuple[Effect, ...]:
        """The manager cancels: the working contractor gets ``cancel``; while proposals are
        still open every valid proposer gets a reject; proposals held get their reject."""
        self._check_open()
        effects: list[Effect] = []
        if self._phase is _Phase.CALLING:
            effects.extend(Reject(a, reason) for a in sorted(self._proposals))
            effects.extend(Reject(a, reason) for a in self._invalid)
        else:
            assert self.contractor is not None
            effects.append(Cancel(self.contractor, reason))
            effects.extend(self._release_standby(reason))
        self._finish(ContractNetStatus.CANCELLED, None, reason)
        return tuple(effects)

    def _finish(self, status: ContractNetStatus, result: object, reason: str | None) -> None:
        self._phase = _Phase.OVER
        if status is not ContractNetStatus.COMPLETED:
            self.contractor = None
        self.result = ContractNetResult(
            status=status,
            contractor=self.contractor,
            result=result,
            proposals=self._ranked,
            refused=tuple(self._refused),
            not_understood=tuple(self._not_understood),
            late=tuple(self._late),
            invalid=tuple(self._invalid),
            failures=tuple(self._failures),
            reason=reason,
        )
