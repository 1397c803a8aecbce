"""(h) Dashboard pages: how fast each answers with 100,000 deliveries in the store, on SQLite and
on PostgreSQL.

The store is built straight in a migrated database, as the claims benchmark builds its backlog
(and vacuumed and analyzed, as autovacuum would have done): one customer, ``SUBSCRIPTIONS`` subscriptions, and
events spread over the ``SPAN_S`` before the build, each fanned out to every subscription; one
delivery in ``FAILED_EVERY`` failed after three attempts answered 500, the others were delivered at
the first. Then a real ``webhookd serve`` (no workers), a sign-in through a ``webhookd
dashboard-link``, and each page fetched back to back, one at a time: the subscriptions list, one
subscription's first page and its failed-only page, one delivery, and the Events and Calls pages
where this webhookd has them, and one call's timeline. The subscription, the delivery and the call are
the first each page links to. Every ``CALL_EVENTS`` events are one call's, each from a callback, and
each call has one late callback more.
"""

from __future__ import annotations

import base64
import contextlib
import re
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import load, payloads, postgres, procs, provision
from bench.config import BenchConfig
from webhookd.crypto import SecretBox, new_webhook_secret, subscription_secret_context
from webhookd.models import Subscription, new_id, utcnow
from webhookd.store.base import Store
from webhookd.store.postgres import PostgresStore
from webhookd.store.sqlite import SqliteStore

CUSTOMER = "bench"
SUBSCRIPTIONS = 4
SPAN_S = 2 * 86_400.0
"""The deliveries' creation times spread over the two days before the build: half of them in the
subscriptions list's 24-hour window."""
FAILED_EVERY = 20
FAILED_ATTEMPTS = 3
WARMUP = 5
OPTIONAL_PAGES = {"events": "/dashboard/events", "calls": "/dashboard/calls"}
"""Pages timed only where this webhookd serves them."""

CALL_EVENTS = 4
"""Events per call, each from a callback of its own; and each call has one late callback, which
produced none."""
CALL_STATE = '{"rank": 3, "terminal": "call.completed"}'
_LATE_CALLBACKS = """INSERT INTO call_callbacks (customer_id, idempotency_key, carrier, call_id, status_raw,
    received_at)
SELECT customer_id, 'late_' || call_id, carrier, call_id, 'ringing', updated_at FROM calls"""

# Ids are a prefix and 26 Crockford base32 characters: zero-padded decimal numbers are such ids.
_SQLITE_BUILD = [
    """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :events)
    INSERT INTO events (id, customer_id, type, payload, created_at)
    SELECT printf('evt_%026d', i), :customer, 'call.completed', :payload, :t0 + i * :step FROM n""",
    """INSERT INTO deliveries (id, event_id, subscription_id, customer_id, status, attempts,
        last_status, created_at, updated_at, delivered_at)
    SELECT printf('dlv_%026d', e.seq * 10 + s.rowid), e.id, s.id, :customer,
        CASE WHEN e.seq % :failed_every = 0 THEN 'failed' ELSE 'delivered' END,
        CASE WHEN e.seq % :failed_every = 0 THEN :failed_attempts ELSE 1 END,
        CASE WHEN e.seq % :failed_every = 0 THEN 500 ELSE 200 END,
        e.created_at, e.created_at + 1,
        CASE WHEN e.seq % :failed_every = 0 THEN NULL ELSE e.created_at + 0.05 END
    FROM events AS e CROSS JOIN subscriptions AS s ORDER BY e.seq, s.id""",
    """WITH RECURSIVE n(no) AS (SELECT 1 UNION ALL SELECT no + 1 FROM n WHERE no < :failed_attempts)
    INSERT INTO attempts (delivery_id, subscription_id, attempt_no, started_at, duration_s, status_code,
        error, response_excerpt, succeeded)
    SELECT d.id, d.subscription_id, n.no, d.created_at + (n.no - 1) * 0.3, 0.05,
        CASE WHEN d.status = 'failed' THEN 500 ELSE 200 END, NULL,
        CASE WHEN d.status = 'failed' THEN CAST('upstream error' AS BLOB) ELSE CAST('ok' AS BLOB) END,
        d.status = 'delivered'
    FROM deliveries AS d JOIN n ON n.no <= d.attempts ORDER BY d.seq, n.no""",
    """INSERT INTO calls (customer_id, carrier, call_id, state, updated_at)
    SELECT :customer, 'twilio', printf('CA%032d', (seq - 1) / :call_events), :state, max(created_at)
    FROM events GROUP BY 3""",
    """INSERT INTO call_callbacks (customer_id, idempotency_key, carrier, call_id, status_raw, received_at,
        event_id)
    SELECT :customer, 'cb_' || id, 'twilio', printf('CA%032d', (seq - 1) / :call_events), 'completed',
        created_at, id
    FROM events""",
    _LATE_CALLBACKS,
    "ANALYZE",
]


