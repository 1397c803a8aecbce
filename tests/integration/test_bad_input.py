"""Bad input gets the same 4xx from a server on SQLite and from one on PostgreSQL, stores nothing and
logs no error: JSON nested past the limit, NUL characters, ids no record can have, times outside
years 1 to 9999, customer ids outside the one rule. Real servers on both backends, real HTTP.

Every example here was a 500 on at least one backend, or a 2xx that stored something the event log
could not show again.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from yarl import URL

from tests.contract.conftest import PostgresServer, postgres_server  # noqa: F401 (a fixture)
from tests.integration.backends import HOOK, Live, serving_both
from webhookd.inputs import CUSTOMER_ID_RULE, MAX_JSON_DEPTH
from webhookd.models import Carrier

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"
SUBS = "/api/v1/webhook-subscriptions"
CARRIERS = (Carrier.TWILIO, Carrier.RETELL, Carrier.TELNYX)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module scope: both servers serve every test of this module


@pytest.fixture(scope="module")
async def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Live]]:
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    async with serving_both(tmp_path_factory.mktemp("bad_input"), postgres, CARRIERS) as both:
        yield both


@pytest.fixture(params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest, servers: dict[str, Live]) -> Live:
    return servers[request.param]


@pytest.fixture(autouse=True)
def no_error_is_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Bad input is the client's mistake: no error line, no traceback."""
    caplog.set_level(logging.INFO)
    yield
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


def nested(levels: int) -> str:
    """JSON text of ``levels`` objects, each inside the last (json.dumps recurses; this does not)."""
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def publish_body(depth: int) -> bytes:
    """A publish body whose own braces and its data's nest ``depth`` levels deep."""
    return ('{"type":"call.completed","data":' + nested(depth - 1) + "}").encode()


# -- nesting -------------------------------------------------------------------------------------------


async def test_a_publish_nested_to_the_limit_is_stored_and_stays_listable(live: Live) -> None:
    published = await live.call("POST", EVENTS, publish_body(MAX_JSON_DEPTH))
    assert published.status == 202, published.body

    page = await live.call("GET", f"{EVENTS}?limit=100")
    one = await live.call("GET", f"{EVENTS}/{published.body['id']}")

    assert page.status == 200, page.body
    assert published.body["id"] in [e["id"] for e in page.body["data"]]
    assert one.status == 200 and one.body["data"] == published.body["data"]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 252, 253, 254, 300, 1022])
async def test_a_publish_nested_deeper_than_the_limit_is_refused(live: Live, depth: int) -> None:
    before = await live.event_count()

    reply = await live.call("POST", EVENTS, publish_body(depth))

    assert reply.error == (400, "invalid_json")
    assert f"more than {MAX_JSON_DEPTH} levels deep" in reply.body["error"]["message"]
    assert await live.event_count() == before
    assert (await live.call("GET", f"{EVENTS}?limit=100")).status == 200


@pytest.mark.parametrize(
    "ordering_key", ["", "k" * 256, 7, ["call-1"]], ids=["empty", "long", "number", "list"]
)
async def test_an_ordering_key_that_is_not_a_short_string_is_refused(live: Live, ordering_key: Any) -> None:
    before = await live.event_count()

    reply = await live.call("POST", EVENTS, {"type": "call.completed", "ordering_key": ordering_key})

    assert reply.error == (400, "invalid_ordering_key")
    assert "1 to 255 characters" in reply.body["error"]["message"]
    assert await live.event_count() == before


async def test_an_events_ordering_key_comes_back_with_it(live: Live) -> None:
    reply = await live.call("POST", EVENTS, {"type": "call.completed", "ordering_key": "call-7"})
    assert reply.body["ordering_key"] == "call-7"
    fetched = await live.call("GET", f"{EVENTS}/{reply.body['id']}")
    assert fetched.body["ordering_key"] == "call-7"


