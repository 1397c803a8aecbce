"""(c) Latency: publish at a steady rate (open loop) and time publish-sent -> received by the receiver.

webhookd runs ``serve`` with its workers; the baseline is ``bench/raw_app.py --forward``, a relay that
answers 202 and signs and forwards each event at once, storing nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from bench import dbcheck, load, payloads, procs, provision, receiving
from bench.config import LATENCY_TARGET_P99_MS, BenchConfig

DELIVERY_WAIT_S = 30.0


def _body_for(seq: int) -> bytes:
    return orjson.dumps(payloads.publish_body(seq, sent_at=time.time()))


def by_second(pairs: list[tuple[float, float]]) -> list[float]:
    """Median end-to-end latency (ms) of the events sent in each second of the run: a rising series
    means a queue that grows, a flat one a steady delay."""
    if not pairs:
        return []
    start = min(sent for sent, _ in pairs)
    buckets: dict[int, list[float]] = {}
    for sent, latency in pairs:
        buckets.setdefault(int(sent - start), []).append(latency)
    return [round(load.percentile(sorted(buckets[k]), 50) * 1000, 1) for k in sorted(buckets)]


async def _drive(
    cfg: BenchConfig,
    label: str,
    receiver: receiving.Receiver,
    server: procs.Proc,
    url: str,
    headers: dict[str, str],
) -> dict[str, Any]:
    meters = {"server_cpu_share": procs.CpuMeter(server), "receiver_cpu_share": procs.CpuMeter(receiver.proc)}
    async with load.client_session(cfg.concurrency) as session:
        sent = await load.paced(
            session, url, headers, _body_for, rate=cfg.latency_rate, duration_s=cfg.latency_duration_s
        )
    cpu = {name: meter.share() for name, meter in meters.items()}
    found = await receiving.wait_for_distinct(receiver, sent.load.ok, DELIVERY_WAIT_S)
    rows = await receiving.latencies(receiver)
    pairs = [(sent_at, received - sent_at) for _, sent_at, received in rows if sent_at is not None]
    e2e = [latency for _, latency in pairs]
    result = {
        "publish": sent.summary(),
        "published_ok": sent.load.ok,
        "delivered": found["distinct"],
        "duplicates": found["requests"] - found["distinct"],
        "e2e": load.latency_summary_ms(e2e),
        "e2e_p50_ms_by_second": by_second(pairs),
        "achieved_publish_rate_per_s": round(sent.load.ok / sent.issue_window_s, 1),
        **cpu,
    }
    e = result["e2e"]
    procs.log(
        f"latency: {label} {sent.issue_window_s:.1f}s published {sent.load.ok}/{sent.issued}"
        f" delivered {found['distinct']} p50 {e['p50_ms']}ms p99 {e['p99_ms']}ms max {e['max_ms']}ms"
        f" (p50 by second: {result['e2e_p50_ms_by_second']}) server cpu {cpu['server_cpu_share']}"
    )
    return result


async def _webhookd(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    wh = provision.new_webhookd(workdir)
    key = provision.create_key(wh)
    async with (
        receiving.running_receiver(workdir, "latency-receiver-webhookd", record_latency=True) as receiver,
        provision.serving(wh, workers=True, log_name="latency-webhookd") as server,
    ):
        await provision.create_subscription(wh, key, receiver.hook_url)
        url = f"{wh.base_url}/api/v1/events"
        result = await _drive(cfg, "webhookd", receiver, server, url, provision.auth_headers(key))
    result["db_delivery_statuses"] = dbcheck.delivery_statuses(workdir / "bench.db")
    return result


async def _raw(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    async with receiving.running_receiver(workdir, "latency-receiver-raw", record_latency=True) as receiver:
        port = procs.free_port()
        base = f"http://{procs.HOST}:{port}"
        cmd = procs.python_module("bench.raw_app", "--port", str(port), "--forward", receiver.hook_url)
        log_path = workdir / "latency-raw.log"
        async with procs.running("latency-raw", cmd, procs.base_env(), log_path, base) as server:
            url = f"{base}/api/v1/events"
            headers = {"Content-Type": "application/json"}
            return await _drive(cfg, "raw relay", receiver, server, url, headers)


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    (workdir / "webhookd").mkdir()
    (workdir / "raw").mkdir()
    webhookd = await _webhookd(cfg, workdir / "webhookd")
    raw = await _raw(cfg, workdir / "raw")
    p99 = webhookd["e2e"]["p99_ms"]
    complete = webhookd["delivered"] >= webhookd["published_ok"] > 0
    return {
        "rate_per_s": cfg.latency_rate,
        "duration_s": cfg.latency_duration_s,
        "webhookd": webhookd,
        "raw": raw,
        "p99_ratio": round(p99 / raw["e2e"]["p99_ms"], 2) if raw["e2e"]["p99_ms"] else None,
        "target_p99_ms": LATENCY_TARGET_P99_MS,
        "meets_target": complete and p99 <= LATENCY_TARGET_P99_MS,
    }
