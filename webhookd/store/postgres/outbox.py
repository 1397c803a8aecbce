"""The PostgreSQL outbox: fan-out, claims, attempt outcomes and per-subscription health, as SQL.

Every function here runs inside a transaction. Many processes share the tables, so row locks do
what SQLite's single writer did, always taken in one order, subscriptions (by id) before their
deliveries, so that transactions wait for each other but never deadlock:

* claims never wait: due deliveries are locked ``FOR UPDATE SKIP LOCKED``; a failing subscription
  is locked ``FOR NO KEY UPDATE SKIP LOCKED`` to claim its single probe, so two processes never
  claim two probes; ``NO KEY`` because inserts referencing it take ``KEY SHARE`` (foreign keys);
* anything that decides where a delivery waits (``pending``, ``held``, ``parked``, ``canceled``)
  from its subscription's state holds a lock on the subscription first (``FOR SHARE`` to read,
  ``FOR NO KEY UPDATE`` to change it), so no delivery is left pending behind a failing, disabled
  or deleted subscription by a transaction that read its state a moment too early.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from webhookd.models import AttemptResult, DeliveryJob, Disabled, SubscriptionKind
from webhookd.store.base import DeliveryClaim, first_result_per_claim
from webhookd.store.circuit import HEALTH_COLUMNS, CircuitPolicy, Health, Outcome, health, held_outcomes
from webhookd.store.postgres.db import Connection, count_rows
from webhookd.store.scheduling import (
    FAIR_SHARES,
    HEAD_OF_KEY,
    RING,
    RING_VISITS,
    SOLE_HOLDER_AHEAD,
    WORKER_DEAD_AFTER_S,
    ClaimRequest,
    Pace,
    RingPosition,
    Visit,
    pace,
)
from webhookd.store.shared import EXPIRED_TABLES, waiting_status

WAITING_STATUS = waiting_status("s.")
"""Where a delivery waits for its next attempt, given its subscription ``s``."""

EXPIRED_BATCH = 1000
# pg_try_advisory_xact_lock key of folding outbox_counts: "whkdfold".
FOLD_LOCK = int.from_bytes(b"whkdfold", "big") - 2**63

# The subscriptions of deliveries $1, in id order, and those of deliveries $2 only while failing
# (a success there recovers it). A success to a healthy subscription, the hot path, locks nothing.
LOCK_SUBSCRIPTIONS = """
SELECT s.id FROM subscriptions AS s
WHERE s.id IN (SELECT subscription_id FROM deliveries WHERE id = ANY($1::text[]))
   OR (s.failure_count > 0 AND s.id IN (SELECT subscription_id FROM deliveries WHERE id = ANY($2::text[])))
ORDER BY s.id FOR NO KEY UPDATE
"""

# Claims of dead workers (silent since $1), and claims no worker owns, go back to wait where they were
# in the queue: their due time is untouched. Never the claiming worker's own ($2).
_RECLAIM = f"""
WITH back AS MATERIALIZED (
    SELECT d.id FROM deliveries AS d JOIN subscriptions AS s ON s.id = d.subscription_id
    WHERE d.status = 'in_flight' AND d.claimed_by IS DISTINCT FROM $2
      AND (d.claimed_by IS NULL OR NOT EXISTS (
          SELECT 1 FROM workers AS w WHERE w.id = d.claimed_by AND w.heartbeat_at > $1))
    LIMIT {EXPIRED_BATCH}
    FOR UPDATE OF d SKIP LOCKED FOR SHARE OF s SKIP LOCKED)
UPDATE deliveries AS d SET status = {WAITING_STATUS}, claimed_by = NULL
FROM back, subscriptions AS s
WHERE d.id = back.id AND s.id = d.subscription_id
RETURNING d.id
"""

_FORGET_DEAD_WORKERS = """
DELETE FROM workers AS w WHERE w.heartbeat_at <= $1 AND w.id <> $2
  AND NOT EXISTS (SELECT 1 FROM deliveries WHERE claimed_by = w.id AND status = 'in_flight')
