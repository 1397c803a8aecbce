"""``/healthz`` (the process is alive), ``/readyz`` (the database answers) and ``/openapi.json``."""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from webhookd.api.openapi import build_openapi, operation
from webhookd.exceptions import StorageUnavailable, StoreError
from webhookd.models import utcnow
from webhookd.web import JSONResponse, services

logger = logging.getLogger(__name__)


@operation(summary="Liveness", authenticated=False, responses={200: "Health"}, tag="health")
async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@operation(
    summary="Readiness: the database answers",
    authenticated=False,
    responses={200: "Health", 503: "Health"},
    tag="health",
)
async def readyz(request: Request) -> Response:
    try:
        await services(request).store.ping()
    except StorageUnavailable:  # the store logs the outage; probes come every few seconds
        return JSONResponse({"status": "unavailable"}, status_code=503)
    except StoreError as exc:
        logger.warning("not ready: %s", exc, extra={"action": "health.not_ready"})
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document, built from the application's own routes."""
    return JSONResponse(build_openapi(request.app.routes))


async def metrics(request: Request) -> Response:
    """Prometheus text exposition; the outbox gauges are read from the store at scrape time."""
    svc = services(request)
    body = svc.metrics.render(await svc.store.outbox_stats(utcnow()))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
