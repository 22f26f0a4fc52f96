"""Remote processes: ``send``, ``call``, ``cast``, ``monitor``, ``link`` and ``exit``
across nodes, node monitors, and the names nodes announce to each other.

One :class:`ClusterService` per node is both the runtime's ``node.remote`` (the
runtime hands it every operation whose target is on another node) and the link
layer's :class:`~.links.LinkEvents` (the links hand it every frame that arrives).
Each operation becomes one :mod:`~.wire` envelope, sent on the peer's ``data``
channel, or on ``bulk`` when the frame is larger than :data:`BULK_THRESHOLD`;
pings use ``control``. A large ``bytes`` message given to ``send`` is streamed on
``bulk`` in pieces instead, and joined on the receiving node in a worker thread, so
that neither event loop spends tens of milliseconds copying it in one step.

Ordering: everything this node sends one peer on one channel goes through one
:class:`_Outbox`, in the order the operations were made, so the link's per-channel
FIFO order holds from operation to delivery. Process signals (monitor, down, link,
exit) travel on ``data`` with the messages, so that a message a process sends
before it exits arrives before its ``Down``, as in Erlang. A message larger than
:data:`BULK_THRESHOLD` goes on ``bulk`` and may be overtaken by smaller ones sent
after it.

Bookkeeping lives here, not in the runtime's process records: a local process with
remote links, remote watchers or node monitors gets one exit hook, which tells the
peers when it ends.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import attrs
import outcome
import trio
from trio.lowlevel import Abort, ParkingLot, Task, current_task, reschedule, wait_task_rescheduled

from ..runtime.checks import check_timeout
from ..runtime.context import EMPTY as EMPTY_CONTEXT
from ..runtime.context import request_context
from ..runtime.errors import CallTimeout, NodeDown, NoProcess, ServerExited
from ..runtime.node import Node, current_node
from ..runtime.pid import KILLED, Down, Exit, ExitReason, Pid, Ref
from ..runtime.process import (
    Process,
    current_process,
    deliver,
    reset_current_process,
    set_current_process,
)
from ..runtime.remote import make_cast, queue_call, shown_target
from ..runtime.server import Caller
from ..services import telemetry
from . import wire
from .errors import LinkProtocolError, NotConnected, SendQueueFull
from .options import Channel

if TYPE_CHECKING:
    from .links import Links
    from .membership import Membership

logger = logging.getLogger("foundation_trio.cluster")

BULK_THRESHOLD: Final = 64 * 1024
"""Frames larger than this many bytes go on the ``bulk`` channel (in chunks)."""

BACKLOG_LIMIT: Final = 1024
"""Frames an outbox holds beyond the link's own send queue before ``send``,
``call`` and ``cast`` wait for room. Signals (replies, ``Down``, exit signals)
never wait: their number is bounded by the calls, monitors and links made."""

YIELD_EVERY: Final = 64
"""Remote ``send`` and ``cast`` yield to other tasks once in this many operations
(and whenever they wait for room); every one checks for cancellation."""

NODE_UP_EVENT: Final = "cluster.node.up"
"""Telemetry event when a link to a peer comes up. Metadata: ``node``, ``peer``."""

NODE_DOWN_EVENT: Final = "cluster.node.down"
"""Telemetry event when a peer is seen going down. Metadata: ``node``, ``peer``,
``reason``."""

BULK_PIECE: Final = 60 * 1024
"""Bytes per piece of a streamed ``bytes`` message: with its envelope, a piece stays
within the links' 64 KiB chunk, so the links pass it on without cutting it again."""

PIECES_PER_YIELD: Final = 16
"""A streaming sender yields to other tasks after this many pieces (about 1 MB)."""

THREAD_JOIN_SIZE: Final = 1024 * 1024
"""Streamed messages of at least this many bytes are joined in a worker thread."""

MAX_STREAMS: Final = 16
"""Streamed messages one peer may have in progress at once."""

LEAVE_TIMEOUT: Final = 1.0
"""Seconds a stopping node waits for its peers to acknowledge that it leaves."""

NOT_CONNECTED: Final = "not connected"

_NIL: Final = b"\xc0"
"""``None`` in msgpack: the body of the reply to a ``stop``."""


class _Outbox:
    """Everything this node sends one peer on one channel, in order.

    Frames go straight into the link's send queue while nothing is held back;
    once that queue is full they wait here, in order, and a flusher task moves
    them on as the link drains.
    """

    __slots__ = (
        "_flushing",
        "_room",
        "_wakeup",
        "backlog",
        "channel",
        "closed",
        "peer",
        "service",
    )

    def __init__(self, service: ClusterService, peer: str, channel: Channel) -> None:
        self.service = service
        self.peer = peer
        self.channel = channel
        self.backlog: deque[bytes] = deque()
        self.closed = False
        self._room: ParkingLot | None = None
        self._wakeup = trio.Event()
        self._flushing = False

    def put_nowait(self, frame: bytes) -> None:
        """Queue ``frame``; never waits and never fails while the link is up."""
        if self.closed:
            return
        links = self.service.links
        if not self.backlog and links is not None:
            try:
                links.send_nowait(self.peer, self.channel, frame)
            except SendQueueFull:
                pass
            except NotConnected:
                return  # at most once: peer_down follows and fails what waits
            else:
                return
        self.backlog.append(frame)
        if not self._flushing:
            self._flushing = True
            self.service.start_task(self._flush)
        self._wakeup.set()

    async def wait_for_room(self) -> None:
        """Wait while the backlog is at :data:`BACKLOG_LIMIT` (a checkpoint only then)."""
        while len(self.backlog) >= BACKLOG_LIMIT and not self.closed:
            if self._room is None:
                self._room = ParkingLot()
            await self._room.park()

    async def _flush(self) -> None:
        try:
            while not self.closed:
                if not self.backlog:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    continue
                links = self.service.links
                if links is None:
                    return
                await links.send(self.peer, self.channel, self.backlog[0])
                if self.backlog:
                    self.backlog.popleft()
                if self._room is not None:
                    self._room.unpark()
        except NotConnected:
            pass
        finally:
            self._flushing = False

    def close(self) -> None:
        self.closed = True
        self.backlog.clear()
        self._wakeup.set()
        if self._room is not None:
            self._room.unpark_all()


