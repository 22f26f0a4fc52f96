"""Voting consensus among agents: the driver of :mod:`foundation_trio.protocols.voting`.

::

    result = await ft.agents.vote("deploy?", ["a", "b", "c"], options=("yes", "no"),
                                  rule="majority", timeout=2.0)
    result.status, result.choice        # ("decided", "yes")

One round asks every member for its ballot (the ``vote`` hook of a
:class:`~foundation_trio.agents.VoteRequest`), all at once, under one deadline.
Each answer is fed to the voting core as it arrives:

- a valid ballot is cast; a ballot naming no valid option is rejected
  (``agents.vote.rejected``) and the member counts as abstaining;
- a :class:`~foundation_trio.agents.Refusal` is an explicit abstention;
- a member that times out, crashes, is not running or answers late is lost: it
  abstains. Losing members ends the round at once when the quorum becomes
  impossible.

The round ends as soon as the core reports the result fixed (no completion of the
remaining ballots could change it), or at the deadline; the members still pending
then count as not voting. The thresholds are over the whole electorate; see
:mod:`foundation_trio.protocols.voting` for the rules, the quorum and Byzantine mode.
:func:`start_vote` runs the vote in a coordinator process: if it crashes, every
waiter gets :class:`~.errors.CoordinatorCrashed`.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import attrs
import trio

from ..protocols.voting import ABSTAIN, InvalidChoice, VotingSession
from . import telemetry as tm
from ._protocol_support import count_win
from .messages import VoteRequest
from .rounds import (
    Coordination,
    Late,
    Outcome,
    Participant,
    ParticipantLike,
    Refused,
    Responded,
    RoundResult,
    TimedOut,
    _invitees,
    run_round,
    start_round,
)
from .telemetry import emit

__all__ = ["ConsensusResult", "start_vote", "vote"]

_session_ids = itertools.count(1)


@attrs.frozen
class ConsensusResult:
    """The outcome of :func:`vote`.

    ``status``: ``"decided"`` (``choice`` won), ``"no_decision"`` or ``"no_quorum"``.
    ``tally``: ``(option, support)`` best first. ``ballots``, ``abstentions``
    (refusals, rejected ballots, lost members) and ``pending`` (not voted when the
    result was fixed) add up to ``electorate``. ``early``: fixed before every member
    voted. ``round``: every member's outcome. ``reason`` says why on failure.
    """

    session: str
    topic: str
    rule: str
    status: str
    choice: Hashable | None
    tally: tuple[tuple[Hashable, float], ...]
    ballots: int
    abstentions: int
    pending: int
    electorate: int
    early: bool
    round: RoundResult
    reason: str
    started_at: float
    finished_at: float

    @property
    def decided(self) -> bool:
        return self.status == "decided"


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"vote(): timeout must be seconds, got {timeout!r}")
    if not 0 <= timeout < math.inf:
        raise ValueError(f"vote(): timeout must be finite seconds >= 0, got {timeout!r}")
    return float(timeout)


async def vote(
    topic: str,
    participants: Sequence[ParticipantLike] | Mapping[str, Any],
    *,
    timeout: float,
    rule: str = "majority",
    options: Sequence[Hashable] = (),
    supermajority: tuple[int, int] = (2, 3),
    weights: Mapping[str, float] | None = None,
    threshold: float = 0.5,
    quorum: int = 0,
    byzantine_f: int | None = None,
    rng: random.Random | None = None,
    session: str | None = None,
) -> ConsensusResult:
    """Ask ``participants`` (the electorate) to vote on ``topic`` and count per ``rule``
    (``majority``, ``supermajority``, ``unanimous`` or ``weighted``).

    Returns a :class:`ConsensusResult` once the result is fixed or the ``timeout``
    has run out. Raises before asking anyone: :class:`~.errors.AgentNotFound` for
    an unregistered agent id, :class:`~foundation_trio.protocols.voting.InsufficientParticipants`
    (Byzantine mode with ``n < 3f + 1``, naming both numbers), :class:`TypeError` /
    :class:`ValueError` for bad arguments. Cancelling the caller cancels every
    question and leaves no task behind.
    """
    if not isinstance(topic, str):
        raise TypeError(f"vote(): topic must be a str, got {topic!r}")
    seconds = _check_timeout(timeout)
    invitees = _invitees(participants, None)
    session_id = session if session is not None else f"vote-{next(_session_ids)}"
    counting = VotingSession(
        session_id,
        [i.id for i in invitees],
        rule,
        options=options,
        supermajority=supermajority,
        weights=weights,
        threshold=threshold,
        quorum=quorum,
        byzantine_f=byzantine_f,
    )
    started_at = trio.current_time()
    deadline = started_at + seconds
    emit(
        tm.CONSENSUS_STARTED,
        {"electorate": len(invitees), "quorum": quorum},
        {"session": session_id, "topic": topic, "rule": counting.rule.value},
    )

    def feed(outcomes: Sequence[Outcome]) -> bool:
        outcome = outcomes[-1]
        member = outcome.participant
        if isinstance(outcome, Responded):
            try:
                counting.cast(member, outcome.value)
            except InvalidChoice as exc:
                emit(
                    tm.VOTE_REJECTED,
                    {},
                    {"session": session_id, "agent": member, "reason": str(exc)},
                )
                counting.cast(member, ABSTAIN)
            else:
                emit(
                    tm.VOTE_CAST,
                    {},
                    {"session": session_id, "agent": member, "choice": outcome.value},
                )
        elif isinstance(outcome, Refused):
            counting.cast(member, ABSTAIN)
        else:
            if isinstance(outcome, Late):
                emit(
                    tm.VOTE_REJECTED,
                    {},
                    {"session": session_id, "agent": member, "reason": "after the deadline"},
                )
            counting.lose(member)
        return counting.result is not None

    request = VoteRequest(topic=topic, options=tuple(options), round_id=session_id)
    invited = [Participant(i.id, i.target) for i in invitees]
    round_result = await run_round(
        invited, request, deadline=deadline, until=feed, rng=rng, name=session_id
    )
    timed_out = round_result.participants(TimedOut)
    final = counting.close()
    if timed_out and not final.early:
        emit(
            tm.CONSENSUS_TIMEOUT,
            {"timed_out": len(timed_out)},
            {"session": session_id, "topic": topic},
        )
    finished_at = trio.current_time()
    reason = ""
    if final.status == "decided":
        for member, ballot in counting.ballots.items():
            if ballot is not ABSTAIN and ballot == final.choice:
                count_win("vote", member)
        emit(
            tm.CONSENSUS_REACHED,
            {"ballots": final.ballots, "duration": finished_at - started_at},
            {"session": session_id, "topic": topic, "choice": final.choice},
        )
    else:
        reason = (
            f"{final.ballots} ballots of {final.electorate} members, quorum {quorum}"
            if final.status == "no_quorum"
            else f"no option met the {counting.rule.value} rule over {final.electorate} members"
        )
        emit(
            tm.CONSENSUS_FAILED,
            {"ballots": final.ballots, "duration": finished_at - started_at},
            {"session": session_id, "topic": topic, "status": final.status, "reason": reason},
        )
    return ConsensusResult(
        session=session_id,
        topic=topic,
        rule=counting.rule.value,
        status=final.status,
        choice=final.choice,
        tally=final.tally,
        ballots=final.ballots,
        abstentions=final.abstentions,
        pending=final.pending,
        electorate=final.electorate,
        early=final.early,
        round=round_result,
        reason=reason,
        started_at=started_at,
        finished_at=finished_at,
    )


def start_vote(
    topic: str, participants: Sequence[ParticipantLike], **kwargs: Any
) -> Coordination[ConsensusResult]:
    """:func:`vote` in a coordinator process; returns its handle at once.

    Any number of tasks may ``await handle.result()``; if the coordinator crashes or
    is stopped before the result, each gets :class:`~.errors.CoordinatorCrashed`.
    Arguments are those of :func:`vote`; they are checked when the coordinator runs.
    """

    async def job() -> ConsensusResult:
        return await vote(topic, participants, **kwargs)

    return start_round(job, what=f"the vote on {topic!r}")
