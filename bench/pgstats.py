"""What PostgreSQL itself counted during a benchmark phase: commits, and statements by kind."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg

STATS_SETTLE_S = 5.0
TOP_STATEMENTS = 8

# The first words of each statement a worker's claim runs (webhookd/store/postgres/outbox.py): the ring
# walk over subscriptions with due work, one subscription's claim, the probes, the claimed jobs' details,
# and a paced subscription's slot. Matched on the statement's text as pg_stat_statements keeps it.
CLAIM_STATEMENTS = (
    "WITH RECURSIVE ring",
    "WITH room AS",
    "WITH due AS MATERIALIZED",
    "SELECT d.id, d.event_id",
    "SELECT next_send_at FROM subscriptions",
    "UPDATE subscriptions SET next_send_at",
)


async def _fetchval(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def commits(dsn: str) -> int:
    """Transactions committed in the database so far (all sessions)."""
    count: int = await _fetchval(
        dsn, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    return count


async def settled_commits(dsn: str) -> int:
    """``commits``, once the figure stops growing: the statistics collector reports a session's counts
    when it goes idle or ends, so poll until it is still rather than guess a delay."""
    deadline, last = time.monotonic() + STATS_SETTLE_S, await commits(dsn)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        latest = await commits(dsn)
        if latest == last:
            break
        last = latest
    return last


async def reset_statements(dsn: str) -> bool:
    """Start counting statements afresh; False when the server does not load pg_stat_statements (the
    bench's own cluster does; a given server may not)."""
    conn = await asyncpg.connect(dsn)
    try:
        loaded = await conn.fetchval(
            "SELECT 'pg_stat_statements' = ANY(string_to_array(current_setting("
            "'shared_preload_libraries'), ', '))"
        )
        if not loaded:
            return False
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
        return True
    finally:
        await conn.close()


async def statements_per_event(dsn: str, events: int) -> dict[str, Any]:
    """Statements the database ran since ``reset_statements``, per ``events``: all of them, the claims'
    (``CLAIM_STATEMENTS``), and the most frequent few by their first words."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT query, calls FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    finally:
        await conn.close()
    calls: Counter[str] = Counter()
    for query, count in rows:
        calls[" ".join(query.split())[:60]] += count
    claim = sum(n for text, n in calls.items() if text.startswith(CLAIM_STATEMENTS))
    return {
        "all": round(sum(calls.values()) / events, 3),
        "claim": round(claim / events, 3),
        "top": {text: round(n / events, 3) for text, n in calls.most_common(TOP_STATEMENTS)},
    }
