"""SQLite writes behind the management API: PATCH, rotation, retries, recovery, callback secrets.

Every function here runs inside a transaction of the group-commit writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from webhookd.exceptions import Conflict
from webhookd.store.base import SubscriptionUpdate, events_key
from webhookd.store.shared import waiting_status
from webhookd.store.sqlite.epoch import to_epoch

WAITING_STATUS = f"(SELECT {waiting_status('')} FROM subscriptions WHERE id = deliveries.subscription_id)"
"""Where a delivery of ``deliveries`` waits for its next attempt, given its subscription."""


# A PATCH's optional fields: (given?, value) pairs; a rate limit of 0, a description of "" or headers
# of b"" clears it.
_UPDATE_SUBSCRIPTION = """
UPDATE subscriptions SET url = ?, events_key = ?, updated_at = ?,
    description = CASE WHEN ? THEN nullif(?, '') ELSE description END,
    rate_limit_per_second = CASE WHEN ? THEN nullif(?, 0) ELSE rate_limit_per_second END,
    ordered = CASE WHEN ? THEN ? ELSE ordered END,
    headers = CASE WHEN ? THEN nullif(?, x'') ELSE headers END
WHERE id = ?
"""


def _optional(update: SubscriptionUpdate) -> tuple[object, ...]:
    return (
        update.description is not None,
        update.description,
        update.rate_limit_per_second is not None,
        update.rate_limit_per_second,
        update.ordered is not None,
        update.ordered,
        update.headers is not None,
        update.headers,
    )


def update_subscription(
    conn: sqlite3.Connection,
    customer_id: str,
    subscription_id: str,
    update: SubscriptionUpdate,
    now: datetime,
) -> bool:
    """Apply a PATCH; ``Conflict`` if it would duplicate another subscription's url and events."""
    row = conn.execute(
        "SELECT url, events_key FROM subscriptions WHERE id = ? AND customer_id = ? AND kind = 'webhook'"
        " AND deleted_at IS NULL",
        (subscription_id, customer_id),
    ).fetchone()
    if row is None:
        return False
    url = update.url if update.url is not None else row[0]
    key = events_key(update.events) if update.events is not None else row[1]
    try:
        conn.execute(_UPDATE_SUBSCRIPTION, (url, key, to_epoch(now), *_optional(update), subscription_id))
    except sqlite3.IntegrityError:
        raise Conflict("another subscription already has this url and set of events") from None
    if update.events is not None:
        conn.execute("DELETE FROM subscription_event_types WHERE subscription_id = ?", (subscription_id,))
        conn.executemany(
            "INSERT INTO subscription_event_types (customer_id, event_type, subscription_id)"
            " VALUES (?, ?, ?)",
            [(customer_id, event_type, subscription_id) for event_type in key.split(",")],
        )
    return True


def retry_delivery(conn: sqlite3.Connection, customer_id: str, delivery_id: str, now: datetime) -> bool:
    """Due now, with one more attempt. ``Conflict`` unless its subscription can take it."""
    row = conn.execute(
        "SELECT d.status, s.is_active, s.deleted_at FROM deliveries AS d"
        " JOIN subscriptions AS s ON s.id = d.subscription_id WHERE d.id = ? AND d.customer_id = ?",
        (delivery_id, customer_id),
    ).fetchone()
    if row is None:
        return False
    status, active, deleted_at = row
    if status == "in_flight":
        raise Conflict("the delivery is being attempted right now")
    if deleted_at is not None or not active:
        raise Conflict("its subscription is deleted or disabled; enable it first")
    conn.execute(
        f"UPDATE deliveries SET status = {WAITING_STATUS}, next_attempt_at = ?, updated_at = ? WHERE id = ?",
        (to_epoch(now), to_epoch(now), delivery_id),
    )
    return True


def requeue(conn: sqlite3.Connection, delivery_ids: Sequence[str], now: datetime) -> int:
    """Re-queue the still-failed ones among ``delivery_ids``, each with one more attempt."""
    cursor = conn.executemany(
        f"UPDATE deliveries SET status = {WAITING_STATUS}, next_attempt_at = ?, updated_at = ?"
        " WHERE id = ? AND status = 'failed'",
        [(to_epoch(now), to_epoch(now), i) for i in delivery_ids],
    )
    return cursor.rowcount


def ensure_callback_secret(conn: sqlite3.Connection, customer_id: str, secret: bytes) -> None:
    conn.execute(
        "UPDATE customers SET callback_secret = ? WHERE id = ? AND callback_secret IS NULL",
        (secret, customer_id),
    )


def rotate_callback_secret(
    conn: sqlite3.Connection, customer_id: str, secret: bytes, previous_until: datetime
) -> None:
    conn.execute(
        "UPDATE customers SET previous_callback_secret = callback_secret,"
        " previous_callback_secret_until = CASE WHEN callback_secret IS NULL THEN NULL ELSE ? END,"
        " callback_secret = ? WHERE id = ?",
        (to_epoch(previous_until), secret, customer_id),
    )
