"""What both stores share of the claim: the walk over subscriptions with pending work, and how long a
worker may stay silent before its claims are taken back.

A claim visits the subscriptions that have pending deliveries in turn, in id order from where the
previous claim of this process stopped, and takes at most a few from each: one subscription's backlog
cannot fill a worker's slots, and every subscription with due work is reached. Each visit is one probe
of the ``deliveries_pending_by_subscription`` index, so a claim costs what the subscriptions visited and
the batch cost, whatever the backlog.

A claim lasts while its worker lives. Workers heartbeat every ``HEARTBEAT_S``; one silent for
``WORKER_DEAD_AFTER_S`` is dead and its claims go back to wait where they were in the queue (their due
time is untouched). So no lease can run out under an attempt that is still running, however long the
attempt or the wait for a slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

HEARTBEAT_S = 2.0
WORKER_DEAD_AFTER_S = 10.0
"""Five heartbeats: a worker is not declared dead for one slow commit."""
RECLAIM_EVERY_S = 1.0
"""How often a process's claims look for dead workers' claims."""
FAIR_SHARES = 8
"""A claim's batch is shared by at least this many subscriptions when that many have due work."""
RING_VISITS = 200
"""Subscriptions with pending work one claim visits at most: it stops earlier once its batch is full."""

# The next subscription with pending work after :cursor, wrapping to the first; the walk ends before it
# comes back to where it began. The second column is that subscription's earliest due time.
# {pending_index} names the partial index of pending deliveries where a backend's planner needs telling:
# walked by the full (subscription_id, status, ...) index instead, each step would step over every
# delivered row of the subscriptions it passes, so a claim would cost as much as the history kept.
_NEXT = (
    "coalesce((SELECT min(subscription_id) FROM deliveries {{pending_index}} WHERE status = 'pending'"
    " AND subscription_id > {after}),"
    " (SELECT min(subscription_id) FROM deliveries {{pending_index}} WHERE status = 'pending'))"
)
RING = f"""
WITH RECURSIVE ring(sub, n, first) AS (
    SELECT s, 1, s FROM (SELECT {_NEXT.format(after="{cursor}")} AS s) AS start WHERE s IS NOT NULL
    UNION ALL
    SELECT {_NEXT.format(after="ring.sub")}, ring.n + 1, ring.first FROM ring
    WHERE ring.n < {{visits}} AND {_NEXT.format(after="ring.sub")} <> ring.first
)
SELECT ring.sub, (SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'
                  AND subscription_id = ring.sub) AS due,
       s.rate_limit_per_second, s.next_send_at, s.ordered
FROM ring JOIN subscriptions AS s ON s.id = ring.sub ORDER BY ring.n
"""

# Only the head of an ordered subscription's ordering key may go: no delivery of the same key stored
# before it ({d}) is still unfinished.
HEAD_OF_KEY = """({d}.ordering_key IS NULL OR NOT EXISTS (
    SELECT 1 FROM deliveries AS ahead
    WHERE ahead.subscription_id = {d}.subscription_id AND ahead.ordering_key = {d}.ordering_key
      AND ahead.seq < {d}.seq AND ahead.status IN ('pending', 'in_flight', 'held', 'parked')))"""

PACE_AHEAD_S = 1.0
"""A paced subscription's claims take the slots of the next second; each job waits for its slot."""
PACING_HEADROOM = 1.1
"""Slots are 10 % wider than 1/limit: ``limit + 1`` slots then span 1.1 s, so a send up to 100 ms later
than its slot (a busy event loop, a slow commit) never lets one second hold more than the limit."""
PACE_LATE_S = PACING_HEADROOM - 1.0
"""How late after its slot a paced job may still be sent; a later one goes back for a new slot."""


@dataclass(frozen=True, slots=True)
class Pace:
    """A paced subscription's free slots within the next ``PACE_AHEAD_S``, in epoch seconds."""

    first: float
    interval: float
    room: int

    def slot(self, n: int) -> float:
        """When the ``n``-th job of this claim (from 0) may start; ``slot(count)`` is the next free one."""
        return self.first + n * self.interval


def pace(rate_limit_per_second: int | None, next_send_at: float | None, now: float) -> Pace | None:
    """The slots a claim at ``now`` may use, or ``None`` for a subscription without a limit."""
    if rate_limit_per_second is None:
        return None
    interval = PACING_HEADROOM / rate_limit_per_second
    first = now if next_send_at is None else max(now, next_send_at)
    horizon = now + PACE_AHEAD_S
    room = 0 if first >= horizon else math.ceil((horizon - first) / interval)
    return Pace(first, interval, room)


@dataclass
class Visit:
    """A subscription with due work, as one claim's walk found it."""

    sub_id: str
    ordered: bool
    rate: int | None
    pace: Pace | None = None
    """A paced subscription's free slots, once its next slot was read (on PostgreSQL, under its lock:
    read before it, another process's claim could commit in between and hand out the same slots)."""

    def room(self, take: int) -> int:
        """How many of ``take`` this visit may claim: a paced subscription no more than its free slots."""
        return take if self.pace is None else min(take, self.pace.room)

    def took(self, ids: list[str], claimed: dict[str, float | None]) -> float | None:
        """Add the ids claimed on this visit to ``claimed``, each with the slot it must wait for. For a
        paced subscription, returns its next free slot, for the store to keep."""
        paced = self.pace
        if paced is None:
            claimed.update(dict.fromkeys(ids))
            return None
        claimed.update((delivery_id, paced.slot(n)) for n, delivery_id in enumerate(ids))
        self.pace = Pace(paced.slot(len(ids)), paced.interval, paced.room - len(ids))
        return self.pace.first


# How long the longest-waiting delivery has been due: pending ones (throttled and ordered-waiting ones
# among them) and those held behind a failing endpoint. Two probes of partial indexes.
OLDEST_WAITING = """
SELECT min(due) FROM (
    SELECT min(next_attempt_at) AS due FROM deliveries WHERE status = 'pending'
    UNION ALL SELECT min(next_attempt_at) FROM deliveries WHERE status = 'held') AS waiting"""


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """One worker's claim: ``limit`` jobs at most, and at most ``per_subscription`` in flight for any
    one subscription, counting every worker's claims."""

    worker_id: str
    limit: int
    per_subscription: int
    now: datetime
    ended: tuple[str, ...] = ()
    """``ended_key``s of this worker's attempts that have ended but may not be recorded yet: their rows
    still read in flight, but they hold no room under the cap. Without them, a subscription at its cap
    would wait for a record's commit after every attempt before its next claim."""


SOLE_HOLDER_AHEAD = 2
"""A worker that alone holds a subscription's claims may hold this many times the cap: it sends at most
the cap at once (the worker keeps that), and the rest wait claimed, so the next attempt starts as one
ends rather than a claim's round trip later. While another worker holds any of its claims, claims stay
within the cap itself, so attempts in flight never pass the cap across processes either."""


def ended_key(delivery_id: str, attempt_no: int) -> str:
    """How a claim names an ended attempt; a row matches while it is still in flight for that attempt
    (once recorded, or claimed again, it does not), so a key is never counted twice."""
    return f"{delivery_id}:{attempt_no}"


@dataclass
class RingPosition:
    """Where this process's next claim starts its walk, and when it next looks for dead workers."""

    after: str = ""
    next_reclaim_at: float = 0.0

    def reclaim_due(self, now: float) -> bool:
        """True at most once per ``RECLAIM_EVERY_S`` of ``now`` (a clock tests may move)."""
        if now < self.next_reclaim_at:
            return False
        self.next_reclaim_at = now + RECLAIM_EVERY_S
        return True
