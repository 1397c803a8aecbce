"""PostgreSQL writes behind the management API: create, PATCH, delete, rotation, retries, recovery.

Every function here runs inside a transaction. Like the outbox, a function that decides where a
delivery waits locks its subscription before the delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from webhookd.exceptions import Conflict
from webhookd.models import Subscription
from webhookd.store.base import SubscriptionUpdate, events_key
from webhookd.store.postgres.db import Connection, count_rows
from webhookd.store.postgres.outbox import WAITING_STATUS
from webhookd.store.reads import numbered
from webhookd.store.shared import INSERT_SUBSCRIPTION, new_subscription

# A PATCH's optional fields: (given?, value) pairs; a rate limit of 0, a description of "" or headers
# of b"" clears it.
_UPDATE_SUBSCRIPTION = """
UPDATE subscriptions SET url = $1, events_key = $2, updated_at = $3,
    description = CASE WHEN $5 THEN nullif($6, '') ELSE description END,
    rate_limit_per_second = CASE WHEN $7 THEN nullif($8::int, 0) ELSE rate_limit_per_second END,
    ordered = CASE WHEN $9 THEN $10::bool ELSE ordered END,
    headers = CASE WHEN $11 THEN nullif($12::bytea, ''::bytea) ELSE headers END
WHERE id = $4
"""

_INSERT_EVENT_TYPES = """
INSERT INTO subscription_event_types (customer_id, event_type, subscription_id)
SELECT $1, event_type, $2 FROM unnest($3::text[]) AS event_type
"""


async def insert_subscription(conn: Connection, sub: Subscription) -> bool:
    """Insert unless the customer has a live one with the same url and events: the unique index
    decides, so concurrent creates in any processes make one subscription."""
    status = await conn.execute(numbered(INSERT_SUBSCRIPTION), *new_subscription(sub, sub.created_at))
    if not count_rows(status):
        return False
    await conn.execute(_INSERT_EVENT_TYPES, sub.customer_id, sub.id, list(set(sub.events)))
    return True


async def update_subscription(
    conn: Connection, customer_id: str, subscription_id: str, update: SubscriptionUpdate, now: datetime
) -> bool:
    """Apply a PATCH; ``Conflict`` if it would duplicate another subscription's url and events."""
    row = await conn.fetchrow(
        "SELECT url, events_key FROM subscriptions WHERE id = $1 AND customer_id = $2 AND kind = 'webhook'"
        " AND deleted_at IS NULL FOR NO KEY UPDATE",
        subscription_id,
        customer_id,
    )
    if row is None:
        return False
    url = update.url if update.url is not None else row[0]
    key = events_key(update.events) if update.events is not None else row[1]
    try:
        await conn.execute(
            _UPDATE_SUBSCRIPTION,
            *(url, key, now, subscription_id, update.description is not None, update.description),
            *(update.rate_limit_per_second is not None, update.rate_limit_per_second),
            *(update.ordered is not None, update.ordered),
            *(update.headers is not None, update.headers),
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("another subscription already has this url and set of events") from None
    if update.events is not None:
        await conn.execute("DELETE FROM subscription_event_types WHERE subscription_id = $1", subscription_id)
        await conn.execute(_INSERT_EVENT_TYPES, customer_id, subscription_id, key.split(","))
    return True


async def delete_subscription(
    conn: Connection, customer_id: str, subscription_id: str, now: datetime
) -> bool:
    """Soft-delete it, forget its event types and cancel what waits for it."""
    status = await conn.execute(
        "UPDATE subscriptions SET deleted_at = $1, is_active = false, updated_at = $1"
        " WHERE id = $2 AND customer_id = $3 AND kind = 'webhook' AND deleted_at IS NULL",
        now,
        subscription_id,
        customer_id,
    )
    if not count_rows(status):
        return False
    await conn.execute("DELETE FROM subscription_event_types WHERE subscription_id = $1", subscription_id)
    await conn.execute(
        "UPDATE deliveries SET status = 'canceled', updated_at = $1"
        " WHERE subscription_id = $2 AND status IN ('pending', 'held', 'parked')",
        now,
        subscription_id,
    )
    return True


async def retry_delivery(conn: Connection, customer_id: str, delivery_id: str, now: datetime) -> bool:
    """Due now, with one more attempt. ``Conflict`` unless its subscription can take it."""
    sub = await conn.fetchrow(
        "SELECT is_active, deleted_at FROM subscriptions WHERE id ="
        " (SELECT subscription_id FROM deliveries WHERE id = $1 AND customer_id = $2) FOR SHARE",
        delivery_id,
        customer_id,
    )
    if sub is None:
        return False
    status = await conn.fetchval("SELECT status FROM deliveries WHERE id = $1 FOR UPDATE", delivery_id)
    if status == "in_flight":
        raise Conflict("the delivery is being attempted right now")
    if sub[1] is not None or not sub[0]:
        raise Conflict("its subscription is deleted or disabled; enable it first")
    await conn.execute(
        f"UPDATE deliveries AS d SET status = {WAITING_STATUS}, next_attempt_at = $2, updated_at = $2"
        " FROM subscriptions AS s WHERE d.id = $1 AND s.id = d.subscription_id",
        delivery_id,
        now,
    )
    return True


async def requeue(conn: Connection, delivery_ids: Sequence[str], now: datetime) -> int:
    """Re-queue the still-failed ones among ``delivery_ids``, each with one more attempt."""
    ids = list(delivery_ids)
    await conn.execute(
        "SELECT id FROM subscriptions WHERE id IN (SELECT subscription_id FROM deliveries"
        " WHERE id = ANY($1::text[])) ORDER BY id FOR SHARE",
        ids,
    )
    status = await conn.execute(
        f"UPDATE deliveries AS d SET status = {WAITING_STATUS}, next_attempt_at = $2, updated_at = $2"
        " FROM subscriptions AS s WHERE d.id = ANY($1::text[]) AND d.status = 'failed'"
        " AND s.id = d.subscription_id",
        ids,
        now,
    )
    return count_rows(status)


async def ensure_callback_secret(conn: Connection, customer_id: str, secret: bytes) -> None:
    await conn.execute(
        "UPDATE customers SET callback_secret = $1 WHERE id = $2 AND callback_secret IS NULL",
        secret,
        customer_id,
    )


async def rotate_callback_secret(
    conn: Connection, customer_id: str, secret: bytes, previous_until: datetime
) -> None:
    # Inside CASE, $1 would be inferred as text: the cast says what it is.
    await conn.execute(
        "UPDATE customers SET previous_callback_secret = callback_secret,"
        " previous_callback_secret_until ="
        " CASE WHEN callback_secret IS NULL THEN NULL ELSE $1::timestamptz END,"
        " callback_secret = $2 WHERE id = $3",
        previous_until,
        secret,
        customer_id,
    )
