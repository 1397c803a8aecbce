"""Backpressure over real HTTP: a full queue of SQLite writes answers publishes and carrier
callbacks 503 overloaded at once, losing nothing it accepted; too many connections are answered
503 at the door."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
import pytest
from twilio.request_validator import RequestValidator

from tests.integration.harness import (
    auth,
    eventually,
    provision_key,
    provision_source,
    query,
    running_server,
    server_settings,
)
from tests.paths import CARRIER_FIXTURES
from webhookd.models import Carrier, Scope
from webhookd.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

TWILIO_TOKEN = orjson.loads((CARRIER_FIXTURES / "twilio" / "_signatures.json").read_bytes())["auth_token"]
MAX_PENDING = 3
SENT = 8
"""Publishes sent while the writer is held: the first ``MAX_PENDING`` wait, the rest are refused."""


@contextlib.asynccontextmanager
async def held_writer(store: SqliteStore) -> AsyncIterator[None]:
    """The store's writer thread busy outside any transaction for the block's duration, so that
    writes queue up behind it."""
    assert store._writer is not None  # private: the test needs the thread itself held
    release, busy = threading.Event(), threading.Event()

    def block(conn: object) -> None:
        busy.set()
        release.wait(30)

    blocker = asyncio.ensure_future(store._writer.call(block))
    try:
        await eventually(busy.is_set)
        yield
    finally:
        release.set()
        await blocker


async def publish(http: aiohttp.ClientSession, base: str, key: str, n: int) -> tuple[int, Any, Any]:
    body = {"type": "call.completed", "data": {"n": n}, "idempotency_key": f"bp-{n}"}
    async with http.post(f"{base}/api/v1/events", headers=auth(key), json=body) as r:
        return r.status, r.headers, await r.json()


async def twilio_callback(http: aiohttp.ClientSession, base: str, source_id: str) -> tuple[int, Any, Any]:
    url = f"{base}/ingest/twilio/{source_id}"
    body = (CARRIER_FIXTURES / "twilio" / "01_initiated.form").read_bytes()
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        url, dict(parse_qsl(body.decode(), keep_blank_values=True))
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
    async with http.post(url, data=body, headers=headers) as r:
        return r.status, r.headers, await r.json()


def assert_overloaded(answer: tuple[int, Any, Any]) -> None:
    status, headers, body = answer
    assert status == 503, answer
    assert headers["Retry-After"] == "1"
    assert body["error"]["code"] == "overloaded"
    assert "retry" in body["error"]["message"]


async def test_a_full_write_queue_answers_503_overloaded_and_loses_nothing_it_accepted(
    tmp_path: Path,
) -> None:
    db = tmp_path / "b.db"
    key = await provision_key(db, "acme", {Scope.PUBLISH_EVENTS})
    source_id = await provision_source(db, "acme", Carrier.TWILIO, {"auth_token": TWILIO_TOKEN})
    store = SqliteStore(db, max_pending_writes=MAX_PENDING)
    settings = server_settings(db)
    # No workers: their heartbeats and claims queue for the writer too, and would take the slots
    # whose count this test pins down.
    async with (
        running_server(settings, store=store, run_workers=False) as base,
        aiohttp.ClientSession() as http,
    ):
        # The key's first use is recorded by a write of its own (at most once a minute): let it land
        # before the writer is held, or it would take one of the slots counted below.
        warm_up = {"type": "call.completed", "data": {}, "idempotency_key": "warm-up"}
        async with http.post(f"{base}/api/v1/events", headers=auth(key), json=warm_up) as response:
            assert response.status == 202
        await eventually(lambda: query(db, "SELECT count(last_used_at) FROM api_keys") == [(1,)])
        async with held_writer(store):
            sent = [asyncio.ensure_future(publish(http, base, key, n)) for n in range(SENT)]
            await eventually(lambda: sum(task.done() for task in sent) == SENT - MAX_PENDING)
            refused = [task.result() for task in sent if task.done()]
            for answer in refused:
                assert_overloaded(answer)
            assert_overloaded(await twilio_callback(http, base, source_id))
            assert sum(not task.done() for task in sent) == MAX_PENDING  # waiting for their commit
        answers = await asyncio.gather(*sent)
        after = [await publish(http, base, key, n) for n in range(SENT, SENT + 3)]
        callback_status, _, _ = await twilio_callback(http, base, source_id)

    accepted = {body["idempotency_key"] for status, _, body in answers + after if status == 202}
    assert len(accepted) == MAX_PENDING + 3
    assert all(status in {202, 503} for status, _, _ in answers)
    assert callback_status == 200
    stored = {
        row[0] for row in query(db, "SELECT idempotency_key FROM events WHERE idempotency_key LIKE 'bp-%'")
    }
    assert stored == accepted


async def test_connections_past_the_limit_are_answered_503_until_one_closes(tmp_path: Path) -> None:
    settings = server_settings(tmp_path / "c.db", WEBHOOKD_MAX_CONNECTIONS="2")
    async with running_server(settings) as base, aiohttp.ClientSession() as http:
        # One connection of its own, answered (so the server holds it), then left open and idle.
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")

        async with http.get(f"{base}/healthz") as refused:
            assert refused.status == 503

        writer.close()
        await writer.wait_closed()
        statuses: list[int] = []

        async def healthz() -> None:
            async with http.get(f"{base}/healthz") as response:
                statuses.append(response.status)

        async def until_served() -> None:  # the server hears of the close in its own time
            while not statuses or statuses[-1] != 200:
                await healthz()
                await asyncio.sleep(0.02)

        await asyncio.wait_for(until_served(), 10)
