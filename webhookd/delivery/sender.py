"""The HTTP edge of delivery: one pooled aiohttp session behind a small ``Sender`` protocol."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from webhookd import __version__
from webhookd.delivery.ssrf import AddressGuard, IPAddress, literal_address
from webhookd.exceptions import DestinationBlocked, SendFailed

EXCERPT_BYTES = 4096
USER_AGENT = f"webhookd/{__version__}"


@dataclass(frozen=True, slots=True)
class SendResponse:
    status: int
    excerpt: bytes
    """The first 4 KiB of the response body."""
    retry_after: str | None = None
    """The ``Retry-After`` header, if any."""


async def _read_excerpt(stream: aiohttp.StreamReader) -> bytes:
    """The first 4 KiB of the body, waiting for it (or its end) within the attempt's timeout, so an
    endpoint that answers 200 but never finishes its body does not count as a success."""
    chunks: list[bytes] = []
    size = 0
    while size < EXCERPT_BYTES:
        chunk = await stream.read(EXCERPT_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class Sender(Protocol):
    """Posts one request. Raises ``SendFailed`` when no HTTP status came back."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResponse: ...

    async def close(self) -> None: ...


@functools.lru_cache(maxsize=4096)
def _literal_host(url: str) -> tuple[str, IPAddress | None]:
    """The URL's host and, if it is an IP literal, its address (cached: URLs repeat)."""
    host = urlsplit(url).hostname or ""
    return host, literal_address(host)


class _BlockedAddress(OSError):
    """Raised inside the resolver so aiohttp aborts the connection; surfaced as DestinationBlocked."""


class GuardedResolver(AbstractResolver):
    """Resolves, then drops every address the guard refuses. Checked at connect time, so a name
    that resolved to a public address when the subscription was made cannot rebind to 127.0.0.1."""

    def __init__(self, guard: AddressGuard, inner: AbstractResolver) -> None:
        self._guard = guard
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._guard.allows(ipaddress.ip_address(r["host"]))]
        if not allowed:
            shown = ", ".join(sorted({r["host"] for r in results}))
            raise _BlockedAddress(f"{host} resolves only to blocked addresses ({shown})")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class AiohttpSender:
    """Sends through one connection pool; redirects are never followed (a 3xx is a failure)."""

    def __init__(self, *, timeout_s: float, max_connections: int, guard: AddressGuard | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._guard = guard or AddressGuard()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver = GuardedResolver(self._guard, aiohttp.ThreadedResolver())
            connector = aiohttp.TCPConnector(
                resolver=resolver,
                limit=self._max_connections,
                limit_per_host=0,
                ttl_dns_cache=60,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            )
        return self._session

    def _check_literal_host(self, url: str) -> None:
        # aiohttp skips the resolver for IP literals, so those are checked here.
        host, address = _literal_host(url)
        if address is not None:
            self._guard.check_address(host, address)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResponse:
        self._check_literal_host(url)
        try:
            async with self._client().post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                excerpt = await _read_excerpt(response.content)
                return SendResponse(response.status, excerpt, response.headers.get("Retry-After"))
        except TimeoutError:
            raise SendFailed(f"timed out after {self._timeout.total:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _BlockedAddress):
                raise DestinationBlocked(str(exc.os_error)) from None
            raise SendFailed(f"{type(exc).__name__}: {exc}") from None
        except aiohttp.ClientError as exc:
            raise SendFailed(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Give SSL transports a moment to close, as aiohttp recommends.
            await asyncio.sleep(0)
            self._session = None
