"""The dashboard's Calls and Events pages: each call's timeline (the carrier callbacks received, the
``call.*`` events they produced, and where those went), and the event log with each event's payload."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from webhookd.api.calls import call_not_found, call_reference
from webhookd.dashboard.pages import Visit, cursor_checked, cursor_page, indented, page, render
from webhookd.ingest.callstate import CallState
from webhookd.models import Call

CALLS_PER_PAGE = 25
EVENTS_PER_PAGE = 25


def call_path(call: Call) -> str:
    """The call's page; its reference escaped, as a carrier's call id may hold ``?`` or ``#``."""
    return f"/dashboard/calls/{quote(call.ref, safe=':')}"


def status_of(call: Call) -> str:
    return CallState.from_json(call.state).status


@page
async def calls(request: Request, visit: Visit) -> Response:
    with cursor_checked():
        listed = await visit.svc.store.list_calls(visit.customer_id, cursor_page(request, CALLS_PER_PAGE))
    rows = [{"call": c, "path": call_path(c), "status": status_of(c)} for c in listed.items]
    return render(request, "calls.html", rows=rows, next_cursor=listed.next_cursor, csrf=visit.csrf)


@page
async def call(request: Request, visit: Visit) -> Response:
    carrier, call_id = call_reference(request)
    timeline = await visit.svc.store.get_call(visit.customer_id, carrier, call_id)
    if timeline is None:
        raise call_not_found()
    return render(
        request,
        "call.html",
        timeline=timeline,
        status=status_of(timeline.call),
        payloads={e.id: indented(e.payload) for e in timeline.events},
        csrf=visit.csrf,
    )


@page
async def events(request: Request, visit: Visit) -> Response:
    store = visit.svc.store
    with cursor_checked():
        listed = await store.list_events(visit.customer_id, cursor_page(request, EVENTS_PER_PAGE))
    went = await store.event_deliveries(visit.customer_id, [e.id for e in listed.items])
    rows = [
        {"event": e, "payload": indented(e.payload), "deliveries": went.get(e.id, [])} for e in listed.items
    ]
    return render(request, "events.html", rows=rows, next_cursor=listed.next_cursor, csrf=visit.csrf)
