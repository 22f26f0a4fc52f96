"""Fault injection: the rules on their own (seeded), and on live links."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing
from _links_helpers import COOKIE, Recorder, start, wait_channels, wait_linked

from foundation_trio.cluster.errors import NotConnected
from foundation_trio.cluster.faults import IN, OUT, FaultInjector
from foundation_trio.cluster.links import Backoff, Channel, Links
from foundation_trio.cluster.options import Cluster

MESSAGES = [b"m%d" % i for i in range(1000)]


def injector(seed: int = 7) -> FaultInjector:
    return FaultInjector(lambda peer: 0, seed=seed)


def test_off_by_default() -> None:
    faults = injector()
    assert faults.enabled is False
    faults.set("b", OUT, drop=0.5)
    assert faults.enabled is True
    faults.clear("b")
    assert faults.enabled is False


def test_drop_is_seeded_and_close_to_its_probability() -> None:
    runs = []
    for _ in range(2):
        faults = injector(seed=3)
        faults.set("b", OUT, drop=0.25)
        kept, delay = faults.apply("b", OUT, Channel.DATA, list(MESSAGES))
        runs.append(kept)
        assert delay == 0
        assert faults.counts.dropped == 1000 - len(kept)
    assert runs[0] == runs[1]  # same seed, same losses
    assert 200 <= 1000 - len(runs[0]) <= 300
    assert runs[0] == [m for m in MESSAGES if m in set(runs[0])]  # order kept


def test_duplicate_reorder_delay_and_blackhole() -> None:
    faults = injector()
    faults.set("b", IN, duplicate=1.0)
    out, _ = faults.apply("b", IN, Channel.DATA, [b"1", b"2"])
    assert out == [b"1", b"1", b"2", b"2"]
    faults.set("b", IN, reorder=1.0)
    out, _ = faults.apply("b", IN, Channel.DATA, [b"1", b"2", b"3", b"4"])
    assert out == [b"2", b"1", b"4", b"3"]
    faults.set("b", OUT, channels=[Channel.BULK], delay=0.5)
    out, delay = faults.apply("b", OUT, Channel.BULK, [b"x"])
    assert (out, delay) == ([b"x"], 0.5)
    assert faults.apply("b", OUT, Channel.DATA, [b"y"]) == ([b"y"], 0.0)  # other channel
    faults.blackhole("b", OUT)
    assert faults.apply("b", OUT, Channel.DATA, [b"z"]) == ([], 0.0)
    assert not faults.passes_heartbeat("b", OUT)
    assert faults.apply("c", OUT, Channel.DATA, [b"w"]) == ([b"w"], 0.0)  # other peer


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"drop": 1.5}, "drop"),
        ({"duplicate": -0.1}, "duplicate"),
        ({"delay": -1}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"blackhole": 1}, "blackhole"),
    ],
)
def test_bad_rules(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        injector().set("b", OUT, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="direction"):
        injector().set("b", "out", drop=0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="channels"):
        injector().set("b", OUT, channels=["data"], drop=0.1)  # type: ignore[list-item]


def test_backoff_schedule_is_seeded_doubling_and_capped() -> None:
    backoff = Backoff(0.1, 2.0, 0.2, random.Random(42))
    delays = [backoff.next() for _ in range(8)]
    again = Backoff(0.1, 2.0, 0.2, random.Random(42))
    assert delays == [again.next() for _ in range(8)]
    bases = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert len(set(delays)) == 8  # jittered, not constant
    backoff.reset()
    assert 0.08 <= backoff.next() <= 0.12
    exact = Backoff(1.0, 4.0, 0.0, random.Random(0))
    assert [exact.next() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]


async def test_faults_off_cost_one_attribute_check(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, ra = await start(nursery, "a")
    b, rb = await start(nursery, "b", seeds=[a.address])
    await wait_linked((a, ra), (b, rb))

    def never(*args: object) -> object:
        raise AssertionError("fault code ran while no rule was set")

    for name in ("apply", "passes_heartbeat", "blackholed", "rule"):
        monkeypatch.setattr(b.faults, name, never)
        monkeypatch.setattr(a.faults, name, never)
    for i in range(100):
        await b.send("a", Channel.CONTROL, b"%d" % i)
    await ra.wait_for(lambda: len(ra.messages) == 100)


async def test_drop_and_duplicate_on_a_live_link(nursery: trio.Nursery) -> None:
    a, ra = await start(nursery, "a")
    b, rb = await start(nursery, "b", seeds=[a.address])
    await wait_linked((a, ra), (b, rb))
    await wait_channels(b, "a")
    b.faults.seed(5)
    b.faults.set("a", OUT, channels=[Channel.DATA], drop=0.5)
    a.faults.set("b", IN, channels=[Channel.DATA], duplicate=1.0)
    for i in range(200):
        await b.send("a", Channel.DATA, b"%d" % i)
    await b.send("a", Channel.CONTROL, b"done")
    await ra.wait_for(lambda: ra.received(Channel.CONTROL) == [b"done"])
    kept = 200 - b.faults.counts.dropped
    await ra.wait_for(lambda: len(ra.received(Channel.DATA)) == 2 * kept)
    got = ra.received(Channel.DATA)
    assert got[::2] == got[1::2]  # each one twice, in a row
    numbers = [int(m) for m in got[::2]]
    assert numbers == sorted(numbers)  # what arrives is in order
    assert 60 < kept < 140


async def test_reconnection_follows_the_seeded_backoff(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[float] = []
    done = trio.Event()

    async def refused(address: str, channel: Channel, link: object, **_: object) -> None:
        attempts.append(trio.current_time())
        if len(attempts) == 7:
            done.set()
        raise NotConnected(address, "refused (test)")

    options = Cluster(
        cookie=COOKIE,
        seeds=["127.0.0.1:9"],
        reconnect_min=0.5,
        reconnect_max=4.0,
        reconnect_jitter=0.25,
        rng=random.Random(11),
    )
    links = Links("a", options, Recorder())
    monkeypatch.setattr(links, "_dial", refused)
    async with trio.open_nursery() as nursery:
        await nursery.start(links.run)
        with trio.fail_after(100):
            await done.wait()
        nursery.cancel_scope.cancel()
    expected = Backoff(0.5, 4.0, 0.25, random.Random(11))
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    for gap, want in zip(gaps, [expected.next() for _ in gaps], strict=True):
        assert gap == pytest.approx(want, abs=1e-6)
