"""The SQLite outbox: fan-out, claims, attempt outcomes and per-subscription health, as SQL.

Every function here runs inside a transaction of the group-commit writer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from webhookd.models import AttemptResult, DeliveryJob, Disabled, SubscriptionKind
from webhookd.store.base import DeliveryClaim, chunks, first_result_per_claim
from webhookd.store.circuit import HEALTH_COLUMNS, CircuitPolicy, Health, Outcome, health, held_outcomes
from webhookd.store.scheduling import (
    FAIR_SHARES,
    HEAD_OF_KEY,
    RING,
    RING_VISITS,
    SOLE_HOLDER_AHEAD,
    ClaimRequest,
    RingPosition,
    Visit,
    pace,
)
from webhookd.store.shared import EXPIRED_TABLES
from webhookd.store.sqlite.epoch import from_epoch, to_epoch
from webhookd.store.sqlite.manage import WAITING_STATUS

# SQLite's planner, left to itself, walks the full index (see RING).
_RING = RING.format(
    cursor=":cursor", visits=RING_VISITS, pending_index="INDEXED BY deliveries_pending_by_subscription"
)

# A dead worker's claims go back to wait where they were in the queue: their due time is untouched.
_RECLAIM = f"""
UPDATE deliveries SET status = {WAITING_STATUS}, claimed_by = NULL
WHERE status = 'in_flight' AND claimed_by IS NOT :me
  AND (claimed_by IS NULL OR claimed_by IN (SELECT value FROM json_each(:dead))
       OR claimed_by NOT IN (SELECT id FROM workers))
RETURNING id
"""

# Up to :take of one subscription's due deliveries, fewer if it already has :cap in flight (twice that
# while this worker alone holds its claims: see SOLE_HOLDER_AHEAD).
_CLAIM_FROM = f"""
UPDATE deliveries SET status = 'in_flight', claimed_by = :worker, attempts = attempts + 1,
    updated_at = :now, claimed_gen = (SELECT health_gen FROM subscriptions WHERE id = :sub)
WHERE seq IN (
    SELECT seq FROM deliveries AS d
    WHERE status = 'pending' AND subscription_id = :sub AND next_attempt_at <= :now {{heads}}
    ORDER BY next_attempt_at
    LIMIT max(0, min(:take, :cap * (CASE WHEN EXISTS (
        SELECT 1 FROM deliveries WHERE subscription_id = :sub AND status = 'in_flight'
          AND claimed_by IS NOT :worker) THEN 1 ELSE {SOLE_HOLDER_AHEAD} END) - (
        SELECT count(*) FROM deliveries WHERE subscription_id = :sub AND status = 'in_flight'
          AND id || ':' || attempts NOT IN (SELECT value FROM json_each(:ended))))))
RETURNING id
"""
_CLAIM_FROM_ANY = _CLAIM_FROM.format(heads="")
_CLAIM_HEADS_FROM = _CLAIM_FROM.format(heads="AND " + HEAD_OF_KEY.format(d="d"))

_DUE_PROBES = """
SELECT id, health_gen FROM subscriptions
WHERE failure_count > 0 AND is_active = 1 AND deleted_at IS NULL AND probe_at <= :now
  AND probe_delivery_id IS NULL
ORDER BY probe_at LIMIT :limit
"""

# A failing subscription's single probe; for an ordered one, the head of a key.
_CLAIM_PROBE = """
UPDATE deliveries SET status = 'in_flight', claimed_by = :worker, attempts = attempts + 1,
    updated_at = :now, claimed_gen = :gen
WHERE seq = (SELECT seq FROM deliveries AS d WHERE subscription_id = :sub AND status = 'held'
               AND (NOT (SELECT ordered FROM subscriptions WHERE id = :sub) OR {head})
             ORDER BY next_attempt_at LIMIT 1)
RETURNING id
""".replace("{head}", HEAD_OF_KEY.format(d="d"))

# A callback subscription signs with its customer's callback secret; during a rotation's grace
# period the previous secret comes along so deliveries carry both signatures.
_JOB_DETAILS = """
SELECT d.id, d.event_id, d.subscription_id, s.url,
       CASE WHEN s.kind = 'callback' THEN c.callback_secret ELSE s.secret END,
       e.payload, d.attempts, e.created_at,
       CASE WHEN s.kind = 'callback'
            THEN CASE WHEN c.previous_callback_secret_until > ? THEN c.previous_callback_secret END
            ELSE CASE WHEN s.previous_secret_until > ? THEN s.previous_secret END END,
       s.kind, s.customer_id, s.headers, e.type, e.traceparent
