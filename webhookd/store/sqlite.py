"""SQLite backend: WAL, ``synchronous=FULL``, one writer connection with group commit."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from webhookd.exceptions import StoreError
from webhookd.models import (
    ApiKey,
    AttemptResult,
    Carrier,
    Customer,
    DeliveryJob,
    DisabledReason,
    Event,
    NewEvent,
    PublishResult,
    Scope,
    Source,
    Subscription,
    utcnow,
)
from webhookd.store import sqlite_outbox as outbox
from webhookd.store.base import (
    Page,
    Store,
    SubscriptionCreate,
    WorkListener,
    decode_cursor,
    encode_cursor,
    events_key,
)
from webhookd.store.groupcommit import GroupCommitWriter, WriteOp
from webhookd.store.migrate import migrate_sqlite

logger = logging.getLogger(__name__)

T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000
_PRAGMAS = ("synchronous=FULL", "foreign_keys=ON", f"busy_timeout={BUSY_TIMEOUT_MS}")


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class SqliteStore:
    """The embedded default store. One file, no setup, durable on return."""

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._reader: aiosqlite.Connection | None = None
        self._writer: GroupCommitWriter | None = None
        self._listeners: list[WorkListener] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the writer (which migrates) first, then the aiosqlite reader."""
        if self._path.parent != Path():
            self._path.parent.mkdir(parents=True, exist_ok=True)
        writer = GroupCommitWriter(self._connect_writer)
        await writer.start()
        try:
            await writer.call(migrate_sqlite)
            self._reader = await aiosqlite.connect(self._path, isolation_level=None)
            for pragma in _PRAGMAS:
                await self._reader.execute(f"PRAGMA {pragma}")
        except BaseException:
            await writer.stop()
            raise
        self._writer = writer

    def _connect_writer(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            for pragma in _PRAGMAS:
                conn.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self._path}: {exc}") from exc
        return conn

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
        if self._reader is not None:
            await self._reader.close()
        self._reader = self._writer = None

    async def ping(self) -> None:
        try:
            await self._read_one("SELECT 1", ())
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"SQLite does not answer: {exc}") from exc

    def add_work_listener(self, listener: WorkListener) -> None:
        self._listeners.append(listener)

    def _notify_work(self) -> None:
        for listener in self._listeners:
            listener()

    async def _write(self, op: WriteOp[T]) -> T:
        if self._writer is None:
            raise StoreError("the store is not open")
        return await self._writer.submit(op)

    async def _read_one(self, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
        if self._reader is None:
            raise StoreError("the store is not open")
        async with self._reader.execute(sql, params) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def _read_all(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        if self._reader is None:
            raise StoreError("the store is not open")
        async with self._reader.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    # -- tenants, keys and sources ---------------------------------------------------------------

    async def ensure_customer(self, customer_id: str, name: str | None = None) -> Customer:
        now = _epoch(utcnow())

        def op(conn: sqlite3.Connection) -> Customer:
            row = conn.execute(
                "INSERT INTO customers (id, name, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = coalesce(excluded.name, customers.name)"
                " RETURNING id, name, created_at",
                (customer_id, name, now),
            ).fetchone()
            return Customer(row[0], row[1], _moment(row[2]))

        return await self._write(op)

    async def create_api_key(self, key: ApiKey) -> None:
        scopes = ",".join(sorted(key.scopes))
        params = (key.id, key.customer_id, key.key_hash, key.name, scopes, _epoch(key.created_at))
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO api_keys (id, customer_id, key_hash, name, scopes, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                params,
            )
        )

    async def get_api_key(self, key_hash: str) -> ApiKey | None:
        row = await self._read_one(
            "SELECT id, customer_id, key_hash, scopes, name, created_at FROM api_keys WHERE key_hash = ?",
            (key_hash,),
        )
        if row is None:
            return None
        scopes = frozenset(Scope(s) for s in row[3].split(",") if s)
        return ApiKey(row[0], row[1], row[2], scopes, row[4], _moment(row[5]))

    async def create_source(self, source: Source) -> None:
        params = (
            source.id,
            source.customer_id,
            source.carrier.value,
            source.credentials,
            _epoch(source.created_at),
        )
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO sources (id, customer_id, carrier, credentials, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                params,
            )
        )

    async def get_source(self, source_id: str) -> Source | None:
        row = await self._read_one(
            "SELECT id, customer_id, carrier, credentials, created_at FROM sources WHERE id = ?",
            (source_id,),
        )
        if row is None:
            return None
        return Source(row[0], row[1], Carrier(row[2]), row[3], _moment(row[4]))

    # -- subscriptions ---------------------------------------------------------------------------

    async def create_subscription(self, subscription: Subscription) -> SubscriptionCreate:
        sub = subscription
        key = events_key(sub.events)
        now = _epoch(sub.created_at)

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO subscriptions (id, customer_id, url, events_key, description, secret,"
                " is_active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)"
                " ON CONFLICT (customer_id, url, events_key) WHERE deleted_at IS NULL DO NOTHING",
                (sub.id, sub.customer_id, sub.url, key, sub.description, sub.secret, now, now),
            )
            if cursor.rowcount == 0:
                return False
            conn.executemany(
                "INSERT INTO subscription_event_types (customer_id, event_type, subscription_id)"
                " VALUES (?, ?, ?)",
                [(sub.customer_id, t, sub.id) for t in key.split(",")],
            )
            return True

        if await self._write(op):
            return SubscriptionCreate(sub, created=True)
        row = await self._read_one(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE customer_id = ? AND url = ?"
            " AND events_key = ? AND deleted_at IS NULL",
            (sub.customer_id, sub.url, key),
        )
        if row is None:  # deleted between our insert and this read; vanishingly rare
            raise StoreError("subscription changed concurrently; retry the request")
        return SubscriptionCreate(_subscription(row), created=False)

    async def get_subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        row = await self._read_one(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE id = ? AND customer_id = ?"
            " AND deleted_at IS NULL",
            (subscription_id, customer_id),
        )
        return None if row is None else _subscription(row)

    async def list_subscriptions(self, customer_id: str, *, limit: int, cursor: str | None = None) -> Page:
        after = decode_cursor(cursor) if cursor else ""
        rows = await self._read_all(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE customer_id = ? AND id > ?"
            " AND deleted_at IS NULL ORDER BY id LIMIT ?",
            (customer_id, after, limit + 1),
        )
        items = [_subscription(row) for row in rows[:limit]]
        next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
        return Page(items, next_cursor)

    async def delete_subscription(self, customer_id: str, subscription_id: str) -> bool:
        now = _epoch(utcnow())

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE subscriptions SET deleted_at = ?, is_active = 0, updated_at = ?"
                " WHERE id = ? AND customer_id = ? AND deleted_at IS NULL",
                (now, now, subscription_id, customer_id),
            )
            if cursor.rowcount == 0:
                return False
            conn.execute("DELETE FROM subscription_event_types WHERE subscription_id = ?", (subscription_id,))
            conn.execute(
                "UPDATE deliveries SET status = 'canceled', updated_at = ?"
                " WHERE subscription_id = ? AND status IN ('pending', 'held', 'parked')",
                (now, subscription_id),
            )
            return True

        return await self._write(op)

    # -- events and deliveries -------------------------------------------------------------------

    async def publish(self, event: NewEvent, *, delay_s: float = 0.0) -> PublishResult:
        payload = orjson.dumps(event.envelope())
        created = _epoch(event.created_at)
        stored = Event(
            event.id,
            event.customer_id,
            event.type,
            event.idempotency_key,
            payload,
            event.created_at,
        )

        def op(conn: sqlite3.Connection) -> PublishResult:
            cursor = conn.execute(
                "INSERT INTO events (id, customer_id, type, idempotency_key, payload, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (customer_id, idempotency_key) DO NOTHING",
                (event.id, event.customer_id, event.type, event.idempotency_key, payload, created),
            )
            if cursor.rowcount == 0:
                return PublishResult(_existing_event(conn, event), created=False, deliveries=0)
            cursor = conn.execute(
                outbox.FAN_OUT,
                {
                    "event_id": event.id,
                    "customer_id": event.customer_id,
                    "type": event.type,
                    "due": created + delay_s,
                    "now": created,
                },
            )
            return PublishResult(stored, created=True, deliveries=cursor.rowcount)

        result = await self._write(op)
        if result.deliveries:
            self._notify_work()
        return result

    async def claim_deliveries(self, *, limit: int, lease_s: float, now: datetime) -> list[DeliveryJob]:
        return await self._write(lambda conn: outbox.claim(conn, limit, lease_s, now))

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[str]:
        if not results:
            return []
        now = utcnow()
        disabled = await self._write(lambda conn: outbox.record(conn, results, now))
        if any(r.next_attempt_at is not None for r in results):
            self._notify_work()
        return disabled

    async def release_deliveries(self, delivery_ids: Sequence[str]) -> None:
        if delivery_ids:
            now = utcnow()
            await self._write(lambda conn: outbox.release(conn, delivery_ids, now))

    async def prune(self, *, deliveries_before: datetime, events_before: datetime, limit: int) -> int:
        cutoffs = (_epoch(deliveries_before), _epoch(events_before))
        return await self._write(lambda conn: outbox.prune(conn, *cutoffs, limit))

    async def enable_subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        now = utcnow()
        if not await self._write(lambda conn: outbox.enable(conn, customer_id, subscription_id, now)):
            return None
        self._notify_work()
        return await self.get_subscription(customer_id, subscription_id)


# -- SQL and row mapping -------------------------------------------------------------------------

_SUB_COLUMNS = (
    "id, customer_id, url, events_key, description, secret, is_active, created_at, failure_count,"
    " disabled_reason, disabled_at"
)


def _subscription(row: sqlite3.Row) -> Subscription:
    return Subscription(
        id=row[0],
        customer_id=row[1],
        url=row[2],
        events=tuple(row[3].split(",")),
        description=row[4],
        secret=row[5],
        is_active=bool(row[6]),
        created_at=_moment(row[7]),
        failure_count=row[8],
        disabled_reason=None if row[9] is None else DisabledReason(row[9]),
        disabled_at=None if row[10] is None else _moment(row[10]),
    )


def _existing_event(conn: sqlite3.Connection, event: NewEvent) -> Event:
    row = conn.execute(
        "SELECT id, customer_id, type, idempotency_key, payload, created_at FROM events"
        " WHERE customer_id = ? AND idempotency_key = ?",
        (event.customer_id, event.idempotency_key),
    ).fetchone()
    return Event(row[0], row[1], row[2], row[3], row[4], _moment(row[5]))


def _implements_store(store: SqliteStore) -> Store:
    """Lets mypy prove that SqliteStore satisfies the Store protocol."""
    return store
