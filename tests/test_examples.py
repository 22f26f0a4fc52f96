"""Every script in examples/ runs to completion by itself and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "cluster_counter.py": [
        "connected nodes: ['b']",
        "add 2 -> 42",
        "after a plain message: 142",
        "after reset: 0",
        "the server saw request req-7 from True",
        "call failed: ValueError asked to crash",
        "monitor: ValueError",
        "link: ValueError",
        "restarted: True 40",
        "node down: b - node 'b' stopped",
        "call after: NodeDown b",
        "connected nodes: []",
        "node a closed",
    ],
    "counter.py": ["after add 2: 2", "after reset: 0", "node closed"],
    "supervision_tree.py": [
        "ONE_FOR_ONE  b crashed -> restarted ['b']",
        "ONE_FOR_ALL  b crashed -> restarted ['a', 'b', 'c']",
        "REST_FOR_ONE b crashed -> restarted ['b', 'c']",
        "-> spec removed",
        "exited Shutdown('reached_max_restart_intensity')",
        "done",
    ],
    "pubsub_registry.py": [
        "weather subscribers: 2 sport: 1",
        "published weather to 2",
        "ann's inbox: ['weather: sunny', 'sport: 3-1', 'weather: rain later']",
        "listener got: unregister 'weather'",
        "listener got: register 'weather'",
        "lobby via Via:",
        "done",
    ],
    "temperature.py": [
        "before: 0.7",
        "winner: poet pays 4.0 (second price)",
        "rejected: [('chaos', 'out_of_domain')]",
        "temperature: 1.3 (version 1)",
        "analyst samples at temperature 1.3",
    ],
    "society.py": [
        "skipped 'bob oops': ValueError",
        "ann total 200",
        "cy total 205",
        "mean 80.8 stdev 64.6",
        "pool parse: completed 6 failed 1 restarts 1",
        "pool users: completed 6 failed 0 restarts 0",
        "status ok",
        "society stopped: True",
    ],
}


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str):
    result = run_example(name)
    assert result.returncode == 0, result.stderr
    for line in EXPECTED[name]:
        assert line in result.stdout, f"{line!r} missing from:\n{result.stdout}"


def test_transient_child_not_restarted_after_normal_exit():
    out = run_example("supervision_tree.py").stdout
    assert "transient" in out
    transient = next(line for line in out.splitlines() if line.strip().startswith("transient"))
    assert transient.rstrip().endswith("-> None")


# -- the runnable programs of the docs pages ---------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_programs(page: str) -> list[tuple[str, str]]:
    """The ``python`` blocks of a docs page that are whole programs (end in trio.run)."""
    text = (DOCS / page).read_text(encoding="utf-8")
    programs = []
    for match in _BLOCK.finditer(text):
        code = match.group(1)
        if code.rstrip().endswith("trio.run(main)"):
            line = text.count("\n", 0, match.start()) + 1
            programs.append((f"{page}:{line}", code))
    return programs


# Each page with complete programs, and how many it has at least (a page whose
# programs all vanished, e.g. by a change of the fence, would otherwise pass).
GUIDES = {
    "runtime.md": 10,
    "telemetry.md": 5,
    "context.md": 2,
    "errors.md": 1,
    "config.md": 4,
    "events.md": 3,
    "services.md": 3,
    "protection.md": 4,
    "cluster.md": 4,
    "membership.md": 1,
    "agents.md": 13,
    "society.md": 7,
}
PROGRAMS = [program for page in GUIDES for program in doc_programs(page)]


@pytest.mark.parametrize("page", sorted(GUIDES))
def test_guide_has_programs(page: str):
    assert len(doc_programs(page)) >= GUIDES[page]


@pytest.mark.parametrize(("where", "code"), PROGRAMS, ids=[w for w, _ in PROGRAMS])
def test_guide_program_runs(where: str, code: str):
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stderr}"
    assert result.stdout.strip(), f"{where} printed nothing"
