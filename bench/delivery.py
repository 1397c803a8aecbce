"""(b) Delivery: drain a backlog to a receiver process, webhookd's worker vs a raw pooled sender."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from bench import dbcheck, load, payloads, procs, provision, receiving
from bench.config import DELIVERY_TARGET_RATIO, BenchConfig

PUBLISH_TIMEOUT_S = 600.0


def drain_timeout_s(events: int) -> float:
    return 60.0 + events / 50


def timing(started_at: float, found: dict[str, Any]) -> dict[str, Any]:
    """Start-to-last (process start included) and first-to-last received, from receiver clocks."""
    first, last = found["first_at"], found["last_new_at"]
    drain_s = (last - first) if first is not None and last is not None else None
    return {
        "received_distinct": found["distinct"],
        "received_requests": found["requests"],
        "duplicates": found["requests"] - found["distinct"],
        "complete": found["complete"],
        "start_to_last_s": round(last - started_at, 3) if last is not None else None,
        "start_to_first_s": round(first - started_at, 3) if first is not None else None,
        "drain_s": round(drain_s, 3) if drain_s is not None else None,
        "drain_rate_per_s": round(found["distinct"] / drain_s, 1) if drain_s else None,
    }


async def publish_backlog(cfg: BenchConfig, wh: provision.Webhookd, hook_url: str) -> dict[str, Any]:
    key = provision.create_key(wh)
    async with provision.serving(wh, workers=False, log_name="delivery-serve"):
        await provision.create_subscription(wh, key, hook_url)
        ring = [orjson.dumps(payloads.publish_body(i)) for i in range(1000)]
        async with load.client_session(cfg.concurrency) as session:
            result = await load.fixed_count(
                session,
                f"{wh.base_url}/api/v1/events",
                provision.auth_headers(key),
                lambda seq: ring[seq % len(ring)],
                concurrency=cfg.concurrency,
                count=cfg.delivery_events,
                timeout_s=PUBLISH_TIMEOUT_S,
            )
    procs.log(
        f"delivery: published backlog of {result.ok} in {result.elapsed_s:.1f}s"
        f" ({result.rate:.0f}/s, not timed) errors {result.error_count}"
    )
    return result.summary()


async def _webhookd(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    wh = provision.new_webhookd(workdir)
    async with receiving.running_receiver(workdir, "delivery-receiver-webhookd") as receiver:
        publish = await publish_backlog(cfg, wh, receiver.hook_url)
        rx_meter = procs.CpuMeter(receiver.proc)
        started_at = time.time()
        worker = provision.start_worker(wh, cfg.concurrency)
        try:
            meter = procs.CpuMeter(worker)
            found = await receiving.wait_for_distinct(
                receiver, cfg.delivery_events, drain_timeout_s(cfg.delivery_events)
            )
            cpu = {"worker_cpu_share": meter.share(), "receiver_cpu_share": rx_meter.share()}
        finally:
            exit_code = await procs.stop_async(worker)
    result = {**timing(started_at, found), **cpu, "worker_exit_code": exit_code, "publish": publish}
    result["db_delivery_statuses"] = dbcheck.delivery_statuses(workdir / "bench.db")
    procs.log(f"delivery: webhookd {_progress(result)}")
    return result


async def _raw(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    async with receiving.running_receiver(workdir, "delivery-receiver-raw") as receiver:
        args = ["--url", receiver.hook_url, "--count", str(cfg.delivery_events)]
        cmd = procs.python_module("bench.raw_sender", *args, "--concurrency", str(cfg.concurrency))
        rx_meter = procs.CpuMeter(receiver.proc)
        started_at = time.time()
        sender = procs.start("raw sender", cmd, procs.base_env(), workdir / "raw-sender.log")
        try:
            found = await receiving.wait_for_distinct(
                receiver, cfg.delivery_events, drain_timeout_s(cfg.delivery_events), sender
            )
            rx_share = rx_meter.share()
        finally:
            exit_code = await procs.stop_async(sender)
    summary = _last_json(sender)
    result = {**timing(started_at, found), "sender_exit_code": exit_code, "sender": summary}
    result["receiver_cpu_share"] = rx_share
    if summary and summary.get("elapsed_s"):
        result["sender_cpu_share"] = round(summary["cpu_s"] / summary["elapsed_s"], 3)
    procs.log(f"delivery: raw {_progress(result)}")
    return result


def _progress(result: dict[str, Any]) -> str:
    sender_cpu = result.get("worker_cpu_share", result.get("sender_cpu_share"))
    return (
        f"{result['received_distinct']} received, start->last {result['start_to_last_s']}s,"
        f" first->last {result['drain_s']}s ({result['drain_rate_per_s']}/s),"
        f" duplicates {result['duplicates']}, cpu share: sender"
        f" {sender_cpu} receiver {result['receiver_cpu_share']}"
    )


def _last_json(proc: procs.Proc) -> dict[str, Any] | None:
    for line in reversed(proc.log_tail(5).splitlines()):
        if line.startswith("{"):
            found: dict[str, Any] = orjson.loads(line)
            return found
    return None


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    (workdir / "webhookd").mkdir()
    (workdir / "raw").mkdir()
    webhookd = await _webhookd(cfg, workdir / "webhookd")
    raw = await _raw(cfg, workdir / "raw")
    ratio = None
    if webhookd["drain_s"] and raw["drain_s"] and webhookd["complete"] and raw["complete"]:
        ratio = raw["drain_s"] / webhookd["drain_s"]
    return {
        "events": cfg.delivery_events,
        "concurrency": cfg.concurrency,
        "webhookd": webhookd,
        "raw": raw,
        "ratio": round(ratio, 3) if ratio is not None else None,
        "ratio_basis": "raw first->last drain time / webhookd first->last drain time (= rate ratio)",
        "target_ratio": DELIVERY_TARGET_RATIO,
        "meets_target": ratio is not None and ratio >= DELIVERY_TARGET_RATIO,
    }
