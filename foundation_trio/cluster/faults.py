"""Fault injection for links: drop, delay, duplicate, reorder, blackhole, sever.

Every :class:`~foundation_trio.cluster.links.Links` has one
:class:`FaultInjector` as ``links.faults``; tests and chaos sessions set rules
on it per peer, per direction and optionally per channel::

    links.faults.set("b", OUT, drop=0.2)            # lose 20% of messages to b
    links.faults.set("b", IN, delay=0.05)           # hold what b sends for 50 ms
    links.faults.blackhole("b", OUT)                # nothing reaches b, heartbeats too,
                                                    # and no new link with b forms
    links.faults.sever("b")                         # reset every connection to b now
    links.faults.clear("b")

Rules apply to messages, where a link queues them (``OUT``, before they are
framed; a chunked bulk message counts as one) or delivers them (``IN``, after
reassembly). Heartbeats are subject to ``blackhole`` only, and so are new links:
a blackhole on the control channel refuses their handshakes. Decisions come from
a ``random.Random`` seeded with ``seed``, so a run can be replayed.

With no rule set, ``enabled`` is False and the links' send and receive paths
test that one attribute and nothing else: faults cost nothing when off.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Iterable

import attrs

from .options import Channel


class Direction(enum.Enum):
    """Which way a rule acts, seen from the node that sets it."""

    OUT = "out"
    """Messages this node sends to the peer."""
    IN = "in"
    """Messages this node receives from the peer."""


OUT = Direction.OUT
IN = Direction.IN


def _probability(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value!r}")


def _delay(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{attribute.name} must be seconds >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class FaultRule:
    """What happens to messages one way on one link."""

    drop: float = attrs.field(default=0.0, validator=_probability)
    """Probability that a message is lost."""
    duplicate: float = attrs.field(default=0.0, validator=_probability)
    """Probability that a message is delivered twice."""
    reorder: float = attrs.field(default=0.0, validator=_probability)
    """Probability that a message is held back and goes after the next one."""
    delay: float = attrs.field(default=0.0, validator=_delay)
    """Seconds added before each batch goes out (OUT) or is delivered (IN); the
    channel stays in order, later messages wait behind."""
    blackhole: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Nothing passes, heartbeats included. On the control channel (either way) it
    also refuses new links with the peer, as a cut network would (see
    :meth:`FaultInjector.refuses_link`)."""


@attrs.define
class FaultCounts:
    """What the injector did, for tests to check against."""

    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0
    blackholed: int = 0
    severed: int = 0


_Key = tuple[str, Direction, Channel]


class FaultInjector:
    """The per-link fault interposer of one node's links. Off by default."""

    def __init__(self, sever: Callable[[str], int], *, seed: int | None = None) -> None:
        self._sever = sever
        self._rules: dict[_Key, FaultRule] = {}
        self._held: dict[_Key, bytes] = {}
        self.rng = random.Random(seed)
        self.counts = FaultCounts()
        self.enabled = False
        """True while any rule is set; the only thing the hot paths look at."""

    def __repr__(self) -> str:
        return f"<FaultInjector rules={len(self._rules)} {self.counts}>"

    def seed(self, seed: int) -> None:
        """Restart the decisions from ``seed``."""
        self.rng.seed(seed)

    def set(
        self,
        peer: str,
        direction: Direction,
        *,
        channels: Iterable[Channel] | None = None,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
        blackhole: bool = False,
    ) -> FaultRule:
        """Set the rule for messages to or from ``peer`` on ``channels`` (all four
        by default), replacing any rule there. Returns it."""
        if not isinstance(peer, str) or not peer:
            raise TypeError(f"peer must be a node name, got {peer!r}")
        if not isinstance(direction, Direction):
            raise TypeError(f"direction must be faults.IN or faults.OUT, got {direction!r}")
        rule = FaultRule(
            drop=drop, duplicate=duplicate, reorder=reorder, delay=delay, blackhole=blackhole
        )
        for channel in self._channels(channels):
            self._rules[(peer, direction, channel)] = rule
        self.enabled = True
        return rule

    def blackhole(
        self, peer: str, direction: Direction, *, channels: Iterable[Channel] | None = None
    ) -> FaultRule:
        """Let nothing through one way (heartbeats included) until cleared."""
        return self.set(peer, direction, channels=channels, blackhole=True)

    def clear(self, peer: str | None = None) -> None:
        """Remove the rules for ``peer`` (all rules if None). Messages held back
        for reordering are discarded."""
        for key in [k for k in self._rules if peer is None or k[0] == peer]:
            del self._rules[key]
            self._held.pop(key, None)
        self.enabled = bool(self._rules)

    def sever(self, peer: str) -> int:
        """Reset every connection to ``peer`` at once, without a websocket close:
        what a crash or a cut cable looks like. Returns how many were reset. The
        link goes down and reconnects as after any loss."""
        severed = self._sever(peer)
        self.counts.severed += severed
        return severed

    def rule(self, peer: str, direction: Direction, channel: Channel) -> FaultRule | None:
        return self._rules.get((peer, direction, channel))

    @staticmethod
    def _channels(channels: Iterable[Channel] | None) -> list[Channel]:
        if channels is None:
            return list(Channel)
        chosen = list(channels)
        for channel in chosen:
            if not isinstance(channel, Channel):
                raise TypeError(f"channels must be Channel members, got {channel!r}")
        return chosen

    # -- used by the links ----------------------------------------------------------

    def passes_heartbeat(self, peer: str, direction: Direction) -> bool:
        rule = self._rules.get((peer, direction, Channel.CONTROL))
        if rule is not None and rule.blackhole:
            self.counts.blackholed += 1
            return False
        return True

    def refuses_link(self, peer: str) -> bool:
        """Whether a new link with ``peer`` is refused: a blackhole on its control
        channel, either way, lets no handshake through (a cut network lets no TCP
        handshake through either). Both sides check it once they know the peer's
        name, so the dial fails at once instead of after ``handshake_timeout``."""
        for direction in Direction:
            rule = self._rules.get((peer, direction, Channel.CONTROL))
            if rule is not None and rule.blackhole:
                self.counts.blackholed += 1
                return True
        return False

    def blackholed(self, peer: str, direction: Direction, channel: Channel) -> bool:
        rule = self._rules.get((peer, direction, channel))
        if rule is not None and rule.blackhole:
            self.counts.blackholed += 1
            return True
        return False

    def apply(
        self, peer: str, direction: Direction, channel: Channel, messages: list[bytes]
    ) -> tuple[list[bytes], float]:
        """The messages that go through, in the order they go, and the delay to
        wait before they do."""
        key = (peer, direction, channel)
        rule = self._rules.get(key)
        if rule is None:
            return messages, 0.0
        if rule.blackhole:
            self.counts.blackholed += len(messages)
            return [], 0.0
        rng = self.rng
        out: list[bytes] = []
        for message in messages:
            if rule.drop and rng.random() < rule.drop:
                self.counts.dropped += 1
                continue
            copies = 1
            if rule.duplicate and rng.random() < rule.duplicate:
                self.counts.duplicated += 1
                copies = 2
            held = self._held.pop(key, None)
            if held is None and rule.reorder and rng.random() < rule.reorder:
                self.counts.reordered += 1
                self._held[key] = message
                continue
            out.extend([message] * copies)
            if held is not None:
                out.append(held)
        if rule.delay and out:
            self.counts.delayed += len(out)
        return out, rule.delay if out else 0.0
