"""Records shared by the sans-IO overlay and broadcast cores.

A core never touches a socket. It asks its driver for I/O through *effects* and learns
what happened on the links through *link events*:

* :class:`Send` asks the driver to deliver ``message`` to ``to``. The driver opens a
  transient connection when no link to ``to`` is open (HyParView's SHUFFLEREPLY travels
  that way), and never reports anything back for a message that was lost.
* :class:`Connect` asks the driver to open a long-lived link. Success is silent; failure
  comes back as a :class:`ConnectFailed` event.
* :class:`CloseLink` asks the driver to close a link the core no longer wants.
* :class:`NeighborUp` / :class:`NeighborDown` tell the layer above (Plumtree) that the
  overlay gained or lost a neighbour.
* :class:`LinkDown` is fed to a core when an open link broke (reset, write error, failure
  detector verdict); :class:`ConnectFailed` when a requested link could not be opened.

Node ids are opaque strings: a core compares and hashes them and never parses them.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

NodeId: TypeAlias = str


@attrs.frozen(slots=True)
class Send:
    """Deliver ``message`` to node ``to``; losses are not reported back."""

    to: NodeId
    message: object


@attrs.frozen(slots=True)
class Connect:
    """Open a long-lived link to ``peer``; a failure comes back as :class:`ConnectFailed`."""

    peer: NodeId


@attrs.frozen(slots=True)
class CloseLink:
    """Close the link to ``peer``; the core has already forgotten it as a neighbour."""

    peer: NodeId


@attrs.frozen(slots=True)
class NeighborUp:
    """``peer`` became an overlay neighbour (an active-view member for HyParView)."""

    peer: NodeId


@attrs.frozen(slots=True)
class NeighborDown:
    """``peer`` stopped being an overlay neighbour, for whatever reason."""

    peer: NodeId


@attrs.frozen(slots=True)
class LinkDown:
    """Driver event: the open link to ``peer`` broke."""

    peer: NodeId


@attrs.frozen(slots=True)
class ConnectFailed:
    """Driver event: a :class:`Connect` to ``peer`` failed (refused, timed out)."""

    peer: NodeId


def require_positive(owner: str, name: str, value: float) -> None:
    """Raise ``ValueError`` naming ``owner.name`` unless ``value`` is > 0."""
    if not value > 0:
        raise ValueError(f"{owner}.{name} must be > 0, got {value!r}")


def require_non_negative(owner: str, name: str, value: float) -> None:
    """Raise ``ValueError`` naming ``owner.name`` unless ``value`` is >= 0."""
    if not value >= 0:
        raise ValueError(f"{owner}.{name} must be >= 0, got {value!r}")
