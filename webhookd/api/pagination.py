"""List parameters shared by every list endpoint: ``limit``, ``cursor`` and ``page``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from starlette.requests import Request

from webhookd.exceptions import ApiError
from webhookd.store.base import PageRequest
from webhookd.web import query_param

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
MAX_OFFSET = 10_000
"""The most rows a page skips. A database reads and throws away every row before an offset,
so one deep page costs as much as hundreds of shallow ones; a cursor costs the same at any depth."""
MAX_PAGE = MAX_OFFSET // MAX_PAGE_SIZE
"""The deepest ``page``, whatever the ``limit``: a bound of its own, which the OpenAPI document
can state (it cannot state one on ``page * limit``)."""


def _whole_number(raw: str | None, name: str, default: int, low: int, high: int | None = None) -> int:
    if raw is None:
        return default
    number = _digits(raw)
    if number is None or number < low or (high is not None and number > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ApiError(f"{name} must be a whole number {span}", code="invalid_parameter")
    return number


def _digits(raw: str) -> int | None:
    """``raw`` as a number if it is plain ASCII digits. int() refuses over 4,300 digits, so anything
    past 18 digits is taken as 10**18: far out of every range here either way."""
    if not (raw.isascii() and raw.isdigit()):
        return None
    significant = raw.lstrip("0") or "0"
    return int(significant) if len(significant) <= 18 else 10**18


def limit(request: Request, default: int = DEFAULT_PAGE_SIZE) -> int:
    """``limit`` alone, 1-100, for a list that is one page (a top N)."""
    return _whole_number(query_param(request, "limit"), "limit", default, 1, MAX_PAGE_SIZE)


def page_request(request: Request) -> PageRequest:
    """``limit`` 1-100 (default 25); ``cursor`` from ``next_cursor``; ``page`` (offset alias) 0 to
    ``MAX_PAGE``. When both cursor and page are given, cursor wins."""
    size = limit(request)
    page = _whole_number(query_param(request, "page"), "page", 0, 0)
    if page > MAX_PAGE:
        raise ApiError(
            f"page may be at most {MAX_PAGE}, so that no page skips more than {MAX_OFFSET} rows, and"
            f" page={page} is more; to read further, page with cursor= set to each answer's next_cursor",
            code="page_too_deep",
        )
    cursor = query_param(request, "cursor")
    if cursor is not None:
        return PageRequest(limit=size, cursor=cursor)
    return PageRequest(limit=size, offset=page * size)


@contextlib.contextmanager
def cursor_checked() -> Iterator[None]:
    """A cursor the store refuses (another list's, or made up) is the client's 400, saying why."""
    try:
        yield
    except ValueError as exc:
        raise ApiError(str(exc), code="invalid_cursor") from None
