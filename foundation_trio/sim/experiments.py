"""The HyParView/Plumtree papers' experiments, on top of :class:`Simulator`.

* :func:`build_overlay`: sequential joins, each through a contact picked uniformly among
  the nodes already in, then ``stabilisation_rounds`` membership rounds.
* :func:`measure_steady_state`: broadcasts from random sources, one at a time, on a
  stable overlay; RMR and LDH after the first ``warmup`` broadcasts have shaped the tree.
* :func:`measure_failure`: crash a fraction of the nodes at once, broadcast at once and
  measure the reliability of those first broadcasts with no membership round run (only
  the protocols' reactive repair: failed sends, NEIGHBOR promotions, graft timers); then
  run membership rounds, each followed by one probe broadcast, until a probe reaches
  every survivor and the active-view graph of the survivors is connected.

Every figure comes from the simulated run; nothing is estimated.
"""

from __future__ import annotations

import math
import statistics

import attrs

from foundation_trio.sim.simulator import Simulator

__all__ = [
    "FailureResult",
    "SteadyStateResult",
    "build_overlay",
    "measure_failure",
    "measure_steady_state",
]


def build_overlay(
    sim: Simulator, size: int, join_interval: float = 0.05, stabilisation_rounds: int = 10
) -> list[str]:
    """Add ``size`` nodes joining one after another, then stabilise; return their ids.

    A new node joins every ``join_interval`` virtual seconds (joins may overlap in flight,
    as in a real roll-out); the first node is the initial contact.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size!r}")
    ids = [sim.add_node() for _ in range(size)]
    sim.node(ids[0]).joined = True
    for position in range(1, size):
        contact = ids[sim.rng.randrange(position)]
        sim.join(ids[position], contact)
        sim.run_until(sim.now + join_interval)
    sim.run_until_quiet()
    for _ in range(stabilisation_rounds):
        sim.run_membership_round()
        sim.run_until_quiet()
    return ids


@attrs.frozen(slots=True)
class SteadyStateResult:
    """RMR, LDH and reliability of broadcasts on a stable overlay."""

    broadcasts: int
    reliability_min: float
    rmr_mean: float
    rmr_max: float
    ldh_mean: float
    ldh_max: int


def measure_steady_state(
    sim: Simulator, broadcasts: int = 20, warmup: int = 5
) -> SteadyStateResult:
    """Send ``warmup + broadcasts`` broadcasts one at a time from random live nodes.

    Only the last ``broadcasts`` count: the first ones flood and prune the eager graph
    into a tree. Each broadcast runs to quiescence before the next starts.
    """
    live = [node.node_id for node in sim.live_nodes() if node.joined]
    rmrs: list[float] = []
    ldhs: list[int] = []
    reliabilities: list[float] = []
    for number in range(warmup + broadcasts):
        message_id = sim.broadcast(sim.rng.choice(live))
        sim.run_until_quiet()
        if number >= warmup:
            rmrs.append(sim.rmr(message_id))
            ldhs.append(sim.last_delivery_hop(message_id))
            reliabilities.append(sim.reliability(message_id))
    return SteadyStateResult(
        broadcasts=broadcasts,
        reliability_min=min(reliabilities),
        rmr_mean=statistics.fmean(rmrs),
        rmr_max=max(rmrs),
        ldh_mean=statistics.fmean(ldhs),
        ldh_max=max(ldhs),
    )


@attrs.frozen(slots=True)
class FailureResult:
    """Outcome of one simultaneous-failure experiment.

    ``first_reliability`` holds the reliability of each broadcast sent right after the
    crash, before any membership round. ``rounds_to_heal`` is the number of membership
    rounds after which a probe broadcast reached every survivor and the survivors'
    active-view graph was connected (0: already so before any round; None: not within
    ``max_rounds``). ``round_reliability``, ``round_largest_component`` and
    ``round_messages_per_node`` describe each round. ``repair_messages_per_node`` is
    the number of messages sent from the crash until the first broadcasts went quiet
    (the reactive repair plus those broadcasts' own traffic) per survivor, and
    ``repair_messages_by_type`` the same split by message type.
    """

    failure_fraction: float
    survivors: int
    first_reliability: tuple[float, ...]
    largest_component_before_rounds: float
    rounds_to_heal: int | None
    round_reliability: tuple[float, ...]
    round_largest_component: tuple[float, ...]
    round_messages_per_node: tuple[float, ...]
    repair_messages_per_node: float = 0.0
    repair_messages_by_type: dict[str, float] = attrs.field(factory=dict, hash=False)

    @property
    def first_broadcast_reliability(self) -> float:
        """Reliability of the very first broadcast after the crash."""
        return self.first_reliability[0]

    @property
    def mean_first_reliability(self) -> float:
        """Mean reliability over the first broadcasts."""
        return statistics.fmean(self.first_reliability)


def measure_failure(
    sim: Simulator,
    fraction: float,
    first_broadcasts: int = 5,
    broadcast_gap: float = 0.1,
    max_rounds: int = 10,
) -> FailureResult:
    """Crash ``fraction`` of the live nodes at once and measure reliability and healing."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    live = [node.node_id for node in sim.live_nodes() if node.joined]
    crashed = sim.rng.sample(live, math.floor(len(live) * fraction))
    sent_before = sim.messages_sent
    by_type_before = dict(sim.messages_by_type)
    sim.crash(crashed)
    survivors = [node for node in sim.live_nodes() if node.joined]

    first_ids: list[str] = []
    for _ in range(first_broadcasts):
        first_ids.append(sim.broadcast(sim.rng.choice(survivors).node_id))
        sim.run_until(sim.now + broadcast_gap)
    sim.run_until_quiet()
    first = tuple(sim.reliability(message_id) for message_id in first_ids)
    component_before = sim.largest_component_fraction()
    population = max(1, len(survivors))
    repair_messages = (sim.messages_sent - sent_before) / population
    repair_by_type = {
        name: (count - by_type_before.get(name, 0)) / population
        for name, count in sorted(sim.messages_by_type.items())
        if count > by_type_before.get(name, 0)
    }

    rounds_to_heal: int | None = None
    if first[-1] == 1.0 and component_before == 1.0:
        rounds_to_heal = 0
    reliabilities: list[float] = []
    components: list[float] = []
    messages: list[float] = []
    for round_number in range(1, max_rounds + 1):
        if rounds_to_heal is not None:
            break
        sent = sim.run_membership_round()
        sim.run_until_quiet()
        messages.append(sent / len(survivors))
        survivors_now = [node for node in sim.live_nodes() if node.joined]
        probe = sim.broadcast(sim.rng.choice(survivors_now).node_id)
        sim.run_until_quiet()
        reliabilities.append(sim.reliability(probe))
        components.append(sim.largest_component_fraction())
        if reliabilities[-1] == 1.0 and components[-1] == 1.0:
            rounds_to_heal = round_number
    return FailureResult(
        failure_fraction=fraction,
        survivors=len(survivors),
        first_reliability=first,
        largest_component_before_rounds=component_before,
        rounds_to_heal=rounds_to_heal,
        round_reliability=tuple(reliabilities),
        round_largest_component=tuple(components),
        round_messages_per_node=tuple(messages),
        repair_messages_per_node=repair_messages,
        repair_messages_by_type=repair_by_type,
    )
