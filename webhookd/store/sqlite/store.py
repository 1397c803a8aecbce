"""SQLite backend: WAL, ``synchronous=FULL``, one writer connection with group commit, and read
connections kept apart by cost (``readers``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from webhookd.config import DEFAULT_MAX_PENDING_WRITES, DEFAULT_SQLITE_READERS
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
from webhookd.store.availability import Availability
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
from webhookd.store.reads import OPERATOR, SharedReads
from webhookd.store.scheduling import OLDEST_WAITING, ClaimRequest, RingPosition
from webhookd.store.shared import (
    CUSTOMER_COLUMNS,
    END_DASHBOARD_SESSION,
    INSERT_DASHBOARD_LINK,
    INSERT_SUBSCRIPTION,
    MARK_API_KEY_USED,
    REDEEM_DASHBOARD_LINK,
    REVOKE_API_KEY,
    ROTATE_SUBSCRIPTION_SECRET,
    SUBSCRIPTION_STATES,
    new_subscription,
    subscription_states,
)
from webhookd.store.sqlite import manage, outbox
from webhookd.store.sqlite import publish as publishing
from webhookd.store.sqlite.epoch import ROWS, to_epoch
from webhookd.store.sqlite.liveness import WorkerLocks
from webhookd.store.sqlite.migrate import migrate_sqlite
from webhookd.store.sqlite.readers import Readers
from webhookd.store.sqlite.revocations import RevocationStamp
from webhookd.store.sqlite.writer import Combined, GroupCommitWriter, WriteOp, unavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000
CHECKPOINT_INTERVAL_S = 1.0
# temp_store=MEMORY: a statement journal that spills (a multi-row insert in a group transaction)
# would otherwise create and unlink a temporary file on the commit path (about 50 a second under
# the ingest benchmark, seen with strace on the writer thread).
_PRAGMAS = ("synchronous=FULL", "foreign_keys=ON", f"busy_timeout={BUSY_TIMEOUT_MS}", "temp_store=MEMORY")


def make_private(path: Path) -> None:
    """Create the database file 0600 if it is new, and make it and its WAL and shared-memory files
    0600 if they exist: they hold event payloads. SQLite gives the ``-wal`` and ``-shm`` files it
    creates the database file's mode, so a private database keeps them private whatever the umask."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        try:
            os.chmod(path.with_name(name), 0o600)
        except FileNotFoundError:
            pass


