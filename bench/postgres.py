"""(d) PostgreSQL: draining a backlog with 1, 2, ... ``webhookd worker`` processes on one database, with
each kind of process's CPU share: the workers, the receiver and PostgreSQL's backends."""

from __future__ import annotations

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


async def _drain(cfg: BenchConfig, workdir: Path, workers: int) -> dict[str, Any]:
    workdir.mkdir()
    with fresh_schema(cfg.postgres_dsn) as schema:
        wh = provision.new_webhookd(workdir, WEBHOOKD_DATABASE_URL=schema.database_url)
        name, receivers = f"pg-receiver-{workers}", cfg.postgres_receivers
        async with receiving.running_receiver(workdir, name, processes=receivers) as receiver:
            publish = await publish_backlog(cfg, wh, receiver.hook_url)
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
    return {"events": cfg.delivery_events, "concurrency": cfg.concurrency, "runs": runs, "scaling": scaling}


def _ratio(rate: float | None, first: float | None) -> float | None:
    return round(rate / first, 2) if rate and first else None
