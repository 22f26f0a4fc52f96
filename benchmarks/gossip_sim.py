"""HyParView + Plumtree in the deterministic simulator: the papers' failure sweep.

Prints one JSON object. For each cluster size and seed it builds the overlay by sequential
joins through random contacts, stabilises it with membership rounds, then on copies of
that same overlay measures:

* steady-state RMR and LDH of Plumtree, and of eager flooding (Plumtree with pruning
  off) as the baseline, broadcasts sent one at a time from random nodes;
* for each failure fraction, under two failure-discovery models, the reliability of the
  first broadcasts sent right after the simultaneous crash (no membership round run),
  and the membership rounds until a probe broadcast reaches every survivor and the
  survivors' active-view graph is connected.

The failure-discovery models: ``detect_on_send`` is the paper's (a crash is found only by
sending to the dead node); ``link_heartbeat_1s`` adds what a link heartbeat or a TCP
reset gives a real driver (every neighbour learns of a crash after one second).
``detect_on_send_no_probe`` is ``detect_on_send`` with HyParView's ``probe_active_view``
extension off, i.e. the paper's NEIGHBOR rule alone, kept as the reference.
``detect_on_send_check_passive`` is ``detect_on_send`` with the ``check_passive_per_failure``
extension on (6 CheckView messages per lost active member): a node that loses a member
asks passive entries to check their own active views, which wakes survivors whose
members all crashed and whom nobody would otherwise ask.

Message cost: ``repair_messages_per_node`` counts every message sent from the crash until
the first broadcasts went quiet (reactive repair plus those broadcasts), per survivor,
with ``repair_messages_by_type``; ``round_messages_per_node`` is each later membership
round's (empty when no round was needed).

Usage: ``python benchmarks/gossip_sim.py [--quick]``; ``--quick`` runs small clusters.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import sys
import time
from typing import Any

import attrs

from foundation_trio.protocols.hyparview import HyParView
from foundation_trio.sim.experiments import build_overlay, measure_failure, measure_steady_state
from foundation_trio.sim.simulator import SimConfig, Simulator

FAILURE_FRACTIONS = (0.10, 0.50, 0.80, 0.90, 0.95)
CHECK_PASSIVE_PER_FAILURE = 6
# model name -> (crash_detection_delay, HyParView settings changed for the failure phase)
DETECTION_MODELS: dict[str, tuple[float | None, dict[str, Any]]] = {
    "detect_on_send": (None, {}),
    "link_heartbeat_1s": (1.0, {}),
    "detect_on_send_no_probe": (None, {"probe_active_view": False}),
    "detect_on_send_check_passive": (
        None,
        {"check_passive_per_failure": CHECK_PASSIVE_PER_FAILURE},
    ),
}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run_seed(size: int, seed: int, stabilisation_rounds: int) -> dict[str, Any]:
    started = time.perf_counter()
    sim = Simulator(SimConfig(), seed=seed)
    build_overlay(sim, size, stabilisation_rounds=stabilisation_rounds)
    build_seconds = time.perf_counter() - started
    active_sizes = [len(node.membership.neighbors) for node in sim.nodes]
    overlay = {
        "build_seconds": round(build_seconds, 2),
        "events_processed": sim.events_processed,
        "mean_active_view": round(statistics.fmean(active_sizes), 3),
        "symmetry": sim.symmetry(),
        "largest_component": sim.largest_component_fraction(),
    }
    snapshot = pickle.dumps(sim, protocol=pickle.HIGHEST_PROTOCOL)

    plumtree_sim: Simulator = pickle.loads(snapshot)
    plumtree = measure_steady_state(plumtree_sim, broadcasts=20, warmup=5)
    flooding_sim: Simulator = pickle.loads(snapshot)
    flooding_sim.replace_broadcast_layer(attrs.evolve(flooding_sim.config.plumtree, prune=False))
    flooding = measure_steady_state(flooding_sim, broadcasts=20, warmup=5)
    del plumtree_sim, flooding_sim

    failures: dict[str, dict[str, Any]] = {}
    for model, (delay, settings) in DETECTION_MODELS.items():
        failures[model] = {}
        for fraction in FAILURE_FRACTIONS:
            trial: Simulator = pickle.loads(snapshot)
            trial.config = attrs.evolve(trial.config, crash_detection_delay=delay)
            if settings:
                for node in trial.nodes:
                    membership = node.membership
                    assert isinstance(membership, HyParView)
                    membership.config = attrs.evolve(membership.config, **settings)
            result = measure_failure(trial, fraction, first_broadcasts=5, max_rounds=10)
            failures[model][f"{fraction:.2f}"] = {
                "survivors": result.survivors,
                "first_broadcast_reliability": result.first_broadcast_reliability,
                "first_reliabilities": list(result.first_reliability),
                "largest_component_before_rounds": result.largest_component_before_rounds,
                "rounds_to_heal": result.rounds_to_heal,
                "round_reliability": list(result.round_reliability),
                "round_largest_component": list(result.round_largest_component),
                "round_messages_per_node": [round(m, 2) for m in result.round_messages_per_node],
                "repair_messages_per_node": round(result.repair_messages_per_node, 2),
                "repair_messages_by_type": {
                    name: round(count, 2) for name, count in result.repair_messages_by_type.items()
                },
            }
    return {
        "seed": seed,
        "overlay": overlay,
        "steady_state": {
            "plumtree": attrs.asdict(plumtree),
            "flooding": attrs.asdict(flooding),
        },
        "failures": failures,
        "seconds": round(time.perf_counter() - started, 1),
    }


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "plumtree_rmr_median": _median(
            [s["steady_state"]["plumtree"]["rmr_mean"] for s in per_seed]
        ),
        "plumtree_ldh_median": _median(
            [s["steady_state"]["plumtree"]["ldh_mean"] for s in per_seed]
        ),
        "flooding_rmr_median": _median(
            [s["steady_state"]["flooding"]["rmr_mean"] for s in per_seed]
        ),
        "flooding_ldh_median": _median(
            [s["steady_state"]["flooding"]["ldh_mean"] for s in per_seed]
        ),
        "failures": {},
    }
    for model in DETECTION_MODELS:
        summary["failures"][model] = {}
        for fraction in FAILURE_FRACTIONS:
            key = f"{fraction:.2f}"
            runs = [s["failures"][model][key] for s in per_seed]
            heal = [r["rounds_to_heal"] for r in runs]
            summary["failures"][model][key] = {
                "first_broadcast_reliability_median": _median(
                    [r["first_broadcast_reliability"] for r in runs]
                ),
                "first_broadcast_reliability_per_seed": [
                    r["first_broadcast_reliability"] for r in runs
                ],
                "mean_of_first_5_reliability_median": _median(
                    [statistics.fmean(r["first_reliabilities"]) for r in runs]
                ),
                "rounds_to_heal_per_seed": heal,
                "repair_messages_per_node_per_seed": [r["repair_messages_per_node"] for r in runs],
                "first_round_messages_per_node_per_seed": [
                    r["round_messages_per_node"][0] if r["round_messages_per_node"] else None
                    for r in runs
                ],
                "rounds_to_heal_median": _median([h for h in heal if h is not None])
                if all(h is not None for h in heal)
                else None,
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small clusters, two seeds")
    args = parser.parse_args()
    if args.quick:
        plan = [(200, (1, 2)), (1_000, (1, 2))]
        stabilisation_rounds = 5
    else:
        plan = [(1_000, (1, 2, 3, 4, 5)), (10_000, (1, 2, 3))]
        stabilisation_rounds = 10
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "gossip_sim",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "stabilisation_rounds": stabilisation_rounds,
        "sim_config": {
            key: value
            for key, value in attrs.asdict(SimConfig(), recurse=False).items()
            if not attrs.has(type(value))
        },
        "hyparview": attrs.asdict(SimConfig().hyparview),
        "plumtree": attrs.asdict(SimConfig().plumtree),
        "detection_models": {
            name: {"crash_detection_delay": delay, "hyparview": settings}
            for name, (delay, settings) in DETECTION_MODELS.items()
        },
        "sizes": {},
    }
    for size, seeds in plan:
        per_seed = [run_seed(size, seed, stabilisation_rounds) for seed in seeds]
        report["sizes"][str(size)] = {"summary": summarise(per_seed), "per_seed": per_seed}
        print(f"done n={size} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
