"""(d) PostgreSQL: draining a backlog with 1, 2, ... ``webhookd worker`` processes on one database, with
each kind of process's CPU share: the workers, the receiver and PostgreSQL's backends."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench import procs, provision, receiving
from bench.config import BenchConfig
from bench.delivery import drain_timeout_s, publish_backlog, timing

DSN_ENV = "WEBHOOKD_BENCH_POSTGRES_DSN"
"""A server for the PostgreSQL benchmarks; without it they start a throwaway cluster (bench.pgcluster)."""
STATS_SETTLE_S = 5.0


@dataclass(frozen=True)
class PgSchema:
    """One run's own schema on the bench's server."""

    dsn: str
    name: str

    @property
    def database_url(self) -> str:
        # asyncpg passes unknown URL parameters to the server as settings: the run's own schema.
        return f"{self.dsn}?search_path={self.name}"

    async def execute(self, statements: Sequence[str], arguments: Sequence[tuple[Any, ...]]) -> None:
        """Run ``statements``, each with its ``arguments``, in this schema on one connection."""
        conn = await asyncpg.connect(self.dsn, server_settings={"search_path": self.name})
        try:
            for sql, args in zip(statements, arguments, strict=True):
                await conn.execute(sql, *args)
        finally:
            await conn.close()


async def postmaster_pid(dsn: str) -> int | None:
    """The pid of the server's postmaster when it runs on this machine (a backend's parent), whose
    family's CPU the drain sums; None for a server elsewhere."""
    conn = await asyncpg.connect(dsn)
    try:
        backend: int = await conn.fetchval("SELECT pg_backend_pid()")
        # Read while the connection holds its backend open.
        return int(procs.stat_fields(Path(f"/proc/{backend}/stat"))[1])
    except (OSError, IndexError, ValueError):
        return None
    finally:
        await conn.close()


def _psql(dsn: str, sql: str) -> None:
    subprocess.run(["psql", dsn, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)


@contextlib.contextmanager
def fresh_schema(dsn: str) -> Iterator[PgSchema]:
    """A fresh schema for one run, dropped afterwards."""
    schema = PgSchema(dsn, f"webhookd_bench_{secrets.token_hex(4)}")
    _psql(dsn, f"CREATE SCHEMA {schema.name}")
    try:
        yield schema
    finally:
        _psql(dsn, f"DROP SCHEMA {schema.name} CASCADE")


async def commits(dsn: str) -> int:
    """Transactions committed in the database so far (all sessions): the publish phase's count is
    the difference around it, which includes the few of the API node's setup and the bench's reads
    (and any other client's, on a server the bench did not start)."""
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return count


async def publish_counting_commits(cfg: BenchConfig, wh: provision.Webhookd, hook_url: str) -> dict[str, Any]:
    """``publish_backlog``, with the commits per published event it took."""
    before = await commits(cfg.postgres_dsn)
    publish = await publish_backlog(cfg, wh, hook_url)
    # The statistics collector reports a session's counts when it goes idle or ends (the API node
    # has stopped by now); poll until the figure stops growing rather than guess a delay.
    deadline, after = time.monotonic() + STATS_SETTLE_S, await commits(cfg.postgres_dsn)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        latest = await commits(cfg.postgres_dsn)
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
    with fresh_schema(cfg.postgres_dsn) as schema:
        wh = provision.new_webhookd(workdir, WEBHOOKD_DATABASE_URL=schema.database_url)
        name, receivers = f"pg-receiver-{workers}", cfg.postgres_receivers
        async with receiving.running_receiver(workdir, name, processes=receivers) as receiver:
            publish = await publish_counting_commits(cfg, wh, receiver.hook_url)
            started_at = time.time()
            env = {**wh.env, "WEBHOOKD_WORKER_CONCURRENCY": str(cfg.concurrency)}
            cmd = procs.python_module("webhookd", "worker")
            running = [
                procs.start(f"worker {n}", cmd, env, workdir / f"worker-{n}.log") for n in range(workers)
            ]
            meters = procs.CpuMeters(running, receiver.procs, await postmaster_pid(schema.dsn))
            try:
                found = await receiving.wait_for_distinct(
                    receiver, cfg.delivery_events, drain_timeout_s(cfg.delivery_events)
                )
                cpu = meters.shares()
            finally:
                for proc in running:
                    await procs.stop_async(proc)
    result = {**timing(started_at, found), "workers": workers, "receivers": receivers, "publish": publish}
    result["cpu_share"] = cpu
    procs.log(
        f"postgres: {workers} worker(s): {result['received_distinct']} received, first->last"
        f" {result['drain_s']}s ({result['drain_rate_per_s']}/s), duplicates {result['duplicates']},"
        f" cpu share {cpu}"
    )
    return result


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    runs = {str(n): await _drain(cfg, workdir / f"workers-{n}", n) for n in cfg.postgres_workers}
    one = runs[str(cfg.postgres_workers[0])]["drain_rate_per_s"]
    scaling = {
        n: round(r["drain_rate_per_s"] / one, 2) if one and r["drain_rate_per_s"] else None
        for n, r in runs.items()
    }
    sqlite = await _sqlite_publish(cfg, workdir / "sqlite-publish")
    pg_publish = sum(r["publish"]["rate_per_s"] for r in runs.values()) / len(runs)
    return {
        "events": cfg.delivery_events,
        "concurrency": cfg.concurrency,
        "runs": runs,
        "scaling": scaling,
        "postgres_publish_rate_per_s": round(pg_publish, 1),
        "sqlite_publish": sqlite,
        "publish_ratio": round(pg_publish / sqlite["rate_per_s"], 3) if sqlite["rate_per_s"] else None,
    }


def _ratio(rate: float | None, first: float | None) -> float | None:
    return round(rate / first, 2) if rate and first else None
