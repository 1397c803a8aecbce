"""PostgreSQL plumbing: the pool, migrations, transactions that retry, and LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from webhookd.exceptions import StorageUnavailable, StoreError
from webhookd.models import utcnow
from webhookd.store.base import WorkListener
from webhookd.store.migrate import migration_files

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connection = Any
"""An ``asyncpg.Connection`` (asyncpg ships no type information)."""

WORK_CHANNEL = "webhookd_work"
KEYS_CHANNEL = "webhookd_keys"
"""A key was revoked: every node's key cache forgets what it holds."""
CONNECT_TIMEOUT_S = 10.0
ACQUIRE_TIMEOUT_S = 10.0
"""How long an operation waits for a pooled connection (connecting included) before it is refused."""
TRANSACTION_ATTEMPTS = 3
RELISTEN_DELAY_S = 2.0
# pg_advisory_xact_lock key of migrations: "whkdmigr" as a big-endian integer.
MIGRATION_LOCK = int.from_bytes(b"whkdmigr", "big") - 2**63
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CONNECTION_ERRORS = (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError)
RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
# The server cannot be reached or cannot take writes for now, whatever was asked: refused, lost
# or timed-out connections, an exhausted pool, a shutdown or a server not accepting connections
# yet (operator intervention: also a canceled statement), too many connections or a full disk
# (insufficient resources), and a read-only server (a standby, or one made read-only).
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


def quote_schema(schema: str) -> str:
    """``schema`` as a quoted identifier; ``ValueError`` unless it is a plain name."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"schema name {schema!r} must be letters, digits and _ (not first), at most 63")
    return f'"{schema}"'


def describe_dsn(dsn: str) -> str:
    """``host:port`` of a DSN for messages (never the password)."""
    try:
        parts = urlsplit(dsn)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    except ValueError:
        return "the configured address"


def connect_options(schema: str | None) -> dict[str, Any]:
    settings = {"application_name": "webhookd"}
    if schema is not None:
        settings["search_path"] = quote_schema(schema)
    return {"server_settings": settings, "timeout": CONNECT_TIMEOUT_S}


def count_rows(status: str) -> int:
    """The row count of a command tag such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


async def create_pool(dsn: str, schema: str | None, size: int) -> Any:
    """An open pool holding one connection; ``StoreError`` naming the server if it cannot be reached.

    The pool keeps no floor of connections (``min_size=0``): asyncpg would restore a floor in the
    background all through an outage, logging a traceback at each try. Operations connect as
    they need to, and an idle connection closes after asyncpg's inactivity lifetime."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=0, max_size=size, reset=_keep_session, **connect_options(schema)
        )
    except _CONNECTION_ERRORS as exc:
        raise StoreError(f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {exc}") from exc
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S):
            pass
    except _CONNECTION_ERRORS as exc:
        await pool.close()
        raise StoreError(f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {exc}") from exc
    return pool


async def _keep_session(conn: Connection) -> None:
    """Release a connection to the pool as it is. asyncpg's default sends ``RESET ALL; CLOSE ALL;
    UNLISTEN *; SELECT pg_advisory_unlock_all()`` on every release, one more round trip for each
    operation, and webhookd leaves nothing for it to reset: session settings are fixed at connect,
    advisory locks are transaction-scoped, cursors live in transactions, and LISTEN has a connection of
    its own. asyncpg still rolls back a transaction left open before calling this."""


async def migrate(conn: Connection, schema: str | None) -> list[str]:
    """Create ``schema`` if given, then apply every pending migration: one transaction, under an
    advisory lock, so processes that start together apply each migration once."""
    files = migration_files("postgres")
    if files and await _version(conn) == files[-1][0]:
        return []  # up to date: a start writes nothing (and so works on read-only connections)
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        if schema is not None:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_schema(schema)}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL)"
        )
        current: int = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        if files and current > files[-1][0]:
            raise StoreError(
                f"the database schema (v{current}) is newer than this webhookd (v{files[-1][0]}); "
                "upgrade webhookd"
            )
        for version, name, sql in files:
            if version > current:
                await _apply(conn, version, name, sql)
                applied.append(name)
    for name in applied:
        logger.info("applied migration %s", name, extra={"action": "store.migrate"})
    return applied


async def _version(conn: Connection) -> int | None:
    """The schema's applied version, ``None`` before the first migration (read without a lock)."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return None
    version: int | None = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    return version


async def _apply(conn: Connection, version: int, name: str, sql: str) -> None:
    try:
        await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        raise StoreError(f"migration {name} failed: {exc}") from exc
    await conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        version,
        name,
        utcnow(),
    )


