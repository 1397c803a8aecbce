"""``GET /api/v1/auth/whoami``: which customer a key belongs to, and what it may do."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from webhookd.api.auth import authenticate
from webhookd.api.openapi import operation
from webhookd.models import Scope
from webhookd.web import JSONResponse, services


@operation(
    summary="Connection test: the key's customer and permissions (any valid key)",
    responses={200: "WhoAmI"},
    tag="account",
)
async def whoami(request: Request) -> Response:
    key = await authenticate(request, None)
    customer = await services(request).store.get_customer(key.customer_id)
    admin = Scope.ADMIN in key.scopes
    return JSONResponse(
        {
            "customer_id": key.customer_id,
            "customer_name": None if customer is None else customer.name,
            "mode": "live",
            "permissions": {scope.value: admin or scope in key.scopes for scope in Scope},
        }
    )
