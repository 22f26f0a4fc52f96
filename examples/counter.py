"""The README example: a Counter GenServer under a supervisor.

Run it with ``python examples/counter.py``.
"""

import trio

import foundation_trio as ft


class Counter(ft.GenServer):
    async def init(self, start: int = 0) -> None:
        self.count = start

    async def handle_call(self, request, caller):
        match request:
            case "get":
                return self.count
            case ("add", n):
                self.count += n
                return self.count

    async def handle_cast(self, request) -> None:
        if request == "reset":
            self.count = 0


async def main():
    async with ft.open_node("demo") as node:
        await node.start_supervisor(
            [ft.ChildSpec("counter", Counter, args=(0,), name="counter")],
            strategy=ft.ONE_FOR_ONE,
            max_restarts=3,
            max_seconds=5,
        )
        assert await ft.call("counter", ("add", 2)) == 2
        print("after add 2:", await ft.call("counter", "get"))
        await ft.cast("counter", "reset")
        print("after reset:", await ft.call("counter", "get"))
    print("node closed")


if __name__ == "__main__":
    trio.run(main)
