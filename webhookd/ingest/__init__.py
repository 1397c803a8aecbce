"""Carrier callbacks in: one small adapter per carrier, one pure normalizer."""

from __future__ import annotations

from webhookd.ingest.routes import routes

__all__ = ["routes"]
