"""The HTTP edge of delivery: one pooled aiohttp session behind a small ``Sender`` protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from webhookd import __version__
from webhookd.exceptions import SendFailed

EXCERPT_BYTES = 4096
USER_AGENT = f"webhookd/{__version__}"


@dataclass(frozen=True, slots=True)
class SendResponse:
    status: int
    excerpt: bytes
    """The first 4 KiB of the response body."""


class Sender(Protocol):
    """Posts one request. Raises ``SendFailed`` when no HTTP status came back."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResponse: ...

    async def close(self) -> None: ...


class AiohttpSender:
    """Sends through one connection pool; redirects are never followed (a 3xx is a failure)."""

    def __init__(self, *, timeout_s: float, max_connections: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
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

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResponse:
        try:
            async with self._client().post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                excerpt = await response.content.read(EXCERPT_BYTES)
                return SendResponse(response.status, excerpt)
        except TimeoutError:
            raise SendFailed(f"timed out after {self._timeout.total:g}s") from None
        except aiohttp.ClientError as exc:
            raise SendFailed(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Give SSL transports a moment to close, as aiohttp recommends.
            await asyncio.sleep(0)
            self._session = None
