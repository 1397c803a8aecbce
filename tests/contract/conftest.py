"""The ``store`` fixture: every contract test runs once per backend.

PostgreSQL runs on the server ``WEBHOOKD_TEST_POSTGRES_DSN`` names (default: local, user postgres,
or the OS user if that role does not exist), in a schema of its own for this test session, which
is emptied before each test and dropped at the end. Without a server the postgres tests are
skipped, unless ``WEBHOOKD_REQUIRE_POSTGRES=1`` (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from webhookd.models import utcnow
from webhookd.retry import RetryPolicy
from webhookd.store.base import Store
from webhookd.store.circuit import CircuitPolicy
from webhookd.store.postgres import PostgresStore
from webhookd.store.sqlite import SqliteStore

T = TypeVar("T")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
LIVE_WORKER = "wkr_live"
"""The worker the contract tests claim as, registered with every store: alive throughout."""
PROBE_AFTER_S = 10.0
"""A failing subscription's next probe, this long after each counted failure (no jitter)."""
DISABLE_AFTER = 3
"""Straight failures that disable a subscription in the contract tests."""
RETRY_AFTER_CAP_S = 100.0
"""The longest step of the schedule, which caps a ``Retry-After``."""
CIRCUIT = CircuitPolicy(
    RetryPolicy((0.0, PROBE_AFTER_S, PROBE_AFTER_S, RETRY_AFTER_CAP_S), jitter_ratio=0.0), DISABLE_AFTER
)


@dataclass
class PostgresServer:
    """Where this session's PostgreSQL tests run, and the schemas they made."""

    dsn: str
    schema: str
    extra_schemas: list[str] = field(default_factory=list)

    def new_schema(self) -> str:
        """Another schema, dropped with the session's (for tests that need an empty database)."""
        name = f"{self.schema}_{len(self.extra_schemas)}"
        self.extra_schemas.append(name)
        return name

    async def reset(self) -> None:
        """Empty every table of the session's schema but the migrations' record."""
        conn = await asyncpg.connect(self.dsn)
        try:
            tables = await conn.fetch(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = $1"
                " AND tablename <> 'schema_migrations'",
                self.schema,
            )
            if tables:
                names = ", ".join(f"{self.schema}.{row[0]}" for row in tables)
                await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            for schema in [self.schema, *self.extra_schemas]:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def _answering_dsn() -> tuple[str | None, str]:
    """The DSN of a server that answers, or ``None`` and why not."""
    configured = os.environ.get("WEBHOOKD_TEST_POSTGRES_DSN")
    candidates = (
        [configured]
        if configured
        else [DEFAULT_DSN, DEFAULT_DSN.replace("postgres@", f"{getpass.getuser()}@")]
    )
    reason = ""
    for dsn in candidates:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except asyncpg.InvalidAuthorizationSpecificationError as exc:  # no such role: try the next
            reason = str(exc)
            continue
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        await conn.close()
        return dsn, ""
    return None, reason


def _run_apart(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a loop of its own thread (callable from inside a running loop)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    dsn, reason = _run_apart(_answering_dsn())
    if dsn is None:
        message = f"PostgreSQL does not answer ({reason})"
        if os.environ.get("WEBHOOKD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{message}, and WEBHOOKD_REQUIRE_POSTGRES=1")
        pytest.skip(message)
    server = PostgresServer(dsn, f"webhookd_test_{secrets.token_hex(4)}")
    try:
        yield server
    finally:
        _run_apart(server.drop_all())


async def open_postgres_store(server: PostgresServer) -> PostgresStore:
    """An open store on the session's schema, emptied first."""
    store = PostgresStore(server.dsn, schema=server.schema, circuit=CIRCUIT)
    await store.open()
    try:
        await server.reset()
    except BaseException:
        await store.close()
        raise
    return store


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "postgres":
        backend = await open_postgres_store(request.getfixturevalue("postgres_server"))
    else:
        backend = SqliteStore(tmp_path / "w.db", circuit=CIRCUIT)
        await backend.open()
    try:
        await backend.register_worker(LIVE_WORKER, utcnow())
        yield backend
    finally:
        await backend.close()
