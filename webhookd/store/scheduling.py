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
_NEXT = (
    "coalesce((SELECT min(subscription_id) FROM deliveries WHERE status = 'pending'"
    " AND subscription_id > {after}),"
    " (SELECT min(subscription_id) FROM deliveries WHERE status = 'pending'))"
)
RING = f"""
WITH RECURSIVE ring(sub, n, first) AS (
    SELECT s, 1, s FROM (SELECT {_NEXT.format(after="{cursor}")} AS s) AS start WHERE s IS NOT NULL
    UNION ALL
    SELECT {_NEXT.format(after="ring.sub")}, ring.n + 1, ring.first FROM ring
    WHERE ring.n < {{visits}} AND {_NEXT.format(after="ring.sub")} <> ring.first
)
SELECT sub, (SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'
             AND subscription_id = ring.sub) AS due
FROM ring ORDER BY n
"""


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """One worker's claim: ``limit`` jobs at most, and at most ``per_subscription`` in flight for any
    one subscription, counting every worker's claims."""

    worker_id: str
    limit: int
    per_subscription: int
    now: datetime


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
