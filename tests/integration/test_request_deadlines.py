"""Slow clients over raw sockets: a request that stalls in its line, its headers or its body does
not hold its connection for ever. The server closes it (the read returns EOF); a late body is
answered 408 first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.integration.harness import count_rows, provision_key, running_server, server_settings
from webhookd.models import Scope

pytestmark = pytest.mark.anyio

DEADLINE_S = "0.3"
GUARD_S = 20
"""Only keeps a broken server from hanging the test run: what is checked is the EOF."""


@contextlib.asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, int, str]]:
    """A server with short deadlines; yields its host, port and a publishing key."""
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.PUBLISH_EVENTS})
    settings = server_settings(
        db, WEBHOOKD_REQUEST_HEAD_TIMEOUT_S=DEADLINE_S, WEBHOOKD_REQUEST_BODY_TIMEOUT_S=DEADLINE_S
    )
    async with running_server(settings):
        yield settings.host, settings.port, key


async def sent(host: str, port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Everything the server sends until it closes the connection."""
    try:
        return await asyncio.wait_for(reader.read(), GUARD_S)
    finally:
        writer.close()


def publish_head(key: str, length: int) -> bytes:
    return (
        f"POST /api/v1/events HTTP/1.1\r\nHost: webhookd\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("partial", [b"", b"POST /api/v1/ev"], ids=["nothing", "half a request line"])
async def test_a_request_line_that_never_ends_is_closed(tmp_path: Path, partial: bytes) -> None:
    async with served(tmp_path) as (host, port, _):
        assert await until_closed(*await sent(host, port, partial)) == b""


async def test_headers_that_never_end_are_closed(tmp_path: Path) -> None:
    async with served(tmp_path) as (host, port, key):
        stalled = publish_head(key, 20).split(b"Content-Type")[0] + b"Content-Ty"
        assert await until_closed(*await sent(host, port, stalled)) == b""


async def test_a_second_request_on_a_kept_alive_connection_that_stalls_is_closed(tmp_path: Path) -> None:
    async with served(tmp_path) as (host, port, _):
        reader, writer = await sent(host, port, b"GET /healthz HTTP/1.1\r\nHost: webhookd\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD_S)
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.readexactly(len(b'{"status":"ok"}')), GUARD_S)
        writer.write(b"GET /heal")
        await writer.drain()
        assert await until_closed(reader, writer) == b""


async def test_a_publish_whose_body_stalls_is_answered_408_and_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = orjson.dumps({"type": "call.completed", "data": {"n": 1}})
    async with served(tmp_path) as (host, port, key):
        caplog.clear()
        answer = await until_closed(*await sent(host, port, publish_head(key, len(body)) + body[:10]))
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in head.lower()
    error = orjson.loads(rest)["error"]
    assert error["code"] == "request_timeout"
    assert "send the whole body" in error["message"]
    assert count_rows(tmp_path / "w.db", "events") == 0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_requests_sent_in_time_are_served_one_after_another_on_one_connection(tmp_path: Path) -> None:
    body = orjson.dumps({"type": "call.completed", "data": {"n": 1}})
    async with served(tmp_path) as (host, port, key):
        reader, writer = await asyncio.open_connection(host, port)
        for _ in range(3):
            writer.write(publish_head(key, len(body)) + body)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD_S)
            assert head.startswith(b"HTTP/1.1 202"), head
            length = next(
                int(v)
                for k, _, v in (h.partition(b": ") for h in head.split(b"\r\n"))
                if k == b"content-length"
            )
            await asyncio.wait_for(reader.readexactly(length), GUARD_S)
        writer.close()
    assert count_rows(tmp_path / "w.db", "events") == 3
