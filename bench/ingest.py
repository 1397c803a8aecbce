"""(a) Ingest: POST /api/v1/events closed-loop at 64 connections, webhookd vs a bare starlette app,
and webhookd's POST /api/v1/events/batch with ``BATCH_SIZE`` events a request (durable events/s).

Both servers run for the whole benchmark and take turns: ``ROUNDS`` rounds, each a warm-up
and then a measured stretch on webhookd followed by the same on raw. A machine whose speed drifts
over a minute (shared hosts do) then weighs on both alike, instead of on whichever ran second.
The figures are the rounds' sums; each round's own rates are kept in the JSON.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import dbcheck, load, payloads, procs, provision
from bench.config import INGEST_TARGET_RATIO, BenchConfig

BODY_RING = 1000
MAX_REQUESTS = 10_000_000
ROUNDS = 3
BATCH_SIZE = 100
BATCH_TARGET_RATIO = 3.0
"""Batch events/s against single-publish events/s, on SQLite, in the same run."""


def _bodies(per_request: int = 1) -> load.BodyFor:
    if per_request == 1:
        ring = [orjson.dumps(payloads.publish_body(i)) for i in range(BODY_RING)]
    else:
        ring = [
            orjson.dumps({"events": [payloads.publish_body(i * per_request + j) for j in range(per_request)]})
            for i in range(BODY_RING // per_request)
        ]
    return lambda seq: ring[seq % len(ring)]


@dataclass
class Target:
    """One server under test and what its measured stretches added up to."""

    label: str
    url: str
    headers: dict[str, str]
    server: procs.Proc
    per_request: int = 1
    """Events each request publishes: a 2xx stored them all."""
    result: load.LoadResult = field(default_factory=load.LoadResult)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    rounds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        elapsed = self.result.elapsed_s
        return {
            **self.result.summary(),
            "events_per_request": self.per_request,
            "events_per_s": round(self.result.rate * self.per_request, 1),
            "server_cpu_share": round(self.server_cpu_s / elapsed, 3) if elapsed else None,
            "client_cpu_share": round(self.client_cpu_s / elapsed, 3) if elapsed else None,
            "rounds_rate_per_s": [round(rate, 1) for rate in self.rounds],
        }


async def _run_for(
    session: aiohttp.ClientSession, cfg: BenchConfig, target: Target, seconds: float
) -> load.LoadResult:
    return await load.closed_loop(
        session,
        target.url,
        target.headers,
        _bodies(target.per_request),
        concurrency=cfg.concurrency,
        duration_s=seconds,
        max_requests=MAX_REQUESTS,
    )


async def _round(session: aiohttp.ClientSession, cfg: BenchConfig, target: Target) -> None:
    """A warm-up (discarded), then one measured stretch added to ``target``."""
    await _run_for(session, cfg, target, cfg.ingest_warmup_s)
    server_cpu0, client_cpu0 = procs.cpu_seconds(target.server), time.process_time()
    part = await _run_for(session, cfg, target, cfg.ingest_duration_s / ROUNDS)
    server_cpu1 = procs.cpu_seconds(target.server)
    if server_cpu0 is not None and server_cpu1 is not None:
        target.server_cpu_s += server_cpu1 - server_cpu0
    target.client_cpu_s += time.process_time() - client_cpu0
    merged = target.result
    merged.ok += part.ok
    merged.errors.update(part.errors)
    merged.latencies_s.extend(part.latencies_s)
    merged.elapsed_s += part.elapsed_s
    target.rounds.append(part.rate)
    procs.log(
        f"ingest: {target.label} round {len(target.rounds)}: {part.rate:.0f} req/s, {part.error_count} errors"
    )


@contextlib.asynccontextmanager
async def _servers(workdir: Path) -> AsyncIterator[tuple[Target, Target, Target]]:
    wh = provision.new_webhookd(workdir / "webhookd")
    key = provision.create_key(wh)
    port = procs.free_port()
    raw_base = f"http://{procs.HOST}:{port}"
    raw_cmd = procs.python_module("bench.raw_app", "--port", str(port))
    raw_log = workdir / "raw" / "ingest-raw.log"
    async with (
        provision.serving(wh, workers=False, log_name="ingest-webhookd") as webhookd_proc,
        procs.running("ingest-raw", raw_cmd, procs.base_env(), raw_log, raw_base) as raw_proc,
    ):
        await provision.create_subscription(wh, key, "http://127.0.0.1:9/")
        headers = provision.auth_headers(key)
        yield (
            Target("webhookd", f"{wh.base_url}/api/v1/events", headers, webhookd_proc),
            Target("raw", f"{raw_base}/api/v1/events", {"Content-Type": "application/json"}, raw_proc),
            Target("batch", f"{wh.base_url}/api/v1/events/batch", headers, webhookd_proc, BATCH_SIZE),
        )


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    (workdir / "webhookd").mkdir()
    (workdir / "raw").mkdir()
    async with _servers(workdir) as targets, load.client_session(cfg.concurrency) as session:
        for _ in range(ROUNDS):
            for target in targets:
                await _round(session, cfg, target)
    webhookd, raw, batch = (target.summary() for target in targets)
    db = workdir / "webhookd" / "bench.db"
    webhookd["stored_after_warmup_and_run"] = {
        "events": dbcheck.row_count(db, "events"),
        "deliveries": dbcheck.row_count(db, "deliveries"),
    }
    for label, s in (("webhookd", webhookd), ("raw", raw)):
        procs.log(
            f"ingest: {label} {s['elapsed_s']:.1f}s {s['ok']} ok {s['rate_per_s']:.0f} req/s"
            f" p50 {s['p50_ms']}ms p99 {s['p99_ms']}ms errors {s['errors']}"
            f" cpu share: server {s['server_cpu_share']} client {s['client_cpu_share']}"
        )
    ratio = webhookd["rate_per_s"] / raw["rate_per_s"] if raw["rate_per_s"] else 0.0
    batch_ratio = batch["events_per_s"] / webhookd["events_per_s"] if webhookd["events_per_s"] else 0.0
    return {
        "duration_s": cfg.ingest_duration_s,
        "warmup_s": cfg.ingest_warmup_s,
        "rounds": ROUNDS,
        "concurrency": cfg.concurrency,
        "webhookd": webhookd,
        "raw": raw,
        "ratio": round(ratio, 3),
        "target_ratio": INGEST_TARGET_RATIO,
        "meets_target": ratio >= INGEST_TARGET_RATIO,
        "batch": batch,
        "batch_ratio": round(batch_ratio, 3),
        "batch_target_ratio": BATCH_TARGET_RATIO,
        "batch_meets_target": batch_ratio >= BATCH_TARGET_RATIO,
    }