# -- NUL -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"type": "call.completed", "data": {"note": "a\u0000b"}},
        {"type": "call.completed", "data": {"a\u0000": 1}},
        {"type": "call.completed", "data": {"turns": [{"text": ["ok", "\u0000"]}]}},
        {"type": "call.completed", "data": {}, "idempotency_key": "k\u0000"},
        {"type": "call.completed", "data": {}, "customer_id": "cus\u0000"},
        {"type": "call.completed", "data": {}, "ordering_key": "call\u0000"},
    ],
    ids=["data value", "data key", "deep in data", "idempotency_key", "customer_id", "ordering_key"],
)
async def test_a_publish_holding_a_nul_is_refused_and_nothing_is_stored(live: Live, body: Any) -> None:
    before = await live.event_count()

    reply = await live.call("POST", EVENTS, body)

    assert reply.error == (400, "invalid_json")
    assert "NUL" in reply.body["error"]["message"]
    assert await live.event_count() == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            SUBS,
            {"url": "http://127.0.0.1:9/nul", "events": ["call.completed"], "description": "\u0000"},
        ),
        ("PATCH", f"{SUBS}/{{sub}}", {"description": "a\u0000"}),
        ("POST", f"{SUBS}/{{sub}}/recover", {"since": "2026-01-01T00:00:00Z\u0000"}),
        ("POST", "/api/v1/keys", {"customer_id": "nul-name", "name": "a\u0000", "scopes": ["read_events"]}),
        (
            "POST",
            "/api/v1/sources",
            {"customer_id": "nul-credential", "carrier": "twilio", "credentials": {"auth_token": "\u0000"}},
        ),
    ],
    ids=["subscription", "patch", "recover", "key", "source"],
)
async def test_every_api_body_holding_a_nul_is_refused(live: Live, method: str, path: str, body: Any) -> None:
    reply = await live.call(method, path.format(sub=live.seeded["sub"]), body)

    assert reply.error == (400, "invalid_json")
    subscription = await live.call("GET", f"{SUBS}/{live.seeded['sub']}")
    assert subscription.body["description"] is None
    listed = await live.call("GET", f"{SUBS}?limit=100")
    assert [s["url"] for s in listed.body["data"]] == [HOOK]
    assert not await live.customer_exists("nul-name")
    assert not await live.customer_exists("nul-credential")


# -- ids and query parameters no record can match ------------------------------------------------------

ID_ROUTES = [
    ("GET", f"{SUBS}/{{sub_}}"),
    ("HEAD", f"{SUBS}/{{sub_}}"),
    ("PATCH", f"{SUBS}/{{sub_}}"),
    ("DELETE", f"{SUBS}/{{sub_}}"),
    ("POST", f"{SUBS}/{{sub_}}/enable"),
    ("POST", f"{SUBS}/{{sub_}}/rotate-secret"),
    ("POST", f"{SUBS}/{{sub_}}/test"),
    ("POST", f"{SUBS}/{{sub_}}/recover"),
    ("GET", f"{SUBS}/{{sub_}}/deliveries"),
    ("HEAD", f"{SUBS}/{{sub_}}/deliveries"),
    ("GET", "/api/v1/deliveries/{dlv_}"),
    ("HEAD", "/api/v1/deliveries/{dlv_}"),
    ("POST", "/api/v1/deliveries/{dlv_}/retry"),
    ("GET", f"{EVENTS}/{{evt_}}"),
    ("HEAD", f"{EVENTS}/{{evt_}}"),
]
BODIES = {"PATCH": {"description": "x"}, "POST": {"since": "2026-01-01T00:00:00Z"}}


@pytest.mark.parametrize(("method", "path"), ID_ROUTES)
@pytest.mark.parametrize(
    "shape", ["{prefix}%00", "%00", "{prefix}0123456789ABCDEFGHJKMNP%00", "{prefix}%C3%A9"]
)
async def test_a_path_id_no_record_can_have_is_not_found(
    live: Live, method: str, path: str, shape: str
) -> None:
    ids = {prefix: shape.format(prefix=prefix) for prefix in ("sub_", "dlv_", "evt_")}

    reply = await live.call(method, path.format(**ids), BODIES.get(method))

    assert reply.status == 404
    if method != "HEAD":
        assert reply.error == (404, "not_found")


