"""``/api/v1/webhook-subscriptions``: idempotent create, list, get, delete, and the Make.com probe."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from webhookd.api.auth import authenticate
from webhookd.crypto import new_webhook_secret, subscription_secret_context
from webhookd.exceptions import ApiError, DestinationBlocked
from webhookd.models import EVENT_TYPES, Scope, Subscription, isoformat, new_id, utcnow
from webhookd.web import JSONResponse, Services, read_json_object, services

MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100


def not_found() -> ApiError:
    """Missing and another customer's look the same: existence is never leaked."""
    return ApiError("no such subscription", status=404, code="not_found")


def subscription_json(sub: Subscription, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": sub.id,
        "url": sub.url,
        "events": list(sub.events),
        "description": sub.description,
        "is_active": sub.is_active,
        "disabled_reason": None if sub.disabled_reason is None else sub.disabled_reason.value,
        "disabled_at": None if sub.disabled_at is None else isoformat(sub.disabled_at),
        "failure_count": sub.failure_count,
        "created_at": isoformat(sub.created_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def _valid_url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError("url is required and must be a string", code="invalid_url")
    if len(value) > MAX_URL_LENGTH:
        raise ApiError(f"url is longer than {MAX_URL_LENGTH} characters", code="invalid_url")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ApiError("url must be an absolute http:// or https:// URL", code="invalid_url")
    if parts.username or parts.password:
        raise ApiError("url must not carry credentials", code="invalid_url")
    return value


def _valid_events(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ApiError("events must be a non-empty list of event type strings", code="invalid_events")
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise ApiError(f"unknown event types {unknown}; known: {list(EVENT_TYPES)}", code="invalid_events")
    return tuple(sorted(set(value)))


def _valid_description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
        raise ApiError(
            f"description must be a string of at most {MAX_DESCRIPTION_LENGTH} characters",
            code="invalid_description",
        )
    return value


async def check_destination(svc: Services, url: str) -> None:
    """The SSRF guard at create time; the sender checks again at connect time."""
    try:
        await svc.guard.check_url(url)
    except DestinationBlocked as exc:
        raise ApiError(f"url is not allowed: {exc}", code="destination_blocked") from None


async def create_subscription(request: Request) -> Response:
    challenge = request.query_params.get("challenge")
    if challenge is not None:
        # Make.com's connection check: echo the token, no auth, no database write.
        return JSONResponse({"challenge": challenge}, status_code=202)
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    svc = services(request)
    body = await read_json_object(request, svc.settings.max_body_bytes)
    url, events = _valid_url(body.get("url")), _valid_events(body.get("events"))
    description = _valid_description(body.get("description"))
    await check_destination(svc, url)
    secret = new_webhook_secret()
    sub_id = new_id("sub")
    ciphertext = svc.box.encrypt(secret.encode(), subscription_secret_context(sub_id))
    candidate = Subscription(
        sub_id,
        key.customer_id,
        url,
        events,
        description,
        ciphertext,
        is_active=True,
        created_at=utcnow(),
    )
    result = await svc.store.create_subscription(candidate)
    if result.created:
        return JSONResponse(subscription_json(result.subscription, secret), status_code=201)
    return JSONResponse(subscription_json(result.subscription), status_code=200)


def _page_size(request: Request) -> int:
    raw = request.query_params.get("limit", str(DEFAULT_PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ApiError(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}", code="invalid_parameter")
    return int(raw)


async def list_subscriptions(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    limit = _page_size(request)
    try:
        page = await services(request).store.list_subscriptions(
            key.customer_id, limit=limit, cursor=request.query_params.get("cursor") or None
        )
    except ValueError as exc:
        raise ApiError(str(exc), code="invalid_cursor") from None
    return JSONResponse({"data": [subscription_json(s) for s in page.items], "next_cursor": page.next_cursor})


async def get_subscription(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    sub = await services(request).store.get_subscription(
        key.customer_id, request.path_params["subscription_id"]
    )
    if sub is None:
        raise not_found()
    return JSONResponse(subscription_json(sub))


async def delete_subscription(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    deleted = await services(request).store.delete_subscription(
        key.customer_id, request.path_params["subscription_id"]
    )
    if not deleted:
        raise not_found()
    return Response(status_code=204)


async def enable_subscription(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    sub = await services(request).store.enable_subscription(
        key.customer_id, request.path_params["subscription_id"]
    )
    if sub is None:
        raise not_found()
    return JSONResponse(subscription_json(sub))
