"""Real parts for integration tests: webhookd on a free port, aiohttp receivers, provisioning."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvicorn
from aiohttp import web

from webhookd.app import create_app
from webhookd.config import Settings
from webhookd.crypto import SecretBox, hash_api_key, new_api_key, source_credentials_context
from webhookd.models import ApiKey, Carrier, Scope, Source, new_id, utcnow
from webhookd.server import server_config
from webhookd.store import Store, store_from_settings
from webhookd.store.postgres import PostgresStore
from webhookd.store.sqlite import SqliteStore

MASTER_KEY = base64.b64encode(b"k" * 32).decode()
FAST_ENV = {
    "WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS": "true",
    "WEBHOOKD_MASTER_KEY": MASTER_KEY,
    "WEBHOOKD_POLL_INTERVAL_S": "0.05",
}


POSTGRES_DSN = os.environ.get("WEBHOOKD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
"""The server the multi-process PostgreSQL tests run on (each in a schema of its own)."""


def psql(sql: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run ``sql`` with the psql client on :data:`POSTGRES_DSN`."""
    command = ["psql", POSTGRES_DSN, "-v", "ON_ERROR_STOP=1", *flags, "-qc", sql]
    return subprocess.run(command, capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_settings(db_path: Path, **env: str) -> Settings:
    """Settings for a test server on a free port, with the SSRF guard lifted for 127.0.0.1."""
    values = {
        **FAST_ENV,
        "WEBHOOKD_DATABASE_URL": f"sqlite:///{db_path}",
        "WEBHOOKD_PORT": str(free_port()),
        **env,
    }
    return Settings.from_env(values)


@contextlib.asynccontextmanager
async def running_server(settings: Settings, **app_kwargs: Any) -> AsyncIterator[str]:
    """Serve webhookd with uvicorn in this event loop, configured as ``webhookd serve`` does;
    yields its base URL."""
    server = uvicorn.Server(server_config(create_app(settings, **app_kwargs), settings))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("webhookd did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class MovableClock:
    """Real UTC time plus an offset the test moves forward. Given to ``create_app(clock=...)``, it lets
    a server live through a grace period without the test waiting for it."""

    offset: timedelta = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def move_past(self, moment: datetime) -> None:
        """From now on, the clock reads later than ``moment``."""
        self.offset = max(self.offset, moment - utcnow() + timedelta(seconds=1))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    """What the receiver answered."""
    arrived_at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """A customer endpoint: records every request and answers with ``status_for(request)``."""

    status_for: Callable[[Received], int] = lambda _: 200
    delay_s: float = 0.0
    """How long each answer takes (many deliveries then stay in flight)."""
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        received = Received(request.path, dict(request.headers), await request.read())
        status = received.status = self.status_for(received)
        async with self._arrived:
            self.requests.append(received)
            self._arrived.notify_all()
        await asyncio.sleep(self.delay_s)
        return web.Response(status=status, text="ok")

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = 10) -> None:
        async def until() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: predicate(self.requests))

        await asyncio.wait_for(until(), timeout_s)

    def event_ids(self) -> set[str]:
        return {r.headers["webhook-id"] for r in self.requests}


@contextlib.asynccontextmanager
async def running_receiver(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    receiver = receiver or Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


async def provision_key(db_path: Path, customer_id: str, scopes: set[Scope], name: str | None = None) -> str:
    """Create a customer's API key directly in the database file; returns the plain key."""
    store = SqliteStore(db_path)
    await store.open()
    try:
        return await create_key(store, customer_id, scopes, name)
    finally:
        await store.close()


async def create_key(store: Store, customer_id: str, scopes: set[Scope], name: str | None = None) -> str:
    """Create a customer's API key in an open store; returns the plain key."""
    await store.ensure_customer(customer_id, name)
    key = new_api_key()
    await store.create_api_key(
        ApiKey(new_id("key"), customer_id, hash_api_key(key), frozenset(scopes), None, utcnow())
    )
    return key


async def provision_source(
    db_path: Path, customer_id: str, carrier: Carrier, credentials: dict[str, str]
) -> str:
    store = SqliteStore(db_path)
    await store.open()
    try:
        return await create_source(store, customer_id, carrier, credentials)
    finally:
        await store.close()


async def create_source(store: Store, customer_id: str, carrier: Carrier, credentials: dict[str, str]) -> str:
    """Register a carrier source in an open store, its credentials sealed with ``MASTER_KEY``."""
    await store.ensure_customer(customer_id)
    box = SecretBox(base64.b64decode(MASTER_KEY))
    source_id = new_id("src")
    sealed = box.encrypt(orjson.dumps(credentials), source_credentials_context(source_id))
    await store.create_source(Source(source_id, customer_id, carrier, sealed, utcnow()))
    return source_id


@contextlib.asynccontextmanager
async def opened_store(settings: Settings) -> AsyncIterator[Store]:
    """The store a test server's settings name, open beside the server: to provision or inspect it."""
    store = store_from_settings(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def postgres_database_url(dsn: str, schema: str) -> str:
    """Make ``schema`` with webhookd's tables; returns the database URL that serves from it."""
    store = PostgresStore(dsn, schema=schema)
    await store.open()
    await store.close()
    # asyncpg passes unknown URL parameters on to the server as settings.
    return f"{dsn}?search_path={schema}"


def count_rows(db_path: Path, table: str) -> int:
    """Count rows with a plain read-only connection: what is really on disk."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0])


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def webhookd_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "webhookd", *args]


def subprocess_env(settings_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **FAST_ENV, **settings_env}


def query(db_path: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read what is on disk through a separate read-only connection."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return list(conn.execute(sql, params).fetchall())


async def eventually(check: Callable[[], bool], timeout_s: float = 10, interval_s: float = 0.02) -> None:
    """Wait until ``check()`` holds; fail the test with a timeout otherwise."""

    async def poll() -> None:
        while not check():
            await asyncio.sleep(interval_s)

    await asyncio.wait_for(poll(), timeout_s)


@contextlib.asynccontextmanager
async def webhookd_process(
    env: dict[str, str], base: str, log: Path, *args: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``python -m webhookd serve`` (or ``args``) as a real process, healthy when this yields;
    SIGTERM and wait on the way out."""
    with log.open("ab") as out:
        process = subprocess.Popen(webhookd_command(*(args or ("serve",))), env=env, stdout=out, stderr=out)
    try:
        await _wait_healthy(base, process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()  # a hung shutdown must not leave a server behind the test run
            await asyncio.to_thread(process.wait, 5)


async def _wait_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if process.poll() is not None:
                raise RuntimeError(f"webhookd exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError("webhookd did not become healthy")
