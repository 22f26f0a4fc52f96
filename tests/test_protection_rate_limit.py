"""The token-bucket rate limiter (issue 3, item 5).

The acceptance criterion: the bucket admits exactly ``burst + rate * t`` over an
interval of ``t`` seconds (with ``rate * t`` rounded down to whole tokens) for a
caller that asks whenever it may, checked under trio's MockClock with hypothesis over
``(burst, rate, t)``. Rates are multiples of 1/8 and times multiples of 1/64, so the
expected count is computed exactly with fractions.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import foundation_trio as ft
from foundation_trio.services import telemetry

protection = ft.protection

bursts = st.integers(min_value=1, max_value=40)
rate_tenths = st.integers(min_value=1, max_value=1000)
interval_hundredths = st.integers(min_value=0, max_value=1600)
clock_offsets = st.sampled_from([0.0, 1.0e5 + 0.3])


def run_mock(fn: Any, offset: float) -> Any:
    clock = trio.testing.MockClock(autojump_threshold=0)
    clock.jump(offset)
    return trio.run(fn, clock=clock)


@settings(max_examples=120, deadline=None)
@given(burst=bursts, tenths=rate_tenths, hundredths=interval_hundredths, offset=clock_offsets)
def test_token_bucket_admits_exactly_burst_plus_rate_times_t(burst, tenths, hundredths, offset):
    rate, t = tenths / 10, hundredths / 100
    # From the decimal values meant, not from their binary approximations.
    expected = burst + math.floor(Fraction(tenths, 10) * Fraction(hundredths, 100))

    async def greedy() -> tuple[int, int]:
        limiter = protection.RateLimiter("exact", rate=rate, burst=burst)
        start = trio.current_time()
        end = start + t
        admitted = sleeps = 0
        while True:
            try:
                limiter.acquire("client")
            except protection.RateLimited as refused:
                retry_after = refused.retry_after
            else:
                admitted += 1
                continue
            assert retry_after > 0
            # The next token's moment lies after the interval: stop. (Token
            # moments differ from ``end`` by 0 or by far more than 1e-6 here.)
            if trio.current_time() + retry_after > end + 1e-6:
                return admitted, sleeps
            await trio.sleep(retry_after)
            sleeps += 1
            # Fail rather than spin if a retry_after missed its token.
            assert sleeps <= expected - burst, "slept more often than tokens arrived"

    admitted, sleeps = run_mock(greedy, offset)
    assert admitted == expected
    # Each sleep of retry_after lands on a moment when the call is let through.
    assert sleeps == expected - burst


@settings(max_examples=200, deadline=None)
@given(
    burst=bursts,
    rate=rate_tenths.map(lambda k: k / 10),
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=64 * 5).map(lambda k: k / 64),
            st.integers(min_value=1, max_value=60),
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_token_bucket_never_admits_more_than_burst_plus_rate_times_t(burst, rate, steps):
    async def bursty() -> tuple[int, float]:
        limiter = protection.RateLimiter("bound", rate=rate, burst=burst)
        start = trio.current_time()
        admitted = 0
        for gap, attempts in steps:
            await trio.sleep(gap)
            for _ in range(attempts):
                try:
                    limiter.acquire()
                except protection.RateLimited:
                    break
                admitted += 1
        return admitted, trio.current_time() - start

    admitted, elapsed = run_mock(bursty, 0.0)
    assert admitted <= burst + math.floor(rate * elapsed + 1e-9)


async def test_retry_after_and_tokens(autojump_clock):
    limiter = protection.RateLimiter("api", rate=2.0, burst=3)
    limiter.acquire(tokens=3)
    assert limiter.available() == 0
    with pytest.raises(protection.RateLimited) as caught:
        limiter.acquire(tokens=2)
    assert caught.value.retry_after == pytest.approx(1.0)
    assert caught.value.tokens == 2
    await trio.sleep(0.5)
    assert limiter.available() == 1
    await trio.sleep(0.5)
    limiter.acquire(tokens=2)
    # A bucket refills up to burst and no further.
    await trio.sleep(100)
    assert limiter.available() == 3
    limiter.acquire(tokens=3)
    with pytest.raises(protection.RateLimited):
        limiter.acquire()


async def test_keys_have_their_own_buckets_in_a_bounded_table(autojump_clock):
    limiter = protection.RateLimiter("api", rate=1.0, burst=2, max_keys=2)
    limiter.acquire("a", tokens=2)
    limiter.acquire("b", tokens=2)
    with pytest.raises(protection.RateLimited):
        limiter.acquire("a")
    assert limiter.available("c") == 2  # a new key starts full
    limiter.acquire("c")  # evicts "b", the least recently used, still refilling
    assert len(limiter) == 2
    assert limiter.evictions == 1
    assert limiter.available("b") == 2  # "b" starts over
    assert limiter.available("a") == 0
    await trio.sleep(10)
    limiter.acquire("d")  # evicts "a", which had refilled: not counted
    assert limiter.evictions == 1
    assert len(limiter) == 2


async def test_rejections_are_telemetry_events(autojump_clock):
    seen: list[tuple[dict[str, Any], Any]] = []
    async with ft.open_node("rl"):
        telemetry.attach(
            "t",
            ["protection.rate_limit.rejected"],
            lambda name, m, md: seen.append((dict(m), (md["limiter"], md["key"]))),
        )
        limiter = protection.RateLimiter("api", rate=4.0, burst=1)
        limiter.acquire("user-7")
        with pytest.raises(protection.RateLimited):
            limiter.acquire("user-7")
    assert seen == [({"retry_after": 0.25, "tokens": 1}, ("api", "user-7"))]


def test_bad_input_raises_typed_errors_naming_the_argument():
    for options, name in [
        ({"rate": 0.0, "burst": 1}, "rate"),
        ({"rate": math.inf, "burst": 1}, "rate"),
        ({"rate": "5", "burst": 1}, "rate"),
        ({"rate": 1.0, "burst": 0}, "burst"),
        ({"rate": 1.0}, "burst"),
        ({"rate": 1.0, "burst": 1, "max_keys": 0}, "max_keys"),
        ({"rate": 1.0, "burst": 1, "bogus": 0}, "bogus"),
    ]:
        with pytest.raises(ft.ConfigError, match=name):
            protection.RateLimiter("x", **options)
    limiter = protection.RateLimiter("x", rate=1.0, burst=2, clock=lambda: 0.0)
    with pytest.raises(ValueError, match="tokens"):
        limiter.acquire(tokens=3)
    with pytest.raises(ValueError, match="tokens"):
        limiter.acquire(tokens=0)
    with pytest.raises(TypeError, match="tokens"):
        limiter.acquire(tokens=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be hashable"):
        limiter.acquire(["unhashable"])
    with pytest.raises(TypeError, match="key must be hashable"):
        limiter.acquire(("tuple", ["holding a list"]))
    assert len(limiter) == 0