_POSTGRES_BUILD = [
    """INSERT INTO events (id, customer_id, type, payload, created_at)
    SELECT 'evt_' || lpad(i::text, 26, '0'), $1, 'call.completed', convert_to($2, 'UTF8'),
        to_timestamp($3 + i * $4)
    FROM generate_series(1, $5::integer) AS i""",
    """INSERT INTO deliveries (id, event_id, subscription_id, customer_id, status, attempts,
        last_status, created_at, updated_at, delivered_at)
    SELECT 'dlv_' || lpad((e.n * 10 + s.n)::text, 26, '0'), e.id, s.id, $1,
        CASE WHEN e.n % $2 = 0 THEN 'failed' ELSE 'delivered' END,
        CASE WHEN e.n % $2 = 0 THEN $3 ELSE 1 END,
        CASE WHEN e.n % $2 = 0 THEN 500 ELSE 200 END,
        e.created_at, e.created_at + interval '1 second',
        CASE WHEN e.n % $2 = 0 THEN NULL ELSE e.created_at + interval '50 milliseconds' END
    FROM (SELECT id, created_at, substr(id, 5)::bigint AS n FROM events) AS e
    CROSS JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM subscriptions) AS s
    ORDER BY e.n, s.n""",
    """INSERT INTO attempts (delivery_id, subscription_id, attempt_no, started_at, duration_s, status_code,
        error, response_excerpt, succeeded)
    SELECT d.id, d.subscription_id, n.no, d.created_at + (n.no - 1) * interval '300 milliseconds', 0.05,
        CASE WHEN d.status = 'failed' THEN 500 ELSE 200 END, NULL,
        convert_to(CASE WHEN d.status = 'failed' THEN 'upstream error' ELSE 'ok' END, 'UTF8'),
        d.status = 'delivered'
    FROM deliveries AS d JOIN generate_series(1, $1::integer) AS n(no) ON n.no <= d.attempts
    ORDER BY d.id, n.no""",
    """INSERT INTO calls (customer_id, carrier, call_id, state, updated_at)
    SELECT $1, 'twilio', 'CA' || lpad(((substr(id, 5)::bigint - 1) / $2)::text, 32, '0'), $3::jsonb,
        max(created_at)
    FROM events GROUP BY 3""",
    """INSERT INTO call_callbacks (customer_id, idempotency_key, carrier, call_id, status_raw, received_at,
        event_id)
    SELECT $1, 'cb_' || id, 'twilio', 'CA' || lpad(((substr(id, 5)::bigint - 1) / $2)::text, 32, '0'),
        'completed', created_at, id
    FROM events""",
    _LATE_CALLBACKS,
    "VACUUM ANALYZE",
]


def _subscription(box: SecretBox, n: int) -> Subscription:
    sub_id = new_id("sub")
    secret = box.encrypt(new_webhook_secret().encode(), subscription_secret_context(sub_id))
    url = f"http://127.0.0.1:9/dashboard/{n}"
    return Subscription(sub_id, CUSTOMER, url, (payloads.EVENT_TYPE,), None, secret, True, utcnow())


async def _subscribe(store: Store, master_key: bytes) -> None:
    """The customer and its subscriptions, through the store (which migrates the database first)."""
    await store.open()
    try:
        await store.ensure_customer(CUSTOMER)
        for n in range(SUBSCRIPTIONS):
            await store.create_subscription(_subscription(SecretBox(master_key), n))
    finally:
        await store.close()


def _build_params(deliveries: int) -> dict[str, Any]:
    events = deliveries // SUBSCRIPTIONS
    payload = orjson.dumps(payloads.envelope("evt_bench", CUSTOMER, payloads.call_data(0))).decode()
    return {
        "customer": CUSTOMER,
        "events": events,
        "payload": payload,
        "t0": time.time() - SPAN_S,
        "step": SPAN_S / events,
        "failed_every": FAILED_EVERY,
        "failed_attempts": FAILED_ATTEMPTS,
        "call_events": CALL_EVENTS,
        "state": CALL_STATE,
    }


def _build_sqlite(path: Path, deliveries: int) -> None:
    params = _build_params(deliveries)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for sql in _SQLITE_BUILD:
            conn.execute(sql, {k: v for k, v in params.items() if f":{k}" in sql})


async def _build_postgres(schema: postgres.PgSchema, deliveries: int) -> None:
    p = _build_params(deliveries)
    arguments = [
        (p["customer"], p["payload"], p["t0"], p["step"], p["events"]),
        (p["customer"], p["failed_every"], p["failed_attempts"]),
        (p["failed_attempts"],),
        (p["customer"], p["call_events"], p["state"]),
        (p["customer"], p["call_events"]),
        (),
        (),
    ]
    await schema.execute(_POSTGRES_BUILD, arguments)


