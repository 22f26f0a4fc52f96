"""Options of a node's cluster transport: ``ft.Cluster``, ``ft.ChannelOptions`` and
``ft.ClusterTLS``.

Every option is checked when the object is built (``ConfigError`` naming the
field); :meth:`Cluster.from_mapping` builds one from plain data (a config file)
through the strict cattrs structuring of ``_validation.py``.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import random
import ssl
from collections.abc import Mapping
from typing import Any

import attrs

from .._validation import converter, structure_options
from ..runtime.errors import ConfigError
from ._checks import seconds as _seconds
from ._checks import to_float as _to_float
from ._checks import where as _where
from .discovery import Discovery, to_discovery

KIB = 1024
MIB = 1024 * KIB

FRAME_OVERHEAD = 16
"""Bytes a frame header may add to a message (kind, lengths): a frame limit must allow
a chunk of ``chunk_size`` plus this."""


class Channel(enum.Enum):
    """The four channels of a link; each is its own websocket connection, so a bulk
    transfer never queues a heartbeat behind it."""

    CONTROL = "control"
    """Heartbeats, membership, monitors: small and urgent."""
    GOSSIP = "gossip"
    """Broadcast and anti-entropy traffic."""
    DATA = "data"
    """User messages (send, call, cast)."""
    BULK = "bulk"
    """Large payloads, sent in chunks."""


def parse_address(address: object, what: str = "address") -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"`` for IPv6) as ``(host, port)``, or ``ConfigError``."""
    if not isinstance(address, str) or not address:
        raise ConfigError(f"{what}: expected 'host:port', got {address!r}")
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{what}: expected 'host:port' with a numeric port, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{what}: {host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ConfigError(f"{what}: write an IPv6 host in brackets, like '[::1]:7400'")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port must be 0..65535, got {port}")
    return host, port


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- field checks: each raises ConfigError naming the field --------------------------


def _int_at_least(low: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(
                f"{_where(instance, attribute)}: expected an int >= {low}, got {value!r}"
            )

    return check


def _optional_positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    ok = value is None or (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value > 0
    )
    if not ok:
        raise ConfigError(
            f"{_where(instance, attribute)}: expected a finite number greater than 0 or "
            f"None, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class ChannelOptions:
    """Limits of one channel of every link.

    ``send_queue_size`` bounds the messages queued to one peer on this channel;
    ``Links.send`` waits for room, ``send_nowait`` raises ``SendQueueFull``.
    ``max_frame_size`` bounds one websocket message in both directions: small
    messages are coalesced into frames up to this size, and a peer sending a
    larger frame has its link closed.
    """

    send_queue_size: int = attrs.field(default=1024, validator=_int_at_least(1))
    max_frame_size: int = attrs.field(default=256 * KIB, validator=_int_at_least(1024))


def _default_bulk() -> ChannelOptions:
    return ChannelOptions(send_queue_size=64)


def _check_channel(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, ChannelOptions):
        raise ConfigError(
            f"{_where(instance, attribute)}: expected ft.ChannelOptions, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class ClusterTLS:
    """TLS for every link of a node: a node both accepts connections and dials them.

    ``server`` wraps accepted connections (an ``ssl.SSLContext`` made with
    ``ssl.PROTOCOL_TLS_SERVER`` and a certificate chain loaded); ``client`` wraps
    dialled ones (``ssl.PROTOCOL_TLS_CLIENT`` trusting the peers' CA). The client
    checks the peer's certificate against the host part of the address it dials
    unless ``client.check_hostname`` is off. For mutual TLS, load a certificate
    into ``client`` and set ``server.verify_mode = ssl.CERT_REQUIRED`` with the CA
    loaded into ``server``. See :meth:`from_files` for the usual setup.
    """

    server: ssl.SSLContext = attrs.field()
    client: ssl.SSLContext = attrs.field()

    @server.validator
    def _check_server(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, ssl.SSLContext) or value.protocol != ssl.PROTOCOL_TLS_SERVER:
            raise ConfigError(
                "ClusterTLS.server: expected an ssl.SSLContext made with "
                f"ssl.PROTOCOL_TLS_SERVER, got {value!r}"
            )

    @client.validator
    def _check_client(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, ssl.SSLContext) or value.protocol != ssl.PROTOCOL_TLS_CLIENT:
            raise ConfigError(
                "ClusterTLS.client: expected an ssl.SSLContext made with "
                f"ssl.PROTOCOL_TLS_CLIENT, got {value!r}"
            )

    @classmethod
    def from_files(
        cls, *, certfile: str, keyfile: str | None = None, cafile: str, mutual: bool = True
    ) -> ClusterTLS:
        """Contexts for nodes that share one CA: each node presents ``certfile``
        (issued by the CA in ``cafile``) and trusts only that CA. With ``mutual``
        (the default) the server also requires and checks a client certificate,
        so a node without a certificate from the CA cannot even reach the
        handshake."""
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cafile)
        server.load_cert_chain(certfile, keyfile)
        if mutual:
            server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        if mutual:
            client.load_cert_chain(certfile, keyfile)
        return cls(server=server, client=client)


def _check_listen(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    parse_address(value, _where(instance, attribute))


def _check_advertise(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _host, port = parse_address(value, _where(instance, attribute))
        if port == 0:
            raise ConfigError(f"{_where(instance, attribute)}: needs a real port, got {value!r}")


def _to_seeds(value: object) -> object:
    if isinstance(value, list):
        return tuple(value)
    return value


def _check_seeds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigError(
            f"{_where(instance, attribute)}: expected a list of 'host:port', got {value!r}"
        )
    for index, seed in enumerate(value):
        _host, port = parse_address(seed, f"{_where(instance, attribute)}[{index}]")
        if port == 0:
            raise ConfigError(f"{_where(instance, attribute)}[{index}]: port 0 cannot be dialled")


def _check_cookie(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # The value is never put in the message: it is a secret.
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{_where(instance, attribute)}: expected a non-empty str shared by every node "
            f"of the cluster, got a {type(value).__name__}"
            + (" that is empty" if value == "" else "")
        )


def _check_tls(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, ClusterTLS):
        raise ConfigError(
            f"{_where(instance, attribute)}: expected ft.ClusterTLS(server=..., client=...) or "
            f"None, got {type(value).__name__}"
        )


def _check_rng(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, random.Random):
        raise ConfigError(f"{_where(instance, attribute)}: expected a random.Random or None")


OVERLAYS = ("full_mesh", "hyparview", "client_server", "auto")
"""The values of ``Cluster.overlay``."""


def _check_overlay(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in OVERLAYS:
        raise ConfigError(
            f"{_where(instance, attribute)}: expected one of {', '.join(OVERLAYS)}, got {value!r}"
        )


def _check_role(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("server", "client"):
        raise ConfigError(
            f"{_where(instance, attribute)}: expected 'server' or 'client', got {value!r}"
        )


@attrs.frozen(kw_only=True)
class Cluster:
    """How a node joins a cluster: ``ft.open_node("a", cluster=ft.Cluster(cookie=...))``.

    Only ``cookie`` is required. The cookie is a shared secret: every node of a
    cluster needs the same one, and it never appears in a ``repr``, a log line or
    an error message. See docs/cluster.md for what it protects and what it does
    not (use ``tls`` on any network you do not trust).
    """

    cookie: str = attrs.field(validator=_check_cookie, repr=False)
    """The shared secret of the handshake (HMAC-SHA256 challenge-response)."""

    listen: str = attrs.field(default="127.0.0.1:0", validator=_check_listen)
    """``"host:port"`` to listen on; port 0 picks a free port (``Links.address``)."""

    advertise: str | None = attrs.field(default=None, validator=_check_advertise)
    """The address peers should dial back, if not the bound one (e.g. behind NAT,
    or when listening on ``0.0.0.0``)."""

    seeds: tuple[str, ...] = attrs.field(default=(), converter=_to_seeds, validator=_check_seeds)
    """Addresses dialled at start and redialled for as long as the node runs."""

    tls: ClusterTLS | None = attrs.field(default=None, validator=_check_tls)
    """TLS contexts for accepted and dialled connections; None for plain TCP."""

    handshake_timeout: float = attrs.field(default=5.0, converter=_to_float, validator=_seconds())
    """Seconds from accepting (or dialling) a connection to the end of the handshake,
    TCP, TLS and websocket upgrade included; a peer slower than this is closed."""

    max_handshakes: int = attrs.field(default=128, validator=_int_at_least(1))
    """Incoming connections allowed in their handshake at once; more are closed at
    once (and counted as rejected handshakes)."""

    heartbeat_interval: float = attrs.field(default=1.0, converter=_to_float, validator=_seconds())
    """A control connection with nothing else to send sends a heartbeat this often."""

    peer_down_after: int = attrs.field(default=5, validator=_int_at_least(1))
    """A peer is down when no frame has arrived on control for this many intervals: the
    hard upper bound of failure detection (the phi detector usually decides sooner)."""

    phi_threshold: float | None = attrs.field(
        default=8.0, converter=_to_float, validator=_optional_positive
    )
    """Suspicion level (phi, in powers of ten) at which the phi-accrual detector declares
    a silent peer down (docs/membership.md, Failure detection); None computes and reports
    phi but leaves every verdict to ``peer_down_after``."""

    phi_window: int = attrs.field(default=100, validator=_int_at_least(2))
    """Heartbeat inter-arrival times the detector keeps per peer (its memory of how
    regular that peer is)."""

    phi_min_std: float = attrs.field(default=0.1, converter=_to_float, validator=_seconds())
    """Seconds: the least standard deviation the detector assumes, so that a very
    regular peer is not declared down for a delay of a few tens of milliseconds."""

    phi_acceptable_pause: float = attrs.field(
        default=1.0, converter=_to_float, validator=_seconds(allow_zero=True)
    )
    """Seconds of silence beyond the usual heartbeat interval that raise no suspicion
    at all (a lost heartbeat, a short stall of the peer)."""

    local_health_max: int = attrs.field(default=8, validator=_int_at_least(0))
    """Largest local-health score: a node whose own event loop stalls multiplies its
    phi threshold by ``1 + score``; 0 turns local health off."""

    loop_stall_threshold: float = attrs.field(
        default=0.2, converter=_to_float, validator=_seconds()
    )
    """Seconds of lateness of the node's own detector timer that count as a stall of its
    event loop (each one raises the local-health score by 1)."""

    reconnect_min: float = attrs.field(default=0.1, converter=_to_float, validator=_seconds())
    reconnect_max: float = attrs.field(default=10.0, converter=_to_float, validator=_seconds())
    reconnect_jitter: float = attrs.field(
        default=0.2, converter=_to_float, validator=_seconds(allow_zero=True)
    )
    """Each reconnection delay is multiplied by a uniform factor in ``1 +- jitter``."""

    control: ChannelOptions = attrs.field(factory=ChannelOptions, validator=_check_channel)
    gossip: ChannelOptions = attrs.field(factory=ChannelOptions, validator=_check_channel)
    data: ChannelOptions = attrs.field(factory=ChannelOptions, validator=_check_channel)
    bulk: ChannelOptions = attrs.field(factory=_default_bulk, validator=_check_channel)

    chunk_size: int = attrs.field(default=64 * KIB, validator=_int_at_least(1024))
    """Largest message on control, gossip and data; bulk messages larger than this
    are sent in chunks of this size."""

    max_message_size: int = attrs.field(default=64 * MIB, validator=_int_at_least(1024))
    """Largest bulk message, reassembled in memory on the receiving side: the memory a
    peer can make a link hold at once."""

    overlay: str = attrs.field(default="auto", validator=_check_overlay)
    """The membership overlay (docs/membership.md): ``"full_mesh"``, ``"hyparview"``,
    ``"client_server"`` or ``"auto"`` (full mesh while the cluster has at most
    ``mesh_limit`` nodes, HyParView above). ``ft.cluster.set_overlay`` changes it
    cluster-wide at runtime."""

    role: str = attrs.field(default="server", validator=_check_role)
    """``"server"`` or ``"client"``: this node's role in the client-server overlay
    (clients link to servers only). Ignored by the other overlays."""

    mesh_limit: int = attrs.field(default=32, validator=_int_at_least(2))
    """With ``overlay="auto"``: the largest cluster run as a full mesh."""

    alive_interval: float = attrs.field(default=2.0, converter=_to_float, validator=_seconds())
    """Seconds between two heartbeat digests of this node (its heartbeat and the
    fresh ones it knows, to ``active_view_size`` neighbours); ``ft.cluster.reachable()``
    counts a node for ``4 * alive_interval`` after its heartbeat was last seen to grow."""

    shuffle_period: float = attrs.field(default=10.0, converter=_to_float, validator=_seconds())
    """Seconds between HyParView maintenance rounds (shuffle, refill) and full-mesh
    member-list exchanges."""

    active_view_size: int = attrs.field(default=5, validator=_int_at_least(1))
    """HyParView's active view (live links used for broadcast)."""

    passive_view_size: int = attrs.field(default=30, validator=_int_at_least(1))
    """HyParView's passive view (backup members without links)."""

    rng: random.Random | None = attrs.field(
        default=None, validator=_check_rng, repr=False, eq=False
    )
    """Randomness of reconnection jitter; give a seeded one in tests."""

    discovery: Discovery | None = attrs.field(default=None, converter=to_discovery, eq=False)
    """How the node finds the rest of its cluster (``ft.discovery``): a strategy, a
    list of them or an ``ft.discovery.Discovery``; None for seeds only."""

    def __attrs_post_init__(self) -> None:
        if self.reconnect_max < self.reconnect_min:
            raise ConfigError(
                f"Cluster.reconnect_max ({self.reconnect_max}) must be >= reconnect_min "
                f"({self.reconnect_min})"
            )
        if self.reconnect_jitter >= 1:
            raise ConfigError(
                f"Cluster.reconnect_jitter: expected a fraction below 1, got "
                f"{self.reconnect_jitter}"
            )
        for channel in Channel:
            frame = self.channel(channel).max_frame_size
            if frame < self.chunk_size + FRAME_OVERHEAD:
                raise ConfigError(
                    f"Cluster.{channel.value}.max_frame_size ({frame}) must hold a chunk: "
                    f"at least chunk_size + {FRAME_OVERHEAD} = "
                    f"{self.chunk_size + FRAME_OVERHEAD}"
                )
        if self.max_message_size < self.chunk_size:
            raise ConfigError(
                f"Cluster.max_message_size ({self.max_message_size}) must be >= chunk_size "
                f"({self.chunk_size})"
            )

    def channel(self, channel: Channel) -> ChannelOptions:
        """The options of ``channel``."""
        options: ChannelOptions = getattr(self, channel.value)
        return options

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> Cluster:
        """Build from plain data (e.g. a config file), refusing unknown keys and
        values of the wrong type with a ``ConfigError`` naming each field."""
        if not isinstance(options, Mapping):
            raise ConfigError(f"Cluster: expected a mapping of options, got {options!r}")
        return structure_options(cls, options, "Cluster")


def _structure_passthrough(kind: type[Any]) -> Any:
    def structure(value: object, _: type[Any]) -> Any:
        if not isinstance(value, kind):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


# Objects that have no plain-data form are accepted only as themselves.
converter.register_structure_hook(ClusterTLS, _structure_passthrough(ClusterTLS))
converter.register_structure_hook(random.Random, _structure_passthrough(random.Random))
converter.register_structure_hook(Discovery, lambda value, _: to_discovery(value))
