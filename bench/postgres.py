"""(d) PostgreSQL: draining a backlog with one and with two ``webhookd worker`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from bench import procs, provision, receiving
from bench.config import BenchConfig
from bench.delivery import drain_timeout_s, publish_backlog, timing

DSN = os.environ.get("WEBHOOKD_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
WORKER_COUNTS = (1, 2)
STATS_SETTLE_S = 5.0


async def execute_in(schema: str, statements: Sequence[str], arguments: Sequence[tuple[Any, ...]]) -> None:
    """Run ``statements``, each with its ``arguments``, in ``schema`` on one connection."""
    conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
    try:
        for sql, args in zip(statements, arguments, strict=True):
            await conn.execute(sql, *args)
    finally:
        await conn.close()


def _psql(sql: str) -> None:
    subprocess.run(["psql", DSN, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A fresh schema for one run, dropped afterwards."""
    name = f"webhookd_bench_{secrets.token_hex(4)}"
    _psql(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        _psql(f"DROP SCHEMA {name} CASCADE")


async def commits() -> int:
    """Transactions committed in the database so far (all sessions): the publish phase's count is
    the difference around it, which includes the few of the API node's setup and the bench's reads."""
    conn = await asyncpg.connect(DSN)
    try:
        count: int = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return count


async def publish_counting_commits(cfg: BenchConfig, wh: provision.Webhookd, hook_url: str) -> dict[str, Any]:
    """``publish_backlog``, with the commits per published event it took."""
    before = await commits()
    publish = await publish_backlog(cfg, wh, hook_url)
    # The statistics collector reports a session's counts when it goes idle or ends (the API node
    # has stopped by now); poll until the figure stops growing rather than guess a delay.
    deadline, after = time.monotonic() + STATS_SETTLE_S, await commits()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        latest = await commits()
        if latest == after:
            break
        after = latest
    publish["commits_per_event"] = round((after - before) / publish["ok"], 3) if publish["ok"] else None
    return publish


async def _sqlite_publish(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    """The same backlog published into SQLite, in the same run: the yardstick of the PostgreSQL rate."""
    workdir.mkdir()
    wh = provision.new_webhookd(workdir)
    async with receiving.running_receiver(workdir, "pg-receiver-sqlite") as receiver:
        return await publish_backlog(cfg, wh, receiver.hook_url)


async def _drain(cfg: BenchConfig, workdir: Path, workers: int) -> dict[str, Any]:
    workdir.mkdir()
    with fresh_schema() as schema:
        # asyncpg passes unknown URL parameters to the server as settings: the run's own schema.
        wh = provision.new_webhookd(workdir, WEBHOOKD_DATABASE_URL=f"{DSN}?search_path={schema}")
        async with receiving.running_receiver(workdir, f"pg-receiver-{workers}") as receiver:
            publish = await publish_counting_commits(cfg, wh, receiver.hook_url)
            started_at = time.time()
            env = {**wh.env, "WEBHOOKD_WORKER_CONCURRENCY": str(cfg.concurrency)}
            cmd = procs.python_module("webhookd", "worker")
            running = [
                procs.start(f"worker {n}", cmd, env, workdir / f"worker-{n}.log") for n in range(workers)
            ]
            try:
                found = await receiving.wait_for_distinct(
                    receiver, cfg.delivery_events, drain_timeout_s(cfg.delivery_events)
                )
            finally:
                for proc in running:
                    await procs.stop_async(proc)
    result = {**timing(started_at, found), "workers": workers, "publish": publish}
    procs.log(
        f"postgres: {workers} worker(s): {result['received_distinct']} received, first->last"
        f" {result['drain_s']}s ({result['drain_rate_per_s']}/s), duplicates {result['duplicates']}"
    )
    return result


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    runs = {str(n): await _drain(cfg, workdir / f"workers-{n}", n) for n in WORKER_COUNTS}
    sqlite = await _sqlite_publish(cfg, workdir / "sqlite-publish")
    one, two = runs["1"]["drain_rate_per_s"], runs["2"]["drain_rate_per_s"]
    pg_publish = sum(run["publish"]["rate_per_s"] for run in runs.values()) / len(runs)
    return {
        "events": cfg.delivery_events,
        "concurrency": cfg.concurrency,
        "runs": runs,
        "scaling": round(two / one, 3) if one and two else None,
        "sqlite_publish": sqlite,
        "publish_ratio": round(pg_publish / sqlite["rate_per_s"], 3) if sqlite["rate_per_s"] else None,
    }
