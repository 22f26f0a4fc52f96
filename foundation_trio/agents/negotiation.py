"""Negotiation among agents: Contract Net (FIPA) and alternating offers.

**Contract Net** (:func:`contract_net`; core: :mod:`foundation_trio.protocols.contract_net`).
The manager sends a :class:`CallForProposals` to every participant under one deadline.
The ``propose`` hook answers with a number (the proposal's value: a cost by default),
a :class:`Propose` (value and content), a ``Refusal`` (FIPA refuse) or a
:class:`NotUnderstood`. The best proposal is accepted: the contractor gets a
:class:`ProposalAccepted` and its ``perform`` hook does the task and returns the result
(inform-result); a ``Refusal``, a crash or running past ``execution_timeout`` is a FIPA
failure, and the task goes to the next best proposal held in reserve (``standby``).
Every other proposer gets exactly one :class:`ProposalRejected` (``proposal_rejected``
hook), late proposers included (their proposals are never evaluated). If the caller is
cancelled while the task runs, the contractor gets a :class:`CancelTask`
(``cancel_task`` hook) and the reserve its rejects, within ``notify_timeout``, before
the cancellation propagates.

**Alternating offers** (:func:`negotiate`; core:
:mod:`foundation_trio.protocols.negotiation`). In turn, each party is asked for an offer
(:class:`OfferRequest`, ``make_offer`` hook: a value of the outcome space, or
:class:`EndNegotiation`), and the others answer it (:class:`OfferResponse`,
``respond_to_offer`` hook: ``"accept"`` / ``True``, ``"reject"`` / ``False``, ``"end"``
or a :class:`~foundation_trio.protocols.negotiation.Response`). A crash breaks the
negotiation with the error recorded; silence counts as a reject (or, for the proposer,
as losing its turn).

Telemetry (metadata holds ``cfp_id`` or ``negotiation_id``):

- ``agents.contract_net.started`` ``{participants}`` + ``task``
- ``agents.contract_net.proposed`` ``{value}`` + ``agent``, ``seq``
- ``agents.contract_net.refused`` ``{}`` + ``agent``, ``reason`` (refuse,
  not-understood, invalid)
- ``agents.contract_net.accepted`` ``{value}`` + ``agent``
- ``agents.contract_net.rejected`` ``{}`` + ``agent``, ``reason``
- ``agents.contract_net.contractor_failed`` ``{}`` + ``agent``, ``reason``
- ``agents.contract_net.completed`` ``{duration}`` + ``contractor``;
  ``agents.contract_net.failed`` ``{duration}`` + ``status``, ``reason`` (no proposals,
  every contractor failed, cancelled)
- ``agents.negotiation.started`` ``{parties}``
- ``agents.negotiation.offer`` ``{round}`` + ``proposer``, ``offer`` (or ``note`` when
  the turn was lost)
- ``agents.negotiation.agreed`` ``{rounds, duration}`` + ``agreement``;
  ``agents.negotiation.broken`` / ``agents.negotiation.timed_out`` ``{rounds,
  duration}`` + ``reason``, ``ended_by``
- ``agents.protocol.won`` ``{wins: 1}`` + ``protocol="contract_net"``, ``agent`` for the
  contractor that completed the task.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, ClassVar

import attrs
import trio

from ..cluster import wire
from ..protocols.contract_net import (
    Accept,
    Cancel,
    ContractNet,
    ContractNetConfig,
    ContractNetResult,
    ContractNetStatus,
    Effect,
    Objective,
    Reject,
)
from ..protocols.negotiation import (
    AlternatingOffers,
    Choices,
    Interval,
    NegotiationResult,
    NegotiationStatus,
    OutcomeSpace,
    Response,
)
from ._protocol_support import (
    Roster,
    check_id,
    check_timeout,
    count_win,
    deadline_in,
    emit,
    new_id,
    roster,
)
from .messages import Question, Refusal
from .rounds import Crashed, Late, Participant, Refused, Responded, RoundResult, run_round

__all__ = [
    "CallForProposals",
    "CancelTask",
    "ContractNetReport",
    "EndNegotiation",
    "NegotiationReport",
    "NotUnderstood",
    "OfferRequest",
    "OfferResponse",
    "ProposalAccepted",
    "ProposalRejected",
    "Propose",
    "contract_net",
    "negotiate",
]


# -- Contract Net ------------------------------------------------------------------------


@attrs.frozen
class CallForProposals(Question):
    """FIPA cfp: propose for ``task`` (``propose`` hook)."""

    hook: ClassVar[str] = "propose"
    cfp_id: str
    task: Any


@attrs.frozen
class Propose:
    """A proposal with content: ``value`` is ranked, ``content`` travels with it."""

    value: float
    content: Any = None


@attrs.frozen
class NotUnderstood:
    """FIPA not-understood, answered to a cfp."""

    reason: str = ""


@attrs.frozen
class ProposalAccepted(Question):
    """FIPA accept-proposal: perform ``task`` as proposed (``perform`` hook); the answer
    is the result. A ``Refusal``, a crash or a timeout is a FIPA failure."""

    hook: ClassVar[str] = "perform"
    cfp_id: str
    task: Any
    value: float
    content: Any = None


@attrs.frozen
class ProposalRejected(Question):
    """FIPA reject-proposal (``proposal_rejected`` hook; its answer is ignored)."""

    hook: ClassVar[str] = "proposal_rejected"
    cfp_id: str
    reason: str


@attrs.frozen
class CancelTask(Question):
    """FIPA cancel: stop working on the task (``cancel_task`` hook; answer ignored)."""

    hook: ClassVar[str] = "cancel_task"
    cfp_id: str
    reason: str


@attrs.frozen
class ContractNetReport:
    """A Contract Net interaction's record: the core's result and every round run."""

    cfp_id: str
    result: ContractNetResult
    rounds: tuple[RoundResult, ...]
    notified: tuple[tuple[str, str], ...]
    started_at: float
    finished_at: float

    @property
    def status(self) -> ContractNetStatus:
        return self.result.status

    @property
    def contractor(self) -> str | None:
        return self.result.contractor


def _meta(cfp_id: str, **extra: object) -> dict[str, object]:
    return {"cfp_id": cfp_id, **extra}


class _Manager:
    """Applies the core's effects: accepts run the task, rejects and cancels notify."""

    def __init__(
        self,
        cfp_id: str,
        task: Any,
        net: ContractNet,
        team: Roster,
        execution: float,
        notify: float,
    ) -> None:
        self.cfp_id = cfp_id
        self.team = team
        self.task = task
        self.net = net
        self.execution = execution
        self.notify = notify
        self.rounds: list[RoundResult] = []
        self.notified: list[tuple[str, str]] = []

    async def deliver(self, effects: Sequence[Effect]) -> None:
        """Send rejects and cancels (concurrently, one short deadline)."""
        messages: dict[str, Question] = {}
        for effect in effects:
            if isinstance(effect, Reject):
                emit(
                    "agents.contract_net.rejected",
                    {},
                    _meta(self.cfp_id, agent=effect.agent, reason=effect.reason),
                )
                messages[effect.agent] = ProposalRejected(cfp_id=self.cfp_id, reason=effect.reason)
                self.notified.append((effect.agent, "reject-proposal"))
            elif isinstance(effect, Cancel):
                messages[effect.agent] = CancelTask(cfp_id=self.cfp_id, reason=effect.reason)
                self.notified.append((effect.agent, "cancel"))
        if messages:
            self.rounds.append(
                await run_round(
                    self.team.invite(messages),
                    messages.__getitem__,
                    deadline=deadline_in(self.notify),
                    name=f"{self.cfp_id}.notify",
                )
            )

    async def run(self, effects: Sequence[Effect]) -> None:
        """Deliver ``effects``; while one holds an accept, perform and feed the outcome."""
        while True:
            accept = next((e for e in effects if isinstance(e, Accept)), None)
            others = [e for e in effects if not isinstance(e, Accept)]
            if accept is None:
                await self.deliver(others)
                return
            emit(
                "agents.contract_net.accepted",
                {"value": accept.proposal.value},
                _meta(self.cfp_id, agent=accept.agent),
            )
            self.notified.append((accept.agent, "accept-proposal"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.deliver, others)
                performed = await run_round(
                    self.team.invite([accept.agent]),
                    ProposalAccepted(
                        cfp_id=self.cfp_id,
                        task=self.task,
                        value=accept.proposal.value,
                        content=accept.proposal.content,
                    ),
                    deadline=deadline_in(self.execution),
                    name=f"{self.cfp_id}.perform",
                )
            self.rounds.append(performed)
            outcome = performed.outcomes[0]
            if isinstance(outcome, Responded):
                effects = self.net.done(accept.agent, outcome.value)
                continue
            reason = _failure(outcome)
            emit(
                "agents.contract_net.contractor_failed",
                {},
                _meta(self.cfp_id, agent=accept.agent, reason=reason),
            )
            effects = self.net.failure(accept.agent, reason)


def _failure(outcome: object) -> str:
    if isinstance(outcome, Refused):
        return f"failure: {outcome.reason}"
    if isinstance(outcome, Crashed):
        return f"crashed: {outcome.error!r}"
    return "timed out"


async def contract_net(
    participants: Iterable[str | Participant],
    task: Any,
    *,
    timeout: float = 5.0,
    execution_timeout: float = 30.0,
    notify_timeout: float = 1.0,
    objective: Objective = Objective.MINIMIZE,
    standby: int = 1,
    late_grace: float = 0.0,
    cfp_id: str | None = None,
    rng: random.Random | None = None,
) -> ContractNetReport:
    """Run one Contract Net interaction for ``task``; see the module docstring.

    ``timeout``: seconds to the proposal deadline. ``objective``: lowest value wins
    (costs, the default) or highest. ``standby``: how many runner-up proposals are
    held for reassignment when the contractor fails. Answers after the deadline (within
    ``late_grace``) are rejected at once as late, never evaluated.

    Returns a :class:`ContractNetReport` whose status is ``COMPLETED`` (with the
    contractor's result), ``FAILED`` (every contractor tried failed),
    ``NO_PROPOSALS`` or ``CANCELLED``. Raises :class:`~.errors.AgentNotFound` for an
    unknown agent, ``TypeError`` / ``ValueError`` for bad arguments.
    """
    team = roster(participants)
    ids = list(team.ids)
    seconds = check_timeout(timeout, "timeout")
    execution = check_timeout(execution_timeout, "execution_timeout")
    notify = check_timeout(notify_timeout, "notify_timeout")
    config = ContractNetConfig(objective=objective, standby=standby)
    cfp_id = new_id("cfp") if cfp_id is None else check_id(cfp_id, "cfp_id")
    started = trio.current_time()
    deadline = started + seconds
    net = ContractNet(ids, deadline=deadline, config=config)
    manager = _Manager(cfp_id, task, net, team, execution, notify)
    emit("agents.contract_net.started", {"participants": len(ids)}, _meta(cfp_id, task=repr(task)))
    calls = await run_round(
        team.invite(ids),
        CallForProposals(cfp_id=cfp_id, task=task),
        deadline=deadline,
        late_grace=late_grace,
        rng=rng,
        name=f"{cfp_id}.cfp",
    )
    manager.rounds.append(calls)
    immediate: list[Effect] = []
    for outcome in sorted(calls.outcomes, key=_receipt):
        agent = outcome.participant
        if isinstance(outcome, Refused):
            net.refuse(agent, outcome.reason)
            emit(
                "agents.contract_net.refused",
                {},
                _meta(cfp_id, agent=agent, reason=f"refuse: {outcome.reason}"),
            )
        elif isinstance(outcome, Responded) or (
            isinstance(outcome, Late) and not isinstance(outcome.value, Refusal)
        ):
            value = outcome.value
            if isinstance(value, NotUnderstood):
                net.not_understood(agent)
                emit(
                    "agents.contract_net.refused",
                    {},
                    _meta(cfp_id, agent=agent, reason="not-understood"),
                )
                continue
            content = value.content if isinstance(value, Propose) else None
            number = value.value if isinstance(value, Propose) else value
            seq = (
                outcome.seq
                if isinstance(outcome, Responded)
                else len(calls.outcomes) + ids.index(agent)
            )
            effects = net.propose(agent, number, seq=seq, now=outcome.received_at, content=content)
            if isinstance(outcome, Responded) and not effects and net.has_proposal(agent):
                emit(
                    "agents.contract_net.proposed",
                    {"value": float(number)},
                    _meta(cfp_id, agent=agent, seq=seq),
                )
            elif isinstance(outcome, Responded) and not effects:
                emit(
                    "agents.contract_net.refused",
                    {},
                    _meta(cfp_id, agent=agent, reason="invalid proposal"),
                )
            immediate.extend(effects)
    try:
        await manager.run([*immediate, *net.close_proposals()])
    finally:
        if net.result is None:
            # Cancelled (or failed) while the task ran: FIPA cancel to the contractor
            # and the rejects still owed, shielded but bounded by notify_timeout.
            with trio.CancelScope(shield=True):
                await manager.deliver(net.cancel("the manager was cancelled"))
                _emit_contract_end(cfp_id, net.result, started)
    assert net.result is not None
    report = ContractNetReport(
        cfp_id,
        net.result,
        tuple(manager.rounds),
        tuple(manager.notified),
        started,
        trio.current_time(),
    )
    _emit_contract_end(cfp_id, net.result, started)
    return report


def _receipt(outcome: object) -> tuple[float, int]:
    if isinstance(outcome, Responded | Refused):
        return (outcome.received_at, outcome.seq)
    if isinstance(outcome, Late):
        return (outcome.received_at, 1 << 30)
    return (math.inf, 0)


def _emit_contract_end(cfp_id: str, result: ContractNetResult | None, started: float) -> None:
    assert result is not None
    duration = trio.current_time() - started
    if result.status is ContractNetStatus.COMPLETED:
        assert result.contractor is not None
        emit(
            "agents.contract_net.completed",
            {"duration": duration},
            _meta(cfp_id, contractor=result.contractor),
        )
        count_win("contract_net", result.contractor)
    else:
        emit(
            "agents.contract_net.failed",
            {"duration": duration},
            _meta(cfp_id, status=result.status.value, reason=result.reason or ""),
        )


# -- alternating offers ------------------------------------------------------------------


@attrs.frozen
class EndNegotiation:
    """Answered to an offer request or an offer: end (break) the negotiation."""

    reason: str = ""


@attrs.frozen
class OfferRequest(Question):
    """Your turn: offer a value of ``space`` (``make_offer`` hook). ``history`` holds the
    earlier rounds as ``(proposer, offer)`` pairs."""

    hook: ClassVar[str] = "make_offer"
    negotiation_id: str
    round: int
    space: OutcomeSpace
    history: tuple[tuple[str, Any], ...]


@attrs.frozen
class OfferResponse(Question):
    """``proposer`` offers ``offer``: accept, reject or end (``respond_to_offer`` hook)."""

    hook: ClassVar[str] = "respond_to_offer"
    negotiation_id: str
    round: int
    proposer: str
    offer: Any
    space: OutcomeSpace


@attrs.frozen
class NegotiationReport:
    """A negotiation's record: the core's result, every round run, trio times."""

    negotiation_id: str
    result: NegotiationResult
    rounds: tuple[RoundResult, ...]
    started_at: float
    finished_at: float

    @property
    def status(self) -> NegotiationStatus:
        return self.result.status

    @property
    def agreement(self) -> Any:
        return self.result.agreement


_RESPONSES: dict[Hashable, Response] = {
    True: Response.ACCEPT,
    False: Response.REJECT,
    "accept": Response.ACCEPT,
    "reject": Response.REJECT,
    "end": Response.END,
}


def _as_response(value: object) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, EndNegotiation):
        return Response.END
    try:
        return _RESPONSES.get(value, Response.REJECT)
    except TypeError:
        return Response.REJECT


