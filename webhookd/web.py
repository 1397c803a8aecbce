"""HTTP plumbing shared by the API and ingest: request services, bounded bodies, JSON answers."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webhookd import logs
from webhookd.config import Settings
from webhookd.crypto import SecretBox
from webhookd.delivery.ssrf import AddressGuard
from webhookd.exceptions import (
    ApiError,
    Overloaded,
    OverloadRefusal,
    PayloadTooLarge,
    RequestError,
    StorageRefusal,
    StorageUnavailable,
)
from webhookd.inputs import json_problem
from webhookd.metrics import Metrics
from webhookd.models import ApiKey
from webhookd.ratelimit import RateLimiter
from webhookd.store.base import Store
from webhookd.tracing import NO_TRACING, Tracing


class Background:
    """Bounded work the API starts and does not wait for (recover), cancelled at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "background task %s failed",
                task.get_name(),
                exc_info=task.exception(),
                extra={"action": "background.error"},
            )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


Endpoint = Callable[[Request], Awaitable[Response]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Request ids are labels, not secrets: a seeded generator avoids a getrandom() syscall per request.
_ids = random.Random(os.urandom(32))


class RequestContextMiddleware:
    """``X-Request-Id`` on every response (a well-formed incoming one is kept), and the caller's
    rate-limit figures, which authentication leaves in the request state.

    It works on the raw ASGI header lists: every request passes through here, and building
    header objects for one lookup and one to three additions cost more than the lookups."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        logs.request_id.set(request_id)  # this request's task only: every log line it writes
        id_header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                added = [id_header]
                decision = state.get("rate_limit")
                if decision is not None:
                    added.append((b"x-ratelimit-limit", str(decision.limit).encode("ascii")))
                    added.append((b"x-ratelimit-remaining", str(decision.remaining).encode("ascii")))
                message = {**message, "headers": [*message.get("headers", ()), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HotRoute:
    """One busy route served ahead of the router: ``method path`` goes straight to ``endpoint``.

    Starlette's exception middleware, router and per-request wrappers cost about as much as the
    publish handler itself, and ``POST /api/v1/events`` takes the platform's whole event stream.
    The route stays registered in the router as well (the OpenAPI document is built from there);
    this only gets to it first. ``endpoint``'s refusals (:class:`RequestError`,
    :class:`StorageUnavailable` and :class:`Overloaded`) are answered here as the exception
    middleware would, a client
    gone is let go; anything else goes on to the server-error handler.
    """

    def __init__(self, app: ASGIApp, *, method: str, path: str, endpoint: Endpoint) -> None:
        self.app, self.method, self.path, self.endpoint = app, method, path, endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != self.path
            or scope["method"] != self.method
            or scope.get("root_path")  # mounted under a prefix: the router knows how to strip it
        ):
            await self.app(scope, receive, send)
            return
        try:
            response = await self.endpoint(Request(scope, receive, send))
        except RequestError as exc:
            response = error_response(exc)
        except StorageUnavailable:
            response = storage_refusal()
        except Overloaded:
            response = overload_refusal()
        except ClientDisconnect:
            return  # gone before its body was read (or cut off by the body deadline): nobody to answer
        await response(scope, receive, send)


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-Id`` if it is well formed, else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            if _REQUEST_ID.match(incoming):
                return incoming
            break
    return f"{_ids.getrandbits(128):032x}"


KEY_USE_MARK_S = 60.0
"""How often a node records that a key was used: ``last_used_at`` costs one write a minute per busy
key, never one per request."""
KEY_CACHE_TTL_S = 5.0
"""How long a node trusts an API key it looked up, when no revocation is heard of meanwhile."""


class KeyCache:
    """API keys by hash, remembered for a few seconds so a busy key costs no database read per
    request. Any revocation empties it (see :meth:`Store.key_revocations`): on the node that revoked at
    once, on the others as soon as the store hears of it (SQLite: at once; PostgreSQL: its NOTIFY)."""

    def __init__(self, store: Store, ttl_s: float = KEY_CACHE_TTL_S, max_entries: int = 10_000) -> None:
        self._store, self._ttl_s, self._max_entries = store, ttl_s, max_entries
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}
        self._use_marked: dict[str, float] = {}
        """When this node last recorded each key's use (monotonic seconds)."""
        self._revocations = store.key_revocations()

    async def get(self, key_hash: str) -> ApiKey | None:
        now = time.monotonic()
        revocations = self._store.key_revocations()
        if revocations != self._revocations:
            self._entries.clear()
            self._revocations = revocations
        cached = self._entries.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = await self._store.get_api_key(key_hash)
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        if key is not None:  # unknown keys are not cached, so guessing cannot fill the cache
            self._entries[key_hash] = (now + self._ttl_s, key)
        return key

    def use_is_due(self, key_id: str) -> bool:
        """Whether to record the key's use now: the first use on this node, and then once every
        ``KEY_USE_MARK_S``."""
        now = time.monotonic()
        marked = self._use_marked.get(key_id)
        if marked is not None and now - marked < KEY_USE_MARK_S:
            return False
        if len(self._use_marked) >= self._max_entries:
            self._use_marked.clear()
        self._use_marked[key_id] = now
        return True


