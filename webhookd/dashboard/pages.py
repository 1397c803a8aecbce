"""The dashboard's pages and forms. Every page needs a session, and reads and changes only the
session's customer's records: another customer's id is not found, exactly like a missing one."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from webhookd import actions
from webhookd.api.deliveries import delivery_id, delivery_not_found, parse_status
from webhookd.api.subscriptions import not_found, subscription_id
from webhookd.crypto import hash_token
from webhookd.dashboard import charts
from webhookd.dashboard.sessions import (
    COOKIE,
    COOKIE_PATH,
    Session,
    csrf_ok,
    csrf_token,
    read_session,
    sign_session,
)
from webhookd.exceptions import ApiError, Conflict, RequestError
from webhookd.models import DeliveryStatus, Subscription, isoformat
from webhookd.store.base import PageRequest
from webhookd.web import Services, read_body, services

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
)
SUBSCRIPTIONS_PER_PAGE = 50
DELIVERIES_PER_PAGE = 25
EXCERPT_CHARS = 300
# Pages hold a customer's data and a form's CSRF token: no cache keeps them, no frame shows them,
# no link leaks where they were, and nothing but webhookd's own stylesheet styles them.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


@dataclass(frozen=True, slots=True)
class Visit:
    """A request with a valid session: its services, customer, CSRF token and (on POST) form."""

    svc: Services
    session: Session
    csrf: str
    form: dict[str, str] = field(default_factory=dict)

    @property
    def customer_id(self) -> str:
        return self.session.customer_id


Handler = Callable[[Request, Visit], Awaitable[Response]]


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("csrf", "")
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code, headers=HEADERS)


def how_to(request: Request, reason: str) -> Response:
    """The page for a visitor without a session: how to get a link, and nothing else."""
    return render(request, "how_to.html", status_code=401, reason=reason)


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` behind the session check, and on POST behind the CSRF check; a refusal it raises
    (such as a 404 for another customer's record) becomes an HTML page."""

    async def endpoint(request: Request) -> Response:
        svc = services(request)
        session = read_session(svc.session_key, request.cookies.get(COOKIE), svc.clock())
        if session is None:
            return how_to(request, "You are not signed in, or your session has ended.")
        visit = Visit(svc, session, csrf_token(svc.session_key, session))
        try:
            if request.method == "POST":
                visit = dataclasses.replace(visit, form=await _form(request, svc))
                if not csrf_ok(svc.session_key, session, visit.form.get("csrf", "")):
                    message = "This form is out of date or did not come from your dashboard; reload the page."
                    return render(request, "error.html", status_code=403, message=message, csrf=visit.csrf)
            return await handler(request, visit)
        except RequestError as exc:
            return render(request, "error.html", status_code=exc.status, message=exc.message, csrf=visit.csrf)

    return endpoint


async def _form(request: Request, svc: Services) -> dict[str, str]:
    body = await read_body(request, svc.settings.max_body_bytes)
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _page(request: Request, limit: int) -> PageRequest:
    return PageRequest(limit, request.query_params.get("cursor") or None)


@contextlib.contextmanager
def _cursor_checked() -> Iterator[None]:
    """A cursor the store refuses is a link the dashboard did not make: a 400 page, not a 500."""
    try:
        yield
    except ValueError:
        raise ApiError(
            "this page's cursor is not one the dashboard made; start from the first page"
        ) from None


# -- signing in --------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    """Exchange a link's token for a session cookie, and leave the URL that held the token."""
    svc = services(request)
    token = request.query_params.get("token", "")
    now = svc.clock()
    customer_id = await svc.store.redeem_dashboard_link(hash_token(token), now) if token else None
    if customer_id is None:
        return how_to(request, "This link has expired or has been used already: each link opens once.")
    expires_at = now + timedelta(seconds=svc.settings.dashboard_session_s)
    response = RedirectResponse("/dashboard", status_code=303, headers=HEADERS)
    # Lax, not Strict: the link is opened from mail or chat, and a Strict cookie set on that
    # cross-site visit would not go with the redirect that follows it.
    response.set_cookie(
        COOKIE,
        sign_session(svc.session_key, customer_id, expires_at),
        max_age=int(svc.settings.dashboard_session_s),
        path=COOKIE_PATH,
        secure=svc.settings.effective_public_base_url.startswith("https://"),
        httponly=True,
        samesite="lax",
    )
    return response


# -- subscriptions -----------------------------------------------------------------------------


def state_of(sub: Subscription) -> tuple[str, str]:
    """The subscription's state as the pages name it, with its detail."""
    if not sub.is_active:
        reason = (sub.disabled_reason or "by request").replace("_", " ")
        when = "" if sub.disabled_at is None else f" at {isoformat(sub.disabled_at)}"
        return "Disabled", f"{reason}{when}"
    if sub.failure_count:
        return "Failing", f"{sub.failure_count} failures in a row"
    return "Active", ""


