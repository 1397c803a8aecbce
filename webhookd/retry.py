"""Retry policy: when the next attempt happens, or that there is none."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

JITTER_RATIO = 0.2
RETRY_AFTER_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - now).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``schedule_s[n]`` is the delay before attempt ``n + 1``; its length is the attempt budget."""

    schedule_s: tuple[float, ...]
    jitter_ratio: float = JITTER_RATIO

    @property
    def max_attempts(self) -> int:
        return len(self.schedule_s)

    @property
    def retry_after_cap_s(self) -> float:
        """``Retry-After`` is honoured up to the schedule's longest step."""
        return max(self.schedule_s)

    def jittered(self, base_s: float, rand: Callable[[], float] = random.random) -> float:
        return base_s * (1 + self.jitter_ratio * (2 * rand() - 1))

    def delay_after(
        self,
        attempt_no: int,
        retry_after_s: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait after failed attempt ``attempt_no`` (1-based); ``None`` when spent."""
        if attempt_no >= self.max_attempts:
            return None
        delay = self.jittered(self.schedule_s[attempt_no], rand)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.retry_after_cap_s))
        return delay

    def probe_delay(
        self,
        failure_count: int,
        retry_after_s: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """How long a failing subscription waits before its next single probe."""
        step = self.schedule_s[min(failure_count, self.max_attempts - 1)]
        delay = self.jittered(step, rand)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.retry_after_cap_s))
        return delay
