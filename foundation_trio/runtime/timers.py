"""Call deadlines, kept by one timer task per node instead of a cancel scope per call.

A trio cancel scope costs more than the rest of a call put together (measured in
``benchmarks/local.py``), and a call's deadline only ever needs to fire rarely.
So each timeout value gets a FIFO of ``(deadline, caller)``: deadlines in one
FIFO are in increasing order because they are ``now + the same timeout``. The
timer task sleeps until the earliest live deadline and fails the callers whose
time is up. Finished callers are dropped from the FIFO heads as new calls come
in, so a FIFO holds little more than the calls still waiting.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

import trio


class Expirable(Protocol):
    """A waiting call: ``_task`` is None once answered; ``expire`` fails it."""

    @property
    def _task(self) -> object: ...

    def expire(self, target: object, timeout: float) -> None: ...


_Entry = tuple[float, Expirable, object]


class CallTimers:
    """Deadlines of a node's waiting calls. ``run`` is the node's timer task."""

    def __init__(self) -> None:
        self._fifos: dict[float, deque[_Entry]] = {}
        self._next_wakeup = math.inf
        self._rearm = trio.Event()

    def add(self, call: Expirable, target: object, timeout: float) -> None:
        """Fail ``call`` with a timeout for ``target`` unless answered within ``timeout``."""
        deadline = trio.current_time() + timeout
        fifo = self._fifos.get(timeout)
        if fifo is None:
            fifo = self._fifos[timeout] = deque()
        while fifo and fifo[0][1]._task is None:
            fifo.popleft()
        fifo.append((deadline, call, target))
        if deadline < self._next_wakeup:
            self._next_wakeup = deadline
            self._rearm.set()

    def pending(self) -> int:
        """Entries held (answered calls not yet dropped included); for tests."""
        return sum(len(fifo) for fifo in self._fifos.values())

    def _expire_due(self, now: float) -> float:
        """Fail every call whose deadline has passed; return the next deadline."""
        next_deadline = math.inf
        for timeout, fifo in list(self._fifos.items()):
            while fifo and (fifo[0][0] <= now or fifo[0][1]._task is None):
                _, call, target = fifo.popleft()
                if call._task is not None:
                    call.expire(target, timeout)
            if fifo:
                next_deadline = min(next_deadline, fifo[0][0])
            else:
                del self._fifos[timeout]
        return next_deadline

    async def run(self) -> None:
        """Expire calls until cancelled (with the node)."""
        while True:
            self._next_wakeup = self._expire_due(trio.current_time())
            self._rearm = trio.Event()
            with trio.move_on_at(self._next_wakeup):
                await self._rearm.wait()
