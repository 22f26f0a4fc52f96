"""Two nodes on 127.0.0.1: a counter on node b, used from node a.

Run: python examples/cluster_counter.py

Both nodes run in this one program, each in its own task, so that the example is
self-contained; in production each node is its own process (or machine), opened
with its peers' addresses as seeds. Everything below works the same either way.
"""

import trio

import foundation_trio as ft

COOKIE = "example-cookie: use a long random secret shared by your nodes"


class Counter(ft.GenServer):
    async def init(self, start=0):
        self.count = start

    async def handle_call(self, request, caller):
        match request:
            case "get":
                return self.count
            case ("add", n):
                self.count += n
                return self.count
            case "whoami":
                return ft.context.current().get("request_id"), caller.pid
            case "crash":
                raise ValueError("asked to crash")

    async def handle_cast(self, request):
        if request == "reset":
            self.count = 0

    async def handle_info(self, message):
        # plain messages: ("add", n)
        self.count += message[1]


async def run_node_b(seed, stop):
    options = ft.Cluster(listen="127.0.0.1:0", seeds=[seed], cookie=COOKIE)
    async with ft.open_node("b", cluster=options) as node:
        await node.start_supervisor(
            [ft.ChildSpec("counter", Counter, args=(40,), name="counter")], max_restarts=3
        )
        await stop.wait()
    print("node b closed")


async def wait_for(target, other_than=None):
    """The pid of ``target`` (a (name, node) pair) once its node has announced the
    name (held by another process than ``other_than``)."""
    with trio.fail_after(10):
        while True:
            pid = ft.whereis(target)
            if pid is not None and pid != other_than:
                return pid
            await trio.sleep(0.01)


async def main():
    async with ft.open_node("a", cluster=ft.Cluster(listen="127.0.0.1:0", cookie=COOKIE)):
        print("node a listens on", ft.cluster_address().split(":")[0])
        stop_b = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_node_b, ft.cluster_address(), stop_b)
            counter = await wait_for(("counter", "b"))
            print("connected nodes:", ft.nodes())
            print("counter on b:", counter.node)

            print("add 2 ->", await ft.call(("counter", "b"), ("add", 2)))
            await ft.send(counter, ("add", 100))  # to handle_info, in order
            print("after a plain message:", await ft.call(counter, "get"))
            await ft.cast(("counter", "b"), "reset")
            print("after reset:", await ft.call(counter, "get"))

            with ft.context.bind(request_id="req-7"):
                request_id, caller = await ft.call(counter, "whoami")
            print("the server saw request", request_id, "from", caller == ft.self_pid())

            # A crash on b: the caller, the monitor and the link all get the reason.
            ft.trap_exits(True)
            ft.link(counter)
            ref = ft.monitor(counter)
            try:
                await ft.call(counter, "crash")
            except ft.ServerExited as exited:
                print("call failed:", exited.reason.type_name, exited.reason.message)
            down = await ft.receive(lambda m: isinstance(m, ft.Down) and m.ref == ref)
            print("monitor:", down.reason.type_name)
            signal = await ft.receive(lambda m: isinstance(m, ft.Exit))
            print("link:", signal.reason.type_name)

            # The supervisor on b restarted it under the same name.
            restarted = await wait_for(("counter", "b"), other_than=counter)
            print("restarted:", restarted != counter, await ft.call(restarted, "get"))

            # Node b stops: a node monitor sees it go; calls fail at once.
            ft.monitor_node("b")
            stop_b.set()
            gone = await ft.receive(lambda m: isinstance(m, ft.NodeDown))
            print("node down:", gone.node, "-", gone.reason)
            try:
                await ft.call(("counter", "b"), "get")
            except ft.NodeDown as error:
                print("call after:", type(error).__name__, error.node)
            print("connected nodes:", ft.nodes())
    print("node a closed")


trio.run(main)
