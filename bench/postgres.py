"""(d) PostgreSQL: publishing through 1, 2, ... API nodes on one database against SQLite's one node, and
draining a backlog with 1, 2, ... ``webhookd worker`` processes; with each kind of process's CPU share
(API nodes, workers, receivers, PostgreSQL's backends, the load generator) and what PostgreSQL counted:
commits per published event, statements per delivered event."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import load, payloads, pgstats, procs, provision, receiving
from bench.config import BenchConfig
from bench.delivery import PUBLISH_TIMEOUT_S, drain_timeout_s, timing

DSN_ENV = "WEBHOOKD_BENCH_POSTGRES_DSN"
"""A server for the PostgreSQL benchmarks; without it they start a throwaway cluster (bench.pgcluster)."""
NO_RECEIVER = f"http://{procs.HOST}:9/hook"
"""The publish runs start no worker, so their subscriptions' endpoint is never called."""
DRAIN_CUSTOMERS = 8
"""The drain's backlog is spread over this many customers, one subscription each: a subscription's
claims are capped (``WEBHOOKD_MAX_IN_FLIGHT_PER_SUBSCRIPTION``) and taken by one process at a time, so a
single one would measure that fairness cap, not the workers."""
PUBLISH_ROUNDS = 2


@dataclass(frozen=True)
class PgSchema:
    """One run's own schema on the bench's server."""

    dsn: str
    name: str

    @property
    def database_url(self) -> str:
        # asyncpg passes unknown URL parameters to the server as settings: the run's own schema.
        return f"{self.dsn}{'&' if '?' in self.dsn else '?'}search_path={self.name}"

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


@dataclass(frozen=True)
class Node:
    """One ``webhookd serve --no-workers`` process."""

    proc: procs.Proc
    base_url: str


@contextlib.asynccontextmanager
async def api_nodes(wh: provision.Webhookd, count: int) -> AsyncIterator[list[Node]]:
    """``count`` API nodes on one database, each on its own port (the first on ``wh``'s)."""
    cmd = procs.python_module("webhookd", "serve", "--no-workers")
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for n in range(count):
            port = wh.port if n == 0 else procs.free_port()
            base_url, log_path = f"http://{procs.HOST}:{port}", wh.workdir / f"api-node-{n}.log"
            env = {**wh.env, "WEBHOOKD_PORT": str(port)}
            proc = await stack.enter_async_context(
                procs.running(f"api node {n}", cmd, env, log_path, base_url)
            )
            nodes.append(Node(proc, base_url))
        yield nodes


def customer_keys(wh: provision.Webhookd, customers: int) -> list[str]:
    """One API key for each of ``customers`` customers (a single one is the bench's usual customer)."""
    if customers == 1:
        return [provision.create_key(wh)]
    return [provision.create_key(wh, f"{provision.CUSTOMER}-{n}") for n in range(customers)]


