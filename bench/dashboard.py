"""(h) Dashboard pages: how fast each answers with 100,000 deliveries in the store.

The store is built straight in a migrated SQLite database, as the claims benchmark builds its
backlog: one customer, ``SUBSCRIPTIONS`` subscriptions, events spread over the ``SPAN_S`` before the
build, each fanned out to every subscription; one delivery in ``FAILED_EVERY`` failed after three
attempts answered 500, the others delivered at the first. Then a real ``webhookd serve`` (no
workers), a sign-in through a ``webhookd dashboard-link``, and each page fetched back to back, one at
a time: the subscriptions list, one subscription's first page and its failed-only page, one
delivery, and the Events and Calls pages where this webhookd has them.
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import load, payloads, procs, provision
from bench.config import BenchConfig
from webhookd.crypto import SecretBox, new_webhook_secret, subscription_secret_context
from webhookd.models import Subscription, new_id, utcnow
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

# Ids are a prefix and 26 Crockford base32 characters: zero-padded decimal numbers are such ids.
_BUILD = [
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
    "ANALYZE",
]


def _subscription(box: SecretBox, n: int) -> Subscription:
    sub_id = new_id("sub")
    secret = box.encrypt(new_webhook_secret().encode(), subscription_secret_context(sub_id))
    return Subscription(
        sub_id,
        CUSTOMER,
        f"http://127.0.0.1:9/dashboard/{n}",
        (payloads.EVENT_TYPE,),
        None,
        secret,
        True,
        utcnow(),
    )


async def _subscribe(path: Path, master_key: bytes) -> None:
    store = SqliteStore(path)
    await store.open()
    try:
        await store.ensure_customer(CUSTOMER)
        for n in range(SUBSCRIPTIONS):
            await store.create_subscription(_subscription(SecretBox(master_key), n))
    finally:
        await store.close()


def _build(path: Path, deliveries: int) -> None:
    events = deliveries // SUBSCRIPTIONS
    payload = orjson.dumps(payloads.envelope("evt_bench", CUSTOMER, payloads.call_data(0))).decode()
    params = {
        "customer": CUSTOMER,
        "events": events,
        "payload": payload,
        "t0": time.time() - SPAN_S,
        "step": SPAN_S / events,
        "failed_every": FAILED_EVERY,
        "failed_attempts": FAILED_ATTEMPTS,
    }
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for sql in _BUILD:
            conn.execute(sql, {k: v for k, v in params.items() if f":{k}" in sql})


def _targets(path: Path) -> dict[str, str]:
    """The pages to time, by name: one subscription, and its newest failed delivery."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        sub_id = conn.execute("SELECT id FROM subscriptions ORDER BY id LIMIT 1").fetchone()[0]
        delivery_id = conn.execute(
            "SELECT id FROM deliveries WHERE subscription_id = ? AND status = 'failed'"
            " ORDER BY created_at DESC LIMIT 1",
            (sub_id,),
        ).fetchone()[0]
    sub_page = f"/dashboard/subscriptions/{sub_id}"
    return {
        "subscriptions": "/dashboard",
        "subscription": sub_page,
        "subscription, failed only": f"{sub_page}?status=failed",
        "delivery": f"/dashboard/deliveries/{delivery_id}",
        **OPTIONAL_PAGES,
    }


async def _signed_in(wh: provision.Webhookd) -> aiohttp.ClientSession:
    """A client holding a dashboard session, signed in as an operator's link does."""
    cmd = procs.python_module("webhookd", "dashboard-link", "--customer", CUSTOMER)
    link = procs.run_cli(cmd, wh.env).strip()
    # unsafe: the jar keeps cookies of a host given as an IP address (127.0.0.1).
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.get(link) as response:
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


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    wh = provision.new_webhookd(workdir)
    db = workdir / "bench.db"
    await _subscribe(db, base64.b64decode(wh.env["WEBHOOKD_MASTER_KEY"]))
    began = time.monotonic()
    _build(db, cfg.dashboard_deliveries)
    build_s = round(time.monotonic() - began, 1)
    procs.log(f"dashboard: built {cfg.dashboard_deliveries:,} deliveries in {build_s}s")
    pages: dict[str, Any] = {}
    async with provision.serving(wh, workers=False, log_name="dashboard-webhookd"):
        session = await _signed_in(wh)
        try:
            for name, path in _targets(db).items():
                timed = await _time(session, wh.base_url + path, cfg.dashboard_requests)
                if timed is None:
                    procs.log(f"dashboard: {name}: no such page here, skipped")
                    continue
                pages[name] = timed
                procs.log(f"dashboard: {name}: p50 {timed['p50_ms']}ms p99 {timed['p99_ms']}ms")
        finally:
            await session.close()
    return {
        "deliveries": cfg.dashboard_deliveries,
        "subscriptions": SUBSCRIPTIONS,
        "build_s": build_s,
        "pages": pages,
    }
