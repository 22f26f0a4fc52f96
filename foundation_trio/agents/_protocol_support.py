"""What the protocol drivers share: telemetry emission, deadlines, ids, result helpers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

import attrs
import trio

from ..runtime.node import current_node
from ..runtime.pid import Pid
from ..services import telemetry
from .messages import Refusal
from .rounds import Late, Participant, RoundResult

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


@attrs.define
class _WinsDeclared:
    """Per-node note that ``agents_wins_total`` is declared on the node's telemetry
    service ``service`` (a restarted service is a new object and gets it again)."""

    service: telemetry.Telemetry


def count_win(protocol: str, agent: str) -> None:
    """Emit ``agents.protocol.won`` for ``agent`` in ``protocol``, counted per agent.

    The event feeds the counter ``agents_wins_total`` (labels ``protocol`` and
    ``agent``), declared once per node, when the first win meets the node's telemetry
    service; read it with :func:`foundation_trio.telemetry.metrics`. On a node without
    the telemetry service nothing is emitted or counted.
    """
    node = current_node()
    service = node.find_extension(telemetry.Telemetry)
    if service is None:
        return
    declared = node.find_extension(_WinsDeclared)
    if declared is None or declared.service is not service:
        # Declaring is idempotent but costs a lookup and a definition comparison;
        # doing it on every win was a tenth of a unanimous vote round.
        telemetry.counter(
            WINS_METRIC,
            "Wins of each agent in the coordination protocols (auctions, Contract Net)",
            labels=("protocol", "agent"),
            event=WON,
        )
        if declared is None:
            node.set_extension(_WinsDeclared, _WinsDeclared(service))
        else:
            declared.service = service
    emit(WON, {"wins": 1}, {"protocol": protocol, "agent": agent})


def _names(pair: tuple[object, ...]) -> list[bool]:
    return [isinstance(x, str) and bool(x) for x in pair]


@attrs.frozen
class Roster:
    """The participants of a protocol run: their ids (as the results name them, in the
    caller's order) and how each is reached.

    A local agent id ``"a1"`` is named ``"a1"`` and reached through the node's agent
    directory; :func:`~.registry.agent_on` ``(node, id)`` is named ``"<id>@<node>"``
    and reached through the cluster (likewise a ``(name, node)`` pair, as
    ``"<name>@<node>"``, and a pid, as ``str(pid)``), exactly as
    :func:`~.rounds.run_round` names them.
    """

    ids: tuple[str, ...]
    targets: Mapping[str, Participant]

    def invite(self, ids: Iterable[str]) -> list[Participant]:
        """The round participants for ``ids`` (a subset of :attr:`ids`), in that order."""
        return [self.targets[i] for i in ids]


def roster(participants: object, what: str = "participants") -> Roster:
    """Check ``participants`` (a collection of agent ids, :func:`~.registry.agent_on`
    participants, ``(name, node)`` pairs or pids) and return their :class:`Roster`.

    Raises ``TypeError`` for one str or an entry of another kind, ``ValueError`` for
    none at all or one named twice. Whether a local agent id is registered is checked
    when it is asked (:class:`~.errors.AgentNotFound`), as before.
    """
    if isinstance(participants, str | bytes) or not isinstance(participants, Iterable):
        raise TypeError(
            f"{what} must be a collection of agent ids or agent_on(node, id), not {participants!r}"
        )
    found: dict[str, Participant] = {}
    for item in participants:
        if isinstance(item, str):
            entry = Participant(check_id(item, f"each of {what}"))
        elif isinstance(item, Participant):
            entry = Participant(check_id(item.id, f"each of {what}"), item.target)
        elif isinstance(item, Pid):
            entry = Participant(str(item), item)
        elif (
            isinstance(item, tuple)
            and len(item) == 2
            and all(isinstance(x, str) and x for x in item)
        ):
            entry = Participant(f"{item[0]}@{item[1]}", item)
        else:
            raise TypeError(
                f"each of {what} is an agent id (str), agent_on(node, id), a (name, node) "
                f"pair or a pid, got {item!r}"
            )
        if entry.id in found:
            raise ValueError(f"{what} name {entry.id!r} twice")
        found[entry.id] = entry
    if not found:
        raise ValueError(f"{what} must name at least one agent")
    return Roster(tuple(found), found)


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
