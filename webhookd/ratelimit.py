"""Per-key token buckets: ``WEBHOOKD_RATE_LIMIT_PER_MIN`` requests a minute, refilled smoothly.

The buckets live in this process. With several API nodes each node allows the full rate, so the
effective limit is per node; see the README for why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    """Whole seconds until a token is back (0 when allowed)."""


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._per_second = per_minute / 60
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.full = Decision(True, per_minute, per_minute, 0)
        """What a caller with no key yet is shown: a full bucket."""

    def peek(self, key_id: str) -> Decision:
        """``key_id``'s bucket as it stands, spending nothing (for calls that are not limited)."""
        bucket = self._refill(key_id)
        return Decision(True, self._per_minute, int(bucket.tokens), 0)

    def take(self, key_id: str) -> Decision:
        """Spend one token of ``key_id``'s bucket, if there is one."""
        bucket = self._refill(key_id)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return Decision(True, self._per_minute, int(bucket.tokens), 0)
        wait_s = math.ceil((1 - bucket.tokens) / self._per_second)
        return Decision(False, self._per_minute, 0, max(1, wait_s))

    def _refill(self, key_id: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[key_id] = _Bucket(float(self._per_minute), now)
        bucket.tokens = min(self._per_minute, bucket.tokens + (now - bucket.updated) * self._per_second)
        bucket.updated = now
        return bucket
