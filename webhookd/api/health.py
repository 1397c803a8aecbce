"""``/healthz`` (the process is alive) and ``/readyz`` (the database answers)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from webhookd.exceptions import StoreError
from webhookd.web import JSONResponse, services

logger = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await services(request).store.ping()
    except StoreError as exc:
        logger.warning("not ready: %s", exc, extra={"action": "health.not_ready"})
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})