@page
async def subscriptions(request: Request, visit: Visit) -> Response:
    store = visit.svc.store
    with _cursor_checked():
        listed = await store.list_subscriptions(visit.customer_id, _page(request, SUBSCRIPTIONS_PER_PAGE))
    since = visit.svc.clock() - timedelta(hours=charts.HOURS)
    activity = await store.subscription_activity(visit.customer_id, since, charts.BUCKET_S)
    rows = [
        {
            "sub": sub,
            "state": state_of(sub),
            "chart": charts.hourly_chart(t for t in activity.tallies if t.subscription_id == sub.id),
            "last": activity.last_attempts.get(sub.id),
        }
        for sub in listed.items
    ]
    return render(request, "subscriptions.html", rows=rows, next_cursor=listed.next_cursor, csrf=visit.csrf)


async def _owned(visit: Visit, request: Request) -> Subscription:
    sub = await visit.svc.store.get_subscription(visit.customer_id, subscription_id(request))
    if sub is None:
        raise not_found()
    return sub


async def _subscription_page(
    request: Request, visit: Visit, sub: Subscription, notice: str = "", secret: str = ""
) -> Response:
    # The page's filter form sends an empty status for "any".
    store, status = visit.svc.store, parse_status(request.query_params.get("status") or None)
    with _cursor_checked():
        listed = await store.list_deliveries(
            visit.customer_id, sub.id, _page(request, DELIVERIES_PER_PAGE), status
        )
    attempts = await store.list_attempts(visit.customer_id, [d.id for d in listed.items])
    return render(
        request,
        "subscription.html",
        sub=sub,
        state=state_of(sub),
        deliveries=[(d, attempts.get(d.id, [])) for d in listed.items],
        statuses=[s.value for s in DeliveryStatus],
        status=status.value if status else "",
        next_cursor=listed.next_cursor,
        notice=notice,
        secret=secret,
        csrf=visit.csrf,
        now=visit.svc.clock().strftime("%Y-%m-%dT%H:%M"),
    )


@page
async def subscription(request: Request, visit: Visit) -> Response:
    return await _subscription_page(request, visit, await _owned(visit, request))


@page
async def enable(request: Request, visit: Visit) -> Response:
    sub = await visit.svc.store.enable_subscription(visit.customer_id, subscription_id(request))
    if sub is None:
        raise not_found()
    return await _subscription_page(request, visit, sub, "Re-enabled: its parked deliveries go out now.")


@page
async def rotate(request: Request, visit: Visit) -> Response:
    sub = await _owned(visit, request)
    rotated = await actions.rotate_secret(visit.svc, visit.customer_id, sub.id)
    if rotated is None:
        raise not_found()
    notice = f"New secret made. The old one keeps signing until {isoformat(rotated.previous_until)}."
    return await _subscription_page(request, visit, sub, notice, rotated.secret)


@page
async def send_test(request: Request, visit: Visit) -> Response:
    sub = await _owned(visit, request)
    try:
        result = await actions.send_test_event(visit.svc, sub)
    except Conflict as exc:
        return await _subscription_page(request, visit, sub, f"Not sent: {exc}.")
    return await _subscription_page(request, visit, sub, f"Test event {result.event.id} is on its way.")


@page
async def recover(request: Request, visit: Visit) -> Response:
    sub = await _owned(visit, request)
    try:
        since = datetime.fromisoformat(visit.form.get("since", "")).replace(tzinfo=UTC)
    except ValueError:
        return await _subscription_page(request, visit, sub, "Pick the time to recover from (UTC).")
    recovery = await actions.recover_failed(visit.svc, sub, since, visit.svc.clock())
    more = " More remain: recover again when these are done." if recovery.more else ""
    notice = f"Re-queued {recovery.requeued} failed deliveries since {isoformat(since)}.{more}"
    return await _subscription_page(request, visit, sub, notice)


# -- deliveries --------------------------------------------------------------------------------


async def _delivery_page(request: Request, visit: Visit, notice: str = "") -> Response:
    store = visit.svc.store
    detail = await store.get_delivery(visit.customer_id, delivery_id(request))
    if detail is None:
        raise delivery_not_found()
    event = await store.get_event(visit.customer_id, detail.delivery.event_id)
    sub = await store.get_subscription(visit.customer_id, detail.delivery.subscription_id)
    return render(
        request,
        "delivery.html",
        detail=detail,
        url="" if sub is None else sub.url,
        payload="" if event is None else _indented(event.payload),
        notice=notice,
        csrf=visit.csrf,
    )


@page
async def delivery(request: Request, visit: Visit) -> Response:
    return await _delivery_page(request, visit)


@page
async def retry(request: Request, visit: Visit) -> Response:
    try:
        retried = await visit.svc.store.retry_delivery(visit.customer_id, delivery_id(request))
    except Conflict as exc:
        return await _delivery_page(request, visit, f"Not retried: {exc}.")
    if retried is None:
        raise delivery_not_found()
    return await _delivery_page(request, visit, "Retrying now.")


def _indented(payload: bytes) -> str:
    """An event's JSON body, indented to read (every stored payload is JSON webhookd encoded)."""
    return orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2).decode()


def excerpt(raw: bytes) -> str:
    """A response body as the pages show it: text, cut short."""
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


TEMPLATES.env.filters["excerpt"] = excerpt
TEMPLATES.env.filters["time"] = lambda moment: "" if moment is None else isoformat(moment)
