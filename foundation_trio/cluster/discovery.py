"""Discovery: how a node finds the other nodes of its cluster (libcluster's idea).

A node opened with ``ft.Cluster(discovery=...)`` runs one discovery task beside
its links. Every round (``Discovery.interval`` seconds, jittered) it asks each
strategy to advertise the node, collects what the strategies found, and joins
the overlay through a found node it does not reach (:func:`join_found`,
:func:`discovery_round`). Because it keeps polling for as long as the node runs,
two halves of a long partition find each other again once the network heals,
without an operator.

Strategies:

- :class:`Static`: a fixed list of addresses.
- :class:`LocalHost`: nodes of one machine, through a directory of announcement
  files (development and tests; no configuration).
- :class:`Dns`: A or SRV records (a Kubernetes headless service).
- :class:`Mdns`: multicast DNS service discovery on the local network (zeroconf).

A custom strategy is any object with the three methods of :class:`Strategy`.
:func:`auto_cluster` is what ``ft.open_node(cluster="auto")`` uses; see
docs/cluster.md, section "Discovery".
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import json
import logging
import os
import random
import secrets
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import trio

from ..runtime.errors import ConfigError, NoNodeError
from ..services import telemetry
from ._checks import seconds as _seconds
from ._checks import to_float as _to_float
from .errors import HandshakeFailed, NotConnected
from .handshake import PROTOCOL_VERSION

if TYPE_CHECKING:
    from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

    from .links import Links
    from .membership import Membership
    from .options import Cluster

logger = logging.getLogger("foundation_trio.cluster.discovery")

MDNS_SERVICE_TYPE = "_foundation-trio._tcp.local."
"""The mDNS service type nodes advertise and browse."""

ROUND_EVENT = "cluster.discovery.round"
"""Telemetry event after each discovery round: measurements ``found`` (nodes the
strategies reported, this node excluded), ``joined`` (nodes joined this round) and
``failed`` (strategy calls that raised); metadata ``node``."""

FAILED_EVENT = "cluster.discovery.failed"
"""Telemetry event of a strategy call that raised: measurement ``count`` (1),
metadata ``node``, ``strategy`` (its class name), ``step`` (``advertise``,
``discover`` or ``withdraw``) and ``error`` (the exception's repr)."""

DEFAULT_PORT = 7400
"""The port of ``cluster="auto"`` in Kubernetes (``FT_PORT`` overrides it)."""


def parse_address(address: object, what: str = "address") -> tuple[str, int]:
    # options.py imports this module (Cluster.discovery): import it at call time.
    from .options import parse_address as parse

    return parse(address, what)


def format_address(host: str, port: int) -> str:
    from .options import format_address as format_

    return format_(host, port)


# -- records ----------------------------------------------------------------------------


def _check_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{type(instance).__name__}.{attribute.name}: expected a non-empty str, got {value!r}"
        )


def _check_optional_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_name(instance, attribute, value)


