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
from webhookd.crypto import hash_token, open_headers
from webhookd.dashboard import charts
from webhookd.dashboard.sessions import (
    COOKIE,
    COOKIE_PATH,
    FLASH_COOKIE,
    Flash,
    Session,
    csrf_ok,
    csrf_token,
    open_flash,
    read_session,
    seal_flash,
    sign_session,
)
from webhookd.exceptions import ApiError, Conflict, RequestError
from webhookd.models import EVENT_TYPES, AccessKind, DeliveryStatus, Subscription, isoformat
from webhookd.store.base import PageRequest
from webhookd.web import Services, read_body, services

OPERATOR_HOME = "/dashboard/operator"
HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
)
SUBSCRIPTIONS_PER_PAGE = 50
FLASH_S = 60
"""How long a form's notice waits for the redirected page to show it."""
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
        """The customer a customer's page speaks for (only a customer's session gets that far)."""
        customer_id = self.session.customer_id
        if customer_id is None:
            raise RuntimeError("an operator session reached a customer's page")
        return customer_id


Handler = Callable[[Request, Visit], Awaitable[Response]]


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("csrf", "")
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code, headers=HEADERS)


def how_to(request: Request, reason: str) -> Response:
    """The page for a visitor without a session: how to get a link, and nothing else."""
    return render(request, "how_to.html", status_code=401, reason=reason)


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A customer's page or form: ``handler`` behind the session check (a customer's session), and
    on POST behind the CSRF check; a refusal it raises (such as a 404 for another customer's record)
    becomes an HTML page."""
    return guarded(handler, frozenset({AccessKind.CUSTOMER}))


def guarded(handler: Handler, kinds: frozenset[AccessKind]) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` for a live session of one of ``kinds``; another kind's session gets the 404 of a
    missing page (an operator opening ``/dashboard`` goes to the operator's view)."""

    async def endpoint(request: Request) -> Response:
        svc = services(request)
        session = read_session(svc.session_key, request.cookies.get(COOKIE), svc.clock())
        if session is None:
            return how_to(request, "You are not signed in, or your session has ended.")
        if await svc.store.dashboard_session_ended(session.session_id):
            return how_to(request, "You have signed out of this session.")
        visit = Visit(svc, session, csrf_token(svc.session_key, session))
        if session.access.kind not in kinds:
            if session.access.is_operator and request.url.path == "/dashboard":
                return RedirectResponse(OPERATOR_HOME, status_code=303, headers=HEADERS)
            return render(request, "error.html", status_code=404, message="no such page", csrf=visit.csrf)
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


def cursor_page(request: Request, limit: int) -> PageRequest:
    return PageRequest(limit, request.query_params.get("cursor") or None)


@contextlib.contextmanager
def cursor_checked() -> Iterator[None]:
    """A cursor the store refuses is a link the dashboard did not make: a 400 page, not a 500."""
    try:
        yield
    except ValueError:
        raise ApiError(
            "this page's cursor is not one the dashboard made; start from the first page"
        ) from None


def _secure(svc: Services) -> bool:
    return svc.settings.effective_public_base_url.startswith("https://")


# -- after a form: redirect, and a one-time notice ----------------------------------------------


def done(visit: Visit, path: str, notice: str, secret: str = "") -> Response:
    """303 to ``path``'s page, so that reloading it does not send the form again; the notice (and
    a new secret) go along in a short-lived cookie for that page alone, never in the URL."""
    response = RedirectResponse(path, status_code=303, headers=HEADERS)
    expires_at = visit.svc.clock() + timedelta(seconds=FLASH_S)
    sealed = seal_flash(visit.svc.session_key, visit.session, path, Flash(notice, secret), expires_at)
    response.set_cookie(
        FLASH_COOKIE,
        sealed,
        max_age=FLASH_S,
        path=path,
        secure=_secure(visit.svc),
        httponly=True,
        samesite="strict",
    )
    return response


def pending_flash(request: Request, visit: Visit, path: str) -> Flash:
    """What the last form left for this page; only a GET shows it (a POST below ``path`` is sent
    the cookie too)."""
    sealed = request.cookies.get(FLASH_COOKIE)
    if request.method != "GET" or not sealed:
        return Flash()
    return open_flash(visit.svc.session_key, visit.session, path, sealed, visit.svc.clock()) or Flash()


def flash_shown(request: Request, response: Response, path: str) -> Response:
    """``response`` for ``path``'s GET, which forgets the flash it showed: a reload shows none."""
    if request.method == "GET" and FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=path, secure=_secure(services(request)), httponly=True)
    return response


