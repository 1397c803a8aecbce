"""A customer endpoint for the benchmarks, run as its own process: answers 200 to every POST.

With ``--delay-s`` every answer waits that long (a slow but healthy customer endpoint); arrival is
counted when the request comes in. GET /stats gives request and distinct ``webhook-id`` counts with
the wall-clock (``time.time()``) times of the first request and of the last new id. With
``--record-latency`` it also parses each body and keeps ``data.sent_at`` beside the receive time of
each id's first arrival: GET /latencies.
Runs on uvloop when installed, so that the receiver is not what limits the senders.
With ``--stats-port``, several receivers share ``--port`` (SO_REUSEPORT), so that one process is not
the ceiling, each counting what it got on its own stats port.
The process stops on SIGTERM or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web


@dataclass
class Tally:
    record_latency: bool
    requests: int = 0
    seen: set[str] = field(default_factory=set)
    first_at: float | None = None
    last_new_at: float | None = None
    last_any_at: float | None = None
    latencies: list[tuple[str, float | None, float]] = field(default_factory=list)

    def note(self, webhook_id: str, body: bytes) -> None:
        now = time.time()
        self.requests += 1
        self.last_any_at = now
        if self.first_at is None:
            self.first_at = now
        if webhook_id in self.seen:
            return
        self.seen.add(webhook_id)
        self.last_new_at = now
        if self.record_latency:
            self.latencies.append((webhook_id, _sent_at(body), now))


def _sent_at(body: bytes) -> float | None:
    try:
        sent = orjson.loads(body).get("data", {}).get("sent_at")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return float(sent) if isinstance(sent, int | float) else None


def build_app(tally: Tally, delay_s: float = 0.0) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        tally.note(request.headers.get("webhook-id", ""), body)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        return web.Response(status=200, text="ok")

    async def stats(request: web.Request) -> web.Response:
        body = {
            "requests": tally.requests,
            "distinct": len(tally.seen),
            "first_at": tally.first_at,
            "last_new_at": tally.last_new_at,
            "last_any_at": tally.last_any_at,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def latencies(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(tally.latencies), content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    app.router.add_get("/latencies", latencies)
    app.router.add_post("/{tail:.*}", hook)
    return app


async def serve(
    port: int, max_seconds: float, record_latency: bool, delay_s: float, stats_port: int | None = None
) -> None:
    """Serve on ``port``; with ``stats_port``, share ``port`` with the other receivers (SO_REUSEPORT:
    the kernel spreads connections over them) and answer this process's own /stats there too."""
    runner = web.AppRunner(build_app(Tally(record_latency), delay_s), access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        shared = stats_port is not None
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024, reuse_port=shared).start()
        if stats_port is not None:
            await web.TCPSite(runner, "127.0.0.1", stats_port).start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max_seconds)
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    parser.add_argument("--record-latency", action="store_true")
    parser.add_argument("--delay-s", type=float, default=0.0, help="wait this long before each answer")
    parser.add_argument("--asyncio", action="store_true", help="use the stock loop even if uvloop is here")
    parser.add_argument(
        "--stats-port", type=int, help="share --port with other receivers and answer /stats here"
    )
    args = parser.parse_args()
    main_coro = serve(args.port, args.max_seconds, args.record_latency, args.delay_s, args.stats_port)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coro)
        return
    if args.asyncio:
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


if __name__ == "__main__":
    main()
