"""PostgreSQL backend: many webhookd processes on many machines share one database.

Writes run in short transactions on an asyncpg pool; publishes and callbacks, the writes clients
make many of at once, are group-committed by the ``writer`` task. The SQL lives in ``outbox``,
``publish`` and ``manage``, the plumbing (pool, migrations, NOTIFY) in ``db`` and the reads with
their row mapping in ``reads``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from webhookd.config import DEFAULT_MAX_PENDING_WRITES
from webhookd.exceptions import StorageUnavailable, StoreError
from webhookd.models import (
    ApiKey,
    AttemptResult,
    CallbackSecret,
    Customer,
    DashboardAccess,
    Delivery,
    DeliveryJob,
    Disabled,
    NewEvent,
    PublishResult,
    SignatureScheme,
    Source,
    Subscription,
    utcnow,
)
from webhookd.store.base import (
    CallbackOutcome,
    CallbackReceipt,
    Decide,
    DeliveryClaim,
    DistinctKeys,
    OutboxStats,
    Store,
    SubscriptionCreate,
    SubscriptionUpdate,
    WorkListener,
)
from webhookd.store.circuit import DEFAULT_CIRCUIT, CircuitPolicy
from webhookd.store.postgres import manage, outbox, reads
from webhookd.store.postgres import publish as publishing
from webhookd.store.postgres.db import (
    Connection,
    WorkNotifier,
    count_rows,
    create_pool,
    describe_dsn,
    in_transaction,
    migrate,
    quote_schema,
)
from webhookd.store.postgres.reads import ROWS, PostgresReads
from webhookd.store.postgres.writer import Combined, GroupCommitWriter
from webhookd.store.reads import numbered
from webhookd.store.scheduling import ClaimRequest, RingPosition
from webhookd.store.shared import (
    END_DASHBOARD_SESSION,
    INSERT_DASHBOARD_LINK,
    MARK_API_KEY_USED,
    REDEEM_DASHBOARD_LINK,
    REVOKE_API_KEY,
    ROTATE_SUBSCRIPTION_SECRET,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_POOL_SIZE = 10
CREATE_ATTEMPTS = 3
FOLD_INTERVAL_S = 10.0
"""How often a worker's claims fold the outbox count deltas, so the metrics scrape sums few rows."""