# -- signing in --------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    """The link's page: a button that opens the dashboard. A GET redeems nothing, so a link
    previewer or unfurler that fetches the link does not use it up."""
    token = request.query_params.get("token", "")
    if not token:
        return how_to(request, "This address needs the token of a dashboard link.")
    return render(request, "login.html", token=token)


async def open_session(request: Request) -> Response:
    """Exchange the link's token (the form's proof; no session, so no CSRF token, exists yet) for a
    session cookie, and go to the dashboard it opens."""
    svc = services(request)
    token, now = (await _form(request, svc)).get("token", ""), svc.clock()
    access = await svc.store.redeem_dashboard_link(hash_token(token), now) if token else None
    if access is None:
        return how_to(request, "This link has expired or has been used already: each link opens once.")
    expires_at = now + timedelta(seconds=svc.settings.dashboard_session_s)
    home = OPERATOR_HOME if access.is_operator else "/dashboard"
    response = RedirectResponse(home, status_code=303, headers=HEADERS)
    # Lax, not Strict: the link is opened from mail or chat, and a Strict cookie set on that
    # cross-site visit would not go with the redirect that follows it.
    response.set_cookie(
        COOKIE,
        sign_session(svc.session_key, access, expires_at),
        max_age=int(svc.settings.dashboard_session_s),
        path=COOKIE_PATH,
        secure=_secure(svc),
        httponly=True,
        samesite="lax",
    )
    return response


async def _sign_out(request: Request, visit: Visit) -> Response:
    """End the session here and everywhere: the cookie goes, and its id is remembered as signed out
    until it would have ended, so a copy of the cookie opens nothing either."""
    ends = datetime.fromtimestamp(visit.session.expires_at, UTC)
    await visit.svc.store.end_dashboard_session(visit.session.session_id, ends)
    response = render(request, "how_to.html", reason="You have signed out.")
    response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=_secure(visit.svc), httponly=True, samesite="lax")
    return response


sign_out = guarded(_sign_out, frozenset(AccessKind))


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
    with cursor_checked():
        listed = await store.list_subscriptions(
            visit.customer_id, cursor_page(request, SUBSCRIPTIONS_PER_PAGE)
        )
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


def subscription_path(subscription_id: str) -> str:
    return f"/dashboard/subscriptions/{subscription_id}"


def _edit_values(sub: Subscription) -> dict[str, Any]:
    """The edit form's fields as ``sub`` has them."""
    rate = sub.rate_limit_per_second
    rate_text = "" if rate is None else str(rate)
    return {"url": sub.url, "events": list(sub.events), "rate": rate_text, "ordered": sub.ordered}


async def _subscription_page(
    request: Request,
    visit: Visit,
    sub: Subscription,
    *,
    status_code: int = 200,
    edit: dict[str, Any] | None = None,
    edit_error: str = "",
) -> Response:
    # The page's filter form sends an empty status for "any".
    store, status = visit.svc.store, parse_status(request.query_params.get("status") or None)
    with cursor_checked():
        listed = await store.list_deliveries(
            visit.customer_id, sub.id, cursor_page(request, DELIVERIES_PER_PAGE), status
        )
    attempts = await store.list_attempts(visit.customer_id, [d.id for d in listed.items])
    path = subscription_path(sub.id)
    flash = pending_flash(request, visit, path)
    response = render(
        request,
        "subscription.html",
        status_code=status_code,
        sub=sub,
        # Names only: a header's value may be a credential, and the page has no need to show it.
        header_names=sorted(open_headers(visit.svc.box, sub.id, sub.headers)),
        state=state_of(sub),
        deliveries=[(d, attempts.get(d.id, [])) for d in listed.items],
        statuses=[s.value for s in DeliveryStatus],
        status=status.value if status else "",
        next_cursor=listed.next_cursor,
        notice=flash.notice,
        secret=flash.secret,
        edit=edit or _edit_values(sub),
        edit_error=edit_error,
        event_types=EVENT_TYPES,
        csrf=visit.csrf,
        now=visit.svc.clock().strftime("%Y-%m-%dT%H:%M"),
    )
    return flash_shown(request, response, path)


@page
async def subscription(request: Request, visit: Visit) -> Response:
    return await _subscription_page(request, visit, await _owned(visit, request))


def _changes(form: dict[str, str]) -> dict[str, Any]:
    """The edit form as the API's PATCH body, for the same rules to judge."""
    return {
        "url": form.get("url", ""),
        "events": [t for t in EVENT_TYPES if f"event:{t}" in form],
        "rate_limit_per_second": _rate(form.get("rate_limit_per_second", "").strip()),
        "ordered": "ordered" in form,
    }


