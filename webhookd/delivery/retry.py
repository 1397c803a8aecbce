"""Retry policy: when the next attempt happens, or that there is none."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

JITTER_RATIO = 0.2


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``schedule_s[n]`` is the delay before attempt ``n + 1``; its length is the attempt budget."""

    schedule_s: tuple[float, ...]
    jitter_ratio: float = JITTER_RATIO

    @property
    def max_attempts(self) -> int:
        return len(self.schedule_s)

    def delay_after(self, attempt_no: int, rand: Callable[[], float] = random.random) -> float | None:
        """Seconds to wait after failed attempt ``attempt_no`` (1-based); ``None`` when spent."""
        if attempt_no >= self.max_attempts:
            return None
        base = self.schedule_s[attempt_no]
        return base * (1 + self.jitter_ratio * (2 * rand() - 1))