async def test_an_ingest_source_id_no_source_can_have_is_not_found(live: Live) -> None:
    for source_id in ("src_%00", "%00", "src_0123456789ABCDEFGHJKMNP%00"):
        async with live.http.post(URL(f"{live.base}/ingest/twilio/{source_id}", encoded=True)) as response:
            assert (response.status, (await response.json())["error"]["code"]) == (404, "source_not_found")


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


NUL_ID = cursor_of("\u0000_")
NUL_IN_LOG_ID = cursor_of("1.5|evt_\u0000")


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (f"{EVENTS}?type=call.%00", "invalid_parameter"),
        (f"{EVENTS}?type=Call%20Completed", "invalid_parameter"),
        (f"{SUBS}?cursor={NUL_ID}", "invalid_cursor"),
        (f"{EVENTS}?cursor={cursor_of('inf|evt_x')}", "invalid_cursor"),
        (f"{EVENTS}?cursor={cursor_of('1e300|evt_x')}", "invalid_cursor"),
        (f"{EVENTS}?cursor={NUL_IN_LOG_ID}", "invalid_cursor"),
        (f"{SUBS}/{{sub}}/deliveries?cursor={cursor_of('-1e20|dlv_x')}", "invalid_cursor"),
    ],
)
async def test_a_list_parameter_no_record_can_match_is_a_400(live: Live, path: str, code: str) -> None:
    reply = await live.call("GET", path.format(sub=live.seeded["sub"]))

    assert reply.error == (400, code)


# -- times ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window",
    [
        {"since": "0001-01-01T00:30:00+01:00"},  # year 0 in UTC
        {"since": "2026-01-01T00:00:00Z", "until": "9999-12-31T23:30:00-01:00"},  # year 10000 in UTC
    ],
)
async def test_recover_takes_a_time_past_years_1_to_9999_utc_as_their_edge(
    live: Live, window: dict[str, str]
) -> None:
    """Such a time is valid RFC 3339, which the document promises to take; nothing stored is older
    or newer than those edges, so the window means the same."""
    reply = await live.call("POST", f"{SUBS}/{live.seeded['sub']}/recover", window)

    assert (reply.status, reply.body) == (202, {"requeued": 0, "more": False})


async def test_recover_takes_the_first_and_last_moments_of_those_years(live: Live) -> None:
    window = {"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"}

    reply = await live.call("POST", f"{SUBS}/{live.seeded['sub']}/recover", window)

    assert (reply.status, reply.body) == (202, {"requeued": 0, "more": False})


# -- customer ids --------------------------------------------------------------------------------------

BAD_CUSTOMER_IDS = ["", "\u202eacme", "../../etc/passwd", "a" * 100_000, "acme\n", "a b", 42]
BAD_CUSTOMER_ID_NAMES = ["empty", "rlo", "path", "long", "newline", "space", "number"]


@pytest.mark.parametrize("customer_id", BAD_CUSTOMER_IDS, ids=BAD_CUSTOMER_ID_NAMES)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        (EVENTS, {"type": "call.completed", "data": {}}),
        ("/api/v1/keys", {"scopes": ["read_events"]}),
        ("/api/v1/sources", {"carrier": "twilio", "credentials": {"auth_token": "t"}}),
    ],
    ids=["publish", "keys", "sources"],
)
async def test_a_customer_id_outside_the_rule_is_refused_saying_what_one_is(
    live: Live, path: str, body: dict[str, Any], customer_id: Any
) -> None:
    reply = await live.call("POST", path, {**body, "customer_id": customer_id})

    assert reply.error == (400, "invalid_customer")
    assert reply.body["error"]["message"] == f"customer_id must be {CUSTOMER_ID_RULE}"
    if isinstance(customer_id, str):
        assert not await live.customer_exists(customer_id)


