"""The ``foundation-trio`` command: ``demo``, ``--version`` and ``--help``."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import foundation_trio as ft
from foundation_trio.cli import main


def test_demo_in_process(capsys: pytest.CaptureFixture[str]):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    # The crash, the Down message and the restart with a new pid.
    assert "handle_cast raises RuntimeError" in out
    assert "received Down: pid=<demo." in out
    restart = re.search(r"counter (<demo\.\d+>) -> (<demo\.\d+>)", out)
    assert restart is not None, out
    assert restart.group(1) != restart.group(2)
    assert "supervisor.child_restarted: 'counter'" in out
    assert f"runtime.supervisor.restart: 'counter' {restart.group(2)}" in out
    assert 'process_exits_total{kind="error"} 1.0' in out
    assert "demo_call_seconds_count 2" in out
    # The event query: the two adds, newest first, and their correlation chain.
    assert "-> {'n': 3, 'total': 5}, {'n': 2, 'total': 2}" in out
    assert 'correlation_chain("demo-session") -> 2 events' in out
    assert "sealed_bid_auction(reserve=5.0) -> sold to ann" in out
    assert "at 7.0: the second-highest bid, not ann's own; rejected: cy (below_reserve)" in out
    # The tree, indented, with pids, nested supervisor included.
    assert re.search(r"^ {4}node 'demo': root <demo\.1>", out, re.MULTILINE)
    assert re.search(r"^ {8}app <demo\.\d+>", out, re.MULTILINE)
    assert re.search(r"^ {12}pipeline <demo\.\d+>", out, re.MULTILINE)
    assert re.search(r"^ {16}sink <demo\.\d+>", out, re.MULTILINE)
    # The tree after the restart shows the successor.
    after = out.split("[6]", 1)[1]
    assert f"counter {restart.group(2)}" in after
    # Shutdown: reverse start order, terminate runs.
    tail = out.split("[8]", 1)[1]
    assert tail.index("sink") < tail.index("source") < tail.index("counter")
    assert "node stopped" in tail


def test_demo_as_module_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "foundation_trio", "demo"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "restarted, same name" in result.stdout
    # The deliberate crash is not logged unless --verbose is given.
    assert "Traceback" not in result.stderr


def test_demo_verbose_logs_the_crash():
    result = subprocess.run(
        [sys.executable, "-m", "foundation_trio", "demo", "--verbose"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "crashed on purpose by the demo" in result.stderr


def test_version(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"foundation-trio {ft.__version__}"


def test_help_lists_demo(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err
