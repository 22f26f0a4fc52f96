"""Several nodes in one test: each runs in its own task, and the test runs code in
a node's body process with ``await handle.run(fn, *args)``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import outcome
import trio

from foundation_trio.runtime.node import Node

OpenNode = Callable[[str], AbstractAsyncContextManager[Node]]


class NodeHandle:
    def __init__(self, name: str) -> None:
        self.name = name
        self.node: Node | None = None
        self._send, self._receive = trio.open_memory_channel[Any](0)
        self.exited = trio.Event()
        self.error: BaseException | None = None

    async def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``await fn(*args)`` in the node's body process; return or raise its result."""
        reply_send, reply_receive = trio.open_memory_channel[outcome.Outcome[Any]](1)
        await self._send.send((fn, args, reply_send))
        result = await reply_receive.receive()
        return result.unwrap()

    def stop(self) -> None:
        """Leave the node's ``async with`` block (it shuts down in order)."""
        self._send.close()

    async def _serve(self, open_node: OpenNode, task_status: Any) -> None:
        try:
            async with open_node(self.name) as node:
                self.node = node
                task_status.started(self)
                async for fn, args, reply in self._receive:
                    await reply.send(await outcome.acapture(fn, *args))
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.exited.set()


@asynccontextmanager
async def open_nodes(
    names: Sequence[str], open_node: OpenNode
) -> AsyncIterator[dict[str, NodeHandle]]:
    """Start a node per name (in order, each ready before the next starts); stop
    them all when the block ends."""
    async with trio.open_nursery() as nursery:
        handles: dict[str, NodeHandle] = {}
        for name in names:
            handle = NodeHandle(name)
            await nursery.start(handle._serve, open_node)
            handles[name] = handle
        try:
            yield handles
        finally:
            for handle in handles.values():
                handle.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Until ``await check()`` is true (polled every 20 ms); TooSlowError after
    ``timeout`` seconds. For state that spreads between nodes with no event to
    wait on (links coming up, names announced)."""
    with trio.fail_after(timeout):
        while True:
            if await check():
                return
            await trio.sleep(0.02)