"""

# pg_try_advisory_xact_lock class of a subscription's claims: two processes never fill one
# subscription's room at once, and neither waits for the other (it moves on to the next).
CLAIM_LOCK_CLASS = int.from_bytes(b"whkc", "big")

# Up to $4 of subscription $3's due deliveries, fewer if it already has $5 in flight (twice that while
# this worker alone holds its claims: see SOLE_HOLDER_AHEAD).
_CLAIM_FROM = f"""
WITH room AS (
    SELECT $5::int * (CASE WHEN EXISTS (
                 SELECT 1 FROM deliveries WHERE subscription_id = $3 AND status = 'in_flight'
                   AND claimed_by IS DISTINCT FROM $2) THEN 1 ELSE {SOLE_HOLDER_AHEAD} END)
           - (SELECT count(*) FROM deliveries
              WHERE subscription_id = $3 AND status = 'in_flight'
                AND id || ':' || attempts <> ALL($6::text[])) AS n
    {{lock}}
), picked AS MATERIALIZED (
    SELECT id FROM deliveries AS d
    WHERE status = 'pending' AND subscription_id = $3 AND next_attempt_at <= $1 {{heads}}
    ORDER BY next_attempt_at LIMIT least($4::int, greatest(0, (SELECT n FROM room)))
    FOR UPDATE SKIP LOCKED)
UPDATE deliveries AS d SET status = 'in_flight', claimed_by = $2, attempts = d.attempts + 1,
    updated_at = $1, claimed_gen = s.health_gen
FROM picked, subscriptions AS s
WHERE d.id = picked.id AND s.id = d.subscription_id
RETURNING d.id
"""
_TAKE_TURN = f"WHERE pg_try_advisory_xact_lock({CLAIM_LOCK_CLASS}, hashtext($3))"

# A paced subscription's next free slot, read under its row lock and its turn: read before them, another
# process's claim could commit in between and the same slots be handed out twice.
_LOCK_PACE = f"""
SELECT next_send_at FROM subscriptions
WHERE id = $1 AND pg_try_advisory_xact_lock({CLAIM_LOCK_CLASS}, hashtext($1))
FOR NO KEY UPDATE SKIP LOCKED
"""


@functools.cache
def _claim_from_sql(ordered: bool) -> str:
    heads = "AND " + HEAD_OF_KEY.format(d="d") if ordered else ""
    return _CLAIM_FROM.format(heads=heads, lock=_TAKE_TURN)


# One probe per failing subscription whose backoff has passed, and none while one is in flight; for
# an ordered subscription, the head of a key.
_CLAIM_PROBES = f"""
WITH due AS MATERIALIZED (
    SELECT id, health_gen, ordered FROM subscriptions
    WHERE failure_count > 0 AND is_active AND deleted_at IS NULL AND probe_at <= $1
      AND probe_delivery_id IS NULL
    ORDER BY probe_at LIMIT $3 FOR NO KEY UPDATE SKIP LOCKED
), picked AS MATERIALIZED (
    SELECT due.id AS subscription_id, due.health_gen, held.id
    FROM due CROSS JOIN LATERAL (
        SELECT id FROM deliveries AS d WHERE subscription_id = due.id AND status = 'held'
          AND (NOT due.ordered OR {HEAD_OF_KEY.format(d="d")})
        ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) AS held
), claimed AS (
    UPDATE deliveries AS d SET status = 'in_flight', claimed_by = $2, attempts = d.attempts + 1,
        updated_at = $1, claimed_gen = picked.health_gen
    FROM picked WHERE d.id = picked.id
    RETURNING d.id, d.subscription_id
)
UPDATE subscriptions AS s SET probe_delivery_id = claimed.id
FROM claimed WHERE s.id = claimed.subscription_id
RETURNING claimed.id
"""

# A callback subscription signs with its customer's callback secret; during a rotation's grace
# period the previous secret comes along so deliveries carry both signatures.
_JOB_DETAILS = """
SELECT d.id, d.event_id, d.subscription_id, s.url,
       CASE WHEN s.kind = 'callback' THEN c.callback_secret ELSE s.secret END,
       e.payload, d.attempts, e.created_at,
       CASE WHEN s.kind = 'callback'
            THEN CASE WHEN c.previous_callback_secret_until > $2 THEN c.previous_callback_secret END
            ELSE CASE WHEN s.previous_secret_until > $2 THEN s.previous_secret END END,
       s.kind, s.customer_id, s.headers, e.type, e.traceparent
FROM deliveries AS d
JOIN subscriptions AS s ON s.id = d.subscription_id
JOIN customers AS c ON c.id = s.customer_id
JOIN events AS e ON e.id = d.event_id
WHERE d.id = ANY($1::text[])
"""

_INSERT_ATTEMPTS = """
INSERT INTO attempts (delivery_id, attempt_no, started_at, duration_s, status_code, error,
                      response_excerpt, succeeded, subscription_id)
SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::float8[], $5::int[], $6::text[],
                     $7::bytea[], $8::bool[], $9::text[])
"""

_END_PROBES = """
UPDATE subscriptions AS s SET probe_delivery_id = NULL, probe_lease_until = NULL
FROM unnest($1::text[], $2::text[]) AS r(subscription_id, delivery_id)
WHERE s.id = r.subscription_id AND s.probe_delivery_id = r.delivery_id
"""

# A claim still held: the delivery is in flight for the attempt the result reports.
_HELD_CLAIMS = """
SELECT id, attempts, subscription_id, claimed_gen FROM deliveries
WHERE id = ANY($1::text[]) AND status = 'in_flight'
"""

# LOCK_SUBSCRIPTIONS, reading the health of those locked.
_LOCK_HEALTHS = LOCK_SUBSCRIPTIONS.replace("SELECT s.id", f"SELECT {HEALTH_COLUMNS}", 1)

_SET_HEALTH = """
UPDATE subscriptions SET failure_count = $2, health_gen = $3, probe_at = $4, probe_delivery_id = NULL,
    probe_lease_until = NULL
WHERE id = $1
"""

_DISABLE = """
UPDATE subscriptions SET is_active = false, disabled_reason = $2, disabled_at = $3, updated_at = $3
WHERE id = $1
"""

# A subscription's health changed: its waiting deliveries move where they now wait.
_REWAIT = f"""
UPDATE deliveries AS d SET status = {WAITING_STATUS}
FROM subscriptions AS s
WHERE s.id = $1 AND d.subscription_id = $1 AND d.status IN ('pending', 'held')
  AND d.status <> {WAITING_STATUS}
RETURNING d.status
"""

# The attempts guard keeps a worker whose lease expired from overwriting a newer claim.
_FINISH = f"""
UPDATE deliveries AS d SET status = CASE
        WHEN r.succeeded THEN 'delivered'
        WHEN r.next_at IS NULL THEN 'failed'
        ELSE {WAITING_STATUS} END,
    next_attempt_at = r.next_at, lease_until = NULL, last_status = r.status_code, last_error = r.error,
    updated_at = $7, delivered_at = CASE WHEN r.succeeded THEN $7::timestamptz END
FROM unnest($1::text[], $2::int[], $3::bool[], $4::timestamptz[], $5::int[], $6::text[])
         AS r(id, attempt_no, succeeded, next_at, status_code, error),
     subscriptions AS s
