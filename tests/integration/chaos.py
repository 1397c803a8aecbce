"""A misbehaving customer endpoint: each path answers in one bad way, and every request is logged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate

from aiohttp import web

from tests.integration.harness import free_port

SLOW_S = 2.0


@dataclass
class ChaosEndpoint:
    base: str = ""
    hits: dict[str, list[float]] = field(default_factory=dict)
    """Arrival times (monotonic) of requests, by path."""

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def times(self, path: str) -> list[float]:
        return self.hits.get(f"/{path}", [])


def _routes(chaos: ChaosEndpoint) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    def log(request: web.Request) -> None:
        chaos.hits.setdefault(request.path, []).append(time.monotonic())

    @routes.post("/500")
    async def error(request: web.Request) -> web.Response:
        log(request)
        return web.Response(status=500, text="x" * 10_000)  # longer than the 4 KiB excerpt

    @routes.post("/503-retry-after-seconds")
    async def unavailable(request: web.Request) -> web.Response:
        log(request)
        return web.Response(status=503, headers={"Retry-After": "1"})

    @routes.post("/429-retry-after-date")
    async def limited(request: web.Request) -> web.Response:
        log(request)
        # Far beyond the schedule's longest step: only the cap brings the retry back in time.
        return web.Response(status=429, headers={"Retry-After": formatdate(time.time() + 3600, usegmt=True)})

    @routes.post("/410")
    async def gone(request: web.Request) -> web.Response:
        log(request)
        return web.Response(status=410)

    @routes.post("/301")
    async def moved(request: web.Request) -> web.Response:
        log(request)
        raise web.HTTPMovedPermanently(location=chaos.url("redirect-target"))

    @routes.post("/redirect-target")
    async def target(request: web.Request) -> web.Response:
        log(request)
        return web.Response(status=200)

    @routes.post("/timeout")
    async def hang(request: web.Request) -> web.Response:
        log(request)
        await asyncio.sleep(SLOW_S)
        return web.Response(status=200)

    @routes.post("/reset")
    async def reset(request: web.Request) -> web.Response:
        log(request)
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=200)

    @routes.post("/slow-body")
    async def slow_body(request: web.Request) -> web.StreamResponse:
        log(request)
        response = web.StreamResponse(status=200)
        response.content_length = 1000
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"x" * 10)
            await asyncio.sleep(SLOW_S / 10)
        return response

    return routes


@contextlib.asynccontextmanager
async def running_chaos() -> AsyncIterator[ChaosEndpoint]:
    chaos = ChaosEndpoint()
    app = web.Application()
    app.add_routes(_routes(chaos))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    chaos.base = f"http://127.0.0.1:{port}"
    try:
        yield chaos
    finally:
        await runner.cleanup()
