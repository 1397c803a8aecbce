"""The admin API (scope ``admin``): create API keys and carrier sources; list customers, their keys and
subscriptions; revoke keys, re-enable subscriptions, retry and recover deliveries of any customer. The
CLI runs the same functions (``provisioning``, ``actions``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from webhookd import actions, provisioning
from webhookd.api.auth import authenticate
from webhookd.api.deliveries import delivery_id, delivery_not_found
from webhookd.api.openapi import operation, page_params
from webhookd.api.pagination import cursor_checked, limit, page_request
from webhookd.api.subscriptions import not_found, recovered, subscription_id
from webhookd.api.views import (
    api_key_json,
    backlog_json,
    customer_json,
    delivery_json,
    operator_subscription_json,
)
from webhookd.exceptions import ApiError, Conflict
from webhookd.inputs import CUSTOMER_ID_PATTERN, check_customer_id, is_customer_id
from webhookd.models import CREDENTIAL_NAMES, Carrier, Scope, SubscriptionState, is_id
from webhookd.store.base import cursor_pattern
from webhookd.web import JSONResponse, query_param, read_json_object, services


def _string(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(f"{name} must be a non-empty string", code="invalid_field")
    return value


@operation(
    summary="Create an API key for a customer (shown once)",
    scope=Scope.ADMIN,
    body="KeyCreate",
    responses={201: "KeyCreated"},
    tag="admin",
)
async def create_key(request: Request) -> Response:
    await authenticate(request, Scope.ADMIN)
    svc = services(request)
    body = await read_json_object(request, svc.settings.max_body_bytes, {"customer_id", "name", "scopes"})
    customer_id = check_customer_id(body.get("customer_id"))
    scopes = body.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ApiError("scopes must be a list of scope names", code="invalid_field")
    created = await provisioning.create_key(
        svc.store,
        customer_id,
        provisioning.parse_scopes(scopes),
        _string(body, "name", required=False),
    )
    return JSONResponse(
        {
            "id": created.record.id,
            "key": created.key,
            "customer_id": created.record.customer_id,
            "scopes": sorted(created.record.scopes),
        },
        status_code=201,
    )


@operation(
    summary="Register a carrier source for a customer",
    scope=Scope.ADMIN,
    body="SourceCreate",
    responses={201: "SourceCreated"},
    tag="admin",
)
async def create_source(request: Request) -> Response:
    await authenticate(request, Scope.ADMIN)
    svc = services(request)
    allowed = {"customer_id", "name", "carrier", "credentials"}
    body = await read_json_object(request, svc.settings.max_body_bytes, allowed)
    customer_id = check_customer_id(body.get("customer_id"))
    try:
        carrier = Carrier(_string(body, "carrier") or "")
    except ValueError:
        raise ApiError(f"carrier must be one of {[c.value for c in Carrier]}", code="invalid_field") from None
    credentials = body.get("credentials")
    if not isinstance(credentials, dict) or not all(isinstance(v, str) for v in credentials.values()):
        raise ApiError("credentials must be an object of strings", code="invalid_field")
    source = await provisioning.create_source(
        svc.store,
        svc.box,
        customer_id,
        carrier,
        credentials,
        required=CREDENTIAL_NAMES[carrier],
        customer_name=_string(body, "name", required=False),
    )
    return JSONResponse(
        {
            "id": source.id,
            "carrier": source.carrier.value,
            "customer_id": source.customer_id,
            "ingest_url": provisioning.ingest_url(svc.settings.effective_public_base_url, source),
        },
        status_code=201,
    )


@operation(
    summary="The subscriptions with the most unfinished deliveries, across customers",
    scope=Scope.ADMIN,
    query=[("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "how many")],
    responses={200: "BacklogList"},
    tag="admin",
)
async def backlog(request: Request) -> Response:
    await authenticate(request, Scope.ADMIN)
    top = await services(request).store.top_backlogs(limit(request, default=10))
    return JSONResponse({"data": [backlog_json(b) for b in top]})


# -- acting on any customer ------------------------------------------------------------------------


def _customer_not_found() -> ApiError:
    return ApiError("no such customer", status=404, code="not_found")


def _path_customer(request: Request) -> str:
    found: str = request.path_params["customer_id"]
    if not is_customer_id(found):
        raise _customer_not_found()
    return found


@operation(
    summary="List every customer with its subscription and key counts",
    scope=Scope.ADMIN,
    query=page_params(CUSTOMER_ID_PATTERN),
    responses={200: "CustomerList"},
    tag="admin",
)
async def list_customers(request: Request) -> Response:
    await authenticate(request, Scope.ADMIN)
    with cursor_checked():
        page = await services(request).store.list_customers(page_request(request))
    return JSONResponse({"data": [customer_json(c) for c in page.items], "next_cursor": page.next_cursor})


@operation(
    summary="List a customer's API keys, revoked ones too (never the keys themselves)",
    scope=Scope.ADMIN,
    responses={200: "ApiKeyList", 404: None},
    tag="admin",
)
async def list_keys(request: Request) -> Response:
    await authenticate(request, Scope.ADMIN)
    store, customer_id = services(request).store, _path_customer(request)
    if await store.get_customer(customer_id) is None:
        raise _customer_not_found()
    return JSONResponse({"data": [api_key_json(k) for k in await store.list_api_keys(customer_id)]})


@operation(
    summary="Revoke an API key: every API node refuses it from then on",
    description="On SQLite every process refuses it once this answers; on PostgreSQL this node does,"
    " and every other node as soon as the revocation's NOTIFY reaches it (milliseconds).",
    scope=Scope.ADMIN,
    responses={200: "ApiKey", 404: None},
    tag="admin",
)
async def revoke_key(request: Request) -> Response:
    await authenticate(request, Scope.ADMIN)
    svc, key_id = services(request), request.path_params["key_id"]
    key = (
        await provisioning.revoke_key(svc.store, None, key_id, svc.clock()) if is_id(key_id, "key") else None
    )
    if key is None:
        raise ApiError("no such key", status=404, code="not_found")
    return JSONResponse(api_key_json(key))  # every node's key cache heard of it: see KeyCache


STATE_PARAM = ("state", {"type": "string", "enum": [s.value for s in SubscriptionState]}, "only this state")


@operation(
    summary="List a customer's subscriptions, with their state",
    scope=Scope.ADMIN,
    query=(
        ("customer_id", {"type": "string", "pattern": CUSTOMER_ID_PATTERN}, "whose"),
        STATE_PARAM,
        *page_params(cursor_pattern("sub")),
    ),
    required_query=frozenset({"customer_id"}),
    responses={200: "OperatorSubscriptionList"},
    tag="admin",
)
async def list_subscriptions(request: Request) -> Response:
    await authenticate(request, Scope.ADMIN)
    customer_id = check_customer_id(query_param(request, "customer_id"))
    state = _state(query_param(request, "state"))
    with cursor_checked():
        page = await services(request).store.list_subscriptions(customer_id, page_request(request), state)
    items = [operator_subscription_json(s) for s in page.items]
    return JSONResponse({"data": items, "next_cursor": page.next_cursor})


def _state(raw: str | None) -> SubscriptionState | None:
    try:
        return None if raw is None else SubscriptionState(raw)
    except ValueError:
        known = ", ".join(s.value for s in SubscriptionState)
        raise ApiError(f"state must be one of {known}", code="invalid_parameter") from None


@operation(
    summary="Re-enable any customer's subscription: its failure count is reset, parked deliveries go out",
    scope=Scope.ADMIN,
    responses={200: "OperatorSubscription", 404: None},
    tag="admin",
)
async def enable_subscription(request: Request) -> Response:
    await authenticate(request, Scope.ADMIN)
    sub = await actions.enable_any(services(request).store, subscription_id(request))
    if sub is None:
        raise not_found()
    return JSONResponse(operator_subscription_json(sub))


@operation(
    summary="Send any customer's delivery again now",
    scope=Scope.ADMIN,
    responses={202: "Delivery", 404: None, 409: None},
    tag="admin",
)
async def retry_delivery(request: Request) -> Response:
    await authenticate(request, Scope.ADMIN)
    try:
        delivery = await actions.retry_any(services(request).store, delivery_id(request))
    except Conflict as exc:
        raise ApiError(str(exc), status=409, code="conflict") from None
    if delivery is None:
        raise delivery_not_found()
    return JSONResponse(delivery_json(delivery), status_code=202)


@operation(
    summary="Re-queue any customer's failed deliveries of a subscription created in a time window",
    scope=Scope.ADMIN,
    body="Recover",
    responses={202: "Recovered", 404: None},
    tag="admin",
)
async def recover(request: Request) -> Response:
    await authenticate(request, Scope.ADMIN)
    svc = services(request)
    sub = await svc.store.get_subscription(None, subscription_id(request))
    if sub is None:
        raise not_found()
    return await recovered(request, svc, sub)