FROM deliveries AS d
JOIN subscriptions AS s ON s.id = d.subscription_id
JOIN customers AS c ON c.id = s.customer_id
JOIN events AS e ON e.id = d.event_id
WHERE d.id IN ({marks})
"""

_ATTEMPT_COLUMNS = (
    "delivery_id, attempt_no, started_at, duration_s, status_code, error, response_excerpt, succeeded,"
    " subscription_id"
)

# The attempts guard keeps a worker whose lease expired from overwriting a newer claim.
_FINISH_DELIVERIES = f"""
WITH r(id, attempt_no, succeeded, next_at, status_code, error) AS (VALUES {{rows}})
UPDATE deliveries SET status = CASE
        WHEN r.succeeded THEN 'delivered'
        WHEN r.next_at IS NULL THEN 'failed'
        ELSE {WAITING_STATUS} END,
    next_attempt_at = r.next_at, lease_until = NULL, last_status = r.status_code, last_error = r.error,
    updated_at = ?, delivered_at = CASE WHEN r.succeeded THEN ? END
FROM r
WHERE deliveries.id = r.id AND deliveries.status = 'in_flight' AND deliveries.attempts = r.attempt_no
"""

RESULTS_PER_STATEMENT = 100
"""Attempt results per statement in ``record``: at most 900 parameters (under the 999 of old SQLites)."""

# A claim still held: the delivery is in flight for the attempt the result reports.
_HELD_CLAIMS = """
SELECT id, attempts, subscription_id, claimed_gen FROM deliveries
WHERE id IN ({marks}) AND status = 'in_flight'
"""

_HEALTHS = f"SELECT {HEALTH_COLUMNS} FROM subscriptions WHERE id IN ({{marks}})"

_SET_HEALTH = """
UPDATE subscriptions SET failure_count = ?, health_gen = ?, probe_at = ?, probe_delivery_id = NULL,
    probe_lease_until = NULL