def _check_address(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    parse_address(value, f"{type(instance).__name__}.{attribute.name}")


@attrs.frozen
class NodeInfo:
    """What a strategy advertises: this node's name, the ``host:port`` its links
    listen on (``Links.address``) and its cluster's namespace (see
    :func:`cluster_namespace`: nodes of other clusters announce other namespaces)."""

    name: str = attrs.field(validator=_check_name)
    address: str = attrs.field(validator=_check_address)
    namespace: str = attrs.field(validator=_check_name)


@attrs.frozen
class Found:
    """A node a strategy found: its address and, when the strategy knows it, its
    name (DNS records carry no node names: ``name`` is None there)."""

    address: str = attrs.field(validator=_check_address)
    name: str | None = attrs.field(default=None, validator=_check_optional_name)


@runtime_checkable
class Strategy(Protocol):
    """The interface of a discovery strategy.

    A strategy is part of the node's options, and options are values that
    several nodes may share (tests run many nodes in one process): keep any
    per-node state keyed by ``me.name``. Each method is called from the node's
    discovery task, one at a time per node; an exception from any of them is
    logged and the call is made again the next round: it never stops the node.
    Blocking work belongs in a thread (``trio.to_thread.run_sync``) that returns
    within a bounded time, so that the node can stop.
    """

    async def advertise(self, me: NodeInfo) -> None:
        """Make ``me`` findable. Called at the start of every round, so it must be
        idempotent; a strategy that needs a heartbeat refreshes it here. Strategies
        that cannot advertise (static, DNS) do nothing."""

    async def discover(self, me: NodeInfo) -> Sequence[Found]:
        """The nodes found now (``me`` itself may be among them: it is skipped)."""

    async def withdraw(self, me: NodeInfo) -> None:
        """Stop advertising ``me`` and release what the strategy holds for it
        (sockets, threads, files). Called once when the node's discovery stops,
        even if :meth:`advertise` never ran or failed, and run shielded from
        cancellation (with a timeout of 5 seconds)."""


@functools.lru_cache(maxsize=16)
def cluster_namespace(cookie: str) -> str:
    """A public tag of the cluster whose cookie is ``cookie``: 16 hex digits
    derived with PBKDF2 (100,000 rounds), so nodes of different clusters never
    mix in a shared directory or on a shared network, and the tag reveals the
    cookie only to a brute-force search (use a long random cookie)."""
    if not isinstance(cookie, str) or not cookie:
        raise ConfigError("cluster_namespace(cookie): expected a non-empty str")
    digest = hashlib.pbkdf2_hmac(
        "sha256", cookie.encode(), b"foundation_trio.discovery", 100_000, dklen=8
    )
    return digest.hex()


# -- static ------------------------------------------------------------------------------


def _to_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _check_addresses(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    where = f"{type(instance).__name__}.{attribute.name}"
    if not isinstance(value, tuple):
        raise ConfigError(f"{where}: expected a list of 'host:port', got {value!r}")
    for index, address in enumerate(value):
        _host, port = parse_address(address, f"{where}[{index}]")
        if port == 0:
            raise ConfigError(f"{where}[{index}]: port 0 cannot be dialled")


@attrs.frozen
class Static:
    """A fixed list of ``host:port`` addresses, found every round. Unlike
    ``Cluster.seeds``, which the links redial until they answer, these are joined
    again by discovery whenever the node does not reach them."""

    addresses: tuple[str, ...] = attrs.field(converter=_to_tuple, validator=_check_addresses)

    async def advertise(self, me: NodeInfo) -> None:
        pass

    async def discover(self, me: NodeInfo) -> Sequence[Found]:
        return [Found(address) for address in self.addresses]

    async def withdraw(self, me: NodeInfo) -> None:
        pass


# -- local host --------------------------------------------------------------------------


def _user_tag() -> str:
    getuid = getattr(os, "getuid", None)
    if getuid is not None:
        return str(getuid())
    return hashlib.sha256(os.environ.get("USERNAME", "user").encode()).hexdigest()[:8]


def _check_directory(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str | os.PathLike):
        raise ConfigError(
            f"LocalHost.{attribute.name}: expected a directory path or None, got {value!r}"
        )


@attrs.frozen
class LocalHost:
    """Nodes of one machine find each other through a directory of announcement files.

    Each node writes ``<directory>/<name>.json`` (name, address, pid) atomically
    (a temporary file renamed over the old one) and rewrites it every round, so
    its modification time is a heartbeat. A file is stale, ignored and removed,
    when it has not been rewritten for ``stale_after`` seconds or when its
    process no longer exists on this machine; a node that stops removes its own.

    ``directory`` defaults to ``<temp dir>/foundation_trio-<uid>/discovery/<namespace>``
    (created with mode 0700): one per user and per cluster (the namespace comes
    from the cookie), so clusters with different cookies never see each other.
    ``stale_after`` must be longer than the discovery interval (checked by
    :class:`Discovery`).
    """

    directory: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=_check_directory
    )
    stale_after: float = attrs.field(default=15.0, converter=_to_float, validator=_seconds())

    def path(self, me: NodeInfo) -> Path:
        """The announcement directory of ``me``'s cluster."""
        if self.directory is not None:
            return Path(self.directory)
        return (
            Path(tempfile.gettempdir())
            / f"foundation_trio-{_user_tag()}"
            / "discovery"
            / me.namespace
        )

    def _ensure(self, me: NodeInfo) -> Path:
        directory = self.path(me)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return directory

    async def advertise(self, me: NodeInfo) -> None:
        directory = self._ensure(me)
        record = {
            "name": me.name,
            "address": me.address,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "version": PROTOCOL_VERSION,
        }
        target = directory / f"{_file_stem(me.name)}.json"
        # Small writes to a local directory: done inline, like a log line.
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(record, file)
            os.replace(temporary, target)
        except BaseException:
            with _ignore_missing():
                os.unlink(temporary)
            raise

    async def discover(self, me: NodeInfo) -> Sequence[Found]:
        directory = self._ensure(me)
        now = time.time()
        host = socket.gethostname()
        found = []
        for entry in directory.glob("*.json"):
            try:
                age = now - entry.stat().st_mtime
                name, address, pid, record = _read_announcement(entry)
            except FileNotFoundError:
                continue  # removed while we looked
            except (OSError, ValueError, KeyError, TypeError, ConfigError) as error:
                logger.debug("local-host discovery: ignoring %s (%s)", entry, error)
                continue
            if name == me.name:
                continue
            dead = record.get("host") == host and not _pid_alive(pid)
            if age > self.stale_after or dead:
                logger.debug(
                    "local-host discovery: removing stale announcement of %s (%s)",
                    name,
                    "process gone" if dead else f"{age:.1f} s old",
                )
                with _ignore_missing():
                    entry.unlink()
                continue
            found.append(Found(address, name))
        return found

    async def withdraw(self, me: NodeInfo) -> None:
        target = self.path(me) / f"{_file_stem(me.name)}.json"
        try:
            record = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        # Only our own: a node of the same name elsewhere may have replaced it.
        if record.get("address") == me.address and record.get("pid") == os.getpid():
            with _ignore_missing():
                target.unlink()


def _read_announcement(entry: Path) -> tuple[str, str, int, dict[str, Any]]:
    record = json.loads(entry.read_text(encoding="utf-8"))
    name, address, pid = record["name"], record["address"], record["pid"]
    if not isinstance(name, str) or not name:
        raise TypeError(f"name is {name!r}")
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise TypeError(f"pid is {pid!r}")
    parse_address(address)
    return name, address, pid, record


def _file_stem(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if safe != name or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or we cannot tell)
    return True


class _ignore_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: object, traceback: object) -> bool:
        return isinstance(error, FileNotFoundError)