async def in_transaction(pool: Any, fn: Callable[[Connection], Awaitable[T]]) -> T:
    """Run ``fn`` in a transaction; run it again if PostgreSQL aborted it for a deadlock or a
    serialization failure (``fn`` must not have side effects outside the database)."""
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn, conn.transaction():
                return await fn(conn)
        except RETRYABLE as exc:
            if attempt == TRANSACTION_ATTEMPTS:
                raise StoreError(f"transaction aborted {attempt} times: {exc}") from exc
            logger.warning("retrying a transaction: %s", exc, extra={"action": "store.retry"})
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc
    raise AssertionError("unreachable")


async def on_connection(pool: Any, fn: Callable[[Connection], Awaitable[T]]) -> T:
    """Run ``fn`` (reads, or one self-contained statement) on a pooled connection."""
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            return await fn(conn)
    except UNAVAILABLE as exc:
        raise unavailable(exc) from exc


def unavailable(exc: BaseException) -> StorageUnavailable:
    reason = str(exc) or type(exc).__name__  # a timeout says nothing of itself
    return StorageUnavailable(f"PostgreSQL is unavailable: {reason}")


class WorkNotifier:
    """Wakes work listeners, here at once and in other processes through ``NOTIFY``.

    ``notify_sql`` runs inside a writing transaction, so other processes hear of work only once it
    is committed. This process's listeners are called directly after the commit; the notifications
    this instance sent itself are then ignored when they come back. A payload carries the schema,
    so stores on other schemas of the same database are not woken.
    """

    def __init__(self, dsn: str, schema: str | None) -> None:
        self._dsn, self._schema = dsn, schema
        self._payload = f"{schema or ''}:{secrets.token_hex(8)}"
        self._listeners: list[WorkListener] = []
        self._conn: Connection | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._closing = False
        self.key_revocations = 0
        """Revocations heard of (or possibly missed, while the LISTEN connection was down)."""

    def add(self, listener: WorkListener) -> None:
        self._listeners.append(listener)

    async def send(self, conn: Connection) -> None:
        """Queue a notification in ``conn``'s transaction: delivered when it commits."""
        await conn.execute("SELECT pg_notify($1, $2)", WORK_CHANNEL, self._payload)

    async def send_revocation(self, conn: Connection) -> None:
        """Tell every process a key was revoked, when ``conn``'s transaction commits."""
        await conn.execute("SELECT pg_notify($1, $2)", KEYS_CHANNEL, self._payload)

    def revoked(self) -> None:
        self.key_revocations += 1

    def wake(self) -> None:
        for listener in self._listeners:
            listener()

    async def start(self) -> None:
        self._closing = False
        try:
            conn = await asyncpg.connect(self._dsn, **connect_options(self._schema))
        except _CONNECTION_ERRORS as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {describe_dsn(self._dsn)}: {exc}") from exc
        try:
            await conn.add_listener(WORK_CHANNEL, self._heard)
            await conn.add_listener(KEYS_CHANNEL, self._heard_revocation)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._lost)
        self._conn = conn

    async def stop(self) -> None:
        self._closing = True
        if self._relisten is not None:
            self._relisten.cancel()
            await asyncio.gather(self._relisten, return_exceptions=True)
            self._relisten = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._lost)
            await conn.remove_listener(WORK_CHANNEL, self._heard)
            await conn.remove_listener(KEYS_CHANNEL, self._heard_revocation)
            await conn.close()

    def _heard(self, conn: Connection, pid: int, channel: str, payload: str) -> None:
        scope, _, _ = payload.rpartition(":")
        if payload != self._payload and scope == (self._schema or ""):
            self.wake()

    def _heard_revocation(self, conn: Connection, pid: int, channel: str, payload: str) -> None:
        scope, _, _ = payload.rpartition(":")
        if scope == (self._schema or ""):
            self.revoked()

    def _lost(self, conn: Connection) -> None:
        if not self._closing and self._relisten is None:
            logger.warning("lost the LISTEN connection; reconnecting", extra={"action": "store.relisten"})
            self._relisten = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        failures = 0
        while not self._closing:
            await asyncio.sleep(RELISTEN_DELAY_S)
            try:
                await self.start()
            except (StoreError, *_CONNECTION_ERRORS) as exc:
                if not failures:  # the outage is logged by the store; one line here is enough
                    logger.warning(
                        "LISTEN reconnect failed; retrying every %.0f s: %s",
                        RELISTEN_DELAY_S,
                        exc,
                        extra={"action": "store.relisten"},
                    )
                failures += 1
                continue
            logger.info(
                "LISTEN reconnected after %d failed attempts",
                failures,
                extra={"action": "store.relistened"},
            )
            self._relisten = None
            self.revoked()  # a revocation may have been missed while away: caches start afresh
            self.wake()  # notifications sent while we were away are lost: look for work now
            return
