"""The ingest baseline: a bare starlette app served by uvicorn exactly as ``webhookd serve`` serves.

``POST /api/v1/events`` parses the JSON body with orjson and answers 202 with a small JSON body,
storing nothing. With ``--forward URL`` it also relays every event, signed the Standard Webhooks way,
to ``URL`` from a background task (the latency baseline: a relay with no durability). Stops on
SIGTERM or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import payloads, signing
from webhookd.cli import loop_factory
from webhookd.config import Settings
from webhookd.server import server_config

FORWARD_CONNECTIONS = 64
FORWARD_TIMEOUT_S = 15.0


class Forwarder:
    """Signs and POSTs envelopes through one pooled session, like webhookd's sender."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key = signing.new_secret_key()
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=FORWARD_CONNECTIONS, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=FORWARD_TIMEOUT_S)
        if self.session is not None:
            await self.session.close()

    def relay(self, event_id: str, data: dict[str, Any]) -> None:
        task = asyncio.create_task(self._send(event_id, data))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, event_id: str, data: dict[str, Any]) -> None:
        assert self.session is not None
        body = orjson.dumps(payloads.envelope(event_id, "bench", data))
        headers = signing.signed_headers(self.key, event_id, int(time.time()), body)
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self.session.post(self.url, data=body, headers=headers) as response:
                await response.content.read(4096)


def create_app(forwarder: Forwarder | None) -> Starlette:
    async def publish(request: Request) -> Response:
        parsed = orjson.loads(await request.body())
        event_id = payloads.new_event_id()
        if forwarder is not None:
            forwarder.relay(event_id, parsed.get("data", {}))
        body = orjson.dumps({"id": event_id, "type": parsed.get("type"), "status": "accepted"})
        return Response(body, status_code=202, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if forwarder is not None:
            await forwarder.start()
        try:
            yield
        finally:
            if forwarder is not None:
                await forwarder.close()

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/api/v1/events", publish, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


async def serve(port: int, forward: str | None, max_seconds: float) -> None:
    app = create_app(Forwarder(forward) if forward else None)
    # The uvicorn configuration ``webhookd serve`` runs (request deadlines included): one process,
    # and below, its loop.
    server = uvicorn.Server(server_config(app, Settings.from_env({"WEBHOOKD_PORT": str(port)})))
    watchdog = asyncio.get_running_loop().call_later(max_seconds, setattr, server, "should_exit", True)
    try:
        await server.serve()
    finally:
        watchdog.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--forward", metavar="URL", help="relay every event, signed, to this URL")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:  # uvloop, as webhookd serve runs
        runner.run(serve(args.port, args.forward, args.max_seconds))


if __name__ == "__main__":
    main()
