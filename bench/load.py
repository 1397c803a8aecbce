"""The load generator: an aiohttp client that posts closed-loop (back to back) or open-loop (paced)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

REQUEST_TIMEOUT_S = 30.0
BodyFor = Callable[[int], bytes]
OnOk = Callable[[bytes], None]
"""Called with the body of each 2xx answer as it is read (the publish benchmarks note event ids)."""


@dataclass
class LoadResult:
    """What one load run saw. Only 2xx answers count as ``ok``."""

    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_per_s": round(self.rate, 1),
            **latency_summary_ms(self.latencies_s),
        }


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values; NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values_s)
    summary = {f"p{p:g}_ms": round(percentile(ordered, p) * 1000, 2) for p in (50, 95, 99)}
    summary["max_ms"] = round(ordered[-1] * 1000, 2) if ordered else math.nan
    return summary


def client_session(limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))


async def post_once(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    result: LoadResult,
    on_ok: OnOk | None = None,
) -> bool:
    """POST one body, read the answer, and record latency and outcome in ``result``."""
    return await request_once(session, "POST", url, body, headers, result, on_ok)


async def request_once(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    result: LoadResult,
    on_ok: OnOk | None = None,
) -> bool:
    """Send one request, read the answer, and record latency and outcome in ``result``."""
    began = time.perf_counter()
    try:
        async with session.request(method, url, data=body, headers=headers) as response:
            answer = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        result.errors[type(exc).__name__] += 1
        return False
    result.latencies_s.append(time.perf_counter() - began)
    if 200 <= status < 300:
        result.ok += 1
        if on_ok is not None:
            on_ok(answer)
        return True
    result.errors[f"HTTP {status}"] += 1
    return False


@dataclass
class _Counter:
    next_seq: int = 0


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body_for: BodyFor,
    seq: _Counter,
    limit: tuple[float, int],
    result: LoadResult,
) -> None:
    deadline, max_requests = limit
    while time.perf_counter() < deadline and seq.next_seq < max_requests:
        n = seq.next_seq
        seq.next_seq += 1
        await post_once(session, url, body_for(n), headers, result)


async def closed_loop(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body_for: BodyFor,
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> LoadResult:
    """``concurrency`` coroutines post back to back until ``duration_s`` passes or ``max_requests``."""
    result = LoadResult()
    seq = _Counter()
    began = time.perf_counter()
    limit = (began + duration_s, max_requests)
    workers = [_worker(session, url, headers, body_for, seq, limit, result) for _ in range(concurrency)]
    await asyncio.wait_for(asyncio.gather(*workers), duration_s + REQUEST_TIMEOUT_S + 5)
    result.elapsed_s = time.perf_counter() - began
    return result


async def fixed_count(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body_for: BodyFor,
    *,
    concurrency: int,
    count: int,
    timeout_s: float,
) -> LoadResult:
    """Post exactly ``count`` bodies with ``concurrency`` coroutines, giving up after ``timeout_s``."""
    return await closed_loop(
        session, url, headers, body_for, concurrency=concurrency, duration_s=timeout_s, max_requests=count
    )


@dataclass(frozen=True)
class Target:
    """Where one share of a spread load goes: a URL with its own headers."""

    url: str
    headers: dict[str, str]


async def spread(
    session: aiohttp.ClientSession,
    targets: Sequence[Target],
    body_for: BodyFor,
    *,
    concurrency: int,
    count: int,
    timeout_s: float,
) -> LoadResult:
    """``fixed_count`` over several targets at once, ``concurrency`` each and ``count`` in all, split
    evenly; one result, whose elapsed time is the slowest target's."""
    shares = [count // len(targets) + (n < count % len(targets)) for n in range(len(targets))]
    parts = await asyncio.gather(
        *(
            fixed_count(
                session, t.url, t.headers, body_for, concurrency=concurrency, count=share, timeout_s=timeout_s
            )
            for t, share in zip(targets, shares, strict=True)
        )
    )
    merged = LoadResult(elapsed_s=max(p.elapsed_s for p in parts))
    for part in parts:
        merged.ok += part.ok
        merged.errors.update(part.errors)
        merged.latencies_s.extend(part.latencies_s)
    return merged


@dataclass
class PacedResult:
    load: LoadResult
    issued: int
    issue_window_s: float
    max_lag_ms: float

    def summary(self) -> dict[str, Any]:
        offered = self.issued / self.issue_window_s if self.issue_window_s > 0 else 0.0
        return {
            **self.load.summary(),
            "issued": self.issued,
            "issue_window_s": round(self.issue_window_s, 3),
            "offered_rate_per_s": round(offered, 1),
            "max_pacing_lag_ms": round(self.max_lag_ms, 2),
        }


async def paced(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body_for: BodyFor,
    *,
    rate: float,
    duration_s: float,
    on_ok: OnOk | None = None,
) -> PacedResult:
    """Open loop: request ``n`` is started at ``n / rate`` s, whatever earlier requests are doing.

    ``body_for`` runs when the request starts, so it can embed the send time. Requests that fall due
    in the same event-loop tick start together. Issuing stops at ``rate * duration_s`` requests or
    ``duration_s + 1`` s, whichever comes first. ``on_ok`` sees each 2xx answer's body."""
    result = LoadResult()
    total = int(rate * duration_s)
    tasks: list[asyncio.Task[bool]] = []
    began = time.perf_counter()
    hard_stop = began + duration_s + 1
    max_lag = 0.0
    while len(tasks) < total and time.perf_counter() < hard_stop:
        now = time.perf_counter()
        due = min(total, int((now - began) * rate) + 1)
        if due > len(tasks):
            max_lag = max(max_lag, now - (began + len(tasks) / rate))
        while len(tasks) < due:
            body = body_for(len(tasks))
            tasks.append(asyncio.create_task(post_once(session, url, body, headers, result, on_ok)))
        await asyncio.sleep(max(0.0, began + len(tasks) / rate - time.perf_counter()))
    issue_window = time.perf_counter() - began
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
        for task in pending:
            task.cancel()
        result.errors["unfinished"] += len(pending)
    result.elapsed_s = time.perf_counter() - began
    return PacedResult(result, len(tasks), issue_window, max_lag * 1000)
