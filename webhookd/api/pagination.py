"""List parameters shared by every list endpoint: ``limit``, ``cursor`` and ``page``."""

from __future__ import annotations

from starlette.requests import Request

from webhookd.exceptions import ApiError
from webhookd.store.base import PageRequest

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
MAX_PAGE = 10_000


def _whole_number(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError(f"{name} must be a whole number from {low} to {high}", code="invalid_parameter")
    return int(raw)


def page_request(request: Request) -> PageRequest:
    """``limit`` 1-100 (default 25); ``cursor`` from ``next_cursor``; ``page`` (offset alias).
    When both cursor and page are given, cursor wins."""
    limit = _whole_number(request, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = _whole_number(request, "page", 0, 0, MAX_PAGE)
    cursor = request.query_params.get("cursor") or None
    return PageRequest(limit=limit, cursor=cursor, offset=0 if cursor else page * limit)
