"""The management API over real HTTP: whoami, response headers, pagination,
idempotent create, PATCH, the event and delivery logs, retry, the test endpoint, the admin API and
error answers. A real uvicorn server on a free port, a real SQLite file, real aiohttp receivers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.harness import (
    Receiver,
    auth,
    count_rows,
    provision_key,
    running_receiver,
    running_server,
    server_settings,
)
from webhookd.models import Scope

pytestmark = pytest.mark.anyio

HOOK = "https://receiver.example.test/webhooks/voka"
SUBS = "/api/v1/webhook-subscriptions"
ALL_SCOPES = frozenset(Scope)
MANY_CALLS = {"WEBHOOKD_RATE_LIMIT_PER_MIN": "10000"}
EVENT_TYPES = [
    "call.initiating",
    "call.ringing",
    "call.in_progress",
    "call.completed",
    "call.failed",
    "call.no_answer",
    "call.transcript.ready",
    "webhook.test",
]


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def error_code(self) -> str:
        code: str = self.body["error"]["code"]
        return code


@dataclass
class Api:
    """A client of one running webhookd, with the database file it uses."""

    http: aiohttp.ClientSession
    base: str
    db: Path

    async def call(
        self,
        method: str,
        path: str,
        key: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Reply:
        sent = {**(auth(key) if key else {}), **(headers or {})}
        async with self.http.request(method, self.base + path, headers=sent, **kwargs) as response:
            raw = await response.read()
            body = await response.json() if response.content_type == "application/json" and raw else None
            return Reply(response.status, body, response.headers)

    async def key(self, customer: str, scopes: frozenset[Scope] | set[Scope], name: str | None = None) -> str:
        return await provision_key(self.db, customer, set(scopes), name)

    async def subscribe(
        self, key: str, url: str = HOOK, events: list[str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        reply = await self.call(
            "POST", SUBS, key, json={"url": url, "events": events or ["call.completed"], **extra}
        )
        assert reply.status == 201, reply.body
        created: dict[str, Any] = reply.body
        return created

    async def publish(self, key: str, event_type: str = "call.completed", **data: Any) -> dict[str, Any]:
        reply = await self.call("POST", "/api/v1/events", key, json={"type": event_type, "data": data})
        assert reply.status == 202, reply.body
        event: dict[str, Any] = reply.body
        return event

    async def until(
        self, fetch: Callable[[], Awaitable[Reply]], done: Callable[[Reply], bool], timeout_s: float = 10
    ) -> Reply:
        """Poll the API until ``done`` holds for an answer; fail the test with a timeout otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            reply = await fetch()
            if done(reply):
                return reply
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting; last answer {reply.status} {reply.body}")
            await asyncio.sleep(0.03)

    async def walk(self, path: str, key: str, limit: int) -> list[list[str]]:
        """Every page of a list endpoint, following next_cursor; the ids on each page."""
        pages: list[list[str]] = []
        cursor = ""
        joiner = "&" if "?" in path else "?"
        while True:
            reply = await self.call("GET", f"{path}{joiner}limit={limit}{cursor}", key)
            assert reply.status == 200, reply.body
            pages.append([item["id"] for item in reply.body["data"]])
            if reply.body["next_cursor"] is None:
                return pages
            cursor = f"&cursor={reply.body['next_cursor']}"
            assert len(pages) < 100, "the cursor walk does not end"


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **env: str) -> AsyncIterator[Api]:
    db = tmp_path / "w.db"
    await provision_key(db, "bootstrap", {Scope.READ_EVENTS})  # the schema exists before the server
    async with running_server(server_settings(db, **env)) as base, aiohttp.ClientSession() as http:
        yield Api(http, base, db)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so that one server can serve the many read-only error cases below."""
    return "asyncio"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(tmp_path, **MANY_CALLS) as running:
        yield running


@pytest.fixture(scope="module")
async def shared_api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """One server for tests that each leave the data as they found it."""
    async with serving(tmp_path_factory.mktemp("shared"), **MANY_CALLS) as running:
        yield running


def delivered(event_id: str) -> Callable[[Reply], bool]:
    """Whether a deliveries listing shows ``event_id`` delivered."""

    def check(reply: Reply) -> bool:
        return any(d["event_id"] == event_id and d["status"] == "delivered" for d in reply.body["data"])

    return check


def assert_error(reply: Reply, status: int, code: str | None = None) -> None:
    """A refusal: the given 4xx, and the error shape with a code and a message."""
    assert reply.status == status, (reply.status, reply.body)
    assert isinstance(reply.body, dict), reply.body
    assert set(reply.body) == {"error"}, reply.body
    assert isinstance(reply.body["error"]["code"], str) and reply.body["error"]["code"]
    assert isinstance(reply.body["error"]["message"], str) and reply.body["error"]["message"]
    if code is not None:
        assert reply.error_code == code, reply.body


# 1. whoami -----------------------------------------------------------------------------------------


async def test_whoami_reports_customer_name_mode_and_permissions(api: Api) -> None:
    key = await api.key("acme", {Scope.MANAGE_WEBHOOKS, Scope.READ_EVENTS}, "Acme Dental")
    reply = await api.call("GET", "/api/v1/auth/whoami", key)
    assert reply.status == 200
    assert reply.body == {
        "customer_id": "acme",
        "customer_name": "Acme Dental",
        "mode": "live",
        "permissions": {
            "manage_webhooks": True,
            "read_events": True,
            "publish_events": False,
            "admin": False,
        },
    }


async def test_whoami_works_for_a_key_with_an_unrelated_scope(api: Api) -> None:
    key = await api.key("acme", {Scope.PUBLISH_EVENTS}, "Acme Dental")
    reply = await api.call("GET", "/api/v1/auth/whoami", key)
    assert reply.status == 200
    assert reply.body["customer_id"] == "acme"
    assert reply.body["permissions"] == {
        "manage_webhooks": False,
        "read_events": False,
        "publish_events": True,
        "admin": False,
    }


async def test_whoami_for_an_admin_key_reports_admin(api: Api) -> None:
    key = await api.key("ops", {Scope.ADMIN}, "Platform Ops")
    reply = await api.call("GET", "/api/v1/auth/whoami", key)
    assert reply.status == 200
    assert reply.body["customer_name"] == "Platform Ops"
    assert reply.body["permissions"]["admin"] is True


@pytest.mark.parametrize("authorization", [None, "Bearer whd_not-a-real-key", "Basic dXNlcjpwdw=="])
async def test_whoami_without_a_valid_key_is_401(api: Api, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    reply = await api.call("GET", "/api/v1/auth/whoami", headers=headers)
    assert_error(reply, 401, "unauthorized")


# 2. Headers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,authorized,body,status",
    [
        ("GET", "/api/v1/auth/whoami", True, None, 200),
        ("GET", "/api/v1/auth/whoami", False, None, 401),
        ("GET", "/api/v1/no-such-route", True, None, 404),
        ("GET", f"{SUBS}/sub_missing", True, None, 404),
        ("POST", SUBS, True, b"{broken", 400),
        ("GET", "/healthz", False, None, 200),
    ],
)
async def test_every_response_carries_a_request_id(
    api: Api, method: str, path: str, authorized: bool, body: bytes | None, status: int
) -> None:
    key = await api.key("acme", ALL_SCOPES)
    reply = await api.call(method, path, key if authorized else None, data=body)
    assert reply.status == status
    request_id = reply.headers.get("X-Request-Id")
    assert request_id, dict(reply.headers)
    again = await api.call(method, path, key if authorized else None, data=body)
    assert again.headers["X-Request-Id"] != request_id


@pytest.mark.parametrize("authorized", [True, False])
async def test_a_well_formed_request_id_is_echoed(api: Api, authorized: bool) -> None:
    key = await api.key("acme", ALL_SCOPES)
    reply = await api.call(
        "GET", "/api/v1/auth/whoami", key if authorized else None, headers={"X-Request-Id": "req-abc_123"}
    )
    assert reply.status == (200 if authorized else 401)
    assert reply.headers["X-Request-Id"] == "req-abc_123"


@pytest.mark.parametrize("incoming", ["has spaces in it", "x" * 300, "semi;colon", "<script>"])
async def test_a_malformed_request_id_is_replaced(api: Api, incoming: str) -> None:
    key = await api.key("acme", ALL_SCOPES)
    reply = await api.call("GET", "/api/v1/auth/whoami", key, headers={"X-Request-Id": incoming})
    assert reply.status == 200
    replaced = reply.headers["X-Request-Id"]
    assert replaced and replaced != incoming
    assert len(replaced) <= 128 and " " not in replaced


async def test_rate_limit_headers_count_down(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:  # the default limit: 60 a minute
        key = await api.key("acme", ALL_SCOPES)
        remaining = []
        for path in ["/api/v1/auth/whoami", SUBS, "/api/v1/events", "/api/v1/event-types"]:
            reply = await api.call("GET", path, key)
            assert reply.status == 200
            assert reply.headers["X-RateLimit-Limit"] == "60"
            remaining.append(int(reply.headers["X-RateLimit-Remaining"]))
    assert remaining[0] == 59
    assert remaining == sorted(remaining, reverse=True)
    assert len(set(remaining)) == len(remaining), remaining


async def test_rate_limit_headers_are_on_authenticated_refusals_too(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        key = await api.key("acme", {Scope.PUBLISH_EVENTS})
        forbidden = await api.call("GET", SUBS, key)  # 403: lacks manage_webhooks
        bad = await api.call("GET", "/api/v1/events/evt_missing", await api.key("acme", ALL_SCOPES))
    assert_error(forbidden, 403, "forbidden")
    assert forbidden.headers["X-RateLimit-Limit"] == "60"
    assert int(forbidden.headers["X-RateLimit-Remaining"]) == 59
    assert_error(bad, 404, "not_found")
    assert bad.headers["X-RateLimit-Limit"] == "60"


async def test_publish_answers_carry_the_same_headers_as_every_route(tmp_path: Path) -> None:
    """POST /events is served ahead of the router (webhookd.web.HotRoute): its answers, and the
    routes beside it, look exactly like the rest of the API's."""
    async with serving(tmp_path) as api:
        key = await api.key("acme", ALL_SCOPES)
        accepted = await api.call(
            "POST", "/api/v1/events", key, json={"type": "call.completed"}, headers={"X-Request-Id": "rq-1"}
        )
        refused = await api.call("POST", "/api/v1/events", key, json={"type": "Call Completed!"})
        anonymous = await api.call("POST", "/api/v1/events", json={"type": "call.completed"})
        listed = await api.call("GET", "/api/v1/events", key)
        wrong_method = await api.call("PUT", "/api/v1/events", key, json={})
    assert accepted.status == 202 and accepted.body["type"] == "call.completed"
    assert accepted.headers["X-Request-Id"] == "rq-1"
    assert accepted.headers["Content-Type"] == "application/json"
    assert accepted.headers["X-RateLimit-Limit"] == "60"
    assert_error(refused, 400, "invalid_event_type")
    assert refused.headers["X-Request-Id"] and refused.headers["X-RateLimit-Limit"] == "60"
    assert_error(anonymous, 401, "unauthorized")
    assert anonymous.headers["X-Request-Id"]
    assert listed.status == 200 and [e["id"] for e in listed.body["data"]] == [accepted.body["id"]]
    assert_error(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["Allow"] == "GET, HEAD, POST"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/webhook-subscriptions", "GET, HEAD, POST"),
        ("/api/v1/webhook-subscriptions/sub_x", "DELETE, GET, HEAD, PATCH"),
        ("/api/v1/callback-secret", "GET, HEAD, POST"),
        ("/api/v1/webhook-subscriptions/sub_x/enable", "POST"),
    ],
)
async def test_a_405_allows_every_method_of_its_path(shared_api: Api, path: str, allowed: str) -> None:
    """Several routes share a path, one method each: the Allow header names them all."""
    for method in ("OPTIONS", "PUT"):
        answer = await shared_api.call(method, path)
        assert_error(answer, 405, "method_not_allowed")
        assert answer.headers["Allow"] == allowed


