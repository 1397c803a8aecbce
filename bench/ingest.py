"""(a) Ingest: POST /api/v1/events closed-loop at 64 connections, webhookd vs a bare starlette app."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import dbcheck, load, payloads, procs, provision
from bench.config import INGEST_TARGET_RATIO, BenchConfig

BODY_RING = 1000
MAX_REQUESTS = 10_000_000


def _bodies() -> load.BodyFor:
    ring = [orjson.dumps(payloads.publish_body(i)) for i in range(BODY_RING)]
    return lambda seq: ring[seq % BODY_RING]


async def _run_for(
    session: aiohttp.ClientSession, cfg: BenchConfig, url: str, headers: dict[str, str], duration_s: float
) -> load.LoadResult:
    return await load.closed_loop(
        session,
        url,
        headers,
        _bodies(),
        concurrency=cfg.concurrency,
        duration_s=duration_s,
        max_requests=MAX_REQUESTS,
    )


async def measure(
    cfg: BenchConfig, label: str, url: str, headers: dict[str, str], server: procs.Proc
) -> dict[str, Any]:
    """A warm-up run (discarded), then the measured run, on one pooled session."""
    async with load.client_session(cfg.concurrency) as session:
        await _run_for(session, cfg, url, headers, cfg.ingest_warmup_s)
        meter, client_cpu0 = procs.CpuMeter(server), time.process_time()
        result = await _run_for(session, cfg, url, headers, cfg.ingest_duration_s)
        cpu_share = meter.share()
        client_share = round((time.process_time() - client_cpu0) / result.elapsed_s, 3)
    s = {**result.summary(), "server_cpu_share": cpu_share, "client_cpu_share": client_share}
    procs.log(
        f"ingest: {label} {result.elapsed_s:.1f}s {result.ok} ok {result.rate:.0f} req/s"
        f" p50 {s['p50_ms']}ms p99 {s['p99_ms']}ms errors {result.error_count}"
        f" cpu share: server {cpu_share} client {client_share}"
    )
    return s


async def _webhookd(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    wh = provision.new_webhookd(workdir)
    key = provision.create_key(wh)
    async with provision.serving(wh, workers=False, log_name="ingest-webhookd") as server:
        await provision.create_subscription(wh, key, "http://127.0.0.1:9/")
        url = f"{wh.base_url}/api/v1/events"
        result = await measure(cfg, "webhookd", url, provision.auth_headers(key), server)
    db = workdir / "bench.db"
    stored = {"events": dbcheck.row_count(db, "events"), "deliveries": dbcheck.row_count(db, "deliveries")}
    return {**result, "stored_after_warmup_and_run": stored}


async def _raw(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    port = procs.free_port()
    base = f"http://{procs.HOST}:{port}"
    cmd = procs.python_module("bench.raw_app", "--port", str(port))
    async with procs.running("ingest-raw", cmd, procs.base_env(), workdir / "ingest-raw.log", base) as server:
        headers = {"Content-Type": "application/json"}
        return await measure(cfg, "raw", f"{base}/api/v1/events", headers, server)


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    (workdir / "webhookd").mkdir()
    (workdir / "raw").mkdir()
    webhookd = await _webhookd(cfg, workdir / "webhookd")
    raw = await _raw(cfg, workdir / "raw")
    ratio = webhookd["rate_per_s"] / raw["rate_per_s"] if raw["rate_per_s"] else 0.0
    return {
        "duration_s": cfg.ingest_duration_s,
        "warmup_s": cfg.ingest_warmup_s,
        "concurrency": cfg.concurrency,
        "webhookd": webhookd,
        "raw": raw,
        "ratio": round(ratio, 3),
        "target_ratio": INGEST_TARGET_RATIO,
        "meets_target": ratio >= INGEST_TARGET_RATIO,
    }
