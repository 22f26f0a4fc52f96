"""A process society: parse log lines, keep per-user state, crunch numbers off the loop.

Three pools under one supervised society:

- ``parse``: as many workers as CPUs, round robin; a malformed line crashes its
  worker, which is restarted while the other lines go on;
- ``users``: stateful workers, routed by user name (hash), so each user's running
  total lives in one worker;
- ``stats``: CPU-bound work with ``run_cpu`` in a thread, so the event loop keeps
  serving everything else.

Run it with ``python examples/society.py``.
"""

import statistics

import trio

import foundation_trio as ft

LINES = [
    "ann 120",
    "bob 80",
    "ann 30",
    "cy 200",
    "bob oops",  # malformed: crashes the worker that parses it
    "cy 5",
    "ann 50",
]


async def parse(line):
    user, amount = line.split()
    return user, int(amount)  # int("oops") raises ValueError


class UserTotals(ft.society.Worker):
    async def init(self):
        self.totals = {}

    async def handle_job(self, job):
        user, amount = job
        self.totals[user] = self.totals.get(user, 0) + amount
        return self.totals[user]


def summarize(amounts):
    return statistics.mean(amounts), statistics.pstdev(amounts)


async def stats(amounts):
    return await ft.society.run_cpu(summarize, amounts)


async def main():
    async with ft.open_node("logs"):
        society = await ft.society.start(
            [
                ft.society.pool("parse", parse, count="cpus"),
                ft.society.pool("users", UserTotals, count=3, routing="hash"),
                ft.society.pool("stats", stats, count=1),
            ],
            name="logs",
        )
        parsed = []
        for line in LINES:
            try:
                parsed.append(await society.submit(line, pool="parse"))
            except ft.society.JobFailed as error:
                print(f"skipped {line!r}: {type(error.reason).__name__}")
        for user, amount in parsed:
            total = await society.submit((user, amount), pool="users", key=user)
            print(f"{user} total {total}")
        mean, stdev = await society.submit([a for _, a in parsed], pool="stats")
        print(f"mean {mean:.1f} stdev {stdev:.1f}")
        health = society.health()
        for pool in health.pools:
            print(
                f"pool {pool.name}: completed {pool.completed} failed {pool.failed} "
                f"restarts {pool.restarts}"
            )
        print("status", health.status)
    print("society stopped:", not society.running)


if __name__ == "__main__":
    trio.run(main)