async def negotiate(
    parties: Sequence[str | Participant],
    space: OutcomeSpace,
    *,
    round_timeout: float = 1.0,
    timeout: float = math.inf,
    max_rounds: int = 100,
    negotiation_id: str | None = None,
) -> NegotiationReport:
    """Run an alternating-offers negotiation among ``parties`` (in turn order) over
    ``space`` (:class:`~foundation_trio.protocols.negotiation.Choices` or
    :class:`~foundation_trio.protocols.negotiation.Interval`).

    Each question is one round with a deadline ``round_timeout`` seconds away;
    ``timeout`` (from now) and ``max_rounds`` bound the whole negotiation, reaching
    either is a ``TIMED_OUT`` result. See the module docstring for the answers.
    """
    if isinstance(parties, str) or not isinstance(parties, Sequence):
        raise TypeError("parties must be a sequence of agent ids (the turn order)")
    team = roster(parties, "parties")
    ids = list(team.ids)
    seconds = check_timeout(round_timeout, "round_timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be seconds > 0 (or math.inf), got {timeout!r}")
    if not isinstance(space, Choices | Interval):
        raise TypeError(f"space must be Choices or Interval, got {type(space).__name__}")
    negotiation_id = (
        new_id("negotiation")
        if negotiation_id is None
        else check_id(negotiation_id, "negotiation_id")
    )
    started = trio.current_time()
    talk = AlternatingOffers(ids, space, deadline=started + timeout, max_rounds=max_rounds)
    meta = {"negotiation_id": negotiation_id}
    emit("agents.negotiation.started", {"parties": len(ids)}, meta)
    rounds: list[RoundResult] = []
    history: list[tuple[str, Any]] = []
    result: NegotiationResult | None = None
    while result is None:
        proposer, number = talk.proposer, talk.round
        asked = await run_round(
            team.invite([proposer]),
            OfferRequest(
                negotiation_id=negotiation_id, round=number, space=space, history=tuple(history)
            ),
            deadline=min(deadline_in(seconds), talk.deadline),
            name=f"{negotiation_id}.offer{number}",
        )
        rounds.append(asked)
        now = trio.current_time()
        outcome = asked.outcomes[0]
        if isinstance(outcome, Crashed):
            result = talk.fail(proposer, repr(outcome.error), now=now)
            continue
        if isinstance(outcome, Responded) and isinstance(outcome.value, EndNegotiation):
            result = talk.end(proposer, now=now)
            continue
        if isinstance(outcome, Responded):
            result = talk.offer(proposer, outcome.value, now=now)
        else:
            result = talk.skip(proposer, type(outcome).__name__.lower(), now=now)
        if result is not None:
            break
        if not talk.awaiting_responses:
            emit(
                "agents.negotiation.offer",
                {"round": number},
                {**meta, "proposer": proposer, "note": "turn lost"},
            )
            history.append((proposer, None))
            continue
        offer = talk.current_offer
        emit(
            "agents.negotiation.offer",
            {"round": number},
            {**meta, "proposer": proposer, "offer": offer},
        )
        history.append((proposer, offer))
        answered = await run_round(
            team.invite(talk.responders),
            OfferResponse(
                negotiation_id=negotiation_id,
                round=number,
                proposer=proposer,
                offer=offer,
                space=space,
            ),
            deadline=min(deadline_in(seconds), talk.deadline),
            name=f"{negotiation_id}.respond{number}",
        )
        rounds.append(answered)
        now = trio.current_time()
        crashed = [o for o in answered.outcomes if isinstance(o, Crashed)]
        if crashed:
            result = talk.fail(crashed[0].participant, repr(crashed[0].error), now=now)
            continue
        responses = {o.participant: _as_response(o.value) for o in answered.responses()}
        result = talk.respond(responses, now=now)
    report = NegotiationReport(negotiation_id, result, tuple(rounds), started, trio.current_time())
    duration = report.finished_at - started
    if result.status is NegotiationStatus.AGREED:
        emit(
            "agents.negotiation.agreed",
            {"rounds": result.rounds, "duration": duration},
            {**meta, "agreement": result.agreement},
        )
    else:
        emit(
            f"agents.negotiation.{result.status.value}",
            {"rounds": result.rounds, "duration": duration},
            {**meta, "reason": result.reason or "", "ended_by": result.ended_by},
        )
    return report


# The questions and answers cross nodes as registered wire records, with the outcome
# spaces they carry, so agents on other nodes take part the same way.
for _record in (
    CallForProposals,
    Propose,
    NotUnderstood,
    ProposalAccepted,
    ProposalRejected,
    CancelTask,
    EndNegotiation,
    OfferRequest,
    OfferResponse,
    Choices,
    Interval,
):
    wire.register(_record, name=f"ft.agents.{_record.__name__}")