async def test_past_the_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    async with serving(tmp_path, WEBHOOKD_RATE_LIMIT_PER_MIN="3") as api:
        key = await api.key("acme", ALL_SCOPES)
        other = await api.key("acme", ALL_SCOPES)
        answers = [await api.call("GET", "/api/v1/auth/whoami", key) for _ in range(4)]
        fresh = await api.call("GET", "/api/v1/auth/whoami", other)
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    limited = answers[-1]
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-RateLimit-Limit"] == "3"
    assert fresh.status == 200, "the limit is per key"


# 3. Pagination -------------------------------------------------------------------------------------


async def _subscriptions(api: Api, key: str, count: int) -> list[str]:
    return [(await api.subscribe(key, f"{HOOK}/{n}"))["id"] for n in range(count)]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "2.5", "1e2"])
async def test_limit_out_of_bounds_is_400(api: Api, limit: str) -> None:
    key = await api.key("acme", ALL_SCOPES)
    reply = await api.call("GET", f"{SUBS}?limit={limit}", key)
    assert_error(reply, 400, "invalid_parameter")


@pytest.mark.parametrize("limit", ["1", "100"])
async def test_limit_bounds_are_inclusive(api: Api, limit: str) -> None:
    key = await api.key("acme", ALL_SCOPES)
    await _subscriptions(api, key, 2)
    reply = await api.call("GET", f"{SUBS}?limit={limit}", key)
    assert reply.status == 200
    assert len(reply.body["data"]) == min(int(limit), 2)