async def publish(
    cfg: BenchConfig, wh: provision.Webhookd, keys: Sequence[str], *, nodes: int, hook_url: str
) -> dict[str, Any]:
    """Publish ``cfg.delivery_events`` through ``nodes`` API nodes, ``cfg.concurrency`` connections each
    split over the customers' ``keys`` (each with a subscription to ``hook_url``), with each process's
    CPU share and, on PostgreSQL, the commits per published event."""
    dsn = cfg.postgres_dsn if wh.env["WEBHOOKD_DATABASE_URL"].startswith("postgres") else None
    before = None if dsn is None else await pgstats.commits(dsn)
    counting = dsn is not None and await pgstats.reset_statements(dsn)
    ring = [orjson.dumps(payloads.publish_body(i)) for i in range(1000)]
    async with api_nodes(wh, nodes) as running:
        for key in keys:
            await provision.create_subscription(wh, key, hook_url)
        targets = [
            load.Target(f"{node.base_url}/api/v1/events", provision.auth_headers(key))
            for node in running
            for key in keys
        ]
        meters = procs.CpuMeters(
            {"api_nodes": [n.proc for n in running]},
            None if dsn is None else await postmaster_pid(dsn),
            client=True,
        )
        async with load.client_session(cfg.concurrency * nodes) as session:
            result = await load.spread(
                session,
                targets,
                lambda seq: ring[seq % len(ring)],
                concurrency=max(1, cfg.concurrency // len(keys)),
                count=cfg.delivery_events,
                timeout_s=PUBLISH_TIMEOUT_S,
            )
        cpu = meters.shares()
    found = {**result.summary(), "api_nodes": nodes, "cpu_share": cpu}
    if dsn is not None and before is not None and result.ok:
        found["commits_per_event"] = round((await pgstats.settled_commits(dsn) - before) / result.ok, 3)
        if counting:
            found["statements_per_event"] = (await pgstats.statements_per_event(dsn, result.ok))["all"]
    procs.log(
        f"postgres: published {result.ok} through {nodes} API node(s) in {result.elapsed_s:.1f}s"
        f" ({result.rate:.0f}/s) errors {result.error_count}, cpu share {cpu}"
    )
    return found


async def _pg_publish(cfg: BenchConfig, workdir: Path, nodes: int) -> dict[str, Any]:
    workdir.mkdir()
    with fresh_schema(cfg.postgres_dsn) as schema:
        wh = provision.new_webhookd(workdir, WEBHOOKD_DATABASE_URL=schema.database_url)
        return await publish(cfg, wh, customer_keys(wh, 1), nodes=nodes, hook_url=NO_RECEIVER)


async def _sqlite_publish(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    """The same publishes into SQLite, in the same run: the yardstick of the PostgreSQL rate."""
    workdir.mkdir()
    wh = provision.new_webhookd(workdir)
    return await publish(cfg, wh, customer_keys(wh, 1), nodes=1, hook_url=NO_RECEIVER)


async def _drain(cfg: BenchConfig, workdir: Path, workers: int) -> dict[str, Any]:
    workdir.mkdir()
    with fresh_schema(cfg.postgres_dsn) as schema:
        wh = provision.new_webhookd(workdir, WEBHOOKD_DATABASE_URL=schema.database_url)
        name, receivers = f"pg-receiver-{workers}", cfg.postgres_receivers
        async with receiving.running_receiver(workdir, name, processes=receivers) as receiver:
            keys = customer_keys(wh, DRAIN_CUSTOMERS)
            backlog = await publish(cfg, wh, keys, nodes=1, hook_url=receiver.hook_url)
            counting = await pgstats.reset_statements(schema.dsn)
            started_at = time.time()
            env = {**wh.env, "WEBHOOKD_WORKER_CONCURRENCY": str(cfg.concurrency)}
            cmd = procs.python_module("webhookd", "worker")
            running = [
                procs.start(f"worker {n}", cmd, env, workdir / f"worker-{n}.log") for n in range(workers)
            ]
            groups = {"workers": running, "receivers": receiver.procs}
            meters = procs.CpuMeters(groups, await postmaster_pid(schema.dsn))
            try:
                found = await receiving.wait_for_distinct(
                    receiver, cfg.delivery_events, drain_timeout_s(cfg.delivery_events)
                )
                cpu = meters.shares()
                statements = (
                    await pgstats.statements_per_event(schema.dsn, found["distinct"])
                    if (counting and found["distinct"])
                    else None
                )
            finally:
                for proc in running:
                    await procs.stop_async(proc)
    result = {**timing(started_at, found), "workers": workers, "receivers": receivers, "backlog": backlog}
    result.update(cpu_share=cpu, statements_per_event=statements)
    procs.log(
        f"postgres: {workers} worker(s): {result['received_distinct']} received, first->last"
        f" {result['drain_s']}s ({result['drain_rate_per_s']}/s), duplicates {result['duplicates']},"
        f" cpu share {cpu}, statements per event {statements and statements['all']}"
    )
    return result


async def _publishes(
    cfg: BenchConfig, workdir: Path
) -> tuple[dict[int, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Each API-node count's PostgreSQL publishes and SQLite's, in alternating rounds, so a machine whose
    speed drifts weighs on both alike."""
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in cfg.postgres_api_nodes}
    sqlite = []
    for r in range(PUBLISH_ROUNDS):
        for n in cfg.postgres_api_nodes:
            runs[n].append(await _pg_publish(cfg, workdir / f"publish-{n}-{r}", n))
        sqlite.append(await _sqlite_publish(cfg, workdir / f"sqlite-publish-{r}"))
    return runs, sqlite


def _mean_rate(runs: Sequence[dict[str, Any]]) -> float:
    return round(sum(r["rate_per_s"] for r in runs) / len(runs), 1)


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    publishes, sqlite = await _publishes(cfg, workdir)
    rates = {n: _mean_rate(runs) for n, runs in publishes.items()}
    one_node = rates.get(1)
    drains = {str(n): await _drain(cfg, workdir / f"workers-{n}", n) for n in cfg.postgres_workers}
    first = drains[str(cfg.postgres_workers[0])]["drain_rate_per_s"]
    sqlite_rate = _mean_rate(sqlite)
    return {
        "events": cfg.delivery_events,
        "concurrency": cfg.concurrency,
        "drain_customers": DRAIN_CUSTOMERS,
        "runs": drains,
        "scaling": {n: _ratio(r["drain_rate_per_s"], first) for n, r in drains.items()},
        "publish": {str(n): {"rate_per_s": rates[n], "runs": runs} for n, runs in publishes.items()},
        "publish_scaling": {
            str(n): _ratio(rate, rates[cfg.postgres_api_nodes[0]]) for n, rate in rates.items()
        },
        "postgres_publish_rate_per_s": one_node,
        "sqlite_publish": {"rate_per_s": sqlite_rate, "runs": sqlite},
        "publish_ratio": round(one_node / sqlite_rate, 3) if one_node and sqlite_rate else None,
    }


def _ratio(rate: float | None, first: float | None) -> float | None:
    return round(rate / first, 2) if rate and first else None
