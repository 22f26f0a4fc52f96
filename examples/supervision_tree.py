"""Supervisor strategies, restart types and restart intensity, with real crashes.

For each strategy, three workers ``a``, ``b``, ``c`` run under a supervisor; ``b``
crashes and the script prints which children got a new pid. Then it shows
transient and temporary children, and a supervisor giving up when its children
crash more often than ``max_restarts`` in ``max_seconds``.

Run it with ``python examples/supervision_tree.py``.
"""

import logging

import trio

import foundation_trio as ft

# The crashes below are deliberate; keep the runtime's error log quiet.
logging.getLogger("foundation_trio").addHandler(logging.NullHandler())


class Worker(ft.GenServer):
    async def init(self, label):
        self.label = label

    async def handle_call(self, request, caller):
        return (self.label, request)

    async def handle_cast(self, request):
        if request == "crash":
            raise RuntimeError(f"{self.label} crashed on purpose")
        if request == "finish":
            self.stop(ft.NORMAL)  # an orderly exit, after this message


async def pids(sup):
    return {child.id: child.pid for child in await ft.which_children(sup)}


async def crash_and_wait(pid, how="crash"):
    """Make the server ``pid`` exit and wait for its Down message."""
    ref = ft.monitor(pid)
    await ft.cast(pid, how)
    down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref, timeout=2)
    return down.reason


def workers(*labels, **options):
    return [ft.ChildSpec(label, Worker, args=(label,), **options) for label in labels]


async def strategies(node):
    for strategy in (ft.ONE_FOR_ONE, ft.ONE_FOR_ALL, ft.REST_FOR_ONE):
        sup = await node.start_supervisor(workers("a", "b", "c"), strategy=strategy)
        before = await pids(sup)
        await crash_and_wait(before["b"])
        # which_children is a call to the supervisor: it is answered after the
        # supervisor has handled b's exit, so the restarts are done by then.
        after = await pids(sup)
        restarted = [cid for cid in before if before[cid] != after[cid]]
        print(f"{strategy.name:12} b crashed -> restarted {restarted}")
        for cid in before:
            print(f"{'':15}{cid}: {before[cid]} -> {after[cid]}")
        # Supervisors started with node.start_supervisor are children of the root.
        await ft.terminate_child(node.root.pid, sup)


async def restart_types(node):
    sup = await node.start_supervisor(
        [
            *workers("permanent"),
            *workers("transient", restart=ft.TRANSIENT),
            *workers("temporary", restart=ft.TEMPORARY),
        ]
    )
    before = await pids(sup)
    for cid in ("permanent", "transient"):
        await crash_and_wait(before[cid], "finish")
    await crash_and_wait(before["temporary"], "crash")
    after = await pids(sup)
    print("restart types, after a normal exit of permanent and transient")
    print("and a crash of temporary:")
    for cid in before:
        print(f"    {cid:10} {before[cid]} -> {after.get(cid, 'spec removed')}")
    await ft.terminate_child(node.root.pid, sup)


async def intensity(node):
    sup = await node.start_supervisor(workers("flaky"), max_restarts=2, max_seconds=5)
    sup_ref = ft.monitor(sup)
    for attempt in range(1, 4):
        flaky = (await pids(sup))["flaky"]
        await crash_and_wait(flaky)
        print(f"intensity: crash {attempt} of flaky ({flaky})")
    down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == sup_ref, timeout=2)
    print(f"intensity: 3 crashes > max_restarts=2 in 5 s: supervisor {sup} exited {down.reason!r}")
    assert down.reason == ft.GAVE_UP


async def main():
    async with ft.open_node("tree") as node:
        await strategies(node)
        await restart_types(node)
        await intensity(node)
    print("done")


if __name__ == "__main__":
    trio.run(main)
