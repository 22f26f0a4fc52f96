"""The society's exceptions. Each names what failed and what to do about it."""

from __future__ import annotations

from ..runtime.errors import FoundationError
from ..runtime.pid import ExitReason, Pid


class SocietyError(FoundationError):
    """Base class of the errors raised by :mod:`foundation_trio.society`."""


class JobFailed(SocietyError):
    """A job did not complete: the worker running it exited with ``reason``.

    ``reason`` is the exception the job's handler raised (also the ``__cause__``),
    or the exit reason of a worker that was killed or stopped while running it.
    The worker is restarted by its pool's supervisor; the job is not retried.
    """

    def __init__(self, pool: str, worker: Pid, reason: ExitReason) -> None:
        super().__init__(f"job in pool {pool!r} failed: worker {worker} exited with {reason!r}")
        self.pool = pool
        self.worker = worker
        self.reason = reason


class SocietyStopped(SocietyError):
    """The society is not running (stopped, or its supervisor gave up).

    Jobs still queued when it stopped fail with this error; so do new submissions.
    """

    def __init__(self, society: str, reason: ExitReason) -> None:
        super().__init__(f"society {society!r} is not running (it exited with {reason!r})")
        self.society = society
        self.reason = reason


class QueueFull(SocietyError):
    """``cast_nowait`` found the chosen worker's queue at capacity."""

    def __init__(self, pool: str, capacity: int) -> None:
        super().__init__(
            f"the queue of the chosen worker of pool {pool!r} is full ({capacity} jobs); "
            "use `await society.cast(...)` to wait for room, or raise the pool's queue_size"
        )
        self.pool = pool
        self.capacity = capacity


class NotAMember(SocietyError, LookupError):
    """``neighbours(pid)`` was given a pid that is not a current worker of the society."""

    def __init__(self, society: str, pid: object) -> None:
        super().__init__(
            f"{pid!r} is not a running worker of society {society!r} (a restarted worker "
            "has a new pid: take it from society.members())"
        )
        self.pid = pid


class NotPicklable(SocietyError, TypeError):
    """``run_cpu(..., mode="process")`` was given a function or argument that cannot be
    sent to a worker process. ``argument`` names it (``"fn"``, ``"args[0]"``, ...)."""

    def __init__(self, argument: str, value: object, reason: str) -> None:
        super().__init__(
            f"run_cpu(mode='process'): {argument} ({value!r}) cannot be sent to the "
            f"worker process: {reason}. Pass a function defined at module level of an "
            "importable module (not a lambda, a closure or a bound method of an "
            "unpicklable object) and picklable arguments, or use mode='thread'"
        )
        self.argument = argument


class CpuWorkerLost(SocietyError):
    """The worker process of ``run_cpu(..., mode="process")`` died before answering
    (it crashed, was killed, or its result could not be read back)."""


__all__ = [
    "CpuWorkerLost",
    "JobFailed",
    "NotAMember",
    "NotPicklable",
    "QueueFull",
    "SocietyError",
    "SocietyStopped",
]