class _Peer:
    """What this node knows of one connected peer."""

    __slots__ = ("name", "names", "outboxes")

    def __init__(self, service: ClusterService, name: str) -> None:
        self.name = name
        self.names: dict[str, Pid] = {}
        self.outboxes = {
            channel: _Outbox(service, name, channel)
            for channel in (Channel.CONTROL, Channel.DATA, Channel.BULK)
        }

    def outbox(self, frame: bytes) -> _Outbox:
        channel = Channel.BULK if len(frame) > BULK_THRESHOLD else Channel.DATA
        return self.outboxes[channel]

    def put_nowait(self, frame: bytes) -> None:
        self.outbox(frame).put_nowait(frame)

    def close(self) -> None:
        for outbox in self.outboxes.values():
            outbox.close()


class _PendingCall:
    """A call this node made to a process on another node, waiting for its reply."""

    __slots__ = ("_task", "peer", "ref", "service")

    def __init__(self, service: ClusterService, ref: int, peer: str, task: Task) -> None:
        self.service = service
        self.ref = ref
        self.peer = peer
        self._task: Task | None = task

    def finish(self, result: outcome.Outcome[Any]) -> None:
        task = self._task
        if task is None:
            return
        self._task = None
        self.service.pending.pop(self.ref, None)
        reschedule(task, result)

    def expire(self, target: object, timeout: float) -> None:
        self.finish(outcome.Error(CallTimeout(target, timeout)))

    def abort(self, _: Any) -> Abort:
        self._task = None
        self.service.pending.pop(self.ref, None)
        return Abort.SUCCEEDED


class RemoteCaller(Caller):
    """The :class:`~foundation_trio.Caller` a server sees for a call from another
    node: replying sends the answer back over the link."""

    __slots__ = ("_peer", "_ref", "_service")

    def __init__(
        self, service: ClusterService, server: Process, pid: Pid, peer: str, ref: int
    ) -> None:
        # The base class marks "still waiting" with the waiting task; a remote
        # caller has none here, so the task handling the frame stands in for it.
        super().__init__(server, pid, current_task())
        self._service = service
        self._peer = peer
        self._ref = ref

    def __repr__(self) -> str:
        return f"<Caller {self.pid} (remote)>"

    def _finish(self, result: outcome.Outcome[object]) -> bool:
        if self._task is None:
            return False
        self._task = None
        open_calls = self._server.open_calls
        if open_calls is not None:
            open_calls.discard(self)
        self._service.answer(self._peer, self._ref, self._server.pid, result)
        return True


@attrs.define(slots=True)
class _RemoteMonitor:
    """A local process watching a process on another node."""

    watcher: Process
    peer: str
    target: Pid | str


