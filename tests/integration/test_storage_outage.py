"""Storage outages over real HTTP: a full disk under SQLite, a cut connection to PostgreSQL.

Every request that needs the database is answered 503 with Retry-After on a connection that
stays open, the log says so a bounded number of times, and the same server serves again once
the database does, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import asyncpg
import orjson
import pytest
from twilio.request_validator import RequestValidator

from tests.integration.harness import (
    auth,
    count_rows,
    create_key,
    create_source,
    eventually,
    provision_key,
    provision_source,
    running_server,
    server_settings,
)
from tests.integration.tcp_proxy import running_proxy
from tests.paths import CARRIER_FIXTURES
from webhookd.models import Carrier, Scope
from webhookd.store.availability import Availability
from webhookd.store.base import PageRequest
from webhookd.store.postgres import PostgresStore
from webhookd.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

PG_DSN = os.environ.get("WEBHOOKD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REFUSED = 40
"""Requests sent during each outage: far more than the log lines it may cost."""
TWILIO_TOKEN = orjson.loads((CARRIER_FIXTURES / "twilio" / "_signatures.json").read_bytes())["auth_token"]
SLACK = 10_000
"""Numbers of the events that fill what room a full disk leaves in SQLite's files."""
LOG_LINES_PER_OUTAGE = 4
"""The outage, the LISTEN connection lost and failing to come back (PostgreSQL), and one spare."""


@dataclass
class Client:
    """An HTTP client with one pooled connection, counting the connections it had to open."""

    http: aiohttp.ClientSession
    base: str
    key: str
    source_id: str
    opened: list[object]

    async def publish(self, n: int, idempotency_key: str | None = None) -> tuple[int, Any, Any]:
        body = {"type": "call.completed", "data": {"n": n}, "idempotency_key": idempotency_key or f"k{n}"}
        async with self.http.post(f"{self.base}/api/v1/events", headers=auth(self.key), json=body) as r:
            return r.status, r.headers, await r.json()

    async def ingest(self) -> tuple[int, Any, Any]:
        """A Twilio status callback, signed as Twilio signs it."""
        url = f"{self.base}/ingest/twilio/{self.source_id}"
        body = (CARRIER_FIXTURES / "twilio" / "01_initiated.form").read_bytes()
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(
            url, dict(parse_qsl(body.decode(), keep_blank_values=True))
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
        async with self.http.post(url, data=body, headers=headers) as r:
            return r.status, r.headers, await r.json()

    async def ready(self) -> int:
        async with self.http.get(f"{self.base}/readyz") as response:
            await response.read()
            return response.status


@contextlib.asynccontextmanager
async def client(base: str, key: str, source_id: str) -> AsyncIterator[Client]:
    opened: list[object] = []

    async def on_create(session: object, context: object, params: object) -> None:
        opened.append(params)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as http:
        yield Client(http, base, key, source_id, opened)


async def outage_round(
    c: Client,
    caplog: pytest.LogCaptureFixture,
    health: Availability,
    start: Callable[[], Awaitable[None]],
    end: Callable[[], Awaitable[None]],
    *,
    worker_refused: bool,
) -> None:
    """One publish before, ``REFUSED`` during and one after an outage, on one connection. With
    ``worker_refused``, the outage lasts until the delivery worker, polling every 50 ms, has been
    refused as often as the requests were (a claim that finds no work writes nothing, so under
    SQLite an idle worker goes on untroubled by a full disk)."""
    assert (await c.publish(0))[0] == 202
    caplog.clear()
    await start()
    for n in range(1, REFUSED + 1):
        # The publish fast path, and a carrier callback through the router and its handlers.
        status, headers, body = await (c.publish(n) if n % 4 else c.ingest())
        assert status == 503, (n, status, body)
        assert headers["Retry-After"] == "5"
        assert body["error"]["code"] == "storage_unavailable"
        assert "retry" in body["error"]["message"]
    assert await c.ready() == 503
    if worker_refused:
        await eventually(lambda: health.refusals >= 2 * REFUSED)
    during = list(caplog.records)
    await end()

    async def until_published() -> None:
        while (await c.publish(REFUSED + 1, "after"))[0] not in {200, 202}:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(until_published(), 20)
    assert await c.ready() == 200
    assert len(c.opened) == 1, "the server closed a kept-alive connection"
    assert len(during) <= LOG_LINES_PER_OUTAGE, [r.getMessage() for r in during]
    assert [r for r in during if r.exc_info] == []
    assert [r.action for r in during].count("store.unavailable") == 1  # type: ignore[attr-defined]
    assert [r.action for r in caplog.records].count("store.available") == 1  # type: ignore[attr-defined]


# -- SQLite: a disk that is really full ----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of this test's own; skipped where this process may not mount one."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        if exc.errno != 28:  # ENOSPC
            raise
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_answers_503_on_a_kept_alive_connection_and_recovers(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    db = small_disk / "w.db"
    key = await provision_key(db, "acme", {Scope.PUBLISH_EVENTS})
    source_id = await provision_source(db, "acme", Carrier.TWILIO, {"auth_token": TWILIO_TOKEN})
    store = SqliteStore(db)
    async with running_server(server_settings(db), store=store) as base, client(base, key, source_id) as c:
        fillers, taken = [], 0

        async def disk_full() -> None:
            nonlocal taken
            fillers.append(fill(small_disk))
            # A full disk still takes writes while SQLite's files have room inside: use it up.
            while (await c.publish(SLACK + taken))[0] == 202:
                taken += 1
                assert taken < 1000, "SQLite went on writing to a full disk"

        async def disk_freed() -> None:
            fillers.pop().unlink()

        await outage_round(c, caplog, store.health, disk_full, disk_freed, worker_refused=False)
    # Before, into the room left, and after: nothing of the refused requests was half-stored.
    assert count_rows(db, "events") == 1 + taken + 1


# -- PostgreSQL: the connection cut by a proxy ----------------------------------------------------


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A schema of this test's own, dropped afterwards."""
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        if os.environ.get("WEBHOOKD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here but did not answer: {exc}")
        pytest.skip(f"PostgreSQL is not available: {exc}")
    name = f"webhookd_outage_{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.close()


async def test_a_cut_postgresql_connection_answers_503_on_a_kept_alive_connection_and_recovers(
    pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    target = urlsplit(PG_DSN)
    direct = PostgresStore(PG_DSN, schema=pg_schema)
    await direct.open()
    try:
        key = await create_key(direct, "acme", {Scope.PUBLISH_EVENTS})
        source_id = await create_source(direct, "acme", Carrier.TWILIO, {"auth_token": TWILIO_TOKEN})
        async with running_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
            through = target._replace(netloc=f"{target.username or 'postgres'}@127.0.0.1:{proxy.port}")
            store = PostgresStore(through.geturl(), schema=pg_schema)
            settings = server_settings(tmp_path / "unused.db")
            async with running_server(settings, store=store) as base, client(base, key, source_id) as c:
                await outage_round(c, caplog, store.health, proxy.cut, proxy.restore, worker_refused=True)
        stored = await direct.list_events("acme", PageRequest(limit=100))
        assert len(stored.items) == 2  # before and after: nothing of the outage half-stored
    finally:
        await direct.close()
