"""Whether a store's database answers, judged from the store's own operations, and the few log
lines an outage is worth.

During an outage every request that needs the database fails the same way, so a line (or a
traceback) per failure would say one thing thousands of times. An outage is logged when it
starts, then reminded of at most every ``reminder_s`` with the count of operations refused, and
once more when a write succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from webhookd.exceptions import StorageUnavailable

logger = logging.getLogger(__name__)

REMINDER_INTERVAL_S = 60.0
LATELY_S = 5.0
"""How long after a refusal readiness still answers "unavailable" without trying a write."""


class Availability:
    """The outage state of one store. Used on the event loop only.

    Only a write that commits changes ends an outage: reads can go on answering while writes
    fail (a full disk, a read-only server). An outage can also flicker, when a full disk still has
    room for a small write now and then: whatever happens, lines about it come at most one per
    ``reminder_s``, but for the one that says the database answers again."""

    def __init__(
        self,
        database: str,
        *,
        reminder_s: float = REMINDER_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database, self._reminder_s, self._clock = database, reminder_s, clock
        self._down = False
        self._logged_down = False
        """The last line logged said the database is unavailable."""
        self._last_line_at: float | None = None
        self._since = 0.0
        self._refused = 0
        self._refused_at: float | None = None

    @property
    def down(self) -> bool:
        """An operation was refused and no write has committed since."""
        return self._down

    @property
    def refused_lately(self) -> bool:
        """An operation was refused in the last ``LATELY_S``, and no write has committed since.

        Readiness goes by this before trying a write of its own: a full disk can still find room
        for a one-row write (in what a failed write left in the journal) while every real request
        is refused. Once nothing is refused for a while, readiness tries again, so a process that
        gets no traffic because it is not ready still finds out when the database is back."""
        return self._refused_at is not None and self._clock() - self._refused_at < LATELY_S

    @property
    def refusals(self) -> int:
        """Operations refused since the outage was logged (0 when none is)."""
        return self._refused if self._logged_down else 0

    def refused(self, error: StorageUnavailable) -> None:
        """Count an operation refused for ``error``; log if it starts an outage or a reminder is due."""
        now = self._clock()
        self._down, self._refused_at = True, now
        self._refused += 1
        if self._last_line_at is not None and now - self._last_line_at < self._reminder_s:
            return
        self._last_line_at = now
        if not self._logged_down:
            self._logged_down, self._since, self._refused = True, now, 1
            logger.error(
                "%s; requests that need the database are answered 503 until it recovers",
                error,
                extra={"action": "store.unavailable"},
            )
            return
        logger.error(
            "%s still unavailable after %.0f s; %d operations refused so far: %s",
            self._database,
            now - self._since,
            self._refused,
            error,
            extra={"action": "store.still_unavailable", "refused": self._refused},
        )

    def answered(self) -> None:
        """A write committed changes: end the outage, if there was one."""
        self._down, self._refused_at = False, None
        if not self._logged_down:
            return
        now = self._clock()
        logger.warning(
            "%s answers again after %.0f s; %d operations were refused",
            self._database,
            now - self._since,
            self._refused,
            extra={"action": "store.available", "refused": self._refused},
        )
        self._logged_down, self._last_line_at, self._refused = False, now, 0