WHERE id = ?
"""

_DISABLE = """
UPDATE subscriptions SET is_active = 0, disabled_reason = ?, disabled_at = ?, updated_at = ?
WHERE id = ?
"""

# A subscription's health changed: its waiting deliveries move where they now wait.
_REWAIT = f"""
UPDATE deliveries SET status = {WAITING_STATUS}
WHERE subscription_id = ? AND status IN ('pending', 'held') AND status <> {WAITING_STATUS}
"""

_RELEASE = f"""
UPDATE deliveries SET status = {WAITING_STATUS}, attempts = attempts - 1, claimed_by = NULL
WHERE id = ? AND status = 'in_flight' AND attempts = ?
"""

_END_RELEASED_PROBE = (
    "UPDATE subscriptions SET probe_delivery_id = NULL, probe_lease_until = NULL WHERE probe_delivery_id = ?"
)

# A probe's delivery belongs to its subscription, so the two id lists pair up by themselves.
_END_PROBES = """
UPDATE subscriptions SET probe_delivery_id = NULL, probe_lease_until = NULL
WHERE id IN ({subs}) AND probe_delivery_id IN ({deliveries})
"""


def claim(conn: sqlite3.Connection, request: ClaimRequest, ring: RingPosition) -> list[DeliveryJob]:
    """Claim due deliveries a few per subscription in turn, then one probe for each failing
    subscription whose backoff has passed."""
    at = to_epoch(request.now)
    slots = _claim_round(conn, request, ring, at)
    ids = list(slots)
    if len(ids) < request.limit:
        params = {"now": at, "limit": request.limit - len(ids), "worker": request.worker_id}
        ids += _claim_probes(conn, params)
    if not ids:
        return []
    rows = conn.execute(_JOB_DETAILS.format(marks=_marks(len(ids))), [at, at, *ids]).fetchall()
    return [_job(r, slots.get(r[0])) for r in rows]


def _claim_round(
    conn: sqlite3.Connection, request: ClaimRequest, ring: RingPosition, at: float
) -> dict[str, float | None]:
    """Walk the subscriptions with pending work from where the last claim stopped, each taking its
    share of the batch; then, if the batch is not full, let those visited take more, up to the cap.
    Returns the claimed ids, each with the slot a paced subscription's job must wait for."""
    share = max(1, min(request.per_subscription, request.limit // FAIR_SHARES))
    # What every visit's claim statement shares, made once per claim.
    params = {
        "worker": request.worker_id,
        "now": at,
        "cap": request.per_subscription,
        "ended": json.dumps(request.ended),
    }
    claimed: dict[str, float | None] = {}
    visited: list[Visit] = []
    walk = conn.execute(_RING, {"cursor": ring.after})
    for sub_id, due, rate, next_send_at, ordered in walk.fetchall():
        if len(claimed) >= request.limit:
            break
        ring.after = sub_id
        if due <= at:
            visit = Visit(sub_id, bool(ordered), rate, pace(rate, next_send_at, at))
            visited.append(visit)
            _claim_from(conn, params, visit, min(share, request.limit - len(claimed)), claimed)
    for visit in visited:
        if len(claimed) >= request.limit:
            break
        _claim_from(conn, params, visit, request.limit - len(claimed), claimed)
    return claimed


def _claim_from(
    conn: sqlite3.Connection,
    params: dict[str, Any],
    visit: Visit,
    take: int,
    claimed: dict[str, float | None],
) -> None:
    """Claim up to ``take`` of one subscription's due deliveries into ``claimed`` (``params``: what
    every visit of this claim shares); a paced one takes no more than its free slots, and moves its
    next free slot on."""
    take = visit.room(take)
    if take <= 0:
        return
    sql = _CLAIM_HEADS_FROM if visit.ordered else _CLAIM_FROM_ANY
    ids = [row[0] for row in conn.execute(sql, {**params, "sub": visit.sub_id, "take": take})]
    next_slot = visit.took(ids, claimed)
    if next_slot is not None:
        conn.execute("UPDATE subscriptions SET next_send_at = ? WHERE id = ?", (next_slot, visit.sub_id))


def _job(r: sqlite3.Row | tuple[Any, ...], slot: float | None) -> DeliveryJob:
    return DeliveryJob(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        from_epoch(r[7]),
        r[8],
        SubscriptionKind(r[9]),
        r[10],
        None if slot is None else from_epoch(slot),
        headers=r[11],
        event_type=r[12],
        traceparent=r[13],
    )


def _claim_probes(conn: sqlite3.Connection, params: dict[str, Any]) -> list[str]:
    due = conn.execute(_DUE_PROBES, params).fetchall()
    claimed = []
    for sub_id, generation in due:
        row = conn.execute(_CLAIM_PROBE, {**params, "sub": sub_id, "gen": generation}).fetchone()
        if row is not None:
            conn.execute("UPDATE subscriptions SET probe_delivery_id = ? WHERE id = ?", (row[0], sub_id))
            claimed.append(row[0])
    return claimed


def reclaim(conn: sqlite3.Connection, worker_id: str, dead_workers: Sequence[str]) -> int:
    """Put the claims of dead workers (and claims no worker owns) back to wait, ending their probes,
    and forget the dead workers. Never ``worker_id``'s own. Returns how many claims went back."""
    params = {"me": worker_id, "dead": json.dumps(list(dead_workers))}
    back = [row[0] for row in conn.execute(_RECLAIM, params).fetchall()]
    for chunk in chunks(back, RESULTS_PER_STATEMENT):
        marks = _marks(len(chunk))
        sql = f"UPDATE subscriptions SET probe_delivery_id = NULL WHERE probe_delivery_id IN ({marks})"
        conn.execute(sql, chunk)
    conn.executemany("DELETE FROM workers WHERE id = ?", [(w,) for w in dead_workers])
    return len(back)


def record(
    conn: sqlite3.Connection, circuit: CircuitPolicy, results: Sequence[AttemptResult], now: datetime
) -> list[Disabled]:
    """Store attempts, apply their outcomes to their subscriptions' current health, then finish each
    delivery. Returns what was disabled.

    A few statements per batch, not three per result: each statement is a GIL hand-off on the
    writer thread, which the worker's event loop is busy contending for."""
    at = to_epoch(now)
    for chunk in chunks(results, RESULTS_PER_STATEMENT):
        _insert_attempts(conn, chunk)
        _end_probes(conn, chunk)
    finishing = first_result_per_claim(results)
    outcomes = [o for chunk in chunks(finishing, RESULTS_PER_STATEMENT) for o in _outcomes(conn, chunk)]
    subs = list({o.subscription_id for o in outcomes})
    healths = [health(row) for row in conn.execute(_HEALTHS.format(marks=_marks(len(subs))), subs)]
    changed, disabled = circuit.settle(healths, outcomes, now)
    for h in changed:
        _write_health(conn, h, at)
    for chunk in chunks(finishing, RESULTS_PER_STATEMENT):
        _finish_deliveries(conn, chunk, at)
    return disabled


def _outcomes(conn: sqlite3.Connection, results: Sequence[AttemptResult]) -> list[Outcome]:
    """The results whose claims are still held, with what the circuit rules need of their rows."""
    sql = _HELD_CLAIMS.format(marks=_marks(len(results)))
    return held_outcomes(results, conn.execute(sql, [r.delivery_id for r in results]))


def _write_health(conn: sqlite3.Connection, h: Health, at: float) -> None:
    probe_at = None if h.probe_at is None else to_epoch(h.probe_at)
    conn.execute(_SET_HEALTH, (h.failure_count, h.generation, probe_at, h.subscription_id))
    if h.disabled is not None:
        conn.execute(_DISABLE, (h.disabled.value, at, at, h.subscription_id))
    conn.execute(_REWAIT, (h.subscription_id,))


def _insert_attempts(conn: sqlite3.Connection, results: Sequence[AttemptResult]) -> None:
    rows, params = _values(results, _attempt_row)
    conn.execute(f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES {rows}", params)


def _attempt_row(r: AttemptResult) -> tuple[object, ...]:
    started = to_epoch(r.started_at)
    return (
        r.delivery_id,
        r.attempt_no,
        started,
        r.duration_s,
        r.status_code,
        r.error,
        r.response_excerpt,
        r.succeeded,
        r.subscription_id,
    )


def _end_probes(conn: sqlite3.Connection, results: Sequence[AttemptResult]) -> None:
    """An attempt that was its subscription's probe ends the probe, whatever its outcome."""
    subs = {r.subscription_id for r in results}
    sql = _END_PROBES.format(subs=_marks(len(subs)), deliveries=_marks(len(results)))
    conn.execute(sql, [*subs, *(r.delivery_id for r in results)])


def _finish_deliveries(conn: sqlite3.Connection, results: Sequence[AttemptResult], at: float) -> None:
    rows, params = _values(results, _finish_row)
    conn.execute(_FINISH_DELIVERIES.format(rows=rows), [*params, at, at])


def _finish_row(r: AttemptResult) -> tuple[object, ...]:
    next_at = None if r.next_attempt_at is None else to_epoch(r.next_attempt_at)
    return (r.delivery_id, r.attempt_no, r.succeeded, next_at, r.status_code, r.error)


def _values(
    results: Sequence[AttemptResult], row: Callable[[AttemptResult], tuple[object, ...]]
) -> tuple[str, list[object]]:
    """``results`` as the rows of a VALUES list: its placeholders, and their parameters in order."""
    rows = [row(r) for r in results]
    marks = "(" + ", ".join("?" * len(rows[0])) + ")"
    return ", ".join([marks] * len(rows)), [value for values in rows for value in values]


def _marks(count: int) -> str:
    return ",".join("?" * count)


def enable(conn: sqlite3.Connection, customer_id: str, subscription_id: str, now: datetime) -> bool:
    """Re-enable a subscription: reset its health and resume its parked deliveries."""
    at = to_epoch(now)
    cursor = conn.execute(
        "UPDATE subscriptions SET is_active = 1, failure_count = 0, health_gen = health_gen + 1,"
        " probe_at = NULL, probe_delivery_id = NULL, probe_lease_until = NULL, disabled_reason = NULL,"
        " disabled_at = NULL, updated_at = ? WHERE id = ? AND customer_id = ? AND kind = 'webhook'"
        " AND deleted_at IS NULL",
        (at, subscription_id, customer_id),
    )
    if not cursor.rowcount:
        return False
    conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ? WHERE subscription_id = ?"
        " AND status IN ('parked', 'held')",
        (at, subscription_id),
    )
    return True


def release(conn: sqlite3.Connection, claims: Sequence[DeliveryClaim]) -> None:
    """Give claimed deliveries back with their attempt unspent and their place kept. The attempts
    guard leaves alone a delivery claimed again since (taken back from this worker, thought dead),
    and that claim's probe with it."""
    for delivery_id, attempt_no in claims:
        released = conn.execute(_RELEASE, (delivery_id, attempt_no)).rowcount
        if released:
            conn.execute(_END_RELEASED_PROBE, (delivery_id,))


_DEDUPE_TABLES = (
    ("call_callbacks", "customer_id, idempotency_key", "received_at"),
    ("calls", "customer_id, carrier, call_id", "updated_at"),
)


def prune(conn: sqlite3.Connection, deliveries_before: float, events_before: float, limit: int) -> int:
    """Delete up to ``limit`` finished deliveries older than the cutoff with their attempts, then
    up to ``limit`` old events that no delivery refers to. Returns how many rows went."""
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM deliveries WHERE status IN ('delivered', 'failed', 'canceled')"
            " AND updated_at < ? ORDER BY updated_at LIMIT ?",
            (deliveries_before, limit),
        )
    ]
    marks = _marks(len(ids))
    gone = 0
    if ids:
        gone += conn.execute(f"DELETE FROM attempts WHERE delivery_id IN ({marks})", ids).rowcount
        gone += conn.execute(f"DELETE FROM deliveries WHERE id IN ({marks})", ids).rowcount
    gone += conn.execute(
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events AS e WHERE e.created_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = e.id)"
        " ORDER BY seq LIMIT ?)",
        (events_before, limit),
    ).rowcount
    # Callback dedupe keys and idle calls go with the events' cutoff, which is never under 7 days, and
    # so do expired dashboard links and signed-out sessions.
    for table, key, column in (*_DEDUPE_TABLES, *EXPIRED_TABLES):
        gone += conn.execute(
            f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {column} < ? LIMIT ?)",
            (events_before, limit),
        ).rowcount
    return gone
