"""The HTTP server: uvicorn as ``webhookd serve`` runs it, built in one place so tests run the same."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp

from webhookd.config import Settings


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` on ``settings``' address."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="on",
        server_header=False,
        proxy_headers=False,  # nothing here reads the client address or scheme
        access_log=False,
    )