async def test_a_valid_customer_id_is_published_for(live: Live) -> None:
    body = {"type": "call.completed", "data": {}, "customer_id": "Cus.2:x-y_z"}
    reply = await live.call("POST", EVENTS, body)

    assert reply.status == 202, reply.body
    assert await live.customer_exists("Cus.2:x-y_z")


# -- the callback secret -------------------------------------------------------------------------------


async def test_the_callback_secret_rotates_and_the_old_one_keeps_a_grace_period(live: Live) -> None:
    first = await live.call("GET", "/api/v1/callback-secret")
    rotated = await live.call("POST", "/api/v1/callback-secret")
    read = await live.call("GET", "/api/v1/callback-secret")

    assert (first.status, rotated.status, read.status) == (200, 200, 200), rotated.body
    assert rotated.body["secret"] != first.body["secret"]
    assert rotated.body["previous_secret_expires_at"] is not None
    assert read.body == rotated.body


# -- carrier callbacks ---------------------------------------------------------------------------------

TWILIO = {
    "AccountSid": "AC1",
    "CallSid": "CA1",
    "CallStatus": "completed",
    "From": "+15551234567",
    "To": "+15557654321",
    "Direction": "outbound-api",
    "CallDuration": "3",
}


def retell(call: dict[str, Any]) -> bytes:
    return json.dumps({"event": "call_ended", "call": {"call_status": "ended", **call}}).encode()


@pytest.mark.parametrize(
    ("carrier", "body", "query"),
    [
        (Carrier.TWILIO, urlencode({**TWILIO, "CallSid": "CA\u0000"}).encode(), ""),
        (Carrier.TWILIO, urlencode({**TWILIO, "CallSid": "CA2", "From": "+1555\u0000"}).encode(), ""),
        (Carrier.TWILIO, urlencode({**TWILIO, "CallSid": "CA3"}).encode(), "?ref=a%00b"),
        (Carrier.RETELL, retell({"call_id": "c\u0000"}), ""),
        (Carrier.RETELL, retell({"call_id": "c2", "metadata": {"k": "v\u0000"}}), ""),
        (Carrier.RETELL, retell({"call_id": "c3", "metadata": json.loads(nested(MAX_JSON_DEPTH - 1))}), ""),
        (
            Carrier.RETELL,
            b'{"event":"call_ended","call":{"call_id":"c4","metadata":' + nested(300).encode() + b"}}",
            "",
        ),
    ],
    ids=[
        "form call id",
        "form field",
        "query",
        "json call id",
        "json metadata",
        "json depth",
        "json depth 300",
    ],
)
async def test_a_callback_holding_a_nul_or_nested_too_deep_is_refused(
    live: Live, carrier: Carrier, body: bytes, query: str
) -> None:
    before = await live.event_count()

    reply = await live.ingest(carrier, body, query)

    assert reply.error == (400, "invalid_payload")
    assert await live.event_count() == before


async def test_a_telnyx_client_state_nested_too_deep_is_kept_as_its_raw_text(live: Live) -> None:
    client_state = base64.b64encode(nested(300).encode()).decode()
    body = json.dumps(
        {
            "data": {
                "event_type": "call.initiated",
                "id": f"e-{live.backend}",
                "occurred_at": "2026-03-04T15:20:58Z",
                "payload": {
                    "call_control_id": "cc1",
                    "call_leg_id": "leg1",
                    "call_session_id": "s1",
                    "direction": "outgoing",
                    "client_state": client_state,
                },
            }
        }
    ).encode()

    reply = await live.ingest(Carrier.TELNYX, body)

    assert reply.status == 200, reply.body
    (event_id,) = reply.body["events"]
    event = await live.call("GET", f"{EVENTS}/{event_id}")
    assert event.body["data"]["client_ref"] == {"raw": client_state}