class ClusterService:
    """Remote processes for one node. Created by the cluster's boot step."""

    def __init__(self, node: Node, *, max_message_size: int = 64 * 1024 * 1024) -> None:
        self.node = node
        self.max_message_size = max_message_size
        """The largest streamed ``bytes`` message accepted from a peer."""
        self.links: Links | None = None
        self._nursery: trio.Nursery | None = None
        self.peers: dict[str, _Peer] = {}
        self.pending: dict[int, _PendingCall] = {}
        self._call_ids = itertools.count(1)
        self._ping_ids = itertools.count(1)
        self._pings: dict[int, trio.Event] = {}
        # local watcher's ref -> the remote process it watches
        self._monitors: dict[Ref, _RemoteMonitor] = {}
        # (peer, ref id) -> the local process a remote watcher watches, and back
        self._watched: dict[tuple[str, int], Process] = {}
        self._watchers: dict[Process, set[tuple[str, int]]] = {}
        # local process -> the remote pids it is linked with
        self._links: dict[Process, set[Pid]] = {}
        # node name -> local processes that monitor it (one entry per monitor_node)
        self._node_monitors: dict[str, list[Process]] = {}
        self._hooked: set[Process] = set()
        self._unyielded = 0
        self._stop_requested = trio.Event()
        self._leaving: set[str] = set()
        self._left = trio.Event()
        # (peer, stream) -> the pieces of a bytes message being streamed to us
        self._streams: dict[tuple[str, int], _Stream] = {}
        self._stream_ids = itertools.count(1)
        self._process: Process | None = None
        self.membership: Membership | None = None
        """The membership driver, fed the gossip channel and the peers' ups and downs."""

    def in_use(self, peer: str) -> bool:
        """Whether remote processes have state tied to the link to ``peer`` (calls
        waiting, monitors, links, node monitors, streams): the overlay keeps such a
        link open even when it is not a neighbour."""
        return (
            any(call.peer == peer for call in self.pending.values())
            or any(watch.peer == peer for watch in self._monitors.values())
            or any(key[0] == peer for key in self._watched)
            or any(pid.node == peer for pids in self._links.values() for pid in pids)
            or bool(self._node_monitors.get(peer))
            or any(key[0] == peer for key in self._streams)
        )

    # -- running --------------------------------------------------------------------

    def start_task(self, fn: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn)

    async def run(self, links: Links, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run ``links`` and this service's tasks in the calling process until it is
        asked to stop (then leave, see :meth:`request_stop`) or cancelled. Ready
        once the links are listening."""
        process = current_process("ClusterService.run()")
        process.behaviour = self
        self._process = process
        self._stop_requested = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(_run_links, links)
                self.links = links
                task_status.started()
                await self._stop_requested.wait()
                await self._leave()
                nursery.cancel_scope.cancel()
        finally:
            self.links = None
            self._nursery = None
            for peer in list(self.peers):
                self.peer_down(peer, "the cluster service stopped")

    def request_stop(self, reason: ExitReason) -> None:
        """Stop in order (the node or the supervisor asks): tell every peer this node
        is leaving, behind everything already sent, then close the links."""
        self._stop_requested.set()

    async def _leave(self) -> None:
        """Send :class:`~.wire.Leaving` on ``data`` to every peer and wait (at most
        :data:`LEAVE_TIMEOUT`) until each has answered or its link is gone.

        A peer handles ``Leaving`` after every message sent before it, so the
        ``Down`` and exit signals of this node's processes, which stopped before
        the cluster does, reach their monitors and links with their real reasons
        rather than as a lost connection.
        """
        if self.membership is not None:
            self.membership.leave()
        self._leaving = set(self.peers)
        self._left = trio.Event()
        frame = wire.encode_envelope(wire.Leaving())
        for peer in list(self._leaving):
            self._put(peer, frame)
        with trio.move_on_after(LEAVE_TIMEOUT):
            while self._leaving:
                await self._left.wait()
                self._left = trio.Event()

    def _peer_left(self, peer: str) -> None:
        if peer in self._leaving:
            self._leaving.discard(peer)
            self._left.set()

    # -- LinkEvents --------------------------------------------------------------------

    def peer_up(self, peer: str) -> None:
        if peer in self.peers:
            self.peer_down(peer, "replaced by a new link")
        state = self.peers[peer] = _Peer(self, peer)
        names = [(name, process.pid.id) for name, process in self.node.names.items()]
        state.put_nowait(wire.encode_envelope(wire.Names(names)))
        logger.info("node %s: peer %s is up", self.node.name, peer)
        self._emit(NODE_UP_EVENT, {"node": self.node.name, "peer": peer})
        if self.membership is not None:
            self.membership.peer_up(peer)

    def _emit(self, event: str, metadata: dict[str, object]) -> None:
        # The links may report from any task (a test severing a link, a tool):
        # the event is this node's, so it is emitted as the cluster's process.
        if self._process is None:
            return
        token = set_current_process(self._process)
        try:
            telemetry.execute(event, {"count": 1}, metadata)
        finally:
            reset_current_process(token)

    def peer_down(self, peer: str, reason: str) -> None:
        self._peer_left(peer)
        state = self.peers.pop(peer, None)
        if state is None:
            return
        state.close()
        for key in [k for k in self._streams if k[0] == peer]:
            del self._streams[key]
        logger.info("node %s: peer %s is down: %s", self.node.name, peer, reason)
        self._emit(NODE_DOWN_EVENT, {"node": self.node.name, "peer": peer, "reason": reason})
        for call in [c for c in self.pending.values() if c.peer == peer]:
            call.finish(outcome.Error(NodeDown(peer, reason)))
        lost = NodeDown(peer, reason)
        for ref, watch in [(r, m) for r, m in self._monitors.items() if m.peer == peer]:
            del self._monitors[ref]
            if watch.watcher.alive:
                watch.watcher.mailbox.put(Down(ref, watch.target, lost))
        for key in [k for k in self._watched if k[0] == peer]:
            process = self._watched.pop(key)
            keys = self._watchers.get(process)
            if keys is not None:
                keys.discard(key)
        for process, pids in list(self._links.items()):
            gone = [pid for pid in pids if pid.node == peer]
            for pid in gone:
                pids.discard(pid)
                process.exit_signal(pid, lost)
        for watcher in self._node_monitors.pop(peer, ()):
            if watcher.alive:
                watcher.mailbox.put(NodeDown(peer, reason))
        if self.membership is not None:
            self.membership.peer_down(peer, reason)

    async def message_received(self, peer: str, channel: Channel, data: bytes) -> None:
        if peer not in self.peers:
            # The peer told us it left (its link closes next) or has not been
            # announced up: nothing it sends now concerns a process here.
            return
        try:
            if channel is Channel.GOSSIP and self.membership is not None:
                self.membership.received(peer, data)
                return
            envelope = wire.decode_envelope(data)
            if isinstance(envelope, wire.BulkChunk | wire.BulkSend | wire.BulkAbort):
                await self._stream_piece(peer, channel, envelope)
            else:
                await self._dispatch(peer, envelope)
        except wire.WireError as exc:
            raise LinkProtocolError(f"from {peer}: {exc}") from None
        except Exception as exc:
            # A bug here must not leave the peer's state half-updated behind a link
            # that carries on: log it and have the link closed.
            logger.exception("node %s: handling a frame from %s failed", self.node.name, peer)
            raise LinkProtocolError(f"from {peer}: handling a frame failed: {exc!r}") from exc

    # -- handling what arrives ---------------------------------------------------------------

    async def _stream_piece(
        self, peer: str, channel: Channel, piece: wire.BulkChunk | wire.BulkSend | wire.BulkAbort
    ) -> None:
        if channel is not Channel.BULK:
            raise wire.WireError(f"a {type(piece).__name__} on the {channel.value} channel")
        key = (peer, piece.stream)
        if isinstance(piece, wire.BulkAbort):
            self._streams.pop(key, None)
            return
        parts = self._streams.get(key)
        if parts is None:
            if sum(1 for k in self._streams if k[0] == peer) >= MAX_STREAMS:
                raise wire.WireError(f"more than {MAX_STREAMS} bulk messages at once")
            parts = self._streams[key] = _Stream()
        parts.add(piece.data, self.max_message_size)
        if isinstance(piece, wire.BulkChunk):
            return
        del self._streams[key]
        if parts.size >= THREAD_JOIN_SIZE:
            # bytes.join releases the GIL for large joins of bytes: in a worker
            # thread the copy (tens of ms for 50 MB) does not stall this node.
            message = await trio.to_thread.run_sync(b"".join, parts.parts)
        else:
            message = b"".join(parts.parts)
        dest = self._local(piece.target)
        if dest is not None:
            await deliver(dest, message)

    def _local(self, target: wire.WireTarget) -> Process | None:
        node = self.node
        if isinstance(target, str):
            return node.names.get(target)
        if target[0] != node.name:
            return None
        return node.processes.get(target[1])

    async def _dispatch(self, peer: str, envelope: wire.Envelope) -> None:
        kind = type(envelope)
        if kind is wire.Send:
            assert isinstance(envelope, wire.Send)
            message = wire.decode_body(envelope.body)
            dest = self._local(envelope.target)
            if dest is not None:
                await deliver(dest, message)
        elif kind is wire.Call:
            assert isinstance(envelope, wire.Call)
            await self._incoming_call(peer, envelope)
        elif kind is wire.Reply:
            assert isinstance(envelope, wire.Reply)
            call = self.pending.get(envelope.ref)
            if call is not None and call.peer == peer:
                call.finish(outcome.Value(wire.decode_body(envelope.body)))
        elif kind is wire.Cast:
            assert isinstance(envelope, wire.Cast)
            request = wire.decode_body(envelope.body)
            dest = self._local(envelope.target)
            if dest is not None:
                await deliver(dest, make_cast(request, _received_context(envelope.context)))
        elif kind is wire.CallFailed:
            assert isinstance(envelope, wire.CallFailed)
            self._call_failed(peer, envelope)
        else:
            self._signal(peer, envelope)

    async def _incoming_call(self, peer: str, envelope: wire.Call) -> None:
        request = wire.decode_body(envelope.body)
        caller_pid = wire.unwire_pid(envelope.caller)
        server = self._local(envelope.target)
        if server is not None:
            mailbox = server.mailbox
            while mailbox.is_full() and server.alive:
                await mailbox.wait_for_room()
        if server is None or not server.alive:
            target = envelope.target
            shown = target if isinstance(target, str) else str(wire.unwire_pid(target))
            failure = wire.CallFailed(envelope.ref, None, False, wire.ReasonNoProcess(shown))
            self._put(peer, wire.encode_envelope(failure))
            return
        caller = RemoteCaller(self, server, caller_pid, peer, envelope.ref)
        queue_call(server, request, caller, _received_context(envelope.context))

    def _call_failed(self, peer: str, envelope: wire.CallFailed) -> None:
        call = self.pending.get(envelope.ref)
        if call is None or call.peer != peer:
            return
        reason = wire.decode_reason(envelope.reason)
        error: BaseException
        if envelope.server is None:
            error = reason if isinstance(reason, NoProcess) else NoProcess(str(reason))
        elif envelope.exited:
            error = ServerExited(wire.unwire_pid(envelope.server), reason)
        else:
            # the reply could not be encoded: the reason is the RemoteError saying so
            error = (
                reason
                if isinstance(reason, BaseException)
                else wire.RemoteError("CallFailed", f"the call failed: {reason!r}")
            )
        call.finish(outcome.Error(error))

    def _signal(self, peer: str, envelope: wire.Envelope) -> None:
        if isinstance(envelope, wire.Monitor):
            self._incoming_monitor(peer, envelope)
        elif isinstance(envelope, wire.DownSignal):
            ref = Ref(self.node.name, envelope.ref)
            watch = self._monitors.get(ref)
            if watch is None or watch.peer != peer:
                return
            del self._monitors[ref]
            # a name nobody had: the Down names the target as the watcher gave it
            pid = watch.target if isinstance(envelope.pid, str) else wire.unwire_pid(envelope.pid)
            if watch.watcher.alive:
                reason = wire.decode_reason(envelope.reason)
                watch.watcher.mailbox.put(Down(ref, pid, reason))
        elif isinstance(envelope, wire.Demonitor):
            process = self._watched.pop((peer, envelope.ref), None)
            if process is not None:
                self._watchers.get(process, set()).discard((peer, envelope.ref))
        elif isinstance(envelope, wire.Link):
            self._incoming_link(peer, envelope)
        elif isinstance(envelope, wire.Unlink):
            process = self._local(envelope.target)
            if process is not None:
                self._links.get(process, set()).discard(wire.unwire_pid(envelope.sender))
        elif isinstance(envelope, wire.ExitSignal):
            self._incoming_exit(envelope)
        elif isinstance(envelope, wire.Names):
            state = self.peers.get(peer)
            if state is not None:
                state.names = {name: Pid(peer, id) for name, id in envelope.names}
        elif isinstance(envelope, wire.NameChanged):
            state = self.peers.get(peer)
            names = {} if state is None else state.names
            if envelope.id is None:
                names.pop(envelope.name, None)
            else:
                names[envelope.name] = Pid(peer, envelope.id)
        elif isinstance(envelope, wire.Stop):
            self._incoming_stop(peer, envelope)
        elif isinstance(envelope, wire.Leaving):
            self._put(peer, wire.encode_envelope(wire.LeavingAck()))
            self.peer_down(peer, f"node {peer!r} stopped")
        elif isinstance(envelope, wire.LeavingAck):
            self._peer_left(peer)
        elif isinstance(envelope, wire.Ping):
            self._put(peer, wire.encode_envelope(wire.Pong(envelope.seq)), Channel.CONTROL)
        elif isinstance(envelope, wire.Pong):
            event = self._pings.pop(envelope.seq, None)
            if event is not None:
                event.set()
        else:  # pragma: no cover - the union is closed; a new envelope needs a handler
            raise LinkProtocolError(f"no handler for {type(envelope).__name__} from {peer}")

    def _incoming_monitor(self, peer: str, envelope: wire.Monitor) -> None:
        process = self._local(envelope.target)
        if process is None or not process.alive:
            target = envelope.target
            shown = target if isinstance(target, str) else str(wire.unwire_pid(target))
            down = wire.DownSignal(envelope.ref, target, wire.ReasonNoProcess(shown))
            self._put(peer, wire.encode_envelope(down))
            return
        key = (peer, envelope.ref)
        self._watched[key] = process
        self._watchers.setdefault(process, set()).add(key)
        self._hook(process)

    def _incoming_stop(self, peer: str, envelope: wire.Stop) -> None:
        process = self._local(envelope.target)
        if process is None or not process.alive:
            target = envelope.target
            shown = target if isinstance(target, str) else str(wire.unwire_pid(target))
            failure = wire.CallFailed(envelope.ref, None, False, wire.ReasonNoProcess(shown))
            self._put(peer, wire.encode_envelope(failure))
            return
        ref = envelope.ref

        def ended(_: Process, __: ExitReason) -> None:
            self._put(peer, wire.encode_envelope(wire.Reply(ref, wire.Raw(_NIL))))

        process.add_exit_hook(ended)
        process.stop(wire.decode_reason(envelope.reason))

    def _incoming_link(self, peer: str, envelope: wire.Link) -> None:
        sender = wire.unwire_pid(envelope.sender)
        process = self._local(envelope.target)
        if process is None or not process.alive:
            reason = wire.ReasonNoProcess(str(wire.unwire_pid(envelope.target)))
            signal = wire.ExitSignal(envelope.target, envelope.sender, reason, True)
            self._put(peer, wire.encode_envelope(signal))
            return
        self._links.setdefault(process, set()).add(sender)
        self._hook(process)

    def _incoming_exit(self, envelope: wire.ExitSignal) -> None:
        process = self._local(envelope.target)
        if process is None or not process.alive:
            return
        sender = wire.unwire_pid(envelope.sender)
        if envelope.linked:
            linked = self._links.get(process)
            if linked is None or sender not in linked:
                return  # unlinked meanwhile: the signal is void
            linked.discard(sender)
        reason = wire.decode_reason(envelope.reason)
        if not envelope.linked and reason == KILLED:
            if process.kill_reason is None:
                process.killed_by = sender
            process.kill(KILLED)
        else:
            process.exit_signal(sender, reason)

    # -- local processes that remote ones care about ---------------------------------------

    def _hook(self, process: Process) -> None:
        if process not in self._hooked:
            self._hooked.add(process)
            process.add_exit_hook(self._local_exit)

    def _local_exit(self, process: Process, reason: ExitReason) -> None:
        self._hooked.discard(process)
        pid = process.pid
        # encoded at most once, and only if someone elsewhere needs it (an
        # exception's traceback is formatted for it)
        encoded: wire.Reason | None = None
        for remote in self._links.pop(process, ()):
            if encoded is None:
                encoded = wire.encode_reason(reason)
            signal = wire.ExitSignal(wire.wire_pid(pid), wire.wire_pid(remote), encoded, True)
            self._put(remote.node, wire.encode_envelope(signal))
        for peer, ref in self._watchers.pop(process, ()):
            self._watched.pop((peer, ref), None)
            if encoded is None:
                encoded = wire.encode_reason(reason)
            down = wire.DownSignal(ref, wire.wire_pid(pid), encoded)
            self._put(peer, wire.encode_envelope(down))
        for watch_ref, watch in [
            (r, m) for r, m in self._monitors.items() if m.watcher is process
        ]:
            del self._monitors[watch_ref]
            self._put(watch.peer, wire.encode_envelope(wire.Demonitor(watch_ref.id)))
        for name, watchers in list(self._node_monitors.items()):
            kept = [w for w in watchers if w is not process]
            if kept:
                self._node_monitors[name] = kept
            else:
                del self._node_monitors[name]

    # -- sending -------------------------------------------------------------------------------

    def _put(self, peer: str, frame: bytes, channel: Channel | None = None) -> None:
        state = self.peers.get(peer)
        if state is None:
            return
        if channel is None:
            state.put_nowait(frame)
        else:
            state.outboxes[channel].put_nowait(frame)

    def answer(self, peer: str, ref: int, server: Pid, result: outcome.Outcome[object]) -> None:
        """Send the outcome of a call from ``peer`` back to it."""
        if isinstance(result, outcome.Value):
            try:
                body = wire.encode_body(result.value)
            except TypeError as exc:
                logger.warning(
                    "reply of %s to a call from %s cannot be sent: %s", server, peer, exc
                )
                failure = wire.ReasonError("TypeError", f"the reply cannot be sent: {exc}", "")
                frame = wire.encode_envelope(
                    wire.CallFailed(ref, wire.wire_pid(server), False, failure)
                )
            else:
                frame = wire.encode_envelope(wire.Reply(ref, wire.Raw(body)))
        else:
            assert isinstance(result, outcome.Error)
            error = result.error
            reason: ExitReason = error.reason if isinstance(error, ServerExited) else error
            frame = wire.encode_envelope(
                wire.CallFailed(ref, wire.wire_pid(server), True, wire.encode_reason(reason))
            )
        self._put(peer, frame)

    async def send(self, sender: Process, node: str, dest: Pid | str, message: object) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        state = self._connected(node, dest)
        if state is not None:
            if type(message) is bytes and len(message) > BULK_THRESHOLD:
                await self._stream(state, sender, dest, message)
                return
            frame = _send_frame(sender, dest, message)
            outbox = state.outbox(frame)
            await outbox.wait_for_room()
            outbox.put_nowait(frame)
        await self._maybe_yield()

    async def _stream(self, state: _Peer, sender: Process, dest: Pid | str, data: bytes) -> None:
        """Send ``data`` on ``bulk`` in pieces of :data:`BULK_PIECE` bytes, yielding
        every :data:`PIECES_PER_YIELD` pieces: no copy of the whole message is made
        here, and other tasks run while it is cut up. Cancelled part-way, it tells the
        peer to drop what it got."""
        outbox = state.outboxes[Channel.BULK]
        stream = next(self._stream_ids)
        view = memoryview(data)
        size = len(data)
        sent_any = False
        try:
            for index, offset in enumerate(range(0, size, BULK_PIECE)):
                piece = bytes(view[offset : offset + BULK_PIECE])
                if offset + BULK_PIECE >= size:
                    envelope: wire.Envelope = wire.BulkSend(
                        stream, wire.wire_pid(sender.pid), _wire_target(dest), piece
                    )
                else:
                    envelope = wire.BulkChunk(stream, piece)
                await outbox.wait_for_room()
                if outbox.closed:
                    return  # the link was lost: at most once
                outbox.put_nowait(wire.encode_envelope(envelope))
                sent_any = True
                if index % PIECES_PER_YIELD == PIECES_PER_YIELD - 1:
                    await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            if sent_any:
                outbox.put_nowait(wire.encode_envelope(wire.BulkAbort(stream)))
            raise

    def send_nowait(self, sender: Process, node: str, dest: Pid | str, message: object) -> None:
        state = self._connected(node, dest)
        if state is None:
            return
        frame = _send_frame(sender, dest, message)
        outbox = state.outbox(frame)
        if len(outbox.backlog) >= BACKLOG_LIMIT:
            raise SendQueueFull(node, outbox.channel.value, BACKLOG_LIMIT)
        outbox.put_nowait(frame)

    async def _maybe_yield(self) -> None:
        """The end of a remote ``send`` or ``cast``: it yields to other tasks only
        every :data:`YIELD_EVERY` operations. A sender in a loop so fills the link's
        queue with many frames before its writer runs, and they leave coalesced in
        one websocket message instead of one each (see ``benchmarks/cluster.py``).
        Cancellation is still checked on entry to every one."""
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _connected(self, node: str, dest: Pid | str) -> _Peer | None:
        """The peer ``node``; for a name on a node that is not connected,
        :class:`NodeDown`; for a pid there, None (the message is dropped, as a
        message to a process that has exited is)."""
        state = self.peers.get(node)
        if state is None and isinstance(dest, str):
            raise NodeDown(node, NOT_CONNECTED)
        return state

    async def cast(self, sender: Process, node: str, dest: Pid | str, request: object) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        state = self.peers.get(node)
        if state is not None:
            cast = wire.Cast(
                wire.wire_pid(sender.pid),
                _wire_target(dest),
                _context(),
                wire.Raw(wire.encode_body(request)),
            )
            frame = wire.encode_envelope(cast)
            outbox = state.outbox(frame)
            await outbox.wait_for_room()
            outbox.put_nowait(frame)
        await self._maybe_yield()

    async def call(
        self, caller: Process, node: str, dest: Pid | str, request: object, timeout: float
    ) -> Any:
        await trio.lowlevel.checkpoint_if_cancelled()
        target = shown_target(node, dest)
        state = self.peers.get(node)
        if state is None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise NodeDown(node, NOT_CONNECTED)
        ref = next(self._call_ids)
        envelope = wire.Call(
            ref,
            wire.wire_pid(caller.pid),
            _wire_target(dest),
            _context(),
            wire.Raw(wire.encode_body(request)),
        )
        frame = wire.encode_envelope(envelope)
        outbox = state.outbox(frame)
        if len(outbox.backlog) >= BACKLOG_LIMIT:
            deadline = trio.current_time() + timeout
            with trio.move_on_at(deadline):
                await outbox.wait_for_room()
            if len(outbox.backlog) >= BACKLOG_LIMIT:
                raise CallTimeout(target, timeout)
            timeout = deadline - trio.current_time()
            if node not in self.peers:
                raise NodeDown(node, "the link was lost while the call waited to be sent")
        slot = _PendingCall(self, ref, node, current_task())
        self.pending[ref] = slot
        outbox.put_nowait(frame)
        if timeout != math.inf:
            self.node.call_timers.add(slot, target, timeout)
        return await wait_task_rescheduled(slot.abort)

    async def stop(
        self, caller: Process, node: str, dest: Pid | str, reason: ExitReason, timeout: float
    ) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        state = self.peers.get(node)
        if state is None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise NodeDown(node, NOT_CONNECTED)
        ref = next(self._call_ids)
        stop = wire.Stop(ref, _wire_target(dest), wire.encode_reason(reason))
        slot = _PendingCall(self, ref, node, current_task())
        self.pending[ref] = slot
        state.put_nowait(wire.encode_envelope(stop))
        if timeout != math.inf:
            self.node.call_timers.add(slot, shown_target(node, dest), timeout)
        await wait_task_rescheduled(slot.abort)

    def monitor(self, watcher: Process, ref: Ref, node: str, dest: Pid | str) -> None:
        state = self.peers.get(node)
        if state is None:
            watcher.mailbox.put(Down(ref, _shown(node, dest), NodeDown(node, NOT_CONNECTED)))
            return
        self._monitors[ref] = _RemoteMonitor(watcher, node, _shown(node, dest))
        self._hook(watcher)
        monitor = wire.Monitor(ref.id, wire.wire_pid(watcher.pid), _wire_target(dest))
        state.put_nowait(wire.encode_envelope(monitor))

    def demonitor(self, watcher: Process, ref: Ref) -> bool:
        watch = self._monitors.get(ref)
        if watch is None or watch.watcher is not watcher:
            return False
        del self._monitors[ref]
        self._put(watch.peer, wire.encode_envelope(wire.Demonitor(ref.id)))
        return True

    def _resolve(self, node: str, dest: Pid | str) -> Pid | None:
        if isinstance(dest, Pid):
            return dest
        return self.whereis(node, dest)

    def link(self, process: Process, node: str, dest: Pid | str) -> None:
        pid = self._resolve(node, dest)
        if node not in self.peers or pid is None:
            reason: BaseException = (
                NodeDown(node, NOT_CONNECTED)
                if node not in self.peers
                else NoProcess((dest, node))
            )
            if process.trap_exits and isinstance(dest, Pid):
                process.mailbox.put(Exit(dest, reason))
                return
            raise reason
        self._links.setdefault(process, set()).add(pid)
        self._hook(process)
        link = wire.Link(wire.wire_pid(process.pid), wire.wire_pid(pid))
        self._put(node, wire.encode_envelope(link))

    def unlink(self, process: Process, node: str, dest: Pid | str) -> None:
        pid = self._resolve(node, dest)
        linked = self._links.get(process)
        if pid is None or linked is None or pid not in linked:
            return
        linked.discard(pid)
        self._put(
            node, wire.encode_envelope(wire.Unlink(wire.wire_pid(process.pid), wire.wire_pid(pid)))
        )

    def exit(self, sender: Process, node: str, dest: Pid | str, reason: ExitReason) -> None:
        signal = wire.ExitSignal(
            wire.wire_pid(sender.pid), _wire_target(dest), wire.encode_reason(reason), False
        )
        self._put(node, wire.encode_envelope(signal))

    def whereis(self, node: str, name: str) -> Pid | None:
        state = self.peers.get(node)
        return None if state is None else state.names.get(name)

    def names_changed(self, name: str, pid: Pid | None) -> None:
        if not self.peers:
            return
        frame = wire.encode_envelope(wire.NameChanged(name, None if pid is None else pid.id))
        for state in self.peers.values():
            state.put_nowait(frame)

    # -- node-level ------------------------------------------------------------------------------

    def monitor_node(self, watcher: Process, node: str) -> None:
        if node not in self.peers:
            watcher.mailbox.put(NodeDown(node, NOT_CONNECTED))
            return
        self._node_monitors.setdefault(node, []).append(watcher)
        self._hook(watcher)

    def demonitor_node(self, watcher: Process, node: str) -> bool:
        watchers = self._node_monitors.get(node)
        if not watchers or watcher not in watchers:
            return False
        watchers.remove(watcher)
        if not watchers:
            del self._node_monitors[node]
        return True

    async def ping(self, node: str, timeout: float) -> float:
        state = self.peers.get(node)
        if state is None:
            await trio.lowlevel.checkpoint()
            raise NodeDown(node, NOT_CONNECTED)
        seq = next(self._ping_ids)
        event = self._pings[seq] = trio.Event()
        start = trio.current_time()
        try:
            state.outboxes[Channel.CONTROL].put_nowait(wire.encode_envelope(wire.Ping(seq)))
            with trio.move_on_after(timeout):
                await event.wait()
        finally:
            self._pings.pop(seq, None)
        if not event.is_set():
            if node not in self.peers:
                raise NodeDown(node, "the link was lost during the ping")
            raise CallTimeout(f"ping of node {node!r}", timeout)
        return trio.current_time() - start


def _send_frame(sender: Process, dest: Pid | str, message: object) -> bytes:
    envelope = wire.Send(
        wire.wire_pid(sender.pid), _wire_target(dest), wire.Raw(wire.encode_body(message))
    )
    return wire.encode_envelope(envelope)


class _Stream:
    """The pieces of a ``bytes`` message being streamed from a peer."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes, limit: int) -> None:
        self.size += len(data)
        if self.size > limit:
            raise wire.WireError(f"a streamed message is larger than {limit} bytes")
        self.parts.append(data)


def _context() -> dict[str, Any]:
    snapshot: Mapping[str, object] = request_context.get()
    return dict(snapshot) if snapshot else {}


def _received_context(context: dict[str, Any]) -> Mapping[str, object]:
    """A context snapshot from the wire, as the runtime carries one: the shared
    empty mapping when empty (the server compares it by identity), else read-only."""
    return MappingProxyType(context) if context else EMPTY_CONTEXT


def _wire_target(dest: Pid | str) -> wire.WireTarget:
    return dest if isinstance(dest, str) else wire.wire_pid(dest)


def _shown(node: str, dest: Pid | str) -> Pid | str:
    return dest if isinstance(dest, Pid) else str((dest, node))


async def _run_links(links: Links, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    await links.run(task_status=task_status)


# -- the public functions (``ft.nodes`` etc.) --------------------------------------------------


def _service(what: str) -> ClusterService:
    return current_node().extension(ClusterService, f"{what}: the cluster")


def _check_node(name: object, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{what}: a node name is a non-empty str, got {name!r}")
    return name


def nodes() -> list[str]:
    """The names of the nodes this node has a link to, sorted. Empty without a cluster."""
    service = current_node().find_extension(ClusterService)
    return [] if service is None else sorted(service.peers)


def monitor_node(name: str) -> None:
    """Deliver :class:`~foundation_trio.NodeDown` ``(name, reason)`` to the calling
    process when the link to node ``name`` is lost; at once if there is none now.

    Each call adds one monitor, which fires once and is then gone (as Erlang's
    ``monitor_node``); :func:`demonitor_node` removes one. A node without a cluster
    has no links: the message arrives at once.
    """
    _check_node(name, "monitor_node()")
    watcher = current_process("monitor_node()")
    service = watcher.node.find_extension(ClusterService)
    if service is None:
        watcher.mailbox.put(NodeDown(name, NOT_CONNECTED))
        return
    service.monitor_node(watcher, name)


def demonitor_node(name: str) -> bool:
    """Remove one of the calling process's monitors of node ``name``; return whether
    there was one. A ``NodeDown`` already delivered stays in the mailbox."""
    _check_node(name, "demonitor_node()")
    watcher = current_process("demonitor_node()")
    service = watcher.node.find_extension(ClusterService)
    return service is not None and service.demonitor_node(watcher, name)


async def ping(name: str, timeout: float | None = 5.0) -> float:
    """Send a ping to node ``name`` on the ``control`` channel and return the round
    trip in seconds.

    Raises :class:`~foundation_trio.NodeDown` if there is no link to it (or it is
    lost meanwhile) and :class:`~foundation_trio.CallTimeout` if no answer comes
    within ``timeout`` seconds (``None``: wait for ever). Cancelling abandons it.
    """
    _check_node(name, "ping()")
    seconds = check_timeout(timeout, "ping()")
    return await _service("ping()").ping(name, seconds)


def cluster_address() -> str:
    """The ``host:port`` this node's cluster endpoint listens on (known once the node
    has started; with ``listen="127.0.0.1:0"`` the port the system chose).
    :class:`LookupError` if the node was opened without ``cluster=``."""
    links = _service("cluster_address()").links
    if links is None:
        raise LookupError("cluster_address(): the cluster's links are not running")
    return links.address


async def connect_node(address: str) -> str:
    """Open a link to the node listening at ``address`` (``host:port``) and return its
    name. Raises the link layer's errors (``HandshakeFailed``, ``OSError``) if it
    cannot. Links to seeds are opened by the cluster itself."""
    if not isinstance(address, str) or not address:
        raise TypeError(f"connect_node(): address is a 'host:port' str, got {address!r}")
    links = _service("connect_node()").links
    if links is None:
        raise LookupError("connect_node(): the cluster's links are not running")
    return await links.connect(address)
