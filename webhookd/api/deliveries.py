"""The delivery log: a subscription's deliveries, one delivery with its attempts, and retrying one."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from webhookd.api.auth import authenticate
from webhookd.api.openapi import operation, page_params
from webhookd.api.pagination import cursor_checked, page_request
from webhookd.api.subscriptions import not_found, subscription_id
from webhookd.api.views import delivery_detail_json, delivery_json
from webhookd.exceptions import ApiError, Conflict
from webhookd.models import DeliveryStatus, Scope, is_id
from webhookd.store.base import log_cursor_pattern
from webhookd.web import JSONResponse, query_param, services

STATUS_PARAM = ("status", {"type": "string", "enum": [s.value for s in DeliveryStatus]}, "only this status")


def status_filter(request: Request) -> DeliveryStatus | None:
    """``?status=``; an empty one is a 400, as every empty query parameter of the API is."""
    return parse_status(query_param(request, "status"))


def parse_status(raw: str | None) -> DeliveryStatus | None:
    if raw is None:
        return None
    try:
        return DeliveryStatus(raw)
    except ValueError:
        known = ", ".join(s.value for s in DeliveryStatus)
        raise ApiError(f"status must be one of {known}", code="invalid_parameter") from None


def delivery_not_found() -> ApiError:
    return ApiError("no such delivery", status=404, code="not_found")


def delivery_id(request: Request) -> str:
    """The path's delivery id; one that no delivery can have is answered 404 without a lookup."""
    found: str = request.path_params["delivery_id"]
    if not is_id(found, "dlv"):
        raise delivery_not_found()
    return found


@operation(
    summary="List a subscription's deliveries, newest first",
    scope=Scope.MANAGE_WEBHOOKS,
    query=(*page_params(log_cursor_pattern("dlv")), STATUS_PARAM),
    responses={200: "DeliveryList", 404: None},
    tag="deliveries",
)
async def list_deliveries(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    store = services(request).store
    sub_id = subscription_id(request)
    if await store.get_subscription(key.customer_id, sub_id) is None:
        raise not_found()
    with cursor_checked():
        page = await store.list_deliveries(
            key.customer_id, sub_id, page_request(request), status_filter(request)
        )
    return JSONResponse({"data": [delivery_json(d) for d in page.items], "next_cursor": page.next_cursor})


@operation(
    summary="Get a delivery with its attempts",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={200: "DeliveryDetail", 404: None},
    tag="deliveries",
)
async def get_delivery(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    detail = await services(request).store.get_delivery(key.customer_id, delivery_id(request))
    if detail is None:
        raise delivery_not_found()
    return JSONResponse(delivery_detail_json(detail))


@operation(
    summary="Send a delivery again now",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={202: "Delivery", 404: None, 409: None},
    tag="deliveries",
)
async def retry_delivery(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    try:
        delivery = await services(request).store.retry_delivery(key.customer_id, delivery_id(request))
    except Conflict as exc:
        raise ApiError(str(exc), status=409, code="conflict") from None
    if delivery is None:
        raise delivery_not_found()
    return JSONResponse(delivery_json(delivery), status_code=202)