async def test_default_page_size_is_25(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    created = await _subscriptions(api, key, 27)
    first = await api.call("GET", SUBS, key)
    assert first.status == 200
    assert len(first.body["data"]) == 25
    assert first.body["next_cursor"] is not None
    rest = await api.call("GET", f"{SUBS}?cursor={first.body['next_cursor']}", key)
    assert [s["id"] for s in first.body["data"] + rest.body["data"]] == sorted(created)
    assert rest.body["next_cursor"] is None


async def test_cursor_walk_sees_every_subscription_exactly_once(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    created = await _subscriptions(api, key, 7)
    pages = await api.walk(SUBS, key, limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [sub_id for page in pages for sub_id in page]
    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen))


async def test_page_alias_gives_the_same_pages_as_the_cursor(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    await _subscriptions(api, key, 7)
    by_cursor = await api.walk(SUBS, key, limit=3)
    by_page = []
    for page in range(4):
        reply = await api.call("GET", f"{SUBS}?limit=3&page={page}", key)
        assert reply.status == 200
        by_page.append([s["id"] for s in reply.body["data"]])
    assert by_page == [*by_cursor, []]


async def test_cursor_wins_over_page(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    await _subscriptions(api, key, 7)
    first = await api.call("GET", f"{SUBS}?limit=3", key)
    cursor = first.body["next_cursor"]
    second = await api.call("GET", f"{SUBS}?limit=3&cursor={cursor}", key)
    for page in (0, 2):
        both = await api.call("GET", f"{SUBS}?limit=3&cursor={cursor}&page={page}", key)
        assert both.status == 200
        assert both.body == second.body


# 4. Idempotent create ------------------------------------------------------------------------------


async def test_same_event_set_in_another_order_with_duplicates_is_the_same_subscription(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    first = await api.subscribe(key, HOOK, ["call.completed", "call.failed", "call.no_answer"])
    reply = await api.call(
        "POST",
        SUBS,
        key,
        json={"url": HOOK, "events": ["call.no_answer", "call.failed", "call.completed", "call.failed"]},
    )
    assert reply.status == 200
    assert reply.body["id"] == first["id"]
    assert "secret" not in reply.body
    assert sorted(reply.body["events"]) == ["call.completed", "call.failed", "call.no_answer"]
    assert count_rows(api.db, "subscriptions") == 1


async def test_same_url_and_events_for_another_customer_is_a_new_subscription(api: Api) -> None:
    acme, globex = await api.key("acme", ALL_SCOPES), await api.key("globex", ALL_SCOPES)
    mine = await api.subscribe(acme, HOOK, ["call.completed"])
    theirs = await api.subscribe(globex, HOOK, ["call.completed"])
    assert theirs["id"] != mine["id"]
    assert theirs["secret"] != mine["secret"]


# 5. PATCH ------------------------------------------------------------------------------------------


async def test_patch_changes_description_events_and_url(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    sub = await api.subscribe(key, HOOK, ["call.completed"], description="old")
    path = f"{SUBS}/{sub['id']}"
    reply = await api.call("PATCH", path, key, json={"description": "Production receiver"})
    assert reply.status == 200
    assert (reply.body["description"], reply.body["url"], reply.body["events"]) == (
        "Production receiver",
        HOOK,
        ["call.completed"],
    )
    reply = await api.call("PATCH", path, key, json={"events": ["call.failed", "call.completed"]})
    assert reply.status == 200
    assert sorted(reply.body["events"]) == ["call.completed", "call.failed"]
    reply = await api.call("PATCH", path, key, json={"url": f"{HOOK}/v2"})
    assert reply.status == 200
    assert reply.body["url"] == f"{HOOK}/v2"
    assert "secret" not in reply.body
    stored = await api.call("GET", path, key)
    assert stored.body["url"] == f"{HOOK}/v2"
    assert sorted(stored.body["events"]) == ["call.completed", "call.failed"]
    assert stored.body["description"] == "Production receiver"
    assert stored.body["id"] == sub["id"]


async def test_patched_url_and_events_are_what_idempotent_create_matches(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    sub = await api.subscribe(key, HOOK, ["call.completed"])
    patch = {"url": f"{HOOK}/v2", "events": ["call.failed"]}
    assert (await api.call("PATCH", f"{SUBS}/{sub['id']}", key, json=patch)).status == 200
    again = await api.call("POST", SUBS, key, json=patch)
    assert again.status == 200
    assert again.body["id"] == sub["id"]
    old = await api.call("POST", SUBS, key, json={"url": HOOK, "events": ["call.completed"]})
    assert old.status == 201, "the old (url, events) is free again"


async def test_patched_events_decide_what_is_delivered(tmp_path: Path) -> None:
    async with running_receiver() as receiver, serving(tmp_path, **MANY_CALLS) as api:
        key = await api.key("acme", ALL_SCOPES)
        sub = await api.subscribe(key, receiver.url, ["call.completed"])
        patched = await api.call("PATCH", f"{SUBS}/{sub['id']}", key, json={"events": ["call.failed"]})
        assert patched.status == 200
        skipped = await api.publish(key, "call.completed")
        wanted = await api.publish(key, "call.failed")
        listed = await api.until(
            lambda: api.call("GET", f"{SUBS}/{sub['id']}/deliveries", key), delivered(wanted["id"])
        )
    # A publish makes its deliveries with the event, in one transaction: none for the skipped event
    # by now means none ever, and the one delivered row means nothing else will go out.
    assert [(d["event_id"], d["status"], d["attempts"]) for d in listed.body["data"]] == [
        (wanted["id"], "delivered", 1)
    ]
    assert [r.headers["webhook-id"] for r in receiver.requests] == [wanted["id"]]
    assert skipped["id"] not in receiver.event_ids()


async def test_patch_with_an_empty_body_is_400(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    sub = await api.subscribe(key)
    assert_error(await api.call("PATCH", f"{SUBS}/{sub['id']}", key, json={}), 400, "invalid_field")


async def test_patch_with_an_unknown_field_is_400(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    sub = await api.subscribe(key)
    reply = await api.call("PATCH", f"{SUBS}/{sub['id']}", key, json={"is_active": False})
    assert_error(reply, 400, "invalid_field")
    assert "is_active" in reply.body["error"]["message"]
    assert (await api.call("GET", f"{SUBS}/{sub['id']}", key)).body["is_active"] is True


async def test_patch_onto_another_subscriptions_url_and_events_is_409(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    taken = await api.subscribe(key, HOOK, ["call.completed", "call.failed"])
    sub = await api.subscribe(key, f"{HOOK}/other", ["call.completed"])
    reply = await api.call(
        "PATCH", f"{SUBS}/{sub['id']}", key, json={"url": HOOK, "events": ["call.failed", "call.completed"]}
    )
    assert_error(reply, 409, "conflict")
    unchanged = await api.call("GET", f"{SUBS}/{sub['id']}", key)
    assert (unchanged.body["url"], unchanged.body["events"]) == (f"{HOOK}/other", ["call.completed"])
    assert (await api.call("GET", f"{SUBS}/{taken['id']}", key)).status == 200


async def test_patch_of_another_customers_subscription_is_404(api: Api) -> None:
    acme, globex = await api.key("acme", ALL_SCOPES), await api.key("globex", ALL_SCOPES)
    sub = await api.subscribe(acme, description="mine")
    reply = await api.call("PATCH", f"{SUBS}/{sub['id']}", globex, json={"description": "theirs"})
    assert_error(reply, 404, "not_found")
    assert (await api.call("GET", f"{SUBS}/{sub['id']}", acme)).body["description"] == "mine"


# 6. Events log -------------------------------------------------------------------------------------


async def test_event_log_lists_newest_first(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    other = await api.key("globex", ALL_SCOPES)
    published = [await api.publish(key, t, n=n) for n, t in enumerate(["call.ringing", "call.completed"])]
    await api.publish(other, "call.failed")
    reply = await api.call("GET", "/api/v1/events", key)
    assert reply.status == 200
    assert [e["id"] for e in reply.body["data"]] == [e["id"] for e in reversed(published)]
    assert reply.body["next_cursor"] is None
    newest = reply.body["data"][0]
    assert (newest["type"], newest["customer_id"], newest["data"]) == ("call.completed", "acme", {"n": 1})


async def test_event_log_needs_the_read_events_scope(api: Api) -> None:
    key = await api.key("acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    event = await api.publish(key)
    assert_error(await api.call("GET", "/api/v1/events", key), 403, "forbidden")
    assert_error(await api.call("GET", f"/api/v1/events/{event['id']}", key), 403, "forbidden")
    reader = await api.key("acme", {Scope.READ_EVENTS})
    assert (await api.call("GET", f"/api/v1/events/{event['id']}", reader)).status == 200


async def test_event_log_filters_by_type(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    completed = [await api.publish(key, "call.completed", n=n) for n in range(2)]
    await api.publish(key, "call.ringing")
    reply = await api.call("GET", "/api/v1/events?type=call.completed", key)
    assert reply.status == 200
    assert [e["id"] for e in reply.body["data"]] == [e["id"] for e in reversed(completed)]
    none = await api.call("GET", "/api/v1/events?type=call.no_answer", key)
    assert (none.status, none.body) == (200, {"data": [], "next_cursor": None})


async def test_event_log_pages_with_a_cursor(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    published = [(await api.publish(key, n=n))["id"] for n in range(5)]
    pages = await api.walk("/api/v1/events", key, limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == list(reversed(published))
    filtered = await api.walk("/api/v1/events?type=call.completed", key, limit=2)
    assert [i for p in filtered for i in p] == list(reversed(published))


async def test_event_log_page_alias_matches_the_cursor(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    for n in range(5):
        await api.publish(key, n=n)
    by_cursor = await api.walk("/api/v1/events", key, limit=2)
    by_page = [
        [e["id"] for e in (await api.call("GET", f"/api/v1/events?limit=2&page={p}", key)).body["data"]]
        for p in range(3)
    ]
    assert by_page == by_cursor


async def test_get_event_returns_the_stored_event(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    event = await api.publish(key, "call.completed", call_id="c1", duration_seconds=47)
    reply = await api.call("GET", f"/api/v1/events/{event['id']}", key)
    assert reply.status == 200
    assert reply.body == event
    assert reply.body["data"] == {"call_id": "c1", "duration_seconds": 47}


async def test_another_customers_event_is_404(api: Api) -> None:
    """To a customer key: an admin key reads any event (see test_api_isolation)."""
    acme, globex = await api.key("acme", ALL_SCOPES), await api.key("globex", ALL_SCOPES - {Scope.ADMIN})
    event = await api.publish(acme)
    theirs = await api.call("GET", f"/api/v1/events/{event['id']}", globex)
    missing = await api.call("GET", "/api/v1/events/evt_00000000000000000000000000", globex)
    assert_error(theirs, 404, "not_found")
    assert theirs.body == missing.body


async def test_repeated_idempotency_key_answers_200_with_the_original(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    body = {"type": "call.transcript.ready", "data": {"call_id": "c1"}, "idempotency_key": "tr-c1"}
    first = await api.call("POST", "/api/v1/events", key, json=body)
    again = await api.call("POST", "/api/v1/events", key, json={**body, "data": {"call_id": "other"}})
    assert first.status == 202
    assert again.status == 200
    assert again.body == first.body
    assert count_rows(api.db, "events") == 1


async def test_event_types_lists_the_catalog_with_descriptions(api: Api) -> None:
    key = await api.key("acme", {Scope.PUBLISH_EVENTS})
    reply = await api.call("GET", "/api/v1/event-types", key)
    assert reply.status == 200
    assert sorted(t["type"] for t in reply.body["data"]) == sorted(EVENT_TYPES)
    for entry in reply.body["data"]:
        assert isinstance(entry["description"], str) and entry["description"].strip(), entry
    assert_error(await api.call("GET", "/api/v1/event-types"), 401, "unauthorized")


# 7. Deliveries log and retry -----------------------------------------------------------------------


async def _failed_delivery(api: Api, key: str, sub_id: str) -> dict[str, Any]:
    path = f"{SUBS}/{sub_id}/deliveries?status=failed"
    reply = await api.until(lambda: api.call("GET", path, key), lambda r: len(r.body["data"]) == 1)
    delivery: dict[str, Any] = reply.body["data"][0]
    return delivery


async def test_a_failed_delivery_shows_its_attempts(tmp_path: Path) -> None:
    failing = Receiver(status_for=lambda _: 500)
    async with running_receiver(failing) as receiver, serving(tmp_path, WEBHOOKD_RETRY_SCHEDULE="0") as api:
        key = await api.key("acme", ALL_SCOPES)
        sub = await api.subscribe(key, receiver.url)
        event = await api.publish(key)
        delivery = await _failed_delivery(api, key, sub["id"])
        detail = await api.call("GET", f"/api/v1/deliveries/{delivery['id']}", key)
    assert (delivery["event_id"], delivery["subscription_id"]) == (event["id"], sub["id"])
    assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("failed", 1, 500)
    assert detail.status == 200
    assert detail.body["id"] == delivery["id"]
    assert detail.body["status"] == "failed"
    [attempt] = detail.body["attempts_log"]
    assert attempt["attempt_no"] == 1
    assert attempt["status_code"] == 500
    assert attempt["succeeded"] is False
    assert isinstance(attempt["duration_ms"], int | float) and attempt["duration_ms"] >= 0
    assert attempt["response_excerpt"] == "ok"
    assert len(receiver.requests) == 1


async def test_retrying_a_failed_delivery_delivers_it(tmp_path: Path) -> None:
    answer = {"status": 500}
    flaky = Receiver(status_for=lambda _: answer["status"])
    async with running_receiver(flaky) as receiver, serving(tmp_path, WEBHOOKD_RETRY_SCHEDULE="0") as api:
        key = await api.key("acme", ALL_SCOPES)
        sub = await api.subscribe(key, receiver.url)
        event = await api.publish(key)
        delivery = await _failed_delivery(api, key, sub["id"])
        answer["status"] = 200
        retried = await api.call("POST", f"/api/v1/deliveries/{delivery['id']}/retry", key)
        assert retried.status == 202, retried.body
        assert retried.body["id"] == delivery["id"]
        assert retried.body["status"] != "failed"
        path = f"/api/v1/deliveries/{delivery['id']}"
        done = await api.until(
            lambda: api.call("GET", path, key), lambda r: r.body["status"] == "delivered", timeout_s=5
        )
        listed = await api.call("GET", f"{SUBS}/{sub['id']}/deliveries?status=delivered", key)
    assert [r.status for r in receiver.requests] == [500, 200]
    assert receiver.event_ids() == {event["id"]}
    assert [a["status_code"] for a in done.body["attempts_log"]] == [500, 200]
    assert done.body["attempts_log"][-1]["succeeded"] is True
    assert done.body["delivered_at"] is not None
    assert [d["id"] for d in listed.body["data"]] == [delivery["id"]]


async def test_deliveries_status_filter(tmp_path: Path) -> None:
    async with running_receiver() as receiver, serving(tmp_path, **MANY_CALLS) as api:
        key = await api.key("acme", ALL_SCOPES)
        sub = await api.subscribe(key, receiver.url)
        event = await api.publish(key)
        path = f"{SUBS}/{sub['id']}/deliveries"
        delivered = await api.until(
            lambda: api.call("GET", f"{path}?status=delivered", key), lambda r: len(r.body["data"]) == 1
        )
        failed = await api.call("GET", f"{path}?status=failed", key)
        everything = await api.call("GET", path, key)
    assert delivered.body["data"][0]["event_id"] == event["id"]
    assert (failed.status, failed.body) == (200, {"data": [], "next_cursor": None})
    assert [d["id"] for d in everything.body["data"]] == [delivered.body["data"][0]["id"]]


@pytest.mark.parametrize("status", ["bogus", "FAILED", "failed,delivered"])
async def test_deliveries_with_an_unknown_status_is_400(api: Api, status: str) -> None:
    key = await api.key("acme", ALL_SCOPES)
    sub = await api.subscribe(key)
    reply = await api.call("GET", f"{SUBS}/{sub['id']}/deliveries?status={status}", key)
    assert_error(reply, 400, "invalid_parameter")


async def test_unknown_delivery_is_404(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    assert_error(await api.call("GET", "/api/v1/deliveries/dlv_missing", key), 404, "not_found")
    assert_error(await api.call("POST", "/api/v1/deliveries/dlv_missing/retry", key), 404, "not_found")


# 8. Test endpoint ----------------------------------------------------------------------------------


async def test_test_endpoint_sends_webhook_test_to_that_subscription_only(tmp_path: Path) -> None:
    async with running_receiver() as receiver, serving(tmp_path, **MANY_CALLS) as api:
        key = await api.key("acme", ALL_SCOPES)
        target = await api.subscribe(key, f"{receiver.url}/target", ["call.completed"])
        bystander = await api.subscribe(key, f"{receiver.url}/bystander", ["call.completed"])
        reply = await api.call("POST", f"{SUBS}/{target['id']}/test", key)
        assert reply.status == 202, reply.body
        targeted = await api.until(
            lambda: api.call("GET", f"{SUBS}/{target['id']}/deliveries", key), delivered(reply.body["id"])
        )
        bystander_deliveries = await api.call("GET", f"{SUBS}/{bystander['id']}/deliveries", key)
    assert reply.body["type"] == "webhook.test"
    # The test endpoint makes its one delivery before it answers: the bystander has none, now or later.
    assert [(d["event_id"], d["attempts"]) for d in targeted.body["data"]] == [(reply.body["id"], 1)]
    assert bystander_deliveries.body["data"] == []
    [received] = receiver.requests
    assert received.path == "/hook/target"
    payload = Webhook(target["secret"]).verify(received.body, received.headers)
    assert payload["id"] == reply.body["id"] == received.headers["webhook-id"]
    assert payload["type"] == "webhook.test"
    assert payload["customer_id"] == "acme"
    assert payload["data"]["subscription_id"] == target["id"]


async def test_test_endpoint_of_an_unknown_subscription_is_404(api: Api) -> None:
    key = await api.key("acme", ALL_SCOPES)
    assert_error(await api.call("POST", f"{SUBS}/sub_missing/test", key), 404, "not_found")
    assert count_rows(api.db, "events") == 0


async def test_test_endpoint_of_a_disabled_subscription_is_409_until_enabled(tmp_path: Path) -> None:
    answer = {"status": 410}
    gone = Receiver(status_for=lambda _: answer["status"])
    async with running_receiver(gone) as receiver, serving(tmp_path, WEBHOOKD_RETRY_SCHEDULE="0") as api:
        key = await api.key("acme", ALL_SCOPES)
        sub = await api.subscribe(key, receiver.url)
        path = f"{SUBS}/{sub['id']}"
        await api.publish(key)
        disabled = await api.until(lambda: api.call("GET", path, key), lambda r: not r.body["is_active"])
        refused = await api.call("POST", f"{path}/test", key)
        answer["status"] = 200
        enabled = await api.call("POST", f"{path}/enable", key)
        tested = await api.call("POST", f"{path}/test", key)
        await receiver.wait_for(lambda got: any(r.json()["type"] == "webhook.test" for r in got))
    assert disabled.body["disabled_reason"] == "endpoint_gone"
    assert_error(refused, 409, "conflict")
    assert enabled.status == 200
    assert (enabled.body["is_active"], enabled.body["failure_count"], enabled.body["disabled_reason"]) == (
        True,
        0,
        None,
    )
    assert tested.status == 202


# 9. Admin API --------------------------------------------------------------------------------------


async def test_admin_creates_a_key_that_works_for_the_new_customer(api: Api) -> None:
    admin = await api.key("ops", {Scope.ADMIN})
    reply = await api.call(
        "POST",
        "/api/v1/keys",
        admin,
        json={"customer_id": "initech", "name": "Initech", "scopes": ["manage_webhooks", "read_events"]},
    )
    assert reply.status == 201, reply.body
    assert reply.body["customer_id"] == "initech"
    assert sorted(reply.body["scopes"]) == ["manage_webhooks", "read_events"]
    assert reply.body["key"].startswith("whd_")
    whoami = await api.call("GET", "/api/v1/auth/whoami", reply.body["key"])
    assert whoami.status == 200
    assert whoami.body == {
        "customer_id": "initech",
        "customer_name": "Initech",
        "mode": "live",
        "permissions": {
            "manage_webhooks": True,
            "read_events": True,
            "publish_events": False,
            "admin": False,
        },
    }
    assert (await api.call("GET", SUBS, reply.body["key"])).status == 200


async def test_admin_creates_a_twilio_source_with_an_ingest_url(api: Api) -> None:
    admin = await api.key("ops", {Scope.ADMIN})
    reply = await api.call(
        "POST",
        "/api/v1/sources",
        admin,
        json={"customer_id": "acme", "carrier": "twilio", "credentials": {"auth_token": "tw-token"}},
    )
    assert reply.status == 201, reply.body
    assert (reply.body["carrier"], reply.body["customer_id"]) == ("twilio", "acme")
    assert reply.body["id"]
    assert reply.body["ingest_url"] == f"{api.base}/ingest/twilio/{reply.body['id']}"
    assert "tw-token" not in str(reply.body)
    # The source exists: an unsigned callback is refused as unsigned (401), not unknown (404).
    async with api.http.post(reply.body["ingest_url"], data={"CallSid": "CA1"}) as ingest:
        assert ingest.status == 401
    async with api.http.post(f"{api.base}/ingest/twilio/src_missing", data={"CallSid": "CA1"}) as ingest:
        assert ingest.status == 404


async def test_admin_source_without_its_credential_is_400(api: Api) -> None:
    admin = await api.key("ops", {Scope.ADMIN})
    for credentials in ({}, {"auth_token": ""}, {"api_key": "x"}):
        reply = await api.call(
            "POST",
            "/api/v1/sources",
            admin,
            json={"customer_id": "acme", "carrier": "twilio", "credentials": credentials},
        )
        assert_error(reply, 400)
        assert "auth_token" in reply.body["error"]["message"]
    assert count_rows(api.db, "sources") == 0


@pytest.mark.parametrize("carrier", ["skype", "", "TWILIO", 7])
async def test_admin_source_with_an_unknown_carrier_is_400(api: Api, carrier: object) -> None:
    admin = await api.key("ops", {Scope.ADMIN})
    reply = await api.call(
        "POST",
        "/api/v1/sources",
        admin,
        json={"customer_id": "acme", "carrier": carrier, "credentials": {"auth_token": "t"}},
    )
    assert_error(reply, 400, "invalid_field")
    assert count_rows(api.db, "sources") == 0


@pytest.mark.parametrize(
    "path,body",
    [
        ("/api/v1/keys", {"customer_id": "evil", "scopes": ["admin"]}),
        ("/api/v1/sources", {"customer_id": "acme", "carrier": "twilio", "credentials": {"auth_token": "t"}}),
    ],
)
async def test_admin_endpoints_refuse_a_non_admin_key(api: Api, path: str, body: dict[str, Any]) -> None:
    key = await api.key("acme", ALL_SCOPES - {Scope.ADMIN})
    keys_before = count_rows(api.db, "api_keys")
    assert_error(await api.call("POST", path, key, json=body), 403, "forbidden")
    assert_error(await api.call("POST", path, json=body), 401, "unauthorized")
    assert count_rows(api.db, "api_keys") == keys_before
    assert count_rows(api.db, "sources") == 0


async def test_admin_backlog_ranks_subscriptions_across_customers(api: Api) -> None:
    admin = await api.key("ops", {Scope.ADMIN})
    acme = await api.key("acme", ALL_SCOPES - {Scope.ADMIN})
    globex = await api.key("globex", ALL_SCOPES - {Scope.ADMIN})
    busy = await api.subscribe(acme, rate_limit_per_second=2, ordered=True)
    quiet = await api.subscribe(globex)
    for n in range(3):
        await api.publish(acme, n=n)
    await api.publish(globex)

    reply = await api.call("GET", "/api/v1/backlog?limit=5", admin)

    assert reply.status == 200, reply.body
    rows = reply.body["data"]
    assert [(r["subscription_id"], r["customer_id"]) for r in rows] == [
        (busy["id"], "acme"),
        (quiet["id"], "globex"),
    ]
    # The endpoint never answers, so each delivery waits somewhere: pending, held or in flight.
    assert [r["pending"] + r["held"] + r["in_flight"] for r in rows] == [3, 1]
    assert (rows[0]["rate_limit_per_second"], rows[0]["ordered"], rows[0]["url"]) == (2, True, HOOK)
    assert_error(await api.call("GET", "/api/v1/backlog", acme), 403, "forbidden")
    assert_error(await api.call("GET", "/api/v1/backlog?limit=0", admin), 400, "invalid_parameter")


# 10. Errors ----------------------------------------------------------------------------------------

BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int]] = [
    # (id, method, path ({sub} is an existing subscription), request kwargs, status)
    ("broken-json", "POST", SUBS, {"data": b"{nope"}, 400),
    ("empty-body", "POST", SUBS, {"data": b""}, 400),
    ("invalid-utf8", "POST", SUBS, {"data": b'{"url": "\xff\xfe"}'}, 400),
    ("json-array", "POST", SUBS, {"json": [HOOK, ["call.completed"]]}, 400),
    ("json-string", "POST", SUBS, {"json": "hello"}, 400),
    ("json-null", "POST", SUBS, {"data": b"null"}, 400),
    ("deep-nesting", "POST", SUBS, {"data": b'{"a":' * 5000 + b"1" + b"}" * 5000}, 400),
    ("huge-int", "POST", SUBS, {"data": b'{"url": ' + b"9" * 400 + b"}"}, 400),
    ("events-string", "POST", SUBS, {"json": {"url": HOOK, "events": "call.completed"}}, 400),
    ("events-null", "POST", SUBS, {"json": {"url": HOOK, "events": None}}, 400),
    ("events-numbers", "POST", SUBS, {"json": {"url": HOOK, "events": [1, 2]}}, 400),
    ("events-object", "POST", SUBS, {"json": {"url": HOOK, "events": {"call.completed": True}}}, 400),
    ("url-number", "POST", SUBS, {"json": {"url": 42, "events": ["call.completed"]}}, 400),
    ("url-list", "POST", SUBS, {"json": {"url": [HOOK], "events": ["call.completed"]}}, 400),
    ("unknown-event", "POST", SUBS, {"json": {"url": HOOK, "events": ["call.exploded"]}}, 400),
    ("ftp-url", "POST", SUBS, {"json": {"url": "ftp://x.example/h", "events": ["call.completed"]}}, 400),
    ("no-host", "POST", SUBS, {"json": {"url": "https:///hook", "events": ["call.completed"]}}, 400),
    ("relative-url", "POST", SUBS, {"json": {"url": "/hook", "events": ["call.completed"]}}, 400),
    (
        "bad-port",
        "POST",
        SUBS,
        {"json": {"url": "https://x.example:99999/h", "events": ["call.completed"]}},
        400,
    ),
    (
        "credentials-in-url",
        "POST",
        SUBS,
        {"json": {"url": "https://user:pw@x.example/h", "events": ["call.completed"]}},
        400,
    ),
    (
        "url-too-long",
        "POST",
        SUBS,
        {"json": {"url": HOOK + "/" + "a" * 3000, "events": ["call.completed"]}},
        400,
    ),
    (
        "description-long",
        "POST",
        SUBS,
        {"json": {"url": HOOK, "events": ["call.completed"], "description": "d" * 501}},
        400,
    ),
    (
        "unknown-field",
        "POST",
        SUBS,
        {"json": {"url": HOOK, "events": ["call.completed"], "active": True}},
        400,
    ),
    ("patch-broken-json", "PATCH", f"{SUBS}/{{sub}}", {"data": b"{"}, 400),
    ("patch-array", "PATCH", f"{SUBS}/{{sub}}", {"json": [1]}, 400),
    ("patch-events-empty", "PATCH", f"{SUBS}/{{sub}}", {"json": {"events": []}}, 400),
    ("patch-events-string", "PATCH", f"{SUBS}/{{sub}}", {"json": {"events": "call.failed"}}, 400),
    ("patch-url-ftp", "PATCH", f"{SUBS}/{{sub}}", {"json": {"url": "ftp://x.example/h"}}, 400),
    ("patch-url-null", "PATCH", f"{SUBS}/{{sub}}", {"json": {"url": None}}, 400),
    ("patch-description-number", "PATCH", f"{SUBS}/{{sub}}", {"json": {"description": 5}}, 400),
    ("recover-no-since", "POST", f"{SUBS}/{{sub}}/recover", {"json": {}}, 400),
    (
        "recover-naive-time",
        "POST",
        f"{SUBS}/{{sub}}/recover",
        {"json": {"since": "2026-01-01T00:00:00"}},
        400,
    ),
    ("recover-garbage-time", "POST", f"{SUBS}/{{sub}}/recover", {"json": {"since": "yesterday"}}, 400),
    ("recover-number-time", "POST", f"{SUBS}/{{sub}}/recover", {"json": {"since": 1700000000}}, 400),
    ("recover-array", "POST", f"{SUBS}/{{sub}}/recover", {"json": ["2026-01-01T00:00:00Z"]}, 400),
    ("publish-array", "POST", "/api/v1/events", {"json": [{"type": "call.completed"}]}, 400),
    ("publish-no-type", "POST", "/api/v1/events", {"json": {"data": {}}}, 400),
    ("publish-bad-type", "POST", "/api/v1/events", {"json": {"type": "Call Completed!"}}, 400),
    ("publish-type-number", "POST", "/api/v1/events", {"json": {"type": 7}}, 400),
    ("publish-data-list", "POST", "/api/v1/events", {"json": {"type": "call.completed", "data": [1]}}, 400),
    (
        "publish-long-idempotency-key",
        "POST",
        "/api/v1/events",
        {"json": {"type": "call.completed", "idempotency_key": "k" * 256}},
        400,
    ),
    ("publish-unknown-field", "POST", "/api/v1/events", {"json": {"type": "call.completed", "x": 1}}, 400),
    (
        "publish-bad-callback",
        "POST",
        "/api/v1/events",
        {"json": {"type": "call.completed", "callback_url": "ftp://x.example/cb"}},
        400,
    ),
    ("keys-bad-scope", "POST", "/api/v1/keys", {"json": {"customer_id": "x", "scopes": ["root"]}}, 400),
    ("keys-no-scopes", "POST", "/api/v1/keys", {"json": {"customer_id": "x", "scopes": []}}, 400),
    ("keys-scopes-string", "POST", "/api/v1/keys", {"json": {"customer_id": "x", "scopes": "admin"}}, 400),
    ("keys-no-customer", "POST", "/api/v1/keys", {"json": {"scopes": ["read_events"]}}, 400),
    ("keys-customer-number", "POST", "/api/v1/keys", {"json": {"customer_id": 5, "scopes": ["admin"]}}, 400),
    (
        "keys-customer-too-long",
        "POST",
        "/api/v1/keys",
        {"json": {"customer_id": "c" * 200, "scopes": ["read_events"]}},
        400,
    ),
    (
        "keys-customer-unprintable",
        "POST",
        "/api/v1/keys",
        {"json": {"customer_id": "a\x00b", "scopes": ["read_events"]}},
        400,
    ),
    (
        "sources-credentials-list",
        "POST",
        "/api/v1/sources",
        {"json": {"customer_id": "acme", "carrier": "twilio", "credentials": ["auth_token"]}},
        400,
    ),
    (
        "sources-credential-number",
        "POST",
        "/api/v1/sources",
        {"json": {"customer_id": "acme", "carrier": "twilio", "credentials": {"auth_token": 5}}},
        400,
    ),
    ("method-not-allowed", "PUT", SUBS, {"json": {}}, 405),
    ("list-limit-word", "GET", f"{SUBS}?limit=ten", {}, 400),
    ("list-limit-superscript", "GET", f"{SUBS}?limit=%C2%B2", {}, 400),
    ("list-page-negative", "GET", f"{SUBS}?page=-1", {}, 400),
    ("list-page-huge", "GET", f"{SUBS}?page=99999999999999999999999", {}, 400),
    ("list-cursor-garbage", "GET", f"{SUBS}?cursor=%%%", {}, 400),
    ("list-cursor-not-ours", "GET", f"{SUBS}?cursor=aGVsbG8", {}, 400),
    ("events-limit-zero", "GET", "/api/v1/events?limit=0", {}, 400),
    ("events-limit-superscript", "GET", "/api/v1/events?limit=%C2%B2", {}, 400),
    ("events-cursor-garbage", "GET", "/api/v1/events?cursor=!!!", {}, 400),
    ("events-cursor-of-a-subscription", "GET", "/api/v1/events?cursor=c3ViXzAx", {}, 400),
    ("deliveries-limit-101", "GET", f"{SUBS}/{{sub}}/deliveries?limit=101", {}, 400),
    ("deliveries-cursor-garbage", "GET", f"{SUBS}/{{sub}}/deliveries?cursor=zzz", {}, 400),
    ("deliveries-status-unknown", "GET", f"{SUBS}/{{sub}}/deliveries?status=lost", {}, 400),
]


@pytest.mark.parametrize(
    "method,path,kwargs,status", [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS]
)
async def test_bad_requests_get_a_4xx_error_object(
    shared_api: Api, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    api = shared_api
    key = await api.key("acme", ALL_SCOPES)
    sub = await api.subscribe(key, f"{HOOK}/{uuid.uuid4().hex}")
    before = (count_rows(api.db, "subscriptions"), count_rows(api.db, "events"))
    reply = await api.call(method, path.format(sub=sub["id"]), key, **kwargs)
    assert_error(reply, status)
    assert reply.headers.get("X-Request-Id")
    assert (count_rows(api.db, "subscriptions"), count_rows(api.db, "events")) == before
    assert (await api.call("GET", f"{SUBS}/{sub['id']}", key)).body == {
        k: v for k, v in sub.items() if k != "secret"
    }


async def test_non_ascii_digits_in_paging_params_are_invalid_parameter(api: Api) -> None:
    """'²' passes str.isdigit() but not int(): it must be a plain 400 invalid_parameter on every list."""
    key = await api.key("acme", ALL_SCOPES)
    sub = await api.subscribe(key)
    for path in [SUBS, "/api/v1/events", f"{SUBS}/{sub['id']}/deliveries"]:
        for param in ["limit", "page"]:
            reply = await api.call("GET", f"{path}?{param}=%C2%B2", key)
            assert_error(reply, 400)
            assert (path, param, reply.error_code) == (path, param, "invalid_parameter"), reply.body
            assert "invalid literal" not in reply.body["error"]["message"]


async def test_an_empty_list_parameter_is_a_400_that_names_it(api: Api) -> None:
    """``?limit=`` is not "the default": each list's every parameter, given empty, is refused."""
    key = await api.key("acme", ALL_SCOPES)
    sub = await api.subscribe(key)
    lists = {
        SUBS: ["limit", "page", "cursor"],
        "/api/v1/events": ["limit", "page", "cursor", "type"],
        f"{SUBS}/{sub['id']}/deliveries": ["limit", "page", "cursor", "status"],
    }
    for path, params in lists.items():
        for param in params:
            reply = await api.call("GET", f"{path}?{param}=", key)
            assert_error(reply, 400, "invalid_parameter")
            assert reply.body["error"]["message"] == f"{param} is empty: give it a value or leave it out"


async def _chunks(total: int) -> AsyncIterator[bytes]:
    yield b'{"url": "' + HOOK.encode() + b'", "events": ["call.completed"], "description": "'
    for _ in range(total // 100):
        yield b"d" * 100
    yield b'"}'


@pytest.mark.parametrize(
    "method,path",
    [("POST", SUBS), ("POST", "/api/v1/events"), ("POST", "/api/v1/keys"), ("PATCH", f"{SUBS}/{{sub}}")],
)
async def test_a_body_over_the_limit_is_413(tmp_path: Path, method: str, path: str) -> None:
    async with serving(tmp_path, WEBHOOKD_MAX_BODY_BYTES="1024") as api:
        key = await api.key("acme", ALL_SCOPES)
        sub = await api.subscribe(key, f"{HOOK}/existing")
        body = {"type": "call.completed", "data": {"blob": "x" * 2000}, "description": "d" * 2000}
        reply = await api.call(method, path.format(sub=sub["id"]), key, json=body)
    assert_error(reply, 413, "payload_too_large")
    assert reply.headers.get("X-Request-Id")


async def test_a_chunked_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async with serving(tmp_path, WEBHOOKD_MAX_BODY_BYTES="1024") as api:
        key = await api.key("acme", ALL_SCOPES)
        reply = await api.call("POST", SUBS, key, data=_chunks(5000))
        fits = await api.call("POST", SUBS, key, data=_chunks(500))
    assert_error(reply, 413, "payload_too_large")
    assert fits.status == 201, fits.body
    assert count_rows(tmp_path / "w.db", "subscriptions") == 1
