"""A bounded mailbox with selective receive.

A mailbox belongs to one process. Any task may put messages in; only the
owning process takes them out. User messages respect the capacity; signals
(:class:`~foundation_trio.Down`, :class:`~foundation_trio.Exit`) and the
runtime's own requests are always delivered, as in Erlang, because losing
them would break supervision.

Only one task at a time may wait in :meth:`Mailbox.receive`: the process's
own task. Tasks a process starts may share its mailbox but must not wait on
it concurrently.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio
from trio.lowlevel import (
    Abort,
    ParkingLot,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from .checks import check_timeout
from .errors import ReceiveTimeout

DEFAULT_MAILBOX_SIZE = 1024
"""Messages a mailbox holds before ``send`` waits and ``send_nowait`` raises."""

Match = Callable[[Any], bool]

_NOTHING: Any = object()

# Shared by every mailbox that has never received a message: an idle process
# then costs no queue at all (an empty deque alone is 760 bytes).
_NEVER_USED: deque[Any] = deque(maxlen=0)


class Mailbox:
    """Messages waiting for one process, in arrival order."""

    __slots__ = ("_messages", "_receiver", "_room", "capacity")

    def __init__(self, capacity: int = DEFAULT_MAILBOX_SIZE) -> None:
        self._messages: deque[Any] = _NEVER_USED
        self._receiver: Task | None = None
        self._room: ParkingLot | None = None
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self._messages)

    def is_full(self) -> bool:
        return len(self._messages) >= self.capacity

    # -- putting messages in ------------------------------------------------

    def put(self, message: object) -> None:
        """Append ``message`` and wake the receiver. The caller checks capacity."""
        if self._messages is _NEVER_USED:
            self._messages = deque()
        self._messages.append(message)
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver)

    async def wait_for_room(self) -> None:
        """Wait until the mailbox has room (or :meth:`close` gave up on it)."""
        if self._room is None:
            self._room = ParkingLot()
        await self._room.park()

    def close(self) -> None:
        """The owner is gone: release every sender waiting for room."""
        if self._room is not None:
            self._room.unpark_all()
        self._messages = _NEVER_USED

    def _freed_one(self) -> None:
        room = self._room
        if room is not None and room and len(self._messages) < self.capacity:
            room.unpark()

    # -- taking messages out (owner only) -------------------------------------

    def take_nowait(self) -> Any:
        """Pop the oldest message, or return the module's nothing-sentinel."""
        if not self._messages:
            return _NOTHING
        message = self._messages.popleft()
        if self._room is not None:
            self._freed_one()
        return message

    def take_matching(self, match: Match, start: int = 0) -> tuple[Any, int]:
        """Remove and return the first message from ``start`` on that ``match`` accepts.

        Returns ``(message, index)``; when none matches, ``(nothing, len)`` so that
        the caller can resume scanning where it stopped once more arrive.
        """
        messages = self._messages
        for index in range(start, len(messages)):
            message = messages[index]
            if match(message):
                del messages[index]
                if self._room is not None:
                    self._freed_one()
                return message, index
        return _NOTHING, len(messages)

    def flush(self, match: Match) -> int:
        """Remove every message ``match`` accepts; return how many were removed."""
        kept = [m for m in self._messages if not match(m)]
        removed = len(self._messages) - len(kept)
        if removed:
            self._messages = deque(kept)
            if self._room is not None:
                self._room.unpark_all()
        return removed

    def claim_receiver(self) -> None:
        """Make the calling task the one :meth:`put` and :meth:`wake` will wake;
        then park it with ``wait_task_rescheduled(mailbox.abort_wait)``."""
        if self._receiver is not None:
            raise RuntimeError(
                "two tasks are receiving from the same process mailbox at once; "
                "only the process's own task may receive"
            )
        self._receiver = current_task()

    def abort_wait(self, _: Any) -> Abort:
        self._receiver = None
        return Abort.SUCCEEDED

    async def wait(self) -> None:
        """Park until something is put in (or :meth:`wake` is called)."""
        self.claim_receiver()
        await wait_task_rescheduled(self.abort_wait)

    def wake(self) -> None:
        """Wake a parked receiver without a message (it re-checks its state)."""
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver)

    async def receive(self, match: Match | None = None, timeout: float | None = None) -> Any:
        """Take the oldest message (that ``match`` accepts), waiting up to ``timeout``.

        Messages ``match`` rejects stay in the mailbox in arrival order.
        ``timeout=0`` only looks; ``None`` or ``math.inf`` waits forever.
        Raises :class:`~foundation_trio.ReceiveTimeout` when the time runs out.
        Cancellation while waiting leaves the mailbox untouched.
        """
        await checkpoint_if_cancelled()
        seconds = check_timeout(timeout, "receive()")
        if match is not None and not callable(match):
            raise TypeError(f"receive(): match must be a predicate (callable), got {match!r}")
        if match is None:
            message = self.take_nowait()
            scanned = 0
        else:
            message, scanned = self.take_matching(match)
        if message is not _NOTHING:
            await cancel_shielded_checkpoint()
            return message
        if seconds <= 0:
            raise ReceiveTimeout("no matching message was waiting")
        deadline = trio.current_time() + seconds
        with trio.CancelScope(deadline=deadline):
            while True:
                await self.wait()
                if match is None:
                    message = self.take_nowait()
                else:
                    message, scanned = self.take_matching(match, scanned)
                if message is not _NOTHING:
                    return message
        raise ReceiveTimeout(f"no matching message within {timeout} s")


def is_nothing(value: object) -> bool:
    """True for the sentinel :meth:`Mailbox.take_nowait` returns when empty."""
    return value is _NOTHING
