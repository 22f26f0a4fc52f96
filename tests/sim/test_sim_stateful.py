"""Hypothesis drives the simulator through joins, leaves, crashes, partitions and heals.

After every step the simulation is run to quiescence and the overlay invariants are
checked: live active views are symmetric, views and caches stay within their bounds, the
overlay is connected again once a partition healed, and every broadcast reaches every
live node of its source's component.
"""

from __future__ import annotations

import attrs
import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from foundation_trio.protocols.hyparview import HyParView, HyParViewConfig
from foundation_trio.protocols.plumtree import PlumtreeConfig
from foundation_trio.sim.experiments import build_overlay
from foundation_trio.sim.simulator import SimConfig, Simulator

CACHE_SIZE = 6
HYPARVIEW = HyParViewConfig(active_view_size=4, passive_view_size=8, shuffle_period=None)


class OverlayMachine(RuleBasedStateMachine):
    sim: Simulator

    def __init__(self) -> None:
        super().__init__()
        self.partitioned = False
        self.healed_once = False

    @initialize(
        seed=st.integers(0, 2**32 - 1),
        size=st.integers(3, 14),
        crash_detection=st.sampled_from([None, 0.5]),
        check_passive=st.sampled_from([0, 3]),
    )
    def build(
        self, seed: int, size: int, crash_detection: float | None, check_passive: int
    ) -> None:
        config = SimConfig(
            crash_detection_delay=crash_detection,
            hyparview=attrs.evolve(HYPARVIEW, check_passive_per_failure=check_passive),
            plumtree=PlumtreeConfig(anti_entropy_period=None, cache_size=CACHE_SIZE),
        )
        self.sim = Simulator(config, seed=seed)
        build_overlay(self.sim, size, stabilisation_rounds=2)

    def live_ids(self) -> list[str]:
        return [n.node_id for n in self.sim.nodes if n.alive and n.joined]

    @rule()
    def join(self) -> None:
        contact = self.sim.rng.choice(self.live_ids())
        self.sim.join(self.sim.add_node(), contact)
        self.sim.run_until_quiet()

    @precondition(lambda self: len(self.live_ids()) > 3)
    @rule()
    def leave(self) -> None:
        self.sim.leave(self.sim.rng.choice(self.live_ids()))
        self.sim.run_until_quiet()

    @precondition(lambda self: len(self.live_ids()) > 3)
    @rule()
    def crash(self) -> None:
        self.sim.crash([self.sim.rng.choice(self.live_ids())])
        self.sim.run_until_quiet()

    @precondition(lambda self: not self.partitioned and len(self.live_ids()) >= 4)
    @rule(cut=st.floats(0.2, 0.8))
    def partition(self, cut: float) -> None:
        live = self.live_ids()
        self.sim.rng.shuffle(live)
        split = max(1, min(len(live) - 1, round(len(live) * cut)))
        self.sim.partition([live[:split], live[split:]])
        self.partitioned = True
        # Traffic across the cut discovers it, as it would in a real cluster.
        self.sim.run_membership_round()
        self.sim.run_until_quiet()

    @precondition(lambda self: self.partitioned)
    @rule()
    def heal(self) -> None:
        self.sim.heal()
        self.partitioned = False
        for _ in range(5):
            if self.sim.merge_components() == 0:
                break
            self.sim.run_until_quiet()
        assert len(self.sim.components()) == 1, "overlay still split after heal and re-join"

    @rule()
    def membership_round(self) -> None:
        self.sim.run_membership_round()
        self.sim.run_until_quiet()

    @rule()
    def broadcast(self) -> None:
        sim = self.sim
        source = sim.rng.choice(self.live_ids())
        message_id = sim.broadcast(source)
        sim.run_until_quiet()
        source_index = sim.node(source).index
        component = next(c for c in sim.components() if source_index in c)
        missing = [
            sim.nodes[i].node_id for i in component if i not in sim.record(message_id).delivered
        ]
        assert not missing, f"{message_id} from {source} missed {missing}"
        assert sim.record(message_id).duplicate_deliveries == 0

    @invariant()
    def views_are_symmetric(self) -> None:
        assert self.sim.symmetry() == 1.0

    @invariant()
    def views_and_caches_are_bounded(self) -> None:
        for node in self.sim.nodes:
            membership = node.membership
            assert isinstance(membership, HyParView)
            assert len(membership.active_view) <= HYPARVIEW.active_view_size
            assert len(membership.passive_view) <= HYPARVIEW.passive_view_size
            assert node.node_id not in membership.active_view
            assert not set(membership.active_view) & set(membership.passive_view)
            assert node.broadcast.cache_length <= CACHE_SIZE

    @invariant()
    def quiescent(self) -> None:
        assert self.sim.run_until_quiet(limit=0.0) or not self.sim._heap


OverlayMachine.TestCase.settings = settings(
    max_examples=1000,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOverlayMachine = OverlayMachine.TestCase
