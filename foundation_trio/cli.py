"""The ``foundation-trio`` command (also ``python -m foundation_trio``).

``foundation-trio demo`` runs a short local demo that explains itself as it goes:
it opens a node, starts a small supervision tree, makes calls and casts, crashes a
child on purpose, shows the supervisor restarting it, prints the tree, runs a short
auction among three agents and shuts the node down. It needs no network and
finishes in well under a second.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import trio

import foundation_trio as ft

__all__ = ["build_parser", "main", "run_demo"]


def _say(text: str = "") -> None:
    print(text, flush=True)


# -- the demo's processes ----------------------------------------------------------------


class Counter(ft.GenServer):
    """The Counter of the README: ``call`` to read and add, ``cast`` to reset.

    ``cast(counter, "crash")`` makes ``handle_cast`` raise, on purpose.
    """

    count: int

    async def init(self, start: int = 0) -> None:
        self.count = start

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        match request:
            case "get":
                return self.count
            case ("add", int(n)):
                self.count += n
                return self.count
        raise ValueError(f"unknown request {request!r}")

    async def handle_cast(self, request: Any) -> None:
        if request == "reset":
            self.count = 0
        elif request == "crash":
            raise RuntimeError("crashed on purpose by the demo")

    async def terminate(self, reason: ft.ExitReason) -> None:
        _say(f"      counter {self.pid}: terminate({reason!r}), count was {self.count}")


class Stage(ft.GenServer):
    """A pipeline stage: it remembers its name and says when it stops."""

    label: str

    async def init(self, label: str) -> None:
        self.label = label

    async def handle_call(self, request: Any, caller: ft.Caller) -> Any:
        return f"{self.label} got {request!r}"

    async def terminate(self, reason: ft.ExitReason) -> None:
        _say(f"      {self.label} {self.pid}: terminate({reason!r})")


async def echo() -> None:
    """A plain function process: answers ``("ping", sender)`` with ``("pong", own pid)``."""
    me = ft.self_pid()
    while True:
        message = await ft.receive()
        match message:
            case ("ping", ft.Pid() as sender):
                await ft.send(sender, ("pong", me))
            case _:
                pass


class Bidder(ft.agents.Agent):
    """A demo agent that bids its value for the item in a sealed-bid auction."""

    value: float

    async def setup(self, value: float) -> None:
        self.value = value

    async def bid(self, request: ft.agents.BidRequest) -> float:
        return self.value


# -- showing the tree ------------------------------------------------------------------


async def tree_lines(supervisor: ft.Pid, label: str, indent: int = 0) -> list[str]:
    """The supervision tree under ``supervisor`` as indented lines, one per process."""
    lines = [f"{'    ' * indent}{label} {supervisor}  (supervisor)"]
    for child in await ft.which_children(supervisor):
        pad = "    " * (indent + 1)
        if child.pid is None:
            lines.append(f"{pad}{child.id} (not running)")
        elif child.type is ft.SUPERVISOR:
            lines.extend(await tree_lines(child.pid, str(child.id), indent + 1))
        else:
            lines.append(f"{pad}{child.id} {child.pid}  ({child.restart.value} worker)")
    return lines


async def _print_tree(node: ft.Node) -> None:
    for line in await tree_lines(node.root.pid, f"node {node.name!r}: root"):
        _say(f"    {line}")


def _describe(event: ft.LifecycleEvent) -> str:
    match event:
        case ft.ChildExited(child_id=child_id, pid=pid, reason=reason):
            return f"{event.name}: {child_id!r} {pid} reason={reason!r}"
        case ft.ChildStarted(child_id=child_id, pid=pid):
            return f"{event.name}: {child_id!r} as {pid}"
        case ft.ChildRestarted(child_id=child_id, pid=pid, strategy=strategy):
            return f"{event.name}: {child_id!r} as {pid} ({strategy})"
        case ft.ProcessExited(pid=pid, reason=reason):
            return f"{event.name}: {pid} reason={reason!r}"
        case ft.ProcessStarted(pid=pid, parent=parent):
            return f"{event.name}: {pid} under {parent}"
        case _:
            return repr(event)


# -- the demo ------------------------------------------------------------------------


async def demo() -> None:
    """Run the demo, printing each step. Takes a fraction of a second."""
    started = time.perf_counter()
    _say(f"foundation_trio {ft.__version__} demo: one local node, one supervision tree")
    _say()

    _say('[1] async with ft.open_node("demo") as node:')
    async with ft.open_node("demo") as node:
        _say(f"    the body of the block is a process too: self_pid() = {ft.self_pid()}")
        events: list[ft.LifecycleEvent] = []
        node.add_hook(events.append)
        seen: list[str] = []
        ft.telemetry.attach(
            "demo.printer",
            ["runtime.supervisor.child_exit", "runtime.supervisor.restart"],
            lambda name, _, metadata: seen.append(
                f"{name}: {metadata['child_id']!r} {metadata['pid']}"
            ),
        )
        ft.telemetry.counter(
            "process_exits_total",
            "Process exits by kind",
            event="runtime.process.exit",
            labels=["kind"],
        )
        ft.telemetry.histogram(
            "demo_call_seconds",
            "Demo calls",
            event="demo.call.stop",
            measurement="duration",
            buckets=ft.telemetry.exponential_buckets(1e-5, 10, 5),
        )
        _say("    the services run under the root supervisor; telemetry listens to")
        _say("    supervisor events, counts process exits and times calls (a histogram)")
        _say()

        _say(
            '[2] node.start_supervisor(...) starts "app" (ONE_FOR_ONE, at most 3 restarts in 5 s):'
        )
        _say('      counter   a Counter GenServer, registered as "counter"')
        _say("      echo      a plain async function that answers pings")
        _say("      pipeline  a nested REST_FOR_ONE supervisor with two Stage servers")
        # Annotated Any: SupervisorSpec's `children` converter confuses mypy's attrs
        # plugin (it expects an unsolved Iterable[_T_co]).
        stages: Any = [
            ft.ChildSpec("source", Stage, kwargs={"label": "source"}),
            ft.ChildSpec("sink", Stage, kwargs={"label": "sink"}),
        ]
        pipeline = ft.SupervisorSpec(stages, strategy=ft.REST_FOR_ONE)
        app = await node.start_supervisor(
            [
                ft.ChildSpec("counter", Counter, kwargs={"start": 0}, name="counter"),
                ft.ChildSpec("echo", echo, name="echo"),
                ft.ChildSpec("pipeline", pipeline),
            ],
            name="app",
            strategy=ft.ONE_FOR_ONE,
            max_restarts=3,
            max_seconds=5,
        )
        _say(f"    children start in order, each ready before the next; app is {app}")
        _say()

        _say("[3] the tree (which_children, recursively):")
        await _print_tree(node)
        _say()

        _say("[4] calls, casts and plain messages:")
        for n in (2, 3):
            async with ft.telemetry.span("demo.call"):
                total = await ft.call("counter", ("add", n))
            _say(f'    await ft.call("counter", ("add", {n}))  -> {total}')
            added = ft.events.new_event(
                "counter.added", {"n": n, "total": total}, correlation_id="demo-session"
            )
            await ft.events.store(added)
        await ft.cast("counter", "reset")
        _say('    await ft.cast("counter", "reset")     (returns at once, no reply)')
        _say(f'    await ft.call("counter", "get")       -> {await ft.call("counter", "get")}')
        await ft.send("echo", ("ping", ft.self_pid()))
        pong = await ft.receive(lambda m: isinstance(m, tuple) and m[0] == "pong", timeout=1.0)
        _say(f'    await ft.send("echo", ("ping", self_pid())); receive(...) -> {pong!r}')
        try:
            await ft.call("nobody", "get")
        except ft.NoProcess as error:
            _say(f'    await ft.call("nobody", "get")        raises NoProcess: {error}')
        _say("    each add was stored as an event (ft.events.store); querying them back:")
        found = await ft.events.query(type="counter.added", order="desc")
        _say(
            '    await ft.events.query(type="counter.added", order="desc") -> '
            + ", ".join(f"{e.data}" for e in found)
        )
        chain = await ft.events.correlation_chain("demo-session")
        _say(f'    await ft.events.correlation_chain("demo-session") -> {len(chain)} events')
        _say()

        _say("[5] crash the counter on purpose and watch the supervisor restart it:")
        old = ft.whereis("counter")
        assert old is not None
        ref = ft.monitor(old)
        _say(f'    ref = ft.monitor("counter")  (counter is {old})')
        events.clear()
        _say('    await ft.cast("counter", "crash")  -> handle_cast raises RuntimeError:')
        await ft.cast("counter", "crash")
        down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref, timeout=2.0)
        _say(f"    received Down: pid={down.pid} reason={down.reason!r}")
        children = {c.id: c.pid for c in await ft.which_children(app)}
        new = children["counter"]
        _say(f"    which_children(app): counter {old} -> {new}  (restarted, same name)")
        _say(f'    whereis("counter") = {ft.whereis("counter")}')
        _say(
            f'    await ft.call("counter", "get") -> {await ft.call("counter", "get")}'
            "  (a new Counter starts from its init args)"
        )
        _say("    lifecycle events seen by a hook (node.add_hook):")
        for event in events:
            _say(f"      {_describe(event)}")
        _say("    the same, as telemetry events seen by a handler (ft.telemetry.attach):")
        for line in seen:
            _say(f"      {line}")
        _say()

        _say("[6] the tree after the restart:")
        await _print_tree(node)
        _say()

        _say("[7] metrics, as Prometheus scrapes them (ft.telemetry.prometheus_text()):")
        for line in ft.telemetry.prometheus_text().splitlines():
            if not line.startswith("#") and "_bucket" not in line:
                _say(f"    {line}")
        _say()

        _say("[8] a sealed-bid second-price (Vickrey) auction among three agents:")
        for agent_id, value in [("ann", 10.0), ("bob", 7.0), ("cy", 3.0)]:
            await ft.agents.register_agent(ft.agents.AgentSpec(agent_id, Bidder, args=(value,)))
            await ft.agents.start_agent(agent_id)
        _say("    ann values the item at 10, bob at 7, cy at 3; each bids its value")
        report = await ft.agents.sealed_bid_auction(["ann", "bob", "cy"], reserve=5.0, timeout=1.0)
        rejected = ", ".join(f"{r.agent} ({r.reason})" for r in report.result.rejected)
        _say(f"    sealed_bid_auction(reserve=5.0) -> {report.status.value} to {report.winner}")
        _say(f"    at {report.price}: the second-highest bid, not ann's own; rejected: {rejected}")
        _say()

        _say("[9] leaving the block stops everything: children before parents,")
        _say("    each supervisor's children in reverse start order; terminate() runs:")
    _say(f"    node stopped; every task has ended ({time.perf_counter() - started:.2f} s in all)")


def run_demo(*, verbose: bool = False) -> int:
    """Run :func:`demo` under ``trio.run``; return the exit code."""
    runtime_logger = logging.getLogger("foundation_trio")
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        runtime_logger.setLevel(logging.DEBUG)
    else:
        # The demo crashes a child on purpose; keep the runtime's error log (with its
        # traceback) out of the way unless asked for.
        handler = logging.NullHandler()
    runtime_logger.addHandler(handler)
    try:
        trio.run(demo)
    finally:
        runtime_logger.removeHandler(handler)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundation-trio",
        description="OTP-style supervision trees, GenServers and registries for Trio.",
    )
    parser.add_argument("--version", action="version", version=f"foundation-trio {ft.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo_parser = commands.add_parser(
        "demo",
        help="run a short local demo of a supervision tree, a crash and its restart",
        description=(
            "Open a local node, start a supervision tree, make calls and casts, crash a "
            "child on purpose and show its restart, print the tree, shut down."
        ),
    )
    demo_parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show the runtime's log (stderr), including the deliberate crash",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``foundation-trio`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        try:
            return run_demo(verbose=bool(args.verbose))
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            return 1
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse forbids others


if __name__ == "__main__":
    sys.exit(main())
