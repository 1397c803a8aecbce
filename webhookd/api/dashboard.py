"""``POST /api/v1/dashboard-links``: a single-use link to the key's customer's dashboard."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from webhookd import provisioning
from webhookd.api.auth import authenticate
from webhookd.api.openapi import operation
from webhookd.models import DashboardAccess, Scope, isoformat
from webhookd.web import JSONResponse, services


@operation(
    summary="A link that opens the key's customer's dashboard once, within minutes",
    scope=Scope.MANAGE_WEBHOOKS,
    responses={201: "DashboardLink"},
    tag="account",
)
async def create_dashboard_link(request: Request) -> Response:
    key = await authenticate(request, Scope.MANAGE_WEBHOOKS)
    svc = services(request)
    link = await provisioning.create_dashboard_link(
        svc.store,
        DashboardAccess.of_customer(key.customer_id),
        svc.settings.effective_public_base_url,
        svc.settings.dashboard_link_ttl_s,
        svc.clock(),
    )
    body = {"url": link.url, "expires_at": isoformat(link.expires_at)}
    # The link is a credential until it is opened: no cache keeps it.
    return JSONResponse(body, status_code=201, headers={"Cache-Control": "no-store"})
