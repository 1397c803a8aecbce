"""HTTP plumbing shared by the API and ingest: request services, bounded bodies, JSON answers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from webhookd.config import Settings
from webhookd.crypto import SecretBox
from webhookd.delivery.ssrf import AddressGuard
from webhookd.exceptions import ApiError, PayloadTooLarge, RequestError
from webhookd.models import ApiKey
from webhookd.store.base import Store


class KeyCache:
    """API keys by hash, remembered for a few seconds so a busy key costs no database read per
    request. A key is only ever added in this version; when keys can be revoked, a revocation
    takes effect within ``ttl_s``."""

    def __init__(self, store: Store, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self._store, self._ttl_s, self._max_entries = store, ttl_s, max_entries
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}

    async def get(self, key_hash: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._entries.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = await self._store.get_api_key(key_hash)
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        if key is not None:  # unknown keys are not cached, so guessing cannot fill the cache
            self._entries[key_hash] = (now + self._ttl_s, key)
        return key


@dataclass(frozen=True, slots=True)
class Services:
    """What request handlers need, created once in the lifespan and shared through its state."""

    settings: Settings
    store: Store
    box: SecretBox
    guard: AddressGuard
    keys: KeyCache


def services(request: Request) -> Services:
    found: Services = request.state.services
    return found


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: RequestError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message}}
    return JSONResponse(body, status_code=error.status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    body = await read_body(request, limit)
    if not body:
        raise ApiError("the request body is empty; send a JSON object", code="invalid_json")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise ApiError("the body must be a JSON object", code="invalid_json")
    return parsed
