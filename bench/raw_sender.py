"""The delivery baseline: send ``--count`` signed webhooks to ``--url`` as fast as a pooled aiohttp
client can, with no database. One ClientSession (``--concurrency`` connections), as many coroutines,
each building a ~300-byte envelope and signing it (HMAC-SHA256, Standard Webhooks) per request.
Prints a JSON summary on stdout. Gives up after ``--timeout-s``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter

import aiohttp
import orjson

from bench import payloads, signing

EXCERPT_BYTES = 4096
REQUEST_TIMEOUT_S = 15.0


async def _send_one(session: aiohttp.ClientSession, url: str, key: bytes, seq: int) -> str | None:
    event_id = payloads.new_event_id()
    body = orjson.dumps(payloads.envelope(event_id, "bench", payloads.call_data(seq)))
    headers = signing.signed_headers(key, event_id, int(time.time()), body)
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            await response.content.read(EXCERPT_BYTES)
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return type(exc).__name__


async def send_all(url: str, count: int, concurrency: int) -> dict[str, object]:
    key = signing.new_secret_key()
    errors: Counter[str] = Counter()
    next_seq = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_seq
        while next_seq < count:
            seq = next_seq
            next_seq += 1
            error = await _send_one(session, url, key, seq)
            if error is not None:
                errors[error] += 1

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    began, cpu_began = time.perf_counter(), time.process_time()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {
        "sent": count,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "elapsed_s": elapsed,
        "cpu_s": time.process_time() - cpu_began,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    summary = asyncio.run(asyncio.wait_for(send_all(args.url, args.count, args.concurrency), args.timeout_s))
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")


if __name__ == "__main__":
    main()