class SqliteStore(SharedReads):
    """The embedded default store. One file, no setup, durable on return."""

    _BUCKET = "CAST((a.started_at - ?) / ? AS INTEGER)"
    _BY_CALL = "INDEXED BY call_callbacks_by_call"

    def __init__(
        self,
        path: Path | str,
        *,
        list_readers: int = DEFAULT_SQLITE_READERS,
        max_pending_writes: int = DEFAULT_MAX_PENDING_WRITES,
        circuit: CircuitPolicy = DEFAULT_CIRCUIT,
    ) -> None:
        if list_readers < 1:
            raise ValueError("list_readers must be at least 1")
        self._path = Path(path)
        self._list_readers = list_readers
        self._max_pending_writes = max_pending_writes
        self._circuit = circuit
        self._rows = ROWS
        self._readers: Readers | None = None
        self._writer: GroupCommitWriter | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._listeners: list[WorkListener] = []
        self._health = Availability("SQLite")
        self._worker_locks = WorkerLocks(self._path)
        self._revocations = RevocationStamp(self._path)
        self._ring = RingPosition()

    @property
    def health(self) -> Availability:
        """Whether the database answers, as this store's operations found."""
        return self._health

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the writer (which migrates) first, then the aiosqlite readers."""
        if self._path.parent != Path():
            self._path.parent.mkdir(parents=True, exist_ok=True)
        writer = GroupCommitWriter(self._connect_writer, self._health, max_pending=self._max_pending_writes)
        await writer.start()
        try:
            await writer.call(migrate_sqlite)
            self._readers = await Readers.open(self._path, _PRAGMAS, self._list_readers)
        except BaseException:
            await writer.stop()
            raise
        self._writer = writer
        self._checkpointer = asyncio.create_task(
            self._checkpoint_forever(), name="webhookd-sqlite-checkpoint"
        )

    async def _checkpoint_forever(self) -> None:
        """Checkpoint the WAL every ``CHECKPOINT_INTERVAL_S``; see :meth:`checkpoint`."""
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            try:
                await self.checkpoint()
            except StorageUnavailable:
                pass  # counted in the outage's log: a line a second would only repeat it
            except StoreError as exc:
                logger.warning("WAL checkpoint failed: %s", exc, extra={"action": "store.checkpoint_error"})

    async def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL back into the database, mostly off the writer's path, and let it restart.

        The writer's automatic checkpoint is off: it would run inside a commit every 1,000 pages and
        stall every request waiting on that commit. So a read connection kept for this copies the
        bulk (PASSIVE never blocks the writer), then the writer copies the few frames committed
        meanwhile, between two batches. The second step matters: SQLite restarts the WAL from its
        beginning only when a write transaction begins with every frame copied, and under steady
        writes the writer has always appended more by then, so without it the WAL file grows
        without bound (measured: 126 MB in 10 s of the latency benchmark, against an 8 MB database).

        Returns the WAL's frame count after each step.
        """
        if self._readers is None or self._writer is None:
            raise StoreError("the store is not open")
        with self._refusals():
            async with self._readers.checkpoints.execute("PRAGMA wal_checkpoint(PASSIVE)") as cursor:
                bulk = await cursor.fetchone()
        rest = await self._writer.call(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        return (bulk[1] if bulk else 0), rest[1]

    def _connect_writer(self) -> sqlite3.Connection:
        try:
            make_private(self._path)
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint_forever
            for pragma in _PRAGMAS:
                conn.execute(f"PRAGMA {pragma}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite database {self._path}: {exc}") from exc
        return conn

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
            self._checkpointer = None
        if self._writer is not None:
            await self._writer.stop()
        if self._readers is not None:
            await self._readers.close()
        self._readers = self._writer = None
        self._worker_locks.close()

    async def ping(self) -> None:
        try:
            await self._read_one("SELECT 1", ())
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"SQLite does not answer: {exc}") from exc
        if self._health.refused_lately:
            raise StorageUnavailable("SQLite refused requests a moment ago")
        if self._health.down:
            # Reads go on answering through a full disk: only a write tells the outage is over.
            await self._write(_rewrite_last_migration)

    def add_work_listener(self, listener: WorkListener) -> None:
        self._listeners.append(listener)

    def _notify_work(self) -> None:
        for listener in self._listeners:
            listener()

    def _write(self, op: WriteOp[T], *, shed: bool = False) -> asyncio.Future[T]:
        """``op``'s result, once its group transaction committed (a future: see ``submit``).
        ``shed``: a client's write it may retry, refused with :class:`Overloaded` when too many
        wait already."""
        if self._writer is None:
            raise StoreError("the store is not open")
        return self._writer.submit(op, shed=shed)

    async def _execute(self, sql: str, params: Sequence[Any]) -> None:
        """One statement, as a write of its own."""
        await self._write(lambda conn: conn.execute(sql, params))

    def _open_readers(self) -> Readers:
        if self._readers is None:
            raise StoreError("the store is not open")
        return self._readers

    async def _read_one(self, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
        """A lookup: an index probe, on the connection no list takes."""
        with self._refusals():
            async with self._open_readers().lookups.execute(sql, params) as cursor:
                row: sqlite3.Row | None = await cursor.fetchone()
                return row

    async def _read_all(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        """A lookup's few rows (a delivery's attempts), on the connection no list takes."""
        with self._refusals():
            async with self._open_readers().lookups.execute(sql, params) as cursor:
                return list(await cursor.fetchall())

    async def _scan(self, turn: str, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        """A list, or any read that may visit many rows, on a list connection in ``turn``'s turn
        (the customer's: one customer's queue of reads cannot hold up another's)."""
        with self._refusals():
            async with (
                self._open_readers().lists.connection(turn) as conn,
                conn.execute(sql, params) as cursor,
            ):
                return list(await cursor.fetchall())

    @contextlib.contextmanager
    def _refusals(self) -> Iterator[None]:
        """Turn an error that says the file cannot be used for now into :class:`StorageUnavailable`
        (and count it); other errors go on as they are."""
        try:
            yield
        except sqlite3.Error as exc:
            refusal = unavailable(exc)
            if refusal is not None:
                self._health.refused(refusal)
                raise refusal from exc
            raise

    # -- tenants, keys and sources ---------------------------------------------------------------

    async def ensure_customer(self, customer_id: str, name: str | None = None) -> Customer:
        now = to_epoch(utcnow())

        def op(conn: sqlite3.Connection) -> Customer:
            row = conn.execute(
                "INSERT INTO customers (id, name, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = coalesce(excluded.name, customers.name)"
                f" RETURNING {CUSTOMER_COLUMNS}",
                (customer_id, name, now),
            ).fetchone()
            return ROWS.customer(row)

        return await self._write(op)

    async def create_api_key(self, key: ApiKey) -> None:
        scopes = ",".join(sorted(key.scopes))
        await self._execute(
            "INSERT INTO api_keys (id, customer_id, key_hash, name, scopes, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key.id, key.customer_id, key.key_hash, key.name, scopes, to_epoch(key.created_at)),
        )

    async def create_source(self, source: Source) -> None:
        s = source
        await self._execute(
            "INSERT INTO sources (id, customer_id, carrier, credentials, created_at) VALUES (?, ?, ?, ?, ?)",
            (s.id, s.customer_id, s.carrier.value, s.credentials, to_epoch(s.created_at)),
        )

    async def create_dashboard_link(
        self, token_hash: str, access: DashboardAccess, created_at: datetime, expires_at: datetime
    ) -> None:
        kind, customer_id = access.kind.value, access.customer_id
        params = (token_hash, kind, customer_id, to_epoch(created_at), to_epoch(expires_at))
        await self._execute(INSERT_DASHBOARD_LINK, params)

    async def redeem_dashboard_link(self, token_hash: str, now: datetime) -> DashboardAccess | None:
        params = (to_epoch(now), token_hash, to_epoch(now))
        row = await self._write(lambda conn: conn.execute(REDEEM_DASHBOARD_LINK, params).fetchone())
        return None if row is None else ROWS.access(row)

    async def end_dashboard_session(self, session_id: str, expires_at: datetime) -> None:
        await self._execute(END_DASHBOARD_SESSION, (session_id, to_epoch(expires_at)))

    async def mark_api_key_used(self, key_id: str, at: datetime) -> None:
        await self._execute(MARK_API_KEY_USED, (to_epoch(at), key_id, to_epoch(at)))

    async def revoke_api_key(self, customer_id: str | None, key_id: str, now: datetime) -> ApiKey | None:
        params = (to_epoch(now), key_id, customer_id)
        row = await self._write(lambda conn: conn.execute(REVOKE_API_KEY, params).fetchone())
        if row is None:
            return None
        # Committed: now tell every process on this file, the serving one included (see key_revocations).
        await asyncio.to_thread(self._revocations.touch)
        return ROWS.api_key(row)

    def key_revocations(self) -> int:
        return self._revocations.mark()

    # -- subscriptions ---------------------------------------------------------------------------

    async def create_subscription(self, subscription: Subscription) -> SubscriptionCreate:
        sub = subscription
        params = new_subscription(sub, to_epoch(sub.created_at))

        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute(INSERT_SUBSCRIPTION, params).rowcount == 0:
                return False
            conn.executemany(
                "INSERT INTO subscription_event_types (customer_id, event_type, subscription_id)"
                " VALUES (?, ?, ?)",
                [(sub.customer_id, t, sub.id) for t in set(sub.events)],
            )
            return True

        if await self._write(op):
            return SubscriptionCreate(sub, created=True)
        existing = await self._find_identical(sub)
        if existing is None:  # deleted between our insert and this read; vanishingly rare
            raise StoreError("subscription changed concurrently; retry the request")
        return SubscriptionCreate(existing, created=False)

    async def outbox_stats(self, now: datetime) -> OutboxStats:
        counts = await self._read_all("SELECT status, n FROM outbox_counts", ())
        oldest = await self._read_one(OLDEST_WAITING, ())
        states = await self._scan(OPERATOR, SUBSCRIPTION_STATES, ())
        due = None if oldest is None or oldest[0] is None else oldest[0]
        age = 0.0 if due is None else max(0.0, to_epoch(now) - due)
        return OutboxStats({row[0]: row[1] for row in counts}, age, subscription_states(states))

    async def update_subscription(
        self, customer_id: str, subscription_id: str, update: SubscriptionUpdate
    ) -> Subscription | None:
        now = utcnow()
        if not await self._write(
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
        until, now = to_epoch(previous_until), to_epoch(utcnow())
        params = (until, secret, scheme.value, public_key, now, subscription_id, customer_id)
        if not await self._write(lambda conn: conn.execute(ROTATE_SUBSCRIPTION_SECRET, params).rowcount):
            return None
        return await self.get_subscription(customer_id, subscription_id)

    async def delete_subscription(self, customer_id: str, subscription_id: str) -> bool:
        now = to_epoch(utcnow())

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE subscriptions SET deleted_at = ?, is_active = 0, updated_at = ?"
                " WHERE id = ? AND customer_id = ? AND kind = 'webhook' AND deleted_at IS NULL",
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
        (result,) = await self._publish_batch([event], delay_s)
        return result

    async def publish_many(self, events: Sequence[NewEvent], *, delay_s: float = 0.0) -> list[PublishResult]:
        batch = DistinctKeys.of(events)
        return batch.results(await self._publish_batch(batch.events, delay_s))

    async def _publish_batch(self, events: list[NewEvent], delay_s: float) -> list[PublishResult]:
        """Events of distinct idempotency keys, as one write of the group commit."""
        results: list[PublishResult] = await self._write(
            Combined(publishing.publish_batches, (events, delay_s)), shed=True
        )
        if any(result.deliveries for result in results):
            self._notify_work()
        return results

    async def record_callback(
        self, receipt: CallbackReceipt, decide: Decide, *, delay_s: float = 0.0
    ) -> CallbackOutcome:
        received = to_epoch(utcnow())

        def op(conn: sqlite3.Connection) -> CallbackOutcome:
            return publishing.record_callback(conn, receipt, decide, delay_s, received)

        outcome = await self._write(op, shed=True)
        if outcome.published is not None and outcome.published.deliveries:
            self._notify_work()
        return outcome

    async def retry_delivery(self, customer_id: str, delivery_id: str) -> Delivery | None:
        now = utcnow()
        if not await self._write(lambda conn: manage.retry_delivery(conn, customer_id, delivery_id, now)):
            return None
        self._notify_work()
        detail = await self.get_delivery(customer_id, delivery_id)
        return None if detail is None else detail.delivery

    async def requeue_deliveries(self, delivery_ids: Sequence[str]) -> int:
        now = utcnow()
        count = await self._write(lambda conn: manage.requeue(conn, delivery_ids, now))
        if count:
            self._notify_work()
        return count

    async def ensure_callback_secret(self, customer_id: str, secret: bytes) -> CallbackSecret:
        await self._write(lambda conn: manage.ensure_callback_secret(conn, customer_id, secret))
        stored = await self.get_callback_secret(customer_id)
        if stored is None:
            raise StoreError(f"customer {customer_id} does not exist")
        return stored

    async def rotate_callback_secret(
        self, customer_id: str, secret: bytes, previous_until: datetime
    ) -> CallbackSecret:
        await self._write(
            lambda conn: manage.rotate_callback_secret(conn, customer_id, secret, previous_until)
        )
        stored = await self.get_callback_secret(customer_id)
        if stored is None:
            raise StoreError(f"customer {customer_id} does not exist")
        return stored

    async def register_worker(self, worker_id: str, now: datetime) -> None:
        self._worker_locks.hold(worker_id)
        at = to_epoch(now)
        await self._write(
            lambda conn: conn.execute("INSERT INTO workers VALUES (?, ?, ?)", (worker_id, at, at))
        )

    async def worker_heartbeat(self, worker_id: str, now: datetime) -> None:
        """Nothing to write: on one SQLite file a worker's lock file says it lives, and says at once
        when it died."""

    async def retire_worker(self, worker_id: str) -> None:
        await self._write(lambda conn: conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,)))
        self._worker_locks.drop(worker_id)

    async def claim_deliveries(self, request: ClaimRequest) -> list[DeliveryJob]:
        reclaim = self._ring.reclaim_due(to_epoch(request.now))
        return await self._write(lambda conn: self._claim(conn, request, reclaim))

    def _claim(self, conn: sqlite3.Connection, request: ClaimRequest, reclaim: bool) -> list[DeliveryJob]:
        if reclaim:
            workers = [row[0] for row in conn.execute("SELECT id FROM workers")]
            dead = [worker_id for worker_id in workers if self._worker_locks.is_dead(worker_id)]
            if outbox.reclaim(conn, request.worker_id, dead):
                logger.info("took back the claims of dead workers", extra={"action": "worker.reclaim"})
        return outbox.claim(conn, request, self._ring)

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[Disabled]:
        if not results:
            return []
        now = utcnow()
        disabled = await self._write(lambda conn: outbox.record(conn, self._circuit, results, now))
        if any(r.next_attempt_at is not None for r in results):
            self._notify_work()
        return disabled

    async def release_deliveries(self, claims: Sequence[DeliveryClaim]) -> None:
        if claims:
            await self._write(lambda conn: outbox.release(conn, claims))

    async def prune(self, *, deliveries_before: datetime, events_before: datetime, limit: int) -> int:
        cutoffs = (to_epoch(deliveries_before), to_epoch(events_before))
        return await self._write(lambda conn: outbox.prune(conn, *cutoffs, limit))

    async def enable_subscription(self, customer_id: str, subscription_id: str) -> Subscription | None:
        now = utcnow()
        if not await self._write(lambda conn: outbox.enable(conn, customer_id, subscription_id, now)):
            return None
        self._notify_work()
        return await self.get_subscription(customer_id, subscription_id)


# -- SQL -------------------------------------------------------------------------------------


def _rewrite_last_migration(conn: sqlite3.Connection) -> None:
    """A write that changes no value but still needs room in the file for the page it rewrites."""
    conn.execute(
        "UPDATE schema_migrations SET applied_at = applied_at"
        " WHERE version = (SELECT max(version) FROM schema_migrations)"
    )


def _implements_store(store: SqliteStore) -> Store:
    """Lets mypy prove that SqliteStore satisfies the Store protocol."""
    return store
