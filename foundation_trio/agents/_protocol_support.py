"""What the protocol drivers share: telemetry emission, deadlines, ids, result helpers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import trio

from ..runtime.node import current_node
from ..services import telemetry
from .messages import Refusal
from .rounds import Late, RoundResult

_ids = itertools.count(1)


def new_id(kind: str) -> str:
    """A session id for a protocol run when the caller gave none."""
    return f"{kind}-{next(_ids)}"


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what} must be a non-empty str, got {value!r}")
    return value


def check_timeout(value: object, what: str) -> float:
    """Seconds > 0 and finite; ``TypeError`` / ``ValueError`` naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be seconds (a number), got {value!r}")
    if not 0 < value < math.inf:
        raise ValueError(f"{what} must be finite seconds > 0, got {value!r}")
    return float(value)


def deadline_in(seconds: float) -> float:
    return trio.current_time() + seconds


def emit(event: str, measurements: Mapping[str, float], metadata: Mapping[str, object]) -> None:
    """Emit a protocol event through the node's telemetry (a no-op without the service)."""
    telemetry.execute(event, measurements, metadata)


WON = "agents.protocol.won"
WINS_METRIC = "agents_wins_total"


def count_win(protocol: str, agent: str) -> None:
    """Emit ``agents.protocol.won`` for ``agent`` in ``protocol``, counted per agent.

    The event feeds the counter ``agents_wins_total`` (labels ``protocol`` and
    ``agent``), declared here on first use; read it with
    :func:`foundation_trio.telemetry.metrics`. On a node without the telemetry service
    nothing is emitted or counted.
    """
    node = current_node()
    if node.find_extension(telemetry.Telemetry) is None:
        return
    telemetry.counter(
        WINS_METRIC,
        "Wins of each agent in the coordination protocols (auctions, Contract Net)",
        labels=("protocol", "agent"),
        event=WON,
    )
    emit(WON, {"wins": 1}, {"protocol": protocol, "agent": agent})


def by_outcome(round_result: RoundResult) -> dict[str, list[str]]:
    """``{"Responded": [...], "TimedOut": [...], ...}`` for one round, in invitation order."""
    found: dict[str, list[str]] = {}
    for outcome in round_result.outcomes:
        found.setdefault(type(outcome).__name__, []).append(outcome.participant)
    return found


def late_answers(round_result: RoundResult) -> list[Late]:
    """The round's late answers that are not refusals, by receipt time then id.

    A late refusal offers nothing, so the drivers do not record it as a late bid.
    """
    found = [
        o
        for o in round_result.outcomes
        if isinstance(o, Late) and not isinstance(o.value, Refusal)
    ]
    return sorted(found, key=lambda o: (o.received_at, o.participant))
