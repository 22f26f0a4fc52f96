"""The telemetry events of the agents layer: their names, and the one place they are sent.

Every event goes through :func:`foundation_trio.telemetry.execute` (a no-op on a node
without the telemetry service). Measurements are numbers; metadata always names the
subject (``agent``, ``round``, ``session``, ``variable``). The full list, with
their measurements and metadata, is in ``docs/agents.md`` ("Telemetry").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ..services import telemetry

AGENT_STARTED: Final = "agents.agent.started"
AGENT_RESTARTED: Final = "agents.agent.restarted"
AGENT_CRASHED: Final = "agents.agent.crashed"
AGENT_STOPPED: Final = "agents.agent.stopped"
AGENT_FAILED: Final = "agents.agent.failed"
AGENT_UNHEALTHY: Final = "agents.agent.unhealthy"
PROTOCOL_WON: Final = "agents.protocol.won"
"""Emitted through ``_protocol_support.count_win`` (shared with the protocol drivers);
it feeds the counter ``agents_wins_total`` (labels ``protocol``, ``agent``)."""

ROUND_STARTED: Final = "agents.round.started"
ROUND_ANSWERED: Final = "agents.round.answered"
ROUND_TIMED_OUT: Final = "agents.round.timed_out"
ROUND_CRASHED: Final = "agents.round.crashed"
ROUND_STOPPED: Final = "agents.round.stopped"

VARIABLE_UPDATED: Final = "agents.variable.updated"

COORDINATE_STARTED: Final = "agents.coordinate.started"
COORDINATE_COMMITTED: Final = "agents.coordinate.committed"
COORDINATE_FAILED: Final = "agents.coordinate.failed"

CONSENSUS_STARTED: Final = "agents.consensus.started"
VOTE_CAST: Final = "agents.vote.cast"
VOTE_REJECTED: Final = "agents.vote.rejected"
CONSENSUS_TIMEOUT: Final = "agents.consensus.timeout"
CONSENSUS_REACHED: Final = "agents.consensus.reached"
CONSENSUS_FAILED: Final = "agents.consensus.failed"

EVENTS: Final = (
    AGENT_STARTED,
    AGENT_RESTARTED,
    AGENT_CRASHED,
    AGENT_STOPPED,
    AGENT_FAILED,
    AGENT_UNHEALTHY,
    PROTOCOL_WON,
    ROUND_STARTED,
    ROUND_ANSWERED,
    ROUND_TIMED_OUT,
    ROUND_CRASHED,
    ROUND_STOPPED,
    VARIABLE_UPDATED,
    COORDINATE_STARTED,
    COORDINATE_COMMITTED,
    COORDINATE_FAILED,
    CONSENSUS_STARTED,
    VOTE_CAST,
    VOTE_REJECTED,
    CONSENSUS_TIMEOUT,
    CONSENSUS_REACHED,
    CONSENSUS_FAILED,
)
"""Every event this layer emits (the agents core; the protocol drivers add theirs)."""


METRICS: Final = (
    "agents_answer_latency_seconds",
    "agents_timeouts_total",
    "agents_round_crashes_total",
    "agents_restarts_total",
)
"""The metrics :func:`declare_metrics` declares, all labelled by ``agent``."""


def declare_metrics() -> None:
    """Declare this layer's per-agent metrics on the calling node, fed by its events:

    - ``agents_answer_latency_seconds`` (histogram): seconds from a round's start to
      the agent's answer (``agents.round.answered``);
    - ``agents_timeouts_total`` (counter): rounds the agent did not answer in time
      (``agents.round.timed_out``);
    - ``agents_round_crashes_total`` (counter): rounds in which it failed instead of
      answering (``agents.round.crashed``);
    - ``agents_restarts_total`` (counter): restarts (``agents.agent.restarted``).

    Done by the agent system when it starts on a node with the telemetry service;
    declaring again does nothing. Read them with ``ft.telemetry.metrics()``.
    """
    labels = ("agent",)
    telemetry.histogram(
        "agents_answer_latency_seconds",
        "Seconds from the start of a round to the agent's answer",
        labels=labels,
        event=ROUND_ANSWERED,
        measurement="latency",
    )
    telemetry.counter(
        "agents_timeouts_total",
        "Rounds the agent did not answer by the deadline",
        labels=labels,
        event=ROUND_TIMED_OUT,
    )
    telemetry.counter(
        "agents_round_crashes_total",
        "Rounds in which the agent failed instead of answering",
        labels=labels,
        event=ROUND_CRASHED,
    )
    telemetry.counter(
        "agents_restarts_total", "Restarts of the agent", labels=labels, event=AGENT_RESTARTED
    )


def emit(name: str, measurements: Mapping[str, float], metadata: Mapping[str, object]) -> None:
    """Send one event of this layer through the node's telemetry."""
    telemetry.execute(name, measurements, metadata)