@dataclass(frozen=True, slots=True)
class Services:
    """What request handlers need, created once in the lifespan and shared through its state."""

    settings: Settings
    store: Store
    box: SecretBox
    guard: AddressGuard
    keys: KeyCache
    limiter: RateLimiter
    background: Background
    metrics: Metrics
    clock: Callable[[], datetime]
    """Now, where the delivery worker's clock must agree: when a rotated-out secret stops signing."""
    session_key: bytes
    """Signs dashboard sessions and their CSRF tokens; derived from the master key."""
    tracing: Tracing = NO_TRACING


logger = logging.getLogger(__name__)


def request_state(request: Request) -> dict[str, Any]:
    """This request's state, straight from the ASGI scope: ``request.state`` would build a wrapper
    object on every access."""
    state: dict[str, Any] = request.scope["state"]
    return state


def services(request: Request) -> Services:
    found: Services = request_state(request)["services"]
    return found


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: RequestError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


STORAGE_RETRY_AFTER_S = 5


def storage_refusal() -> JSONResponse:
    """The answer to a request that met :class:`StorageUnavailable`: a 503 the client can retry,
    on a connection that stays open. The store logs the outage, so this logs nothing."""
    return error_response(
        StorageRefusal(
            "storage is unavailable for the moment and this request changed nothing;"
            f" retry it in {STORAGE_RETRY_AFTER_S} seconds",
            headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
        )
    )


OVERLOAD_RETRY_AFTER_S = 1


def overload_refusal() -> JSONResponse:
    """The answer to a request whose write met :class:`Overloaded`: a 503 the client can retry
    shortly, on a connection that stays open."""
    return error_response(
        OverloadRefusal(
            "webhookd has more writes waiting than it accepts and this request changed nothing;"
            f" retry it in {OVERLOAD_RETRY_AFTER_S} second",
            headers={"Retry-After": str(OVERLOAD_RETRY_AFTER_S)},
        )
    )


def query_param(request: Request, name: str) -> str | None:
    """The query parameter ``name``, ``None`` when it is not given. Given empty (``?name=``) is a
    400: it is a client's mistake more often than a wish for the default."""
    raw = request.query_params.get(name)
    if raw == "":
        raise ApiError(f"{name} is empty: give it a value or leave it out", code="invalid_parameter")
    return raw


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it exceeds ``limit`` bytes. It takes the
    body's messages from ``receive``, so read a request's body once, here."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    # Straight from ASGI ``receive`` rather than ``request.stream()``: an async generator per
    # request costs more than the loop, and most bodies come in one message.
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json_object(
    request: Request, limit: int, allowed: Collection[str], *, optional: bool = False
) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` fields, or a 400 that says what is wrong
    (an ``optional`` body left out is ``{}``). Whatever it holds can be stored and encoded again
    (see :func:`webhookd.inputs.json_problem`)."""
    body = await read_body(request, limit)
    if not body and optional:
        return {}
    if not body:
        raise ApiError("the request body is empty; send a JSON object", code="invalid_json")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise ApiError("the body must be a JSON object", code="invalid_json")
    problem = json_problem(body, parsed)
    if problem is not None:
        raise ApiError(f"the body {problem}", code="invalid_json")
    return object_fields(parsed, allowed)


def object_fields(value: Any, allowed: Collection[str], name: str = "the body") -> dict[str, Any]:
    """``value`` (part of a parsed body, called ``name``) as a JSON object with only ``allowed``
    fields, or a 400 that says what is wrong."""
    if not isinstance(value, dict):
        raise ApiError(f"{name} must be a JSON object", code="invalid_json")
    extra = value.keys() - allowed
    if extra:
        raise ApiError(f"unknown fields {sorted(extra)}; allowed: {sorted(allowed)}", code="invalid_field")
    return value