@contextlib.asynccontextmanager
async def _built(
    name: str, workdir: Path, deliveries: int, dsn: str
) -> AsyncIterator[tuple[provision.Webhookd, float]]:
    """A webhookd installation on ``name``'s store (PostgreSQL's at ``dsn``) holding ``deliveries``,
    and the build's seconds."""
    with contextlib.ExitStack() as stack:
        if name == "sqlite":
            wh = provision.new_webhookd(workdir)
            store: Store = SqliteStore(workdir / "bench.db")
        else:
            schema = stack.enter_context(postgres.fresh_schema(dsn))
            wh = provision.new_webhookd(workdir, WEBHOOKD_DATABASE_URL=schema.database_url)
            store = PostgresStore(schema.dsn, schema=schema.name)
        await _subscribe(store, base64.b64decode(wh.env["WEBHOOKD_MASTER_KEY"]))
        began = time.monotonic()
        if name == "sqlite":
            _build_sqlite(workdir / "bench.db", deliveries)
        else:
            await _build_postgres(schema, deliveries)
        yield wh, round(time.monotonic() - began, 1)


async def _signed_in(wh: provision.Webhookd) -> aiohttp.ClientSession:
    """A client holding a dashboard session, signed in as an operator's link does."""
    cmd = procs.python_module("webhookd", "dashboard-link", "--customer", CUSTOMER)
    link = procs.run_cli(cmd, wh.env).strip()
    # unsafe: the jar keeps cookies of a host given as an IP address (127.0.0.1).
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    # The link's page redeems nothing on GET; its Open dashboard button POSTs the token.
    login, _, query = link.partition("?")
    async with session.post(login, data=dict(urllib.parse.parse_qsl(query))) as response:
        if response.status != 200 or response.url.path != "/dashboard":
            await session.close()
            raise RuntimeError(f"signing in answered {response.status} at {response.url}")
    return session


async def _time(session: aiohttp.ClientSession, url: str, requests: int) -> dict[str, Any] | None:
    """``requests`` GETs of ``url`` one after another; ``None`` if this webhookd has no such page."""
    took: list[float] = []
    for n in range(WARMUP + requests):
        began = time.perf_counter()
        async with session.get(url, allow_redirects=False) as response:
            body = await response.read()
        elapsed = time.perf_counter() - began
        if response.status == 404 and n == 0:
            return None
        if response.status != 200:
            raise RuntimeError(f"GET {url} answered {response.status}: {body[:300]!r}")
        if n >= WARMUP:
            took.append(elapsed)
    return {"requests": len(took), "bytes": len(body), **load.latency_summary_ms(took)}


async def _first_link(
    session: aiohttp.ClientSession, url: str, kind: str, ref: str = "[a-z]+_[0-9A-Z]+"
) -> str:
    """The first link to a ``kind`` page (``subscriptions``, ``deliveries``) on the page at ``url``,
    whose reference matches ``ref`` (an id unless told)."""
    async with session.get(url) as response:
        page = await response.text()
    found = re.search(rf'href="(/dashboard/{kind}/{ref})"', page)
    if found is None:
        raise RuntimeError(f"no link to {kind} on {url}")
    return found.group(1)


async def _targets(session: aiohttp.ClientSession, base_url: str) -> dict[str, str]:
    """The pages to time, by name: the first subscription listed, and its newest failed delivery."""
    sub_page = await _first_link(session, base_url + "/dashboard", "subscriptions")
    failed = f"{sub_page}?status=failed"
    return {
        "subscriptions": "/dashboard",
        "subscription": sub_page,
        "subscription, failed only": failed,
        "delivery": await _first_link(session, base_url + failed, "deliveries"),
        **OPTIONAL_PAGES,
        "call": await _first_link(session, base_url + OPTIONAL_PAGES["calls"], "calls", "twilio:CA[0-9]+"),
    }


async def _pages(wh: provision.Webhookd, name: str, requests: int) -> dict[str, Any]:
    pages: dict[str, Any] = {}
    async with provision.serving(wh, workers=False, log_name=f"dashboard-{name}-webhookd"):
        session = await _signed_in(wh)
        try:
            for page, path in (await _targets(session, wh.base_url)).items():
                timed = await _time(session, wh.base_url + path, requests)
                if timed is None:
                    procs.log(f"dashboard: {name} {page}: no such page here, skipped")
                    continue
                pages[page] = timed
                procs.log(f"dashboard: {name} {page}: p50 {timed['p50_ms']}ms p99 {timed['p99_ms']}ms")
        finally:
            await session.close()
    return pages


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    stores: dict[str, Any] = {}
    for name in cfg.dashboard_stores:
        (workdir / name).mkdir()
        async with _built(name, workdir / name, cfg.dashboard_deliveries, cfg.postgres_dsn) as (wh, build_s):
            procs.log(f"dashboard: {name}: built {cfg.dashboard_deliveries:,} deliveries in {build_s}s")
            stores[name] = {"build_s": build_s, "pages": await _pages(wh, name, cfg.dashboard_requests)}
    return {"deliveries": cfg.dashboard_deliveries, "subscriptions": SUBSCRIPTIONS, "stores": stores}
