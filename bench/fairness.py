"""(f) Fairness: customer B's delivery latency while customer A's slow endpoint has a deep backlog.

One ``webhookd serve`` (SQLite, its embedded workers) and two receiver processes: A's answers every
request after ``A_DELAY_S``, B's at once. B publishes paced events first alone, then again once A's
backlog is stored and A's first deliveries are arriving. B's latency is publish acknowledged (the
202 read by the client) -> first arrival at B's receiver, both on this machine's wall clock. A's
throughput is counted at A's receiver over whole ``A_DELAY_S`` periods from A's first arrival; with
A's endpoint this slow it should be about the per-subscription cap / ``A_DELAY_S``.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import load, payloads, procs, provision, receiving
from bench.config import BenchConfig
from webhookd.config import Settings

A_DELAY_S = 2.0
B_RATE_PER_S = 50.0
ARRIVAL_TIMEOUT_S = 60.0
BACKLOG_TIMEOUT_S = 300.0


@dataclass
class Acks:
    """When each of B's publishes was acknowledged, by event id (= the ``webhook-id`` received)."""

    at: dict[str, float] = field(default_factory=dict)

    def note(self, answer: bytes) -> None:
        self.at[orjson.loads(answer)["id"]] = time.time()


@dataclass(frozen=True)
class Parties:
    server: procs.Proc
    events_url: str
    a_headers: dict[str, str]
    b_headers: dict[str, str]
    slow: receiving.Receiver
    fast: receiving.Receiver


def _body(seq: int) -> bytes:
    return orjson.dumps(payloads.publish_body(seq))


async def _b_stretch(cfg: BenchConfig, parties: Parties, label: str) -> dict[str, Any]:
    """B publishes ``cfg.fairness_b_events`` paced; waits until they all arrived; their latencies."""
    acks, before = Acks(), (await receiving.stats(parties.fast))["distinct"]
    async with load.client_session(cfg.concurrency) as session:
        sent = await load.paced(
            session,
            parties.events_url,
            parties.b_headers,
            _body,
            rate=B_RATE_PER_S,
            duration_s=cfg.fairness_b_events / B_RATE_PER_S,
            on_ok=acks.note,
        )
    found = await receiving.wait_for_distinct(parties.fast, before + len(acks.at), ARRIVAL_TIMEOUT_S)
    arrived = {wid: at for wid, _, at in await receiving.latencies(parties.fast) if wid in acks.at}
    latencies = [arrived[wid] - acked for wid, acked in acks.at.items() if wid in arrived]
    result = {
        "publish": sent.summary(),
        "published_ok": len(acks.at),
        "delivered": len(latencies),
        "complete": found["complete"],
        "e2e": load.latency_summary_ms(latencies),
    }
    e = result["e2e"]
    procs.log(
        f"fairness: B {label}: {result['delivered']}/{result['published_ok']} delivered,"
        f" p50 {e['p50_ms']}ms p99 {e['p99_ms']}ms max {e['max_ms']}ms"
    )
    return result


async def _a_backlog(cfg: BenchConfig, parties: Parties) -> dict[str, Any]:
    """Store A's backlog, then wait for A's first deliveries to arrive."""
    async with load.client_session(cfg.concurrency) as session:
        stored = await load.fixed_count(
            session,
            parties.events_url,
            parties.a_headers,
            _body,
            concurrency=cfg.concurrency,
            count=cfg.fairness_backlog,
            timeout_s=BACKLOG_TIMEOUT_S,
        )
    if stored.ok != cfg.fairness_backlog:
        raise RuntimeError(f"A's backlog: {stored.ok} of {cfg.fairness_backlog} stored: {stored.errors}")
    await receiving.wait_for_distinct(parties.slow, 1, ARRIVAL_TIMEOUT_S)
    procs.log(f"fairness: A's backlog of {stored.ok} stored in {stored.elapsed_s:.1f}s; A is receiving")
    return stored.summary()


def a_rate(arrivals: list[float], period_s: float) -> float | None:
    """Arrivals per second over the whole ``period_s`` periods after the first arrival: A's endpoint
    is answered in bursts a period apart, which a first-to-last rate would count one burst too many."""
    if not arrivals:
        return None
    first, last = min(arrivals), max(arrivals)
    periods = math.floor((last - first) / period_s)
    if periods < 1:
        return None
    window = periods * period_s
    return round(sum(1 for at in arrivals if at < first + window) / window, 2)


async def _a_progress(cfg: BenchConfig, parties: Parties) -> dict[str, Any]:
    """Let A run for ``cfg.fairness_a_window_s`` since its first arrival, then count its throughput."""
    first_at = (await receiving.stats(parties.slow))["first_at"]
    await asyncio.sleep(max(0.0, first_at + cfg.fairness_a_window_s - time.time()))
    arrivals = [at for _, _, at in await receiving.latencies(parties.slow)]
    cap = Settings.from_env(os.environ).max_in_flight_per_subscription
    result = {
        "delay_s": A_DELAY_S,
        "backlog": cfg.fairness_backlog,
        "received": len(arrivals),
        "window_s": round(max(arrivals) - min(arrivals), 2),
        "rate_per_s": a_rate(arrivals, A_DELAY_S),
        "cap": cap,
        "expected_rate_per_s": round(cap / A_DELAY_S, 2),
    }
    procs.log(
        f"fairness: A received {result['received']} in {result['window_s']}s: {result['rate_per_s']}/s"
        f" (cap {cap} / {A_DELAY_S:g}s = {result['expected_rate_per_s']}/s)"
    )
    return result


async def _measure(cfg: BenchConfig, parties: Parties) -> dict[str, Any]:
    alone = await _b_stretch(cfg, parties, "alone")
    backlog = await _a_backlog(cfg, parties)
    beside = await _b_stretch(cfg, parties, "with A's backlog")
    a = await _a_progress(cfg, parties)
    return {"b_alone": alone, "b_with_a": beside, "a": a, "a_publish": backlog}


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    wh = provision.new_webhookd(workdir)
    a_key = provision.create_key(wh, "customer-a")
    b_key = provision.create_key(wh, "customer-b")
    async with (
        receiving.running_receiver(workdir, "fairness-a", record_latency=True, delay_s=A_DELAY_S) as slow,
        receiving.running_receiver(workdir, "fairness-b", record_latency=True) as fast,
        provision.serving(wh, workers=True, log_name="fairness-webhookd") as server,
    ):
        await provision.create_subscription(wh, a_key, slow.hook_url)
        await provision.create_subscription(wh, b_key, fast.hook_url)
        a_headers, b_headers = provision.auth_headers(a_key), provision.auth_headers(b_key)
        parties = Parties(server, f"{wh.base_url}/api/v1/events", a_headers, b_headers, slow, fast)
        result = await _measure(cfg, parties)
    alone, beside = result["b_alone"]["e2e"], result["b_with_a"]["e2e"]
    ratios = {pct: _ratio(beside[f"{pct}_ms"], alone[f"{pct}_ms"]) for pct in ("p50", "p99")}
    return {
        **result,
        "b_events": cfg.fairness_b_events,
        "b_rate_per_s": B_RATE_PER_S,
        "p50_ratio": ratios["p50"],
        "p99_ratio": ratios["p99"],
    }


def _ratio(ours: float, base: float) -> float | None:
    return round(ours / base, 2) if base and not math.isnan(base) and not math.isnan(ours) else None
