"""Calls: each call's timeline of carrier callbacks, the ``call.*`` events they produced, and where
those went."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from webhookd.api.auth import authenticate
from webhookd.api.openapi import operation, page_params
from webhookd.api.pagination import cursor_checked, page_request
from webhookd.api.views import call_json, call_timeline_json
from webhookd.exceptions import ApiError
from webhookd.models import Carrier, Scope, parse_call_ref
from webhookd.store.base import call_cursor_pattern
from webhookd.web import JSONResponse, services


def call_not_found() -> ApiError:
    return ApiError("no such call", status=404, code="not_found")


def call_reference(request: Request) -> tuple[Carrier, str]:
    """The path's ``carrier:call_id``; one of another form is a 400 that says the expected one."""
    try:
        return parse_call_ref(request.path_params["call_ref"])
    except ValueError as exc:
        raise ApiError(str(exc), code="invalid_call_id") from None


@operation(
    summary="List calls, latest callback first",
    scope=Scope.MANAGE_WEBHOOKS,
    query=page_params(call_cursor_pattern()),
    responses={200: "CallList"},
    tag="calls",
)
async def list_calls(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    with cursor_checked():
        page = await services(request).store.list_calls(key.customer_id, page_request(request))
    return JSONResponse({"data": [call_json(c) for c in page.items], "next_cursor": page.next_cursor})


@operation(
    summary="Get a call's timeline: its carrier callbacks, the events they produced, and their deliveries",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={200: "CallTimeline", 400: None, 404: None},
    tag="calls",
)
async def get_call(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    carrier, call_id = call_reference(request)
    timeline = await services(request).store.get_call(key.customer_id, carrier, call_id)
    if timeline is None:
        raise call_not_found()
    return JSONResponse(call_timeline_json(timeline))
