"""The cluster transport's exceptions. Each message says what happened and what to do."""

from __future__ import annotations

from ..runtime.errors import FoundationError


class NotConnected(FoundationError, ConnectionError):
    """There is no live link to ``peer``, or it went down while a send waited.

    A message that was only queued when a link went down is lost (links are
    at-most-once across a link loss); a send still waiting for room in the queue
    raises this instead of returning.
    """

    def __init__(self, peer: str, detail: str = "") -> None:
        more = f": {detail}" if detail else ""
        super().__init__(
            f"no live link to node {peer!r}{more}; check Links.peers() or wait for the "
            "peer to come up (links reconnect by themselves to seeds and known peers)"
        )
        self.peer = peer
        self.detail = detail


class SendQueueFull(FoundationError):
    """``send_nowait`` found the channel's send queue to ``peer`` at capacity."""

    def __init__(self, peer: str, channel: str, capacity: int) -> None:
        super().__init__(
            f"send queue of channel {channel!r} to node {peer!r} is full ({capacity} "
            "messages); use `await send(...)` to wait for room, or raise the channel's "
            "`send_queue_size` in ft.Cluster"
        )
        self.peer = peer
        self.channel = channel
        self.capacity = capacity


class HandshakeFailed(FoundationError, ConnectionError):
    """A link handshake was refused or broke off. ``reason`` says why."""

    def __init__(self, reason: str, remote: str = "") -> None:
        where = f" with {remote}" if remote else ""
        super().__init__(
            f"cluster handshake{where} failed: {reason}; both nodes need the same cookie, "
            "protocol version and (if set) TLS setup, and distinct node names"
        )
        self.reason = reason
        self.remote = remote


class LinkProtocolError(FoundationError):
    """A peer sent something the link protocol does not allow.

    Raised by the transport's decoders and by ``LinkEvents.message_received``
    (for a body it cannot decode); the link to that peer is closed with this
    message as the reason, and the node carries on.
    """


class FrameTooLarge(LinkProtocolError, ValueError):
    """A frame or reassembled message is larger than the configured limit."""

    def __init__(self, size: int, limit: int, what: str) -> None:
        super().__init__(
            f"{what} of {size} bytes is larger than the limit of {limit} bytes; send large "
            "payloads on the bulk channel, or raise the limit in ft.Cluster"
        )
        self.size = size
        self.limit = limit