WHERE d.id = r.id AND s.id = d.subscription_id AND d.status = 'in_flight' AND d.attempts = r.attempt_no
"""

_RELEASE = f"""
UPDATE deliveries AS d SET status = {WAITING_STATUS}, attempts = d.attempts - 1, claimed_by = NULL
FROM unnest($1::text[], $2::int[]) AS r(id, attempt_no), subscriptions AS s
WHERE d.id = r.id AND s.id = d.subscription_id AND d.status = 'in_flight' AND d.attempts = r.attempt_no
RETURNING d.id
"""


async def claim(conn: Connection, request: ClaimRequest, ring: RingPosition) -> list[DeliveryJob]:
    """Claim due deliveries a few per subscription in turn, then one probe for each failing
    subscription whose backoff has passed."""
    slots = await _claim_round(conn, request, ring)
    ids = list(slots)
    if len(ids) < request.limit:
        probes = await conn.fetch(_CLAIM_PROBES, request.now, request.worker_id, request.limit - len(ids))
        ids += [row[0] for row in probes]
    if not ids:
        return []
    rows = {row[0]: row for row in await conn.fetch(_JOB_DETAILS, ids, request.now)}
    return [_job(rows[i], slots.get(i)) for i in ids]


async def _claim_round(
    conn: Connection, request: ClaimRequest, ring: RingPosition
) -> dict[str, float | None]:
    """Walk the subscriptions with pending work from where this process's last claim stopped, each
    taking its share of the batch; then, if the batch is not full, let those visited take more, up to
    the cap. Returns the claimed ids, each with the slot a paced subscription's job must wait for."""
    share = max(1, min(request.per_subscription, request.limit // FAIR_SHARES))
    claimed: dict[str, float | None] = {}
    visited: list[Visit] = []
    walk = await conn.fetch(RING.format(cursor="$1", visits=RING_VISITS, pending_index=""), ring.after)
    for sub_id, due, rate, _, ordered in walk:
        if len(claimed) >= request.limit:
            break
        ring.after = sub_id
        if due <= request.now:
            visit = Visit(sub_id, ordered, rate)
            visited.append(visit)
            await _claim_from(conn, request, visit, min(share, request.limit - len(claimed)), claimed)
    for visit in visited:
        if len(claimed) >= request.limit:
            break
        await _claim_from(conn, request, visit, request.limit - len(claimed), claimed)
    return claimed


async def _claim_from(
    conn: Connection, request: ClaimRequest, visit: Visit, take: int, claimed: dict[str, float | None]
) -> None:
    """Claim up to ``take`` of one subscription's due deliveries into ``claimed``; a paced one takes
    no more than its free slots, and moves its next free slot on."""
    if visit.rate is not None and visit.pace is None:
        visit.pace = await _lock_pace(conn, visit.sub_id, visit.rate, request.now)
    take = visit.room(take)
    if take <= 0:
        return
    sql = _claim_from_sql(visit.ordered)
    rows = await conn.fetch(
        sql, request.now, request.worker_id, visit.sub_id, take, request.per_subscription, list(request.ended)
    )
    next_slot = visit.took([row[0] for row in rows], claimed)
    if next_slot is not None:
        await conn.execute(
            "UPDATE subscriptions SET next_send_at = $1 WHERE id = $2",
            datetime.fromtimestamp(next_slot, UTC),
            visit.sub_id,
        )


async def _lock_pace(conn: Connection, sub_id: str, rate: int, now: datetime) -> Pace:
    """The subscription's free slots as of its current next slot; none while another process claims it."""
    row = await conn.fetchrow(_LOCK_PACE, sub_id)
    if row is None:
        return Pace(0.0, 0.0, 0)
    sent_at = None if row[0] is None else row[0].timestamp()
    found = pace(rate, sent_at, now.timestamp())
    assert found is not None  # a rate was given
    return found


async def reclaim(conn: Connection, worker_id: str, now: datetime) -> int:
    """Put the claims of dead workers back to wait, ending their probes, and forget the dead workers
    that hold nothing any more. Returns how many claims went back."""
    silent_since = now - timedelta(seconds=WORKER_DEAD_AFTER_S)
    back = [row[0] for row in await conn.fetch(_RECLAIM, silent_since, worker_id)]
    if back:
        await conn.execute(
            "UPDATE subscriptions SET probe_delivery_id = NULL WHERE probe_delivery_id = ANY($1::text[])",
            back,
        )
    await conn.execute(_FORGET_DEAD_WORKERS, silent_since, worker_id)
    return len(back)


def _job(r: Any, slot: float | None) -> DeliveryJob:
    kind = SubscriptionKind(r[9])
    not_before = None if slot is None else datetime.fromtimestamp(slot, UTC)
    return DeliveryJob(
        *(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], kind, r[10], not_before),
        headers=r[11],
        event_type=r[12],
        traceparent=r[13],
    )


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording attempts did: the subscriptions it disabled, and whether it gave work back to
    the queue (a retry, or held deliveries of a subscription that recovered)."""

    disabled: list[Disabled]
    made_work: bool


async def record(
    conn: Connection, circuit: CircuitPolicy, results: Sequence[AttemptResult], now: datetime
) -> Recorded:
    """Store attempts, apply their outcomes to their subscriptions' current health, then finish each
    delivery."""
    delivery_ids = [r.delivery_id for r in results]
    # Where a delivery waits next, and a failure's count, depend on the subscription's state.
    failed = [r.delivery_id for r in results if not r.succeeded]
    healths = [health(row) for row in await conn.fetch(_LOCK_HEALTHS, failed, delivery_ids)]
    await conn.execute(
        _INSERT_ATTEMPTS,
        delivery_ids,
        [r.attempt_no for r in results],
        [r.started_at for r in results],
        [r.duration_s for r in results],
        [r.status_code for r in results],
        [r.error for r in results],
        [r.response_excerpt for r in results],
        [r.succeeded for r in results],
        [r.subscription_id for r in results],
    )
    await conn.execute(_END_PROBES, [r.subscription_id for r in results], delivery_ids)
    finishing = first_result_per_claim(results)
    changed, disabled = circuit.settle(healths, await _outcomes(conn, finishing), now)
    released = 0
    for h in changed:
        released += await _write_health(conn, h, now)
    await conn.execute(
        _FINISH,
        [r.delivery_id for r in finishing],
        [r.attempt_no for r in finishing],
        [r.succeeded for r in finishing],
        [r.next_attempt_at for r in finishing],
        [r.status_code for r in finishing],
        [r.error for r in finishing],
        now,
    )
    retries = any(r.next_attempt_at is not None for r in results)
    return Recorded(disabled, made_work=retries or released > 0)


async def _outcomes(conn: Connection, results: Sequence[AttemptResult]) -> list[Outcome]:
    """The results whose claims are still held, with what the circuit rules need of their rows."""
    return held_outcomes(results, await conn.fetch(_HELD_CLAIMS, [r.delivery_id for r in results]))


async def _write_health(conn: Connection, h: Health, now: datetime) -> int:
    """Write a changed health; returns how many held deliveries it released."""
    await conn.execute(_SET_HEALTH, h.subscription_id, h.failure_count, h.generation, h.probe_at)
    if h.disabled is not None:
        await conn.execute(_DISABLE, h.subscription_id, h.disabled.value, now)
    moved = await conn.fetch(_REWAIT, h.subscription_id)
    return sum(1 for row in moved if row[0] == "pending")


async def enable(conn: Connection, customer_id: str, subscription_id: str, now: datetime) -> bool:
    """Re-enable a subscription: reset its health and resume its parked and held deliveries."""
    status: str = await conn.execute(
        "UPDATE subscriptions SET is_active = true, failure_count = 0, health_gen = health_gen + 1,"
        " probe_at = NULL, probe_delivery_id = NULL, probe_lease_until = NULL, disabled_reason = NULL,"
        " disabled_at = NULL, updated_at = $1 WHERE id = $2 AND customer_id = $3 AND deleted_at IS NULL",
        now,
        subscription_id,
        customer_id,
    )
    if not count_rows(status):
        return False
    await conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = $1 WHERE subscription_id = $2"
        " AND status IN ('parked', 'held')",
        now,
        subscription_id,
    )
    return True


async def release(conn: Connection, claims: Sequence[DeliveryClaim]) -> int:
    """Give claimed deliveries back with their attempt unspent; returns how many went back. The
    attempts guard leaves alone a delivery claimed again since (taken back from this worker, thought
    dead), and that claim's probe with it."""
    ids = [delivery_id for delivery_id, _ in claims]
    await conn.execute(LOCK_SUBSCRIPTIONS, ids, [])
    released = [row[0] for row in await conn.fetch(_RELEASE, ids, [n for _, n in claims])]
    await conn.execute(
        "UPDATE subscriptions SET probe_delivery_id = NULL, probe_lease_until = NULL"
        " WHERE probe_delivery_id = ANY($1::text[])",
        released,
    )
    return len(released)


_DEDUPE_TABLES = (
    ("call_callbacks", "customer_id, idempotency_key", "received_at"),
    ("calls", "customer_id, carrier, call_id", "updated_at"),
)


async def prune(conn: Connection, deliveries_before: datetime, events_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` finished deliveries older than the cutoff with their attempts, then
    up to ``limit`` old events that no delivery refers to. Returns how many rows went."""
    ids = [
        row[0]
        for row in await conn.fetch(
            "SELECT id FROM deliveries WHERE status IN ('delivered', 'failed', 'canceled')"
            " AND updated_at < $1 ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            deliveries_before,
            limit,
        )
    ]
    gone = 0
    if ids:
        gone += count_rows(
            await conn.execute("DELETE FROM attempts WHERE delivery_id = ANY($1::text[])", ids)
        )
        gone += count_rows(await conn.execute("DELETE FROM deliveries WHERE id = ANY($1::text[])", ids))
    gone += count_rows(
        await conn.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events AS e WHERE e.created_at < $1"
            " AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = e.id)"
            " ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            events_before,
            limit,
        )
    )
    # Callback dedupe keys and idle calls go with the events' cutoff, which is never under 7 days, and
    # so do expired dashboard links and signed-out sessions.
    for table, key, column in (*_DEDUPE_TABLES, *EXPIRED_TABLES):
        gone += count_rows(
            await conn.execute(
                f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {column} < $1"
                " LIMIT $2 FOR UPDATE SKIP LOCKED)",
                events_before,
                limit,
            )
        )
    return gone


async def fold_counts(conn: Connection) -> None:
    """Fold the appended count deltas into one row per status (one process at a time; the others
    skip, as their deltas are folded all the same)."""
    if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", FOLD_LOCK):
        await conn.execute(
            "WITH gone AS (DELETE FROM outbox_counts RETURNING status, n)"
            " INSERT INTO outbox_counts (status, n) SELECT status, sum(n) FROM gone GROUP BY status"
        )
