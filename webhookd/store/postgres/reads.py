"""PostgreSQL reads: lookups, keyset-paged logs and the metrics scrape's counts, with row mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from webhookd.exceptions import StorageUnavailable, StoreError
from webhookd.models import (
    ApiKey,
    CallbackSecret,
    Carrier,
    Customer,
    Delivery,
    DeliveryStatus,
    Event,
    Scope,
    Source,
    Subscription,
)
from webhookd.store.availability import Availability
from webhookd.store.base import (
    DeliveryDetail,
    OutboxStats,
    Page,
    PageRequest,
    decode_cursor,
    decode_log_cursor,
    encode_cursor,
    events_key,
    log_page,
)
from webhookd.store.postgres.db import Connection, on_connection
from webhookd.store.shared import (
    ATTEMPT_COLUMNS,
    CALLBACK_SECRET_COLUMNS,
    CUSTOMER_COLUMNS,
    DELIVERY_COLUMNS,
    EVENT_COLUMNS,
    SUB_COLUMNS,
    SUBSCRIPTION_STATES,
    Rows,
    subscription_states,
)

T = TypeVar("T")

ROWS = Rows(lambda moment: moment)
"""Rows as PostgreSQL returns them (times come back as aware datetimes), as models."""


class PostgresReads:
    """The read half of ``PostgresStore``: each method is one or two queries on a pooled connection."""

    def __init__(self) -> None:
        self._pool: Any = None
        self._health = Availability("PostgreSQL")

    @property
    def health(self) -> Availability:
        """Whether the database answers, as this store's operations found."""
        return self._health

    async def _run(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """``fn`` on a pooled connection, outside a transaction (reads, single statements)."""
        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            return await on_connection(self._pool, fn)
        except StorageUnavailable as exc:
            self._health.refused(exc)
            raise

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        found: list[Any] = await self._run(lambda conn: conn.fetch(sql, *args))
        return found

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._run(lambda conn: conn.fetchrow(sql, *args))

    async def get_api_key(self, key_hash: str) -> ApiKey | None:
        row = await self._fetchrow(
            "SELECT id, customer_id, key_hash, scopes, name, created_at FROM api_keys WHERE key_hash = $1",
            key_hash,
        )
        if row is None:
            return None
        return ApiKey(row[0], row[1], row[2], frozenset(Scope(s) for s in row[3]), row[4], row[5])

    async def get_source(self, source_id: str) -> Source | None:
        row = await self._fetchrow(
            "SELECT id, customer_id, carrier, credentials, created_at FROM sources WHERE id = $1", source_id
        )
        return None if row is None else Source(row[0], row[1], Carrier(row[2]), row[3], row[4])

    async def get_customer(self, customer_id: str) -> Customer | None:
        row = await self._fetchrow(f"SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1", customer_id)
        return None if row is None else ROWS.customer(row)

    async def get_subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        row = await self._fetchrow(
            f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = $1 AND customer_id = $2"
            " AND kind = 'webhook' AND deleted_at IS NULL",
            subscription_id,
            customer_id,
        )
        return None if row is None else ROWS.subscription(row)

    async def _find_identical(self, subscription: Subscription) -> Subscription | None:
        """The live subscription with this one's customer, url and set of events, if any."""
        row = await self._fetchrow(
            f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE customer_id = $1 AND url = $2"
            " AND events_key = $3 AND deleted_at IS NULL",
            subscription.customer_id,
            subscription.url,
            events_key(subscription.events),
        )
        return None if row is None else ROWS.subscription(row)

    async def list_subscriptions(self, customer_id: str, page: PageRequest) -> Page[Subscription]:
        after = decode_cursor(page.cursor) if page.cursor else ""
        offset = 0 if page.cursor else page.offset
        found = await self._fetch(
            f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE customer_id = $1 AND id > $2"
            " AND kind = 'webhook' AND deleted_at IS NULL ORDER BY id LIMIT $3 OFFSET $4",
            *(customer_id, after, page.limit + 1, offset),
        )
        items = [ROWS.subscription(row) for row in found[: page.limit]]
        next_cursor = encode_cursor(items[-1].id) if len(found) > page.limit else None
        return Page(items, next_cursor)

    async def list_deliveries(
        self,
        customer_id: str,
        subscription_id: str,
        page: PageRequest,
        status: DeliveryStatus | None = None,
    ) -> Page[Delivery]:
        where, params = "customer_id = $1 AND subscription_id = $2", [customer_id, subscription_id]
        if status is not None:
            where, params = where + " AND status = $3", [*params, status.value]
        found = await self._read_log(f"SELECT {DELIVERY_COLUMNS} FROM deliveries", where, params, page)
        return log_page([ROWS.delivery(row) for row in found], page.limit)

    async def get_delivery(self, customer_id: str, delivery_id: str) -> DeliveryDetail | None:
        row = await self._fetchrow(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1 AND customer_id = $2",
            delivery_id,
            customer_id,
        )
        if row is None:
            return None
        attempts = await self._fetch(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY id",
            delivery_id,
        )
        return DeliveryDetail(
            ROWS.delivery(row),
            [ROWS.attempt(a) for a in attempts],
        )

    async def failed_delivery_ids(
        self, customer_id: str, subscription_id: str, since: datetime, until: datetime, limit: int
    ) -> list[str]:
        found = await self._fetch(
            "SELECT id FROM deliveries WHERE customer_id = $1 AND subscription_id = $2 AND status = 'failed'"
            " AND created_at >= $3 AND created_at <= $4 ORDER BY created_at LIMIT $5",
            *(customer_id, subscription_id, since, until, limit),
        )
        return [row[0] for row in found]

    async def list_events(self, customer_id: str, page: PageRequest, type: str | None = None) -> Page[Event]:
        where, params = "customer_id = $1", [customer_id]
        if type is not None:
            where, params = where + " AND type = $2", [*params, type]
        found = await self._read_log(f"SELECT {EVENT_COLUMNS} FROM events", where, params, page)
        return log_page([ROWS.event(row) for row in found], page.limit)

    async def get_event(self, customer_id: str, event_id: str) -> Event | None:
        row = await self._fetchrow(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE id = $1 AND customer_id = $2", event_id, customer_id
        )
        return None if row is None else ROWS.event(row)

    async def get_callback_secret(self, customer_id: str) -> CallbackSecret | None:
        row = await self._fetchrow(
            f"SELECT {CALLBACK_SECRET_COLUMNS} FROM customers WHERE id = $1", customer_id
        )
        return ROWS.callback_secret(row)

    async def _read_log(self, select: str, where: str, params: list[Any], page: PageRequest) -> list[Any]:
        """Newest first; keyset on (created_at, id) after a cursor, else ``offset``."""
        if page.cursor:
            created, item_id = decode_log_cursor(page.cursor)
            n = len(params)
            where += f" AND (created_at, id) < (${n + 1}, ${n + 2})"
            params = [*params, datetime.fromtimestamp(created, UTC), item_id]
        offset = 0 if page.cursor else page.offset
        n = len(params)
        return await self._fetch(
            f"{select} WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
            *params,
            page.limit + 1,
            offset,
        )


async def outbox_stats(conn: Connection, now: datetime) -> OutboxStats:
    counts = await conn.fetch("SELECT status, sum(n)::bigint FROM outbox_counts GROUP BY status")
    oldest: datetime | None = await conn.fetchval(
        "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'"
    )  # the partial due index
    states = await conn.fetch(SUBSCRIPTION_STATES)
    age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    by_status = {status.value: 0 for status in DeliveryStatus} | {row[0]: row[1] for row in counts}
    return OutboxStats(by_status, age, subscription_states(states))
