"""CPU-bound work without stalling the event loop.

Two tools, for two kinds of work:

- :func:`run_cpu` runs a synchronous function elsewhere: in a worker thread
  (``mode="thread"``; the GIL is handed back to the event loop every
  ``sys.getswitchinterval()`` seconds, 5 ms by default) or in a worker process
  (``mode="process"``, through anyio's process pool; true parallelism, but the
  function and its arguments must be picklable).
- :func:`cooperative` runs a long loop of short steps in the event loop itself and
  yields to other tasks at least every ``max_slice`` seconds.
"""

from __future__ import annotations

import math
import pickle
import sys
import time
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

import trio

from .errors import CpuWorkerLost, NotPicklable

T = TypeVar("T")
R = TypeVar("R")

CpuMode = Literal["thread", "process"]
"""Where :func:`run_cpu` runs its function."""

DEFAULT_MAX_SLICE = 0.005
"""Seconds :func:`cooperative` may run before it yields (5 ms)."""


def _check_picklable(fn: object, args: tuple[object, ...]) -> None:
    try:
        pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise NotPicklable("fn", fn, str(error)) from error
    # A function is pickled by reference; the worker process imports the main
    # module from its file, and a program without one cannot be imported.
    main = sys.modules.get("__main__")
    if getattr(fn, "__module__", None) == "__main__" and not getattr(main, "__file__", None):
        raise NotPicklable(
            "fn",
            fn,
            "it is defined in the main module of a program that has no file (python -c, "
            "a REPL or a notebook), which the worker process cannot import",
        )
    for index, arg in enumerate(args):
        try:
            pickle.dumps(arg, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise NotPicklable(f"args[{index}]", arg, str(error)) from error


async def run_cpu(fn: Callable[..., R], *args: object, mode: CpuMode = "thread") -> R:
    """Run ``fn(*args)`` off the event loop and return its result.

    ``mode="thread"`` (the default) runs it in a trio worker thread
    (``trio.to_thread.run_sync``): no copying, any callable, but pure-Python code
    still shares the GIL, so it gets no parallelism; the event loop keeps
    running because the interpreter switches threads every
    ``sys.getswitchinterval()`` seconds. ``mode="process"`` runs it in a worker
    process of anyio's pool (``anyio.to_process.run_sync``): real parallelism,
    at the cost of pickling ``fn``, ``args`` and the result; a program using it
    must guard its entry point with ``if __name__ == "__main__":``, because
    the worker process imports the main module.

    Errors: an exception raised by ``fn`` is re-raised here. In process mode an
    unpicklable ``fn`` or argument raises :class:`NotPicklable` naming it before
    anything is started, and a worker process that dies raises
    :class:`CpuWorkerLost`. Bad arguments raise :class:`TypeError` /
    :class:`ValueError` naming them.

    Cancellation: a thread cannot be interrupted, so in thread mode a
    cancellation takes effect when ``fn`` returns (its result is then
    discarded). In process mode the worker process is killed at once.
    """
    if not callable(fn):
        raise TypeError(f"run_cpu(): fn must be a callable, got {fn!r}")
    if mode == "thread":
        return await trio.to_thread.run_sync(fn, *args)
    if mode == "process":
        _check_picklable(fn, args)
        # Imported here: `import foundation_trio` must not pull in anyio.
        from anyio import BrokenWorkerProcess
        from anyio import to_process as anyio_to_process

        try:
            result: R = await anyio_to_process.run_sync(fn, *args, cancellable=True)
        except BrokenWorkerProcess as error:
            raise CpuWorkerLost(
                f"run_cpu(mode='process'): the worker process running {fn!r} died "
                "before it answered"
            ) from error
        return result
    raise ValueError(f"run_cpu(): mode must be 'thread' or 'process', got {mode!r}")


async def cooperative(
    items: Iterable[T], fn: Callable[[T], R], *, max_slice: float = DEFAULT_MAX_SLICE
) -> list[R]:
    """Call ``fn(item)`` for each item in the event loop, yielding to other tasks
    at least every ``max_slice`` seconds; return the results in order.

    Time is read with :func:`time.perf_counter` (the real time the loop uses the
    CPU, also under a mock trio clock). After each call, if ``max_slice`` seconds
    have passed since the last yield, it yields with a trio checkpoint. The
    event loop is therefore blocked for at most ``max_slice`` plus the duration
    of one ``fn`` call: split the work into steps shorter than ``max_slice``.

    A checkpoint is also where a cancellation arrives: cancelling stops the loop
    between two items, and the results so far are discarded. An exception
    raised by ``fn`` propagates at once.
    """
    if not callable(fn):
        raise TypeError(f"cooperative(): fn must be a callable, got {fn!r}")
    if (
        isinstance(max_slice, bool)
        or not isinstance(max_slice, int | float)
        or not 0 < max_slice < math.inf
    ):
        raise ValueError(f"cooperative(): max_slice must be finite seconds > 0, got {max_slice!r}")
    try:
        iterator = iter(items)
    except TypeError:
        raise TypeError(f"cooperative(): items must be iterable, got {items!r}") from None
    results: list[R] = []
    clock = time.perf_counter
    await trio.lowlevel.checkpoint()
    slice_start = clock()
    for item in iterator:
        results.append(fn(item))
        if clock() - slice_start >= max_slice:
            await trio.lowlevel.checkpoint()
            slice_start = clock()
    return results


__all__ = ["DEFAULT_MAX_SLICE", "CpuMode", "cooperative", "run_cpu"]