# -- DNS ---------------------------------------------------------------------------------


def _check_record(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("A", "SRV"):
        raise ConfigError(f"Dns.record: expected 'A' or 'SRV', got {value!r}")


def _check_port(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535
    ):
        raise ConfigError(f"Dns.{attribute.name}: expected a port 1..65535, got {value!r}")


def _check_nameservers(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, tuple) or not value:
        raise ConfigError(f"Dns.nameservers: expected a non-empty list of IPs, got {value!r}")
    for index, server in enumerate(value):
        try:
            ipaddress.ip_address(server)
        except (ValueError, TypeError):
            raise ConfigError(
                f"Dns.nameservers[{index}]: expected an IP address, got {server!r}"
            ) from None


@attrs.frozen
class Dns:
    """Nodes behind a DNS name: the A (and AAAA) records of ``name`` with ``port``,
    or its SRV records (each a target host and a port), as a Kubernetes headless
    service gives (``<service>.<namespace>.svc.cluster.local`` for A records,
    ``_<port-name>._tcp.<service>.<namespace>.svc.cluster.local`` for SRV).

    Queries use dnspython's asynchronous resolver, which runs on Trio itself.
    ``nameservers`` (IPs) and ``nameserver_port`` replace the system's resolver
    configuration; ``timeout`` bounds each query. A name that does not exist
    or has no records finds nothing (logged at debug level); any other failure
    is raised, logged by discovery, and retried the next round.
    """

    name: str = attrs.field(validator=_check_name)
    port: int | None = attrs.field(default=None, validator=_check_port)
    record: str = attrs.field(default="A", validator=_check_record)
    nameservers: tuple[str, ...] | None = attrs.field(
        default=None, converter=_to_tuple, validator=_check_nameservers
    )
    nameserver_port: int = attrs.field(default=53, validator=_check_port)
    timeout: float = attrs.field(default=2.0, converter=_to_float, validator=_seconds())

    def __attrs_post_init__(self) -> None:
        if self.record == "A" and self.port is None:
            raise ConfigError("Dns.port: A records carry no port; give the nodes' port")

    def _resolver(self) -> Any:
        import dns.asyncresolver

        resolver = dns.asyncresolver.Resolver(configure=self.nameservers is None)
        if self.nameservers is not None:
            resolver.nameservers = list(self.nameservers)
        resolver.port = self.nameserver_port
        return resolver

    async def _query(self, resolver: Any, name: str, kind: str) -> list[Any]:
        import dns.resolver

        try:
            answer = await resolver.resolve(name, kind, lifetime=self.timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            logger.debug("dns discovery: no %s records for %s", kind, name)
            return []
        return list(answer)

    async def _hosts(self, resolver: Any, name: str) -> list[str]:
        hosts = [record.address for record in await self._query(resolver, name, "A")]
        hosts += [record.address for record in await self._query(resolver, name, "AAAA")]
        return hosts

    async def advertise(self, me: NodeInfo) -> None:
        pass  # the records are published by whoever runs the DNS (Kubernetes)

    async def discover(self, me: NodeInfo) -> Sequence[Found]:
        resolver = self._resolver()
        if self.record == "A":
            assert self.port is not None
            return [
                Found(format_address(host, self.port))
                for host in await self._hosts(resolver, self.name)
            ]
        found = []
        for record in await self._query(resolver, self.name, "SRV"):
            target = record.target.to_text()
            for host in await self._hosts(resolver, target):
                found.append(Found(format_address(host, record.port)))
        return found

    async def withdraw(self, me: NodeInfo) -> None:
        pass


# -- mDNS --------------------------------------------------------------------------------


def _check_interfaces(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, tuple) or not value:
        raise ConfigError(f"Mdns.interfaces: expected a non-empty list of IPs, got {value!r}")
    for index, address in enumerate(value):
        try:
            ipaddress.ip_address(address)
        except (ValueError, TypeError):
            raise ConfigError(
                f"Mdns.interfaces[{index}]: expected an interface IP address, got {address!r}"
            ) from None


def _check_service_type(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.endswith("._tcp.local.") or not value[:1] == "_":
        raise ConfigError(f"Mdns.service_type: expected '_<name>._tcp.local.', got {value!r}")


class _MdnsNode:
    """One node's zeroconf instance, browser, registration and the names seen."""

    def __init__(self, zeroconf: Zeroconf) -> None:
        self.zeroconf = zeroconf
        self.browser: ServiceBrowser | None = None
        self.info: ServiceInfo | None = None
        self.lock = threading.Lock()
        self.names: set[str] = set()

    def changed(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Runs in zeroconf's thread: only touches the set, under the lock.
        from zeroconf import ServiceStateChange

        with self.lock:
            if state_change is ServiceStateChange.Removed:
                self.names.discard(name)
            else:
                self.names.add(name)


@attrs.frozen(eq=False)
class Mdns:
    """Multicast DNS service discovery (python-zeroconf) on the local network.

    Each node registers a service of ``service_type`` whose port is its links'
    port, whose addresses are its links' host (every interface's address when
    it listens on ``0.0.0.0``) and whose TXT record holds its node name
    (``node``), the link protocol version (``version``) and the cluster
    namespace (``ns``); it browses the same type and finds the services of its
    own namespace and protocol version.

    zeroconf runs its own thread (with an asyncio loop inside): its callbacks
    only record names in a set under a lock, and every blocking call (start,
    registration, lookups, close) runs in a Trio worker thread that returns
    within a bounded time. ``withdraw`` unregisters and closes zeroconf, so no
    thread outlives the node. ``interfaces`` limits the interfaces used (e.g.
    ``["127.0.0.1"]``); ``timeout`` bounds each lookup.
    """

    service_type: str = attrs.field(default=MDNS_SERVICE_TYPE, validator=_check_service_type)
    interfaces: tuple[str, ...] | None = attrs.field(
        default=None, converter=_to_tuple, validator=_check_interfaces
    )
    timeout: float = attrs.field(default=1.0, converter=_to_float, validator=_seconds())
    _nodes: dict[str, _MdnsNode] = attrs.field(factory=dict, init=False, repr=False)

    async def _node(self, me: NodeInfo) -> _MdnsNode:
        node = self._nodes.get(me.name)
        if node is None:
            node = await trio.to_thread.run_sync(self._open)
            self._nodes[me.name] = node
        return node

    def _open(self) -> _MdnsNode:
        from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, Zeroconf

        interfaces: Any = list(self.interfaces) if self.interfaces else InterfaceChoice.All
        zeroconf = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        node = _MdnsNode(zeroconf)
        try:
            node.browser = ServiceBrowser(zeroconf, self.service_type, handlers=[node.changed])
        except BaseException:
            zeroconf.close()
            raise
        return node

    def _info(self, me: NodeInfo) -> ServiceInfo:
        import ifaddr  # zeroconf's own dependency
        from zeroconf import ServiceInfo

        host, port = parse_address(me.address)
        if host in ("0.0.0.0", ""):
            hosts = [
                str(ip.ip)
                for adapter in ifaddr.get_adapters()
                for ip in adapter.ips
                if ip.is_IPv4 and not str(ip.ip).startswith("127.")
            ] or ["127.0.0.1"]
        else:
            hosts = [host]
        label = _mdns_label(me)
        return ServiceInfo(
            self.service_type,
            f"{label}.{self.service_type}",
            port=port,
            properties={"node": me.name, "version": str(PROTOCOL_VERSION), "ns": me.namespace},
            server=f"{label}.local.",
            parsed_addresses=hosts,
        )

    async def advertise(self, me: NodeInfo) -> None:
        node = await self._node(me)
        info = self._info(me)
        if (
            node.info is not None
            and node.info.port == info.port
            and (node.info.parsed_addresses() == info.parsed_addresses())
        ):
            return

        def register() -> None:
            if node.info is not None:
                node.zeroconf.unregister_service(node.info)
            node.zeroconf.register_service(info, allow_name_change=True)

        await trio.to_thread.run_sync(register)
        node.info = info

    async def discover(self, me: NodeInfo) -> Sequence[Found]:
        node = await self._node(me)
        with node.lock:
            names = sorted(node.names)
        own = node.info.name if node.info is not None else None
        timeout_ms = int(self.timeout * 1000)

        def resolve() -> list[ServiceInfo]:
            infos = []
            for name in names:
                if name == own:
                    continue
                info = node.zeroconf.get_service_info(self.service_type, name, timeout_ms)
                if info is not None:
                    infos.append(info)
            return infos

        found = []
        for info in await trio.to_thread.run_sync(resolve):
            txt = {
                key.decode(errors="replace"): (value or b"").decode(errors="replace")
                for key, value in info.properties.items()
            }
            if txt.get("ns") != me.namespace or not txt.get("node"):
                continue  # another cluster on the same network
            if txt.get("version") != str(PROTOCOL_VERSION):
                logger.info(
                    "mdns discovery: ignoring node %s with link protocol version %s (ours: %s)",
                    txt.get("node"),
                    txt.get("version"),
                    PROTOCOL_VERSION,
                )
                continue
            if info.port is None:
                continue
            for host in info.parsed_addresses():
                found.append(Found(format_address(host, info.port), txt["node"]))
        return found

    async def withdraw(self, me: NodeInfo) -> None:
        node = self._nodes.pop(me.name, None)
        if node is None:
            return

        def close() -> None:
            try:
                if node.info is not None:
                    node.zeroconf.unregister_service(node.info)
            finally:
                if node.browser is not None:
                    node.browser.cancel()
                node.zeroconf.close()

        await trio.to_thread.run_sync(close)


def _mdns_label(me: NodeInfo) -> str:
    # A DNS label holds at most 63 bytes; the namespace keeps clusters apart.
    suffix = f"-{me.namespace[:8]}"
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in me.name)
    return safe[: 63 - len(suffix)] + suffix


# -- the discovery options and task ------------------------------------------------------


def _to_strategies(value: object) -> object:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, Strategy):
        return (value,)
    return value


def _check_strategies(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not value:
        raise ConfigError(
            f"Discovery.strategies: expected one strategy or a non-empty list, got {value!r}"
        )
    for index, strategy in enumerate(value):
        if not isinstance(strategy, Strategy):
            raise ConfigError(
                f"Discovery.strategies[{index}]: expected an object with async advertise(), "
                f"discover() and withdraw() (see Strategy), got {strategy!r}"
            )


def _check_jitter(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value < 1
    if not ok:
        raise ConfigError(f"Discovery.jitter: expected a fraction in [0, 1), got {value!r}")


@attrs.frozen(eq=False)
class Discovery:
    """How a node discovers its cluster: ``ft.Cluster(discovery=Discovery(...))``
    (or just ``discovery=strategy``, which means ``Discovery(strategy)``).

    Every round, which starts once the links listen and then every ``interval``
    seconds multiplied by a uniform factor in ``1 +- jitter`` (so that nodes
    started together do not poll together), each strategy advertises the node
    and reports what it found, and the node joins the overlay through a found
    node it does not reach (see :func:`discovery_round`). A node therefore
    rejoins anything it can find within one interval (times ``1 + jitter``) plus
    one handshake (``Cluster.handshake_timeout`` at most) of the network
    allowing it.
    """

    strategies: tuple[Strategy, ...] = attrs.field(
        converter=_to_strategies, validator=_check_strategies
    )
    interval: float = attrs.field(default=5.0, converter=_to_float, validator=_seconds())
    jitter: float = attrs.field(default=0.2, converter=_to_float, validator=_check_jitter)
    rng: random.Random | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.rng is not None and not isinstance(self.rng, random.Random):
            raise ConfigError(f"Discovery.rng: expected a random.Random or None, got {self.rng!r}")
        longest = self.interval * (1 + self.jitter)
        for index, strategy in enumerate(self.strategies):
            if isinstance(strategy, LocalHost) and strategy.stale_after <= longest:
                raise ConfigError(
                    f"Discovery.strategies[{index}]: LocalHost.stale_after "
                    f"({strategy.stale_after} s) must exceed the longest interval "
                    f"({longest:g} s), or live nodes would look dead"
                )

    @property
    def bound(self) -> float:
        """Seconds within which a found node the node does not reach is joined:
        the longest interval (the handshake then takes at most
        ``Cluster.handshake_timeout``)."""
        return self.interval * (1 + self.jitter)


def to_discovery(value: object) -> Discovery | None:
    """``Cluster.discovery``'s converter: a lone strategy (or list) becomes a Discovery."""
    if value is None or isinstance(value, Discovery):
        return value
    if isinstance(value, list | tuple | Strategy):
        return Discovery(value)
    raise ConfigError(
        f"Cluster.discovery: expected a discovery strategy, ft.discovery.Discovery or None, "
        f"got {value!r}"
    )


async def join_found(
    links: Links, address: str, membership: Membership | None = None
) -> str | None:
    """What discovery does with the address of a found node this node lacks: the
    one place that decides it. With the node's membership driver, join its overlay
    through that node (``Membership.join``: a link, then the overlay's join, e.g.
    HyParView's ``JOIN``; a bare link would be closed again as no overlay
    neighbour); without one, open a link (``links.connect``, which then redials
    the address whenever the link is lost). Returns the peer's name, or None when
    the driver did nothing (its links are restarting, or a join through that
    address is under way). Raises what ``Links.connect`` raises."""
    if membership is not None:
        return await membership.join(address, quiet=False)
    return await links.connect(address)


def _emit(event: str, measurements: Mapping[str, float], metadata: Mapping[str, object]) -> None:
    # Strategies may be exercised outside a node (tools, tests): the log is the record.
    with contextlib.suppress(NoNodeError, LookupError):
        telemetry.execute(event, measurements, metadata)


class _Failures:
    def __init__(self) -> None:
        self.count = 0


async def _guarded(
    what: str, strategy: object, call: Any, me: NodeInfo, failures: _Failures | None = None
) -> Any:
    try:
        return await call
    except trio.Cancelled:
        raise
    except Exception as error:
        logger.warning(
            "node %s: discovery %s of %r failed; retrying next round",
            me.name,
            what,
            strategy,
            exc_info=True,
        )
        if failures is not None:
            failures.count += 1
        _emit(
            FAILED_EVENT,
            {"count": 1},
            {
                "node": me.name,
                "strategy": type(strategy).__name__,
                "step": what,
                "error": repr(error),
            },
        )
        return None


async def discovery_round(
    links: Links,
    settings: Discovery,
    me: NodeInfo,
    known: dict[str, str] | None = None,
    *,
    membership: Membership | None = None,
    rng: random.Random | None = None,
) -> list[Found]:
    """One round: advertise ``me`` with every strategy, collect what they found,
    and join what the node lacks (:func:`join_found`). Returns what was found. A
    strategy that raises is logged and skipped; a join that fails is logged at
    debug level and tried again the next round.

    Without a ``membership`` driver, the node lacks the found nodes ``links`` has
    no link to, and dials each of them (concurrently). With one, it lacks those
    its overlay does not reach (``membership.reachable()``: linked, or heard from
    through the overlay's heartbeat gossip), and one node per overlay joins:
    the one whose name is the smallest among the nodes it reaches and itself. It
    joins through one lacking node per round, picked at random with ``rng`` (the
    next one if that fails). One join merges two overlays, after which the
    heartbeat gossip makes the rest reachable; a join from every node that
    lacks others would have HyParView's active views on both sides evicted and
    refilled at once, and the churn delays the heartbeat gossip, which makes
    nodes look unreachable and join again.

    ``known`` maps addresses to the names they led to, kept from round to round
    by the caller, so that an address found without a name (DNS) is not dialled
    again while its node is present."""
    known = {} if known is None else known
    failures = _Failures()
    found: list[Found] = []
    for strategy in settings.strategies:
        await _guarded("advertise", strategy, strategy.advertise(me), me, failures)
        result = await _guarded("discover", strategy, strategy.discover(me), me, failures)
        if result is None:
            continue
        for item in result:
            if isinstance(item, Found):
                found.append(item)
            else:
                logger.warning("discovery: %r returned %r, not a Found", strategy, item)
    present = set(links.peers() if membership is None else membership.reachable())
    by_name: dict[str, list[str]] = {}
    anonymous: list[str] = []
    for item in found:
        if item.address == me.address or item.name == me.name:
            continue
        name = item.name if item.name is not None else known.get(item.address)
        if name is not None and (name in present or name == me.name):
            continue
        if item.name is None:
            if item.address not in anonymous:
                anonymous.append(item.address)
        else:
            by_name.setdefault(item.name, [])
            if item.address not in by_name[item.name]:
                by_name[item.name].append(item.address)

    joined = 0

    async def dial(addresses: list[str]) -> bool:
        nonlocal joined
        for address in addresses:
            try:
                name = await join_found(links, address, membership)
            except (NotConnected, HandshakeFailed, OSError, ConfigError) as error:
                if isinstance(error, HandshakeFailed) and "our own node name" in error.reason:
                    # Our own DNS record: never dial it again.
                    known[address] = me.name
                logger.debug("discovery: could not join %s: %s", address, error)
                continue
            except Exception:
                # E.g. the links stopping under us (RuntimeError): the round ends,
                # the node does not.
                logger.warning("node %s: joining %s failed", me.name, address, exc_info=True)
                continue
            if name is None:
                continue
            known[address] = name
            if name not in present:
                joined += 1
                logger.info("node %s: discovery joined %s at %s", me.name, name, address)
            return True
        return False

    candidates = [*by_name.values(), *([address] for address in anonymous)]
    if membership is not None and any(name < me.name for name in present):
        candidates = []  # a node of this overlay with a smaller name joins for it
    if membership is None:
        async with trio.open_nursery() as nursery:
            for addresses in candidates:
                nursery.start_soon(dial, addresses)
    else:
        (rng or random).shuffle(candidates)
        for addresses in candidates:
            if await dial(addresses):
                break
    others = {item.name or known.get(item.address) or item.address for item in found}
    others.discard(me.name)
    others.discard(me.address)
    _emit(
        ROUND_EVENT,
        {"found": len(others), "joined": joined, "failed": failures.count},
        {"node": me.name},
    )
    return found


async def run_discovery(
    get_links: Any,
    settings: Discovery,
    cookie: str,
    *,
    membership: Membership | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """The discovery task of a node: rounds until cancelled, then withdraw.

    ``get_links()`` returns the node's running ``Links`` (or None while they
    restart); ``membership`` is the node's overlay driver, which found nodes join
    (see :func:`discovery_round`). On cancellation every strategy that advertised
    is withdrawn, shielded, within 5 seconds.
    """
    namespace = cluster_namespace(cookie)
    rng = settings.rng if settings.rng is not None else random.Random()
    advertised: dict[str, NodeInfo] = {}
    known: dict[str, str] = {}
    task_status.started()
    try:
        while True:
            links = get_links()
            if links is not None and links.address:
                me = NodeInfo(links.name, links.address, namespace)
                advertised[me.name] = me
                await discovery_round(links, settings, me, known, membership=membership, rng=rng)
            factor = 1 + rng.uniform(-settings.jitter, settings.jitter)
            await trio.sleep(settings.interval * factor)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5.0):
            for me in advertised.values():
                for strategy in settings.strategies:
                    await _guarded("withdraw", strategy, strategy.withdraw(me), me)


# -- cluster="auto" ----------------------------------------------------------------------

AUTO_ENV = (
    "FT_COOKIE",
    "FT_COOKIE_FILE",
    "FT_DISCOVERY",
    "FT_DNS_NAME",
    "FT_DNS_RECORD",
    "FT_PORT",
    "FT_LISTEN",
    "FT_ADVERTISE",
    "POD_IP",
    "KUBERNETES_SERVICE_HOST",
)
"""The environment variables :func:`auto_cluster` reads."""


def default_cookie_file(environ: Mapping[str, str]) -> Path:
    """``$FT_COOKIE_FILE``, else ``$XDG_CONFIG_HOME/foundation_trio/cookie``, else
    ``~/.config/foundation_trio/cookie``."""
    if environ.get("FT_COOKIE_FILE"):
        return Path(environ["FT_COOKIE_FILE"])
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "foundation_trio" / "cookie"


def user_cookie(path: Path) -> str:
    """The development cookie in ``path``, created (32 random bytes, mode 0600) if
    missing. Refuses a file others can read or write (``ConfigError``)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(32))
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"FT_COOKIE_FILE: {path} is readable or writable by other users "
            f"(mode {stat.filemode(mode)}); chmod 600 it"
        )
    cookie = path.read_text(encoding="utf-8").strip()
    if not cookie:
        raise ConfigError(f"FT_COOKIE_FILE: {path} is empty")
    return cookie


def auto_cluster(environ: Mapping[str, str] | None = None) -> Cluster:
    """The cluster options of ``ft.open_node(cluster="auto")``, from ``environ``
    (``os.environ`` by default).

    The strategy is ``$FT_DISCOVERY`` if set (``dns``, ``mdns`` or ``localhost``),
    else DNS when ``KUBERNETES_SERVICE_HOST`` is set (Kubernetes), else mDNS when
    ``FT_COOKIE`` is set (a cluster spanning machines has a shared secret), else
    local-host (development on one machine):

    - **dns**: ``FT_DNS_NAME`` (required) with ``FT_DNS_RECORD`` (``A``, the
      default, or ``SRV``); listens on ``0.0.0.0:$FT_PORT`` (default 7400, also
      the port of A records) and advertises ``$FT_ADVERTISE`` or
      ``$POD_IP:$FT_PORT``. Needs ``FT_COOKIE``.
    - **mdns**: listens on ``$FT_LISTEN`` (default ``0.0.0.0:0``). Needs ``FT_COOKIE``.
    - **localhost**: listens on ``$FT_LISTEN`` (default ``127.0.0.1:0``); the
      cookie is ``FT_COOKIE`` or the per-user file of :func:`default_cookie_file`,
      created with mode 0600 on first use.

    There is no built-in cookie. Raises ``ConfigError`` naming the variable that
    is missing or wrong.
    """
    from .options import Cluster

    env = os.environ if environ is None else environ
    if not isinstance(env, Mapping):
        raise TypeError(f"auto_cluster(environ): expected a mapping, got {environ!r}")
    choice = env.get("FT_DISCOVERY", "").strip().lower()
    if choice not in ("", "dns", "mdns", "localhost"):
        raise ConfigError(
            f"FT_DISCOVERY: expected 'dns', 'mdns' or 'localhost', got {env['FT_DISCOVERY']!r}"
        )
    if not choice:
        if env.get("KUBERNETES_SERVICE_HOST"):
            choice = "dns"
        elif env.get("FT_COOKIE"):
            choice = "mdns"
        else:
            choice = "localhost"
    cookie = env.get("FT_COOKIE", "")
    if choice == "localhost":
        if not cookie:
            cookie = user_cookie(default_cookie_file(env))
        return Cluster(
            cookie=cookie,
            listen=env.get("FT_LISTEN", "127.0.0.1:0"),
            discovery=LocalHost(),
        )
    if not cookie:
        raise ConfigError(
            f"FT_COOKIE: {choice} discovery reaches other machines, which need the same "
            "secret cookie: set FT_COOKIE on every node"
        )
    if choice == "mdns":
        return Cluster(cookie=cookie, listen=env.get("FT_LISTEN", "0.0.0.0:0"), discovery=Mdns())
    name = env.get("FT_DNS_NAME", "")
    if not name:
        raise ConfigError(
            "FT_DNS_NAME: DNS discovery needs the name to query, e.g. the headless "
            "service 'nodes.default.svc.cluster.local'"
        )
    port_text = env.get("FT_PORT", str(DEFAULT_PORT))
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"FT_PORT: expected a port 1..65535, got {port_text!r}")
    port = int(port_text)
    advertise = env.get("FT_ADVERTISE") or (
        format_address(env["POD_IP"], port) if env.get("POD_IP") else None
    )
    record = env.get("FT_DNS_RECORD", "A").upper()
    if record not in ("A", "SRV"):
        raise ConfigError(f"FT_DNS_RECORD: expected 'A' or 'SRV', got {env['FT_DNS_RECORD']!r}")
    return Cluster(
        cookie=cookie,
        listen=env.get("FT_LISTEN", f"0.0.0.0:{port}"),
        advertise=advertise,
        discovery=Dns(name, port=port if record == "A" else None, record=record),
    )


__all__ = [
    "AUTO_ENV",
    "DEFAULT_PORT",
    "FAILED_EVENT",
    "MDNS_SERVICE_TYPE",
    "ROUND_EVENT",
    "Discovery",
    "Dns",
    "Found",
    "LocalHost",
    "Mdns",
    "NodeInfo",
    "Static",
    "Strategy",
    "auto_cluster",
    "cluster_namespace",
    "discovery_round",
    "join_found",
    "run_discovery",
]
