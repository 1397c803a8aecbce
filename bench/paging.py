"""(e) Paging isolation: customer A's deep ``page=`` listings against customer B's publishes.

Customer A has 20,000 subscriptions and keeps 100 listings of 100 going back to back; customer B
publishes at a steady rate (open loop). B's publish latency is measured alone, then while A lists
at two depths: the last page (offset 19,900) and offset 10,000. All in one run on one webhookd
(``serve`` without workers), whose per-key rate limit is lifted so that A's listings reach the
store instead of being answered 429.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import load, payloads, procs, provision
from bench.config import BenchConfig

SUBSCRIPTIONS = 20_000
LISTERS = 100
PAGE_SIZE = 100
OFFSETS = (19_900, 10_000)
B_RATE_PER_S = 100.0
LIST_WARMUP_S = 1.0
SEED_CONCURRENCY = 64
SEED_TIMEOUT_S = 300.0
SUBS_PATH = "/api/v1/webhook-subscriptions"


def _subscription_body(seq: int) -> bytes:
    body = {"url": f"http://127.0.0.1:9/a/{seq}", "events": [payloads.EVENT_TYPE]}
    return orjson.dumps(body)


def _publish_body(seq: int) -> bytes:
    return orjson.dumps(payloads.publish_body(seq))


async def _seed(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> dict[str, Any]:
    seeded = await load.fixed_count(
        session,
        base + SUBS_PATH,
        headers,
        _subscription_body,
        concurrency=SEED_CONCURRENCY,
        count=SUBSCRIPTIONS,
        timeout_s=SEED_TIMEOUT_S,
    )
    if seeded.ok != SUBSCRIPTIONS:
        raise RuntimeError(f"seeding made {seeded.ok} of {SUBSCRIPTIONS} subscriptions: {seeded.errors}")
    procs.log(f"paging: seeded {seeded.ok} subscriptions for A in {seeded.elapsed_s:.1f}s")
    return seeded.summary()


def _start_listing(
    url: str,
    session: aiohttp.ClientSession,
    headers: dict[str, str],
    stop: asyncio.Event,
    result: load.LoadResult,
) -> asyncio.Task[None]:
    """A task that lists ``url`` back to back until ``stop`` is set."""

    async def list_until() -> None:
        while not stop.is_set():
            await load.request_once(session, "GET", url, None, headers, result)

    return asyncio.create_task(list_until())


@dataclass(frozen=True)
class Parties:
    """The running webhookd, and the headers of customer A (who lists) and B (who publishes)."""

    server: procs.Proc
    base_url: str
    a_headers: dict[str, str]
    b_headers: dict[str, str]


async def _stretch(cfg: BenchConfig, parties: Parties, list_url: str | None) -> dict[str, Any]:
    """B's publishes, alone or while ``LISTERS`` of A's listings of ``list_url`` run back to back."""
    listed, stop = load.LoadResult(), asyncio.Event()
    meter = procs.CpuMeter(parties.server)
    async with load.client_session(LISTERS) as a_session, load.client_session(cfg.concurrency) as b_session:
        listing = (a_session, parties.a_headers, stop, listed)
        listers = [] if list_url is None else [_start_listing(list_url, *listing) for _ in range(LISTERS)]
        if listers:
            await asyncio.sleep(LIST_WARMUP_S)  # A's listings queue up before B's first publish
        began = listed.ok + listed.error_count
        try:
            published = await load.paced(
                b_session,
                f"{parties.base_url}/api/v1/events",
                parties.b_headers,
                _publish_body,
                rate=B_RATE_PER_S,
                duration_s=cfg.paging_duration_s,
            )
        finally:
            stop.set()
            await asyncio.gather(*listers)
    return {
        "publish": published.summary(),
        "listings": listed.summary() | {"during_publishing": listed.ok + listed.error_count - began},
        "server_cpu_share": meter.share(),
    }


@contextlib.asynccontextmanager
async def _webhookd(workdir: Path) -> AsyncIterator[Parties]:
    wh = provision.new_webhookd(workdir, WEBHOOKD_RATE_LIMIT_PER_MIN="100000000")
    a_key = provision.create_key(wh, "customer-a", "manage_webhooks")
    b_key = provision.create_key(wh, "customer-b", provision.SCOPES)
    async with provision.serving(wh, workers=False, log_name="paging-webhookd") as server:
        await provision.create_subscription(wh, b_key, "http://127.0.0.1:9/b")
        yield Parties(server, wh.base_url, provision.auth_headers(a_key), provision.auth_headers(b_key))


def _log(label: str, stretch: dict[str, Any]) -> None:
    p, a = stretch["publish"], stretch["listings"]
    procs.log(
        f"paging: {label}: B publish p50 {p['p50_ms']}ms p99 {p['p99_ms']}ms max {p['max_ms']}ms"
        f" ({p['ok']} ok, {p['errors']} errors); A listings {a['ok']} ok {a['error_kinds']}"
        f" p50 {a['p50_ms']}ms; server cpu {stretch['server_cpu_share']}"
    )


async def run(cfg: BenchConfig, workdir: Path) -> dict[str, Any]:
    async with _webhookd(workdir) as parties:
        async with load.client_session(SEED_CONCURRENCY) as session:
            seed = await _seed(session, parties.base_url, parties.a_headers)
        alone = await _stretch(cfg, parties, None)
        _log("B alone", alone)
        during: dict[str, Any] = {}
        for offset in OFFSETS:
            list_url = f"{parties.base_url}{SUBS_PATH}?limit={PAGE_SIZE}&page={offset // PAGE_SIZE}"
            during[str(offset)] = await _stretch(cfg, parties, list_url)
            _log(f"A at offset {offset:,}", during[str(offset)])
    return {
        "subscriptions": SUBSCRIPTIONS,
        "listers": LISTERS,
        "page_size": PAGE_SIZE,
        "b_rate_per_s": B_RATE_PER_S,
        "duration_s": cfg.paging_duration_s,
        "seed": seed,
        "alone": alone,
        "during": during,
    }