class PostgresStore(PostgresReads):
    """The shared store. ``schema`` (tests) puts every table in that schema, created if missing."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_pending_writes: int = DEFAULT_MAX_PENDING_WRITES,
        circuit: CircuitPolicy = DEFAULT_CIRCUIT,
    ) -> None:
        if schema is not None:
            quote_schema(schema)  # a ValueError now rather than odd SQL later
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        super().__init__()
        self._dsn, self._schema, self._pool_size = dsn, schema, pool_size
        self._notifier = WorkNotifier(dsn, schema)
        self._folded_at = float("-inf")
        self._ring = RingPosition()
        self._circuit = circuit
        self._max_pending_writes = max_pending_writes
        self._writer: GroupCommitWriter | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the pool, apply pending migrations, then LISTEN for work of other processes."""
        pool = await create_pool(self._dsn, self._schema, self._pool_size)
        try:
            async with pool.acquire() as conn:
                await migrate(conn, self._schema)
            await self._notifier.start()
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._writer = GroupCommitWriter(
            pool, self._notifier, self._health, max_pending=self._max_pending_writes
        )
        self._writer.start()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.stop()
        await self._notifier.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> None:
        if self._health.refused_lately:
            raise StorageUnavailable("PostgreSQL refused requests a moment ago")
        try:
            if self._health.down:
                # A read-only server answers reads: only a write tells the outage is over.
                await self._transaction(_rewrite_last_migration)
            else:
                await self._run(lambda conn: conn.fetchval("SELECT 1"))
        except StorageUnavailable as exc:
            where = describe_dsn(self._dsn)
            raise StorageUnavailable(f"PostgreSQL at {where} does not answer: {exc}") from exc

    def add_work_listener(self, listener: WorkListener) -> None:
        self._notifier.add(listener)

    async def _transaction(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            result = await in_transaction(self._pool, fn)
        except StorageUnavailable as exc:
            self._health.refused(exc)
            raise
        self._health.answered()
        return result

    def _notifying(
        self, fn: Callable[[Connection], Awaitable[T]], wakes: Callable[[T], bool]
    ) -> Callable[[Connection], Awaitable[T]]:
        """``fn``, then a NOTIFY in the same transaction if ``wakes`` says its result is new work."""

        async def op(conn: Connection) -> T:
            result = await fn(conn)
            if wakes(result):
                await self._notifier.send(conn)
            return result

        return op

    # -- tenants, keys and sources ---------------------------------------------------------------

    async def ensure_customer(self, customer_id: str, name: str | None = None) -> Customer:
        row = await self._run(
            lambda conn: conn.fetchrow(
                "INSERT INTO customers (id, name, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO UPDATE SET name = coalesce(excluded.name, customers.name)"
                " RETURNING id, name, created_at",
                customer_id,
                name,
                utcnow(),
            )
        )
        return Customer(row[0], row[1], row[2])

    async def create_api_key(self, key: ApiKey) -> None:
        scopes = sorted(key.scopes)
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO api_keys (id, customer_id, key_hash, name, scopes, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                *(key.id, key.customer_id, key.key_hash, key.name, scopes, key.created_at),
            )
        )

    async def create_source(self, source: Source) -> None:
        s = source
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO sources (id, customer_id, carrier, credentials, created_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                *(s.id, s.customer_id, s.carrier.value, s.credentials, s.created_at),
            )
        )

    async def create_dashboard_link(
        self, token_hash: str, access: DashboardAccess, created_at: datetime, expires_at: datetime
    ) -> None:
        insert = numbered(INSERT_DASHBOARD_LINK)
        params = (token_hash, access.kind.value, access.customer_id, created_at, expires_at)
        await self._run(lambda conn: conn.execute(insert, *params))

    async def redeem_dashboard_link(self, token_hash: str, now: datetime) -> DashboardAccess | None:
        redeem = numbered(REDEEM_DASHBOARD_LINK)
        row = await self._run(lambda conn: conn.fetchrow(redeem, now, token_hash, now))
        return None if row is None else ROWS.access(row)

    async def end_dashboard_session(self, session_id: str, expires_at: datetime) -> None:
        end = numbered(END_DASHBOARD_SESSION)
        await self._run(lambda conn: conn.execute(end, session_id, expires_at))

    async def mark_api_key_used(self, key_id: str, at: datetime) -> None:
        mark = numbered(MARK_API_KEY_USED)
        await self._run(lambda conn: conn.execute(mark, at, key_id, at))

    async def revoke_api_key(self, customer_id: str | None, key_id: str, now: datetime) -> ApiKey | None:
        revoke = numbered(REVOKE_API_KEY)

        async def op(conn: Connection) -> Any:
            row = await conn.fetchrow(revoke, now, key_id, customer_id)
            if row is not None:
                await self._notifier.send_revocation(conn)
            return row

        row = await self._transaction(op)
        if row is None:
            return None
        self._notifier.revoked()  # this node at once; the others when the NOTIFY reaches them
        return ROWS.api_key(row)

    def key_revocations(self) -> int:
        return self._notifier.key_revocations

    # -- subscriptions ---------------------------------------------------------------------------

    async def create_subscription(self, subscription: Subscription) -> SubscriptionCreate:
        for _ in range(CREATE_ATTEMPTS):
            if await self._transaction(lambda conn: manage.insert_subscription(conn, subscription)):
                return SubscriptionCreate(subscription, created=True)
            existing = await self._find_identical(subscription)
            if existing is not None:
                return SubscriptionCreate(existing, created=False)
            # The one in the way was deleted between our insert and this read: insert again.
        raise StoreError("subscription changed concurrently; retry the request")

    async def update_subscription(
        self, customer_id: str, subscription_id: str, update: SubscriptionUpdate
    ) -> Subscription | None:
        now = utcnow()
        if not await self._transaction(
            lambda conn: manage.update_subscription(conn, customer_id, subscription_id, update, now)
        ):
            return None
        return await self.get_subscription(customer_id, subscription_id)

    async def rotate_subscription_secret(
        self,
        customer_id: str,
        subscription_id: str,
        secret: bytes,
        previous_until: datetime,
        scheme: SignatureScheme = SignatureScheme.V1,
        public_key: str | None = None,
    ) -> Subscription | None:
        rotate = numbered(ROTATE_SUBSCRIPTION_SECRET)
        params = (previous_until, secret, scheme.value, public_key, utcnow(), subscription_id, customer_id)
        if not count_rows(await self._run(lambda conn: conn.execute(rotate, *params))):
            return None
        return await self.get_subscription(customer_id, subscription_id)

    async def delete_subscription(self, customer_id: str, subscription_id: str) -> bool:
        now = utcnow()
        return await self._transaction(
            lambda conn: manage.delete_subscription(conn, customer_id, subscription_id, now)
        )

    async def enable_subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        now = utcnow()
        op = self._notifying(lambda conn: outbox.enable(conn, customer_id, subscription_id, now), bool)
        if not await self._transaction(op):
            return None
        self._notifier.wake()
        return await self.get_subscription(customer_id, subscription_id)

    # -- events and deliveries -------------------------------------------------------------------

    async def publish(self, event: NewEvent, *, delay_s: float = 0.0) -> PublishResult:
        """Group-committed with the publishes and callbacks queued beside it."""
        (result,) = await self._publish_batch([event], delay_s)
        return result

    async def publish_many(self, events: Sequence[NewEvent], *, delay_s: float = 0.0) -> list[PublishResult]:
        batch = DistinctKeys.of(events)
        return batch.results(await self._publish_batch(batch.events, delay_s))

    async def _publish_batch(self, events: list[NewEvent], delay_s: float) -> list[PublishResult]:
        """Events of distinct idempotency keys, as one write of the group commit."""
        op = Combined(publishing.publish_batches, (events, delay_s))
        results: list[PublishResult] = await self._group_writer().submit(
            op, wakes=_published_deliveries, order=_PUBLISHES_FIRST
        )
        return results

    async def record_callback(
        self, receipt: CallbackReceipt, decide: Decide, *, delay_s: float = 0.0
    ) -> CallbackOutcome:
        received = utcnow()
        r = receipt
        outcome: CallbackOutcome = await self._group_writer().submit(
            lambda conn: publishing.record_callback(conn, receipt, decide, delay_s, received),
            wakes=_made_deliveries,
            order=(1, r.customer_id, r.carrier, r.call_id),  # the order batches lock calls' rows in
        )
        return outcome

    def _group_writer(self) -> GroupCommitWriter:
        if self._writer is None:
            raise StoreError("the store is not open")
        return self._writer

    async def retry_delivery(self, customer_id: str, delivery_id: str) -> Delivery | None:
        now = utcnow()
        op = self._notifying(lambda conn: manage.retry_delivery(conn, customer_id, delivery_id, now), bool)
        if not await self._transaction(op):
            return None
        self._notifier.wake()
        detail = await self.get_delivery(customer_id, delivery_id)
        return None if detail is None else detail.delivery

    async def requeue_deliveries(self, delivery_ids: Sequence[str]) -> int:
        if not delivery_ids:
            return 0
        now = utcnow()
        count = await self._transaction(
            self._notifying(lambda conn: manage.requeue(conn, delivery_ids, now), bool)
        )
        if count:
            self._notifier.wake()
        return count

    async def ensure_callback_secret(self, customer_id: str, secret: bytes) -> CallbackSecret:
        await self._run(lambda conn: manage.ensure_callback_secret(conn, customer_id, secret))
        return await self._stored_callback_secret(customer_id)

    async def rotate_callback_secret(
        self, customer_id: str, secret: bytes, previous_until: datetime
    ) -> CallbackSecret:
        await self._run(lambda conn: manage.rotate_callback_secret(conn, customer_id, secret, previous_until))
        return await self._stored_callback_secret(customer_id)

    async def _stored_callback_secret(self, customer_id: str) -> CallbackSecret:
        stored = await self.get_callback_secret(customer_id)
        if stored is None:
            raise StoreError(f"customer {customer_id} does not exist")
        return stored

    # -- the outbox ------------------------------------------------------------------------------

    async def register_worker(self, worker_id: str, now: datetime) -> None:
        await self._transaction(
            lambda conn: conn.execute("INSERT INTO workers VALUES ($1, $2, $2)", worker_id, now)
        )

    async def worker_heartbeat(self, worker_id: str, now: datetime) -> None:
        """Upsert: a worker forgotten while it could not reach the database comes back."""
        await self._transaction(
            lambda conn: conn.execute(
                "INSERT INTO workers VALUES ($1, $2, $2)"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                worker_id,
                now,
            )
        )

    async def retire_worker(self, worker_id: str) -> None:
        await self._transaction(lambda conn: conn.execute("DELETE FROM workers WHERE id = $1", worker_id))

    async def claim_deliveries(self, request: ClaimRequest) -> list[DeliveryJob]:
        if request.limit <= 0:
            return []
        if self._ring.reclaim_due(request.now.timestamp()):
            op = self._notifying(lambda conn: outbox.reclaim(conn, request.worker_id, request.now), bool)
            if await self._transaction(op):
                logger.info("took back the claims of dead workers", extra={"action": "worker.reclaim"})
        jobs = await self._transaction(lambda conn: outbox.claim(conn, request, self._ring))
        await self._fold_now_and_then()
        return jobs

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[Disabled]:
        if not results:
            return []
        now = utcnow()
        op = self._notifying(
            lambda conn: outbox.record(conn, self._circuit, results, now), lambda done: done.made_work
        )
        done = await self._transaction(op)
        if done.made_work:
            self._notifier.wake()
        return done.disabled

    async def release_deliveries(self, claims: Sequence[DeliveryClaim]) -> None:
        """Give them back, and tell the other processes (this one is shutting down)."""
        if claims:
            await self._transaction(self._notifying(lambda conn: outbox.release(conn, claims), bool))

    async def prune(self, *, deliveries_before: datetime, events_before: datetime, limit: int) -> int:
        gone = await self._transaction(
            lambda conn: outbox.prune(conn, deliveries_before, events_before, limit)
        )
        await self._transaction(outbox.fold_counts)
        return gone

    async def outbox_stats(self, now: datetime) -> OutboxStats:
        """Plain reads: a scrape writes nothing and waits for no lock (the writers fold)."""
        return await self._run(lambda conn: reads.outbox_stats(conn, now))

    async def _fold_now_and_then(self) -> None:
        """Fold the count deltas at most every ``FOLD_INTERVAL_S``, on the worker's claim path
        (which runs every poll, busy or idle) rather than in the scrape."""
        if time.monotonic() - self._folded_at >= FOLD_INTERVAL_S:
            self._folded_at = time.monotonic()
            await self._transaction(outbox.fold_counts)


_PUBLISHES_FIRST = (0,)
"""A batch's publishes run together, before its callbacks."""


def _made_deliveries(outcome: CallbackOutcome) -> bool:
    return outcome.published is not None and outcome.published.deliveries > 0


def _published_deliveries(results: list[PublishResult]) -> bool:
    return any(result.deliveries > 0 for result in results)


def _implements_store(store: PostgresStore) -> Store:
    """Lets mypy prove that PostgresStore satisfies the Store protocol."""
    return store


async def _rewrite_last_migration(conn: Connection) -> None:
    """A write that changes no value: refused by a read-only server, like every real write."""
    await conn.execute(
        "UPDATE schema_migrations SET applied_at = applied_at"
        " WHERE version = (SELECT max(version) FROM schema_migrations)"
    )
