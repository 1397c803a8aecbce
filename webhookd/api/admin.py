"""The admin API (scope ``admin``): create API keys and carrier sources, as the CLI does."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from webhookd import provisioning
from webhookd.api.auth import authenticate
from webhookd.api.openapi import operation
from webhookd.api.pagination import limit
from webhookd.api.views import backlog_json
from webhookd.exceptions import ApiError
from webhookd.inputs import check_customer_id
from webhookd.models import CREDENTIAL_NAMES, Carrier, Scope
from webhookd.web import JSONResponse, read_json_object, services


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
