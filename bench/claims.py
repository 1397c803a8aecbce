"""(g) Claim cost: one claim of ``CLAIM_LIMIT`` against a small and a big backlog, SQLite and PostgreSQL.

Each backlog is built with a few INSERT ... SELECT statements straight into a migrated database:
``SUBSCRIPTIONS`` subscriptions of one customer, and ``size / SUBSCRIPTIONS`` events each fanned out
to every subscription, all pending and due (the deepest backlog a claim can face). The claims are the
store's own ``claim_deliveries``, as a worker calls it, in this process; each claimed batch is given
back untimed, so every timed claim faces the same backlog. PostgreSQL's tables are ANALYZEd after
the build, as autovacuum would have done while such a backlog grew; SQLite's are left as webhookd
leaves them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import load, payloads, postgres, procs
from bench.config import BenchConfig
from webhookd.config import Settings
from webhookd.models import Subscription, new_id, utcnow
from webhookd.store.base import Store
from webhookd.store.postgres import PostgresStore
from webhookd.store.scheduling import ClaimRequest
from webhookd.store.sqlite import SqliteStore

CUSTOMER = "bench"
SUBSCRIPTIONS = 100
CLAIM_LIMIT = 100
WARMUP_CLAIMS = 5
BACKLOG_SPAN_S = 3600.0
"""The backlog's due times spread over the hour before the build."""

_SQLITE_BUILD = [
    """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :events)
    INSERT INTO events (id, customer_id, type, payload, created_at)
    SELECT printf('evt_bench%010d', i), :customer, 'call.completed', :payload, :t0 + i * :step FROM n""",
    """INSERT INTO deliveries (id, event_id, subscription_id, customer_id, status, attempts,
        next_attempt_at, created_at, updated_at)
    SELECT printf('dlv_bench%010d_%s', e.seq, s.id), e.id, s.id, :customer, 'pending', 0,
        e.created_at, e.created_at, e.created_at
    FROM events AS e CROSS JOIN subscriptions AS s ORDER BY e.seq, s.id""",
]

_POSTGRES_BUILD = [
    """INSERT INTO events (id, customer_id, type, payload, created_at)
    SELECT 'evt_bench' || lpad(i::text, 10, '0'), $1, 'call.completed', convert_to($2, 'UTF8'),
           to_timestamp($3 + i * $4)
    FROM generate_series(1, $5::integer) AS i""",
    """INSERT INTO deliveries (id, event_id, subscription_id, customer_id, status, attempts,
        next_attempt_at, created_at, updated_at)
    SELECT 'dlv_' || e.id || '_' || s.id, e.id, s.id, $1, 'pending', 0, e.created_at, e.created_at,
           e.created_at
    FROM events AS e CROSS JOIN subscriptions AS s ORDER BY e.created_at, s.id""",
    "ANALYZE",
]


def _subscription(n: int) -> Subscription:
    sub_id = new_id("sub")
    return Subscription(
        id=sub_id,
        customer_id=CUSTOMER,
        url=f"http://127.0.0.1:9/claims/{n}",
        events=(payloads.EVENT_TYPE,),
        description=None,
        secret=b"bench-ciphertext:" + sub_id.encode(),  # claims hand it out; nothing decrypts it here
        is_active=True,
        created_at=utcnow(),
    )


async def _subscribe(store: Store) -> None:
    await store.ensure_customer(CUSTOMER)
    for n in range(SUBSCRIPTIONS):
        await store.create_subscription(_subscription(n))


def _build_params(size: int) -> dict[str, Any]:
    events = size // SUBSCRIPTIONS
    payload = orjson.dumps(payloads.envelope("evt_bench", CUSTOMER, payloads.call_data(0))).decode()
    t0 = time.time() - BACKLOG_SPAN_S
    return {
        "customer": CUSTOMER,
        "events": events,
        "payload": payload,
        "t0": t0,
        "step": BACKLOG_SPAN_S / events,
    }


def _build_sqlite(path: Path, size: int) -> None:
    params = _build_params(size)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for sql in _SQLITE_BUILD:
            conn.execute(sql, params)


async def _build_postgres(schema: postgres.PgSchema, size: int) -> None:
    p = _build_params(size)
    arguments = [(p["customer"], p["payload"], p["t0"], p["step"], p["events"]), (p["customer"],), ()]
    await schema.execute(_POSTGRES_BUILD, arguments)


async def _timed_claims(store: Store, rounds: int) -> list[float]:
    """``WARMUP_CLAIMS`` untimed, then ``rounds`` timed claims, each given back before the next."""
    worker = new_id("wkr")
    await store.register_worker(worker, utcnow())
    cap = Settings.from_env(os.environ).max_in_flight_per_subscription
    took: list[float] = []
    for n in range(WARMUP_CLAIMS + rounds):
        began = time.perf_counter()
        jobs = await store.claim_deliveries(ClaimRequest(worker, CLAIM_LIMIT, cap, datetime.now(UTC)))
        elapsed = time.perf_counter() - began
        if len(jobs) != CLAIM_LIMIT:
            raise RuntimeError(f"a claim of {CLAIM_LIMIT} took {len(jobs)} from a full backlog")
        await store.release_deliveries([(job.delivery_id, job.attempt_no) for job in jobs])
        if n >= WARMUP_CLAIMS:
            took.append(elapsed)
    await store.retire_worker(worker)
    return took


@contextlib.asynccontextmanager
async def _opened(store: Store) -> AsyncIterator[Store]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _sqlite(workdir: Path, size: int, rounds: int) -> tuple[float, list[float]]:
    path = workdir / f"claims-{size}.db"
    async with _opened(SqliteStore(path)) as store:
        await _subscribe(store)
    began = time.monotonic()
    _build_sqlite(path, size)
    built_s = time.monotonic() - began
    async with _opened(SqliteStore(path)) as store:
        return built_s, await _timed_claims(store, rounds)


async def _postgres(dsn: str, size: int, rounds: int) -> tuple[float, list[float]]:
    with postgres.fresh_schema(dsn) as schema:
        async with _opened(PostgresStore(schema.dsn, schema=schema.name)) as store:
            await _subscribe(store)
            began = time.monotonic()
            await _build_postgres(schema, size)
            built_s = time.monotonic() - began
            return built_s, await _timed_claims(store, rounds)


async def _measure(cfg: BenchConfig, workdir: Path, name: str, size: int) -> dict[str, Any]:
    if name == "sqlite":
        built_s, took = await _sqlite(workdir, size, cfg.claims_rounds)
    else:
        built_s, took = await _postgres(cfg.postgres_dsn, size, cfg.claims_rounds)
    result = {
        "size": size,
        "build_s": round(built_s, 1),
        "claims": len(took),
        **load.latency_summary_ms(took),
    }
    procs.log(
        f"claims: {name} {size:,} pending: built in {result['build_s']}s; claim of {CLAIM_LIMIT}"
        f" p50 {result['p50_ms']}ms p99 {result['p99_ms']}ms ({len(took)} claims)"
    )
    return result


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in ("sqlite", "postgres"):
        small, big = [await _measure(cfg, workdir, name, size) for size in cfg.claims_sizes]
        results[name] = {
            "small": small,
            "big": big,
            "p50_ratio": round(big["p50_ms"] / small["p50_ms"], 2),
            "p99_ratio": round(big["p99_ms"] / small["p99_ms"], 2),
        }
    return {"subscriptions": SUBSCRIPTIONS, "claim_limit": CLAIM_LIMIT, "stores": results}
