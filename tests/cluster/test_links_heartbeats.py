"""The links' side of failure detection, over real sockets on 127.0.0.1: control
sends a heartbeat every interval even while it carries other messages, each one read
is reported to ``on_heartbeat``, and ``declare_down`` closes a link with its reason."""

from __future__ import annotations

import itertools

import pytest
import trio
from _links_helpers import COOKIE, Recorder, wait_channels, wait_linked

from foundation_trio.cluster.links import Channel, Links
from foundation_trio.cluster.options import Cluster

INTERVAL = 0.1


async def heard_pair(
    nursery: trio.Nursery, on_heartbeat: object
) -> tuple[tuple[Links, Recorder], tuple[Links, Recorder]]:
    options = {"cookie": COOKIE, "heartbeat_interval": INTERVAL, "reconnect_min": 0.05}
    ra, rb = Recorder(), Recorder()
    a = Links("a", Cluster(**options), ra)  # type: ignore[arg-type]
    await nursery.start(a.run)
    b = Links(
        "b",
        Cluster(seeds=[a.address], **options),  # type: ignore[arg-type]
        rb,
        on_heartbeat=on_heartbeat,  # type: ignore[arg-type]
    )
    await nursery.start(b.run)
    await wait_linked((a, ra), (b, rb))
    await wait_channels(b, "a")
    return (a, ra), (b, rb)


async def test_heartbeats_keep_their_rhythm_while_control_is_busy(nursery: trio.Nursery) -> None:
    beats: list[tuple[str, float]] = []
    (a, _), (_, rb) = await heard_pair(nursery, lambda peer, at: beats.append((peer, at)))
    await trio.sleep(3 * INTERVAL)
    beats.clear()
    # A message on control every 20 ms for 1.5 s: the connection is never idle
    # for a heartbeat interval, and heartbeats still go out every interval.
    start = trio.current_time()
    sent = 0
    while trio.current_time() - start < 1.5:
        await a.send("b", Channel.CONTROL, b"busy %d" % sent)
        sent += 1
        await trio.sleep(0.02)
    await rb.wait_for(lambda: len(rb.received(Channel.CONTROL)) == sent)
    assert {peer for peer, _ in beats} == {"a"}
    # 15 intervals; the machine may be loaded, so ask for well over half of them.
    assert len(beats) >= 8, beats
    assert all(later >= earlier for (_, earlier), (_, later) in itertools.pairwise(beats))


async def test_a_failing_heartbeat_hook_is_logged_and_the_link_stays(
    nursery: trio.Nursery,
) -> None:
    calls = 0
    called_thrice = trio.Event()

    def broken(peer: str, at: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            called_thrice.set()
        raise RuntimeError("hook bug")

    (a, _), (b, rb) = await heard_pair(nursery, broken)
    with trio.fail_after(10):
        await called_thrice.wait()
    assert b.peers() == ["a"] and rb.downs == []
    await a.send("b", Channel.DATA, b"still here")
    await rb.wait_for(lambda: rb.received(Channel.DATA) == [b"still here"])


async def test_declare_down_reports_the_reason_as_given_and_the_link_returns(
    nursery: trio.Nursery,
) -> None:
    (a, ra), (b, rb) = await heard_pair(nursery, None)
    assert not b.delivering("a") and not b.delivering("nobody")
    b.declare_down("a", "suspected by the phi detector: phi 9.0 >= 8.0")
    await rb.wait_for(lambda: bool(rb.downs))
    assert rb.downs[0] == ("a", "suspected by the phi detector: phi 9.0 >= 8.0")
    await ra.wait_for(lambda: bool(ra.downs))
    # b keeps a's address (its seed): the link is dialled again.
    await wait_linked((a, ra), (b, rb))
    b.declare_down("nobody", "no such link")  # nothing to do
    with pytest.raises(TypeError, match="reason must be a str"):
        b.declare_down("a", 42)  # type: ignore[arg-type]


async def test_links_refuse_a_hook_that_is_not_callable() -> None:
    with pytest.raises(TypeError, match="on_heartbeat must be callable"):
        Links("a", Cluster(cookie=COOKIE), Recorder(), on_heartbeat="no")  # type: ignore[arg-type]
