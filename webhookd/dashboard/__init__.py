"""The customer dashboard under ``/dashboard``: server-rendered pages and plain HTML forms, opened with
a single-use link (``POST /api/v1/dashboard-links`` or ``webhookd dashboard-link``)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webhookd.dashboard import calls, operator, pages
from webhookd.dashboard.sessions import session_key

__all__ = ["routes", "session_key"]

SUBSCRIPTION = "/dashboard/subscriptions/{subscription_id}"
DELIVERY = "/dashboard/deliveries/{delivery_id}"
_CSS = (Path(__file__).parent / "static" / "dashboard.css").read_bytes()


async def stylesheet(request: Request) -> Response:
    return Response(_CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


def routes() -> list[Route]:
    """The dashboard's routes; none is part of the API's OpenAPI document."""
    get, post = ["GET"], ["POST"]
    return [
        Route("/dashboard", pages.subscriptions, methods=get, include_in_schema=False),
        Route("/dashboard/login", pages.login, methods=get, include_in_schema=False),
        Route("/dashboard/login", pages.open_session, methods=post, include_in_schema=False),
        Route("/dashboard/sign-out", pages.sign_out, methods=post, include_in_schema=False),
        Route("/dashboard/static/dashboard.css", stylesheet, methods=get, include_in_schema=False),
        Route(SUBSCRIPTION, pages.subscription, methods=get, include_in_schema=False),
        Route(f"{SUBSCRIPTION}/enable", pages.enable, methods=post, include_in_schema=False),
        Route(f"{SUBSCRIPTION}/rotate-secret", pages.rotate, methods=post, include_in_schema=False),
        Route(f"{SUBSCRIPTION}/test", pages.send_test, methods=post, include_in_schema=False),
        Route(f"{SUBSCRIPTION}/recover", pages.recover, methods=post, include_in_schema=False),
        Route(DELIVERY, pages.delivery, methods=get, include_in_schema=False),
        Route(f"{DELIVERY}/retry", pages.retry, methods=post, include_in_schema=False),
        Route(f"{SUBSCRIPTION}/edit", pages.edit, methods=post, include_in_schema=False),
        Route("/dashboard/calls", calls.calls, methods=get, include_in_schema=False),
        Route("/dashboard/calls/{call_ref}", calls.call, methods=get, include_in_schema=False),
        Route("/dashboard/events", calls.events, methods=get, include_in_schema=False),
        *_operator_routes(),
    ]


def _operator_routes() -> list[Route]:
    customer = "/dashboard/operator/customers/{customer_id}"
    return [
        Route("/dashboard/operator", operator.home, methods=["GET"], include_in_schema=False),
        Route(customer, operator.customer, methods=["GET"], include_in_schema=False),
        Route(
            f"{customer}/subscriptions/{{subscription_id}}/enable",
            operator.enable,
            methods=["POST"],
            include_in_schema=False,
        ),
        Route(
            f"{customer}/keys/{{key_id}}/revoke",
            operator.revoke_key,
            methods=["POST"],
            include_in_schema=False,
        ),
    ]
