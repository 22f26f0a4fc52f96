"""The bounded subscriptions shared by config and events: a property test of the
stream a subscriber sees, whatever the interleaving of publishing and reading."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_trio.services.subscribers import Lagged, Subscribers, check_buffer


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    buffer=st.integers(1, 5),
    steps=st.lists(st.one_of(st.just("publish"), st.integers(1, 4)), max_size=60),
)
def test_the_stream_is_in_order_with_every_gap_announced(buffer, steps):
    subscribers: Subscribers[int] = Subscribers("test")
    channel = subscribers.subscribe(buffer)
    published = 0
    received: list[int | Lagged] = []

    def read(count: int) -> None:
        for _ in range(count):
            try:
                received.append(channel.receive_nowait())
            except trio.WouldBlock:
                return

    for step in steps:
        if step == "publish":
            subscribers.publish(published)  # never waits, whatever the reader does
            published += 1
        else:
            read(step)
        # at most the buffer, plus one Lagged marker travelling with an item
        assert channel.statistics().current_buffer_used <= buffer + 1
    read(10 * buffer + 10)

    expected_next = 0
    announced = 0
    previous_was_marker = False
    for item in received:
        if isinstance(item, Lagged):
            assert item.missed > 0
            assert not previous_was_marker
            expected_next += item.missed
            announced += item.missed
            previous_was_marker = True
        else:
            assert item == expected_next, received
            expected_next += 1
            previous_was_marker = False
    assert not previous_was_marker  # a marker always comes with the item after the gap
    pending = subscribers._subscriptions[0].missed
    assert expected_next + pending == published
    assert subscribers.lagged_total == announced + pending


def test_a_closed_receiver_is_forgotten_and_close_ends_the_rest():
    subscribers: Subscribers[int] = Subscribers("test")
    gone = subscribers.subscribe(2)
    kept = subscribers.subscribe(2, accepts=lambda n: n % 2 == 0)
    gone.close()
    for n in range(3):
        subscribers.publish(n)
    assert len(subscribers) == 1
    assert [kept.receive_nowait(), kept.receive_nowait()] == [0, 2]
    subscribers.close()
    with pytest.raises(trio.EndOfChannel):
        kept.receive_nowait()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_buffer_sizes_are_checked(bad):
    with pytest.raises(ValueError, match="buffer must be an int of at least 1"):
        check_buffer(bad, "subscribe()")
