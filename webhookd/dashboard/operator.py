"""The operator's view under ``/dashboard/operator``, opened with ``webhookd dashboard-link --admin``:
every customer with its counts, every troubled subscription with Re-enable, and each customer's keys
with Revoke. Only an operator's session gets here; a customer's gets the 404 of a missing page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from webhookd import provisioning
from webhookd.api.subscriptions import not_found, subscription_id
from webhookd.dashboard.pages import (
    OPERATOR_HOME,
    Handler,
    Visit,
    cursor_checked,
    cursor_page,
    done,
    flash_shown,
    guarded,
    pending_flash,
    render,
    state_of,
)
from webhookd.exceptions import ApiError
from webhookd.inputs import is_customer_id
from webhookd.models import AccessKind, is_id
from webhookd.store.base import PageRequest

ROWS_PER_PAGE = 100
BACKLOGS_SHOWN = 10
"""The subscriptions with the most unfinished deliveries that the operator's view lists."""


def operator_page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    return guarded(handler, frozenset({AccessKind.OPERATOR}))


def customer_path(customer_id: str) -> str:
    return f"{OPERATOR_HOME}/customers/{customer_id}"


def _customer_id(request: Request) -> str:
    """The path's customer id; one no customer can have is a 404 without a lookup."""
    found: str = request.path_params["customer_id"]
    if not is_customer_id(found):
        raise _no_customer()
    return found


def _no_customer() -> ApiError:
    return ApiError("no such customer", status=404, code="not_found")


@operator_page
async def home(request: Request, visit: Visit) -> Response:
    store = visit.svc.store
    with cursor_checked():
        customers = await store.list_customers(cursor_page(request, ROWS_PER_PAGE))
        after = request.query_params.get("troubled_cursor") or None
        troubled = await store.troubled_subscriptions(PageRequest(ROWS_PER_PAGE, after))
    response = render(
        request,
        "operator.html",
        customers=customers,
        troubled=[(sub, state_of(sub)) for sub in troubled.items],
        troubled_next=troubled.next_cursor,
        backlogs=await store.top_backlogs(BACKLOGS_SHOWN),
        notice=pending_flash(request, visit, OPERATOR_HOME).notice,
        csrf=visit.csrf,
    )
    return flash_shown(request, response, OPERATOR_HOME)


@operator_page
async def enable(request: Request, visit: Visit) -> Response:
    """The customer's own Re-enable, for the customer the subscription belongs to."""
    customer_id = _customer_id(request)
    sub = await visit.svc.store.enable_subscription(customer_id, subscription_id(request))
    if sub is None:
        raise not_found()
    notice = f"Re-enabled {sub.url} of {customer_id}: its parked deliveries go out now."
    return done(visit, OPERATOR_HOME, notice)


@operator_page
async def customer(request: Request, visit: Visit) -> Response:
    store, customer_id = visit.svc.store, _customer_id(request)
    found = await store.get_customer(customer_id)
    if found is None:
        raise _no_customer()
    path = customer_path(customer_id)
    response = render(
        request,
        "operator_customer.html",
        customer=found,
        keys=await store.list_api_keys(customer_id),
        notice=pending_flash(request, visit, path).notice,
        csrf=visit.csrf,
    )
    return flash_shown(request, response, path)


@operator_page
async def revoke_key(request: Request, visit: Visit) -> Response:
    customer_id, key_id = _customer_id(request), request.path_params["key_id"]
    key = None
    if is_id(key_id, "key"):
        key = await provisioning.revoke_key(visit.svc.store, customer_id, key_id, visit.svc.clock())
    if key is None:
        raise ApiError("no such key", status=404, code="not_found")
    return done(visit, customer_path(customer_id), f"Revoked key {key.id}: it no longer authenticates.")
