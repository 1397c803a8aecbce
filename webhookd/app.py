"""The ASGI application: wiring and lifespan. No module-level state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from webhookd import api, dashboard
from webhookd.config import Settings
from webhookd.crypto import SecretBox, master_key_from_settings
from webhookd.delivery.retention import prune_forever
from webhookd.delivery.sender import AiohttpSender, Sender
from webhookd.delivery.ssrf import AddressGuard
from webhookd.delivery.worker import Worker
from webhookd.exceptions import ApiError, Overloaded, RequestError, StorageUnavailable
from webhookd.ingest.routes import routes as ingest_routes
from webhookd.metrics import Metrics
from webhookd.models import utcnow
from webhookd.ratelimit import RateLimiter
from webhookd.retry import RetryPolicy
from webhookd.store import Store, store_from_settings
from webhookd.tracing import NO_TRACING, Tracing, tracing_from_env
from webhookd.web import (
    Background,
    HotRoute,
    JSONResponse,
    KeyCache,
    RequestContextMiddleware,
    Services,
    error_response,
    overload_refusal,
    storage_refusal,
)

logger = logging.getLogger(__name__)


def build_worker(
    settings: Settings,
    store: Store,
    sender: Sender,
    box: SecretBox,
    metrics: Metrics | None = None,
    clock: Callable[[], datetime] = utcnow,
    tracing: Tracing = NO_TRACING,
) -> Worker:
    return Worker(
        store,
        sender,
        box,
        RetryPolicy(settings.retry_schedule_s),
        concurrency=settings.worker_concurrency,
        per_subscription=settings.max_in_flight_per_subscription,
        poll_interval_s=settings.poll_interval_s,
        shutdown_grace_s=settings.shutdown_grace_s,
        metrics=metrics,
        clock=clock,
        tracing=tracing,
    )


async def run_delivery(settings: Settings, store: Store, worker: Worker) -> None:
    """The worker, with retention pruning beside it, until the worker stops."""
    pruner = asyncio.create_task(prune_forever(store, timedelta(days=settings.retention_days)))
    try:
        await worker.run()
    finally:
        pruner.cancel()
        await asyncio.gather(pruner, return_exceptions=True)


def address_guard(settings: Settings) -> AddressGuard:
    return AddressGuard(settings.allow_private_destinations, settings.allowed_cidrs)


def default_sender(settings: Settings) -> Sender:
    guard = address_guard(settings)
    return AiohttpSender(
        timeout_s=settings.delivery_timeout_s, max_connections=settings.worker_concurrency, guard=guard
    )


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc)


def _allowed_methods(request: Request) -> str:
    """Every method the request's path accepts. Each route here serves one method, and Starlette's
    405 names only the first route whose path matched. A path spelled out by a route of its own
    (``/api/v1/events/batch``) is that route's, not also a parameterised one's (``{event_id}``)."""
    path = request.url.path
    routes = [
        r for r in request.app.routes if isinstance(r, Route) and r.methods and r.path_regex.match(path)
    ]
    literal = [r for r in routes if r.path == path]
    methods: set[str] = set()
    for route in literal or routes:
        methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def _storage_unavailable(request: Request, exc: Exception) -> Response:
    # A handler of its own, not the catch-all below: that one logs a traceback and closes the
    # connection, once per request of an outage.
    return storage_refusal()


async def _overloaded(request: Request, exc: Exception) -> Response:
    # Like an outage: a flood of refusals must not log a traceback each.
    return overload_refusal()


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client left (or the body deadline cut it off) before its body was read: this answer
    # goes nowhere, and without a handler the catch-all would log a traceback for it.
    return Response(status_code=400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(ApiError(str(exc.detail), status=exc.status_code, code=code, headers=headers))


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"action": "http.internal_error"},
    )
    body = {"error": {"code": "internal_error", "message": "something went wrong on our side"}}
    # This answer comes from outside the request-context middleware, so it sets the id itself.
    request_id = request.scope.get("state", {}).get("request_id", "")
    return JSONResponse(body, status_code=500, headers={"X-Request-Id": request_id})


Lifespan = Callable[[Starlette], contextlib.AbstractAsyncContextManager[dict[str, Any]]]


def _lifespan(
    settings: Settings,
    store: Store | None,
    sender: Sender | None,
    run_workers: bool,
    clock: Callable[[], datetime],
    tracing: Tracing,
) -> Lifespan:
    """Open the store, start delivery, share the services; undo it all in reverse on shutdown."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        the_store = store if store is not None else store_from_settings(settings)
        master_key = master_key_from_settings(settings.master_key, settings.sqlite_path)
        box = SecretBox(master_key)
        await the_store.open()
        the_sender = sender if sender is not None else default_sender(settings)
        worker = (
            build_worker(settings, the_store, the_sender, box, metrics, clock, tracing)
            if run_workers
            else None
        )
        delivery = asyncio.create_task(run_delivery(settings, the_store, worker)) if worker else None
        # The server calls this the moment SIGTERM arrives, before it drains HTTP connections.
        app.state.stop_delivery = worker.stop if worker is not None else None
        background = Background()
        try:
            yield {
                "services": Services(
                    settings,
                    the_store,
                    box,
                    address_guard(settings),
                    KeyCache(the_store),
                    RateLimiter(settings.rate_limit_per_min),
                    background,
                    metrics,
                    clock,
                    dashboard.session_key(master_key),
                    tracing,
                )
            }
        finally:
            await background.close()
            if worker is not None and delivery is not None:
                worker.stop()
                await delivery
            await the_sender.close()
            await the_store.close()
            tracing.flush()

    return lifespan


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    sender: Sender | None = None,
    run_workers: bool = True,
    clock: Callable[[], datetime] = utcnow,
    tracing: Tracing | None = None,
) -> Starlette:
    """The webhookd ASGI app. ``store`` and ``sender`` default to what ``settings`` name; ``clock``
    (tests) is the delivery worker's and the secret rotations' idea of now; ``tracing`` defaults to
    what the process's ``OTEL_*`` variables configure."""
    tracing = tracing if tracing is not None else tracing_from_env(os.environ)
    return Starlette(
        # The hot paths first: the router tries routes in order.
        routes=[*ingest_routes(), *api.routes(), *dashboard.routes()],
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(HotRoute, method="POST", path=api.PUBLISH_PATH, endpoint=api.events.publish_event),
        ],
        lifespan=_lifespan(settings, store, sender, run_workers, clock, tracing),
        exception_handlers={
            RequestError: _request_error,
            StorageUnavailable: _storage_unavailable,
            Overloaded: _overloaded,
            ClientDisconnect: _client_gone,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