def _rate(text: str) -> int | str | None:
    """An empty rate limit is none; text that is not a whole number goes on for the rule to refuse."""
    if not (text.isascii() and text.isdigit()):
        return text or None
    try:
        return int(text)
    except ValueError:  # more digits than Python turns into an int
        return text


@page
async def edit(request: Request, visit: Visit) -> Response:
    sub = await _owned(visit, request)
    changes = _changes(visit.form)
    try:
        updated = await actions.edit_subscription(visit.svc, visit.customer_id, sub.id, changes)
    except ApiError as exc:
        given = {**changes, "rate": visit.form.get("rate_limit_per_second", "")}
        error = f"Not saved: {exc.message}."
        return await _subscription_page(
            request, visit, sub, status_code=exc.status, edit=given, edit_error=error
        )
    if updated is None:
        raise not_found()
    return done(visit, subscription_path(sub.id), "Saved.")


@page
async def enable(request: Request, visit: Visit) -> Response:
    sub = await visit.svc.store.enable_subscription(visit.customer_id, subscription_id(request))
    if sub is None:
        raise not_found()
    return done(visit, subscription_path(sub.id), "Re-enabled: its parked deliveries go out now.")


@page
async def rotate(request: Request, visit: Visit) -> Response:
    sub = await _owned(visit, request)
    rotated = await actions.rotate_secret(visit.svc, sub)
    if rotated is None:
        raise not_found()
    notice = f"New secret made. The old one keeps signing until {isoformat(rotated.previous_until)}."
    if rotated.signing.public_key is not None:
        notice += f" Verify with the new public key {rotated.signing.public_key}."
    return done(visit, subscription_path(sub.id), notice, rotated.signing.shown_secret or "")


@page
async def send_test(request: Request, visit: Visit) -> Response:
    sub = await _owned(visit, request)
    try:
        result = await actions.send_test_event(visit.svc, sub)
    except Conflict as exc:
        return done(visit, subscription_path(sub.id), f"Not sent: {exc}.")
    return done(visit, subscription_path(sub.id), f"Test event {result.event.id} is on its way.")


@page
async def recover(request: Request, visit: Visit) -> Response:
    sub = await _owned(visit, request)
    try:
        since = datetime.fromisoformat(visit.form.get("since", "")).replace(tzinfo=UTC)
    except ValueError:
        raise ApiError("Pick the time to recover from (UTC), then press Recover failed again.") from None
    recovery = await actions.recover_failed(visit.svc, sub, since, visit.svc.clock())
    more = " More remain: recover again when these are done." if recovery.more else ""
    notice = f"Re-queued {recovery.requeued} failed deliveries since {isoformat(since)}.{more}"
    return done(visit, subscription_path(sub.id), notice)


# -- deliveries --------------------------------------------------------------------------------


def delivery_path(delivery_id: str) -> str:
    return f"/dashboard/deliveries/{delivery_id}"


@page
async def delivery(request: Request, visit: Visit) -> Response:
    store = visit.svc.store
    detail = await store.get_delivery(visit.customer_id, delivery_id(request))
    if detail is None:
        raise delivery_not_found()
    event = await store.get_event(visit.customer_id, detail.delivery.event_id)
    sub = await store.get_subscription(visit.customer_id, detail.delivery.subscription_id)
    path = delivery_path(detail.delivery.id)
    response = render(
        request,
        "delivery.html",
        detail=detail,
        url="" if sub is None else sub.url,
        payload="" if event is None else indented(event.payload),
        notice=pending_flash(request, visit, path).notice,
        csrf=visit.csrf,
    )
    return flash_shown(request, response, path)


@page
async def retry(request: Request, visit: Visit) -> Response:
    path = delivery_path(delivery_id(request))
    try:
        retried = await visit.svc.store.retry_delivery(visit.customer_id, delivery_id(request))
    except Conflict as exc:
        return done(visit, path, f"Not retried: {exc}.")
    if retried is None:
        raise delivery_not_found()
    return done(visit, path, "Retrying now.")


def indented(payload: bytes) -> str:
    """An event's JSON body, indented to read (every stored payload is JSON webhookd encoded)."""
    return orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2).decode()


def excerpt(raw: bytes) -> str:
    """A response body as the pages show it: text, cut short."""
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


TEMPLATES.env.filters["excerpt"] = excerpt
TEMPLATES.env.filters["time"] = lambda moment: "" if moment is None else isoformat(moment)
