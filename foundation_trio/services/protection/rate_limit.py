"""The rate limiter: a token bucket per entity.

Each key (an entity: a user id, a client address; ``None`` for one shared bucket)
has a bucket that holds at most ``burst`` tokens and gains ``rate`` tokens per
second; a call takes ``tokens`` tokens (1 by default) or is refused with
:class:`RateLimited`, whose ``retry_after`` is the seconds until enough tokens are
there. A new key starts with a full bucket. Over any interval of ``t`` seconds that
starts with a full bucket, a key is let through at most ``burst + floor(rate * t)``
tokens, and exactly that many if it asks whenever it may (``tests`` check it under
``MockClock`` with hypothesis).

The arithmetic is exact in this sense: a bucket remembers the time it was last full
and the tokens taken since, and each decision computes ``origin + n / rate`` afresh
rather than adding up fractions of tokens, so rounding never accumulates. A clock
reading within a nanosecond (or four float ulps) of the moment a token arrives
counts as that moment, so that ``await trio.sleep(error.retry_after)`` always lands
on a moment when the call is let through.

The key table is bounded by ``max_keys``: a new key beyond it evicts the least
recently used one. If that bucket had refilled, nothing is lost (a full bucket is
what an absent key gets); otherwise that entity starts again with a full bucket,
and ``evictions`` counts it.

Telemetry: ``protection.rate_limit.rejected`` (measurements ``retry_after``,
``tokens``; metadata ``limiter`` (the name) and ``key``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import attrs

from ..._validation import structure_options
from ._common import (
    Clock,
    ProtectionError,
    check_clock,
    check_name,
    emit,
    positive_finite,
    positive_int,
)


@attrs.frozen(kw_only=True)
class RateLimitOptions:
    """Options of a :class:`RateLimiter`, validated on construction."""

    rate: float = attrs.field(validator=positive_finite)
    """Tokens added to each bucket per second."""

    burst: int = attrs.field(validator=positive_int)
    """The most tokens a bucket holds (and a new key starts with)."""

    max_keys: int = attrs.field(default=10_000, validator=positive_int)
    """The most keys tracked at once."""


class RateLimited(ProtectionError):
    """The key's bucket is short of tokens; ``retry_after`` seconds from now it will
    have enough."""

    def __init__(self, name: str, key: Hashable, tokens: int, retry_after: float) -> None:
        super().__init__(
            f"rate limiter {name!r} refused {tokens} token(s) for key {key!r}; "
            f"retry in {retry_after:.3f} s"
        )
        self.name = name
        self.key = key
        self.tokens = tokens
        self.retry_after = retry_after


class _Bucket:
    """A bucket that was full at ``origin`` and has given ``taken`` tokens since."""

    __slots__ = ("origin", "taken")

    def __init__(self, origin: float, taken: int) -> None:
        self.origin = origin
        self.taken = taken


def _hashes(key: object) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


def _slack(now: float) -> float:
    return 1e-9 + 4 * math.ulp(now)


class RateLimiter:
    """A token bucket per key, named ``name`` (it appears in errors and telemetry).

    Options (see :class:`RateLimitOptions`; a bad or missing one raises
    :class:`~foundation_trio.ConfigError` naming it): ``rate`` (tokens per second,
    required), ``burst`` (bucket size, required), ``max_keys`` (10,000). ``clock``
    is where the time is read, ``trio.current_time`` by default.

    Plain data: :meth:`acquire` never waits and is not a checkpoint.
    """

    def __init__(
        self, name: str = "rate_limiter", *, clock: Clock | None = None, **options: Any
    ) -> None:
        self.name = check_name(name, "RateLimiter()")
        self.options = structure_options(RateLimitOptions, options, f"RateLimiter({name!r})")
        self._clock = check_clock(clock, "RateLimiter()")
        self._rate = self.options.rate
        self._burst = self.options.burst
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self.evictions = 0
        """Keys evicted while their bucket was still refilling."""

    def __repr__(self) -> str:
        return (
            f"<RateLimiter {self.name!r} rate={self._rate} burst={self._burst} "
            f"keys={len(self._buckets)}>"
        )

    def __len__(self) -> int:
        """The number of keys tracked."""
        return len(self._buckets)

    def acquire(self, key: Hashable = None, tokens: int = 1) -> None:
        """Take ``tokens`` tokens from ``key``'s bucket, or raise :class:`RateLimited`
        (taking none).

        Raises :class:`ValueError` if ``tokens`` is not between 1 and ``burst`` (more
        could never be let through), :class:`TypeError` if ``key`` is unhashable.
        """
        if type(tokens) is not int or not 1 <= tokens <= self._burst:
            self._check_tokens(tokens)
        try:
            retry_after = self._take(key, tokens)
        except TypeError:
            if not isinstance(key, Hashable) or not _hashes(key):
                raise TypeError(
                    f"RateLimiter.acquire(): key must be hashable, got {key!r}"
                ) from None
            raise
        if retry_after is not None:
            emit(
                "protection.rate_limit.rejected",
                {"retry_after": retry_after, "tokens": tokens},
                {"limiter": self.name, "key": key},
            )
            raise RateLimited(self.name, key, tokens, retry_after)

    def available(self, key: Hashable = None) -> int:
        """Whole tokens ``key`` could take now."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return self._burst
        now = self._clock()
        refilled = math.floor((now + _slack(now) - bucket.origin) * self._rate)
        return max(0, min(self._burst, self._burst + refilled - bucket.taken))

    def _check_tokens(self, tokens: object) -> None:
        if isinstance(tokens, bool) or not isinstance(tokens, int):
            raise TypeError(f"RateLimiter.acquire(): tokens must be an int, got {tokens!r}")
        if not 1 <= tokens <= self._burst:
            raise ValueError(
                f"RateLimiter.acquire(): tokens must be between 1 and burst ({self._burst}), "
                f"got {tokens!r}"
            )

    def _take(self, key: Hashable, tokens: int) -> float | None:
        """Take the tokens and return None, or return the seconds until they are there."""
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.options.max_keys:
                self._evict(now)
            buckets[key] = _Bucket(now, tokens)
            return None
        buckets.move_to_end(key)
        rate = self._rate
        # Full since origin + taken / rate: then it is as if new, full at ``now``.
        full_at = bucket.origin + bucket.taken / rate
        if now > full_at and now - full_at > _slack(now):
            bucket.origin = now
            bucket.taken = 0
        missing = bucket.taken + tokens - self._burst
        if missing > 0:
            ready = bucket.origin + missing / rate
            if now < ready and ready - now > _slack(now):
                return ready - now
        bucket.taken += tokens
        return None

    def _evict(self, now: float) -> None:
        # The least recently used key goes; it has usually refilled, and then
        # dropping it loses nothing. Looking further would cost O(max_keys).
        _, bucket = self._buckets.popitem(last=False)
        if now <= bucket.origin + bucket.taken / self._rate:
            self.evictions += 1


__all__ = ["RateLimitOptions", "RateLimited", "RateLimiter"]
