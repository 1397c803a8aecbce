"""Differential fuzz: every generated request goes over real HTTP to webhookd on SQLite and to webhookd
on PostgreSQL, which must answer it alike: the same status, the same error code, never a 5xx.

Hypothesis draws publish bodies, subscription create and PATCH bodies, recover windows, list query
parameters, path ids and the admin API's key and source bodies, with NUL characters, deep nesting,
odd times and odd customer ids weighted in; the explicit examples are the findings this suite was
written for. Both servers get the same requests in the same order, so what each stores evolves
alike (idempotent repeats, 409s).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.contract.conftest import PostgresServer, postgres_server  # noqa: F401 (a fixture)
from tests.integration.backends import Live, Reply, serving_both
from webhookd.inputs import MAX_JSON_DEPTH
from webhookd.models import EVENT_TYPES, DeliveryStatus

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"
SUBS = "/api/v1/webhook-subscriptions"
MAX_EXAMPLES = 1000


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module scope: both servers serve every example


@pytest.fixture(scope="module")
async def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Live]]:
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    async with serving_both(tmp_path_factory.mktemp("differential"), postgres) as both:
        yield both


@pytest.fixture(autouse=True)
def no_error_is_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)
    yield
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


# -- requests ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One request. ``{sub}``, ``{evt}`` and ``{dlv}`` in the path become each server's own seeded
    subscription, event and delivery; ``body`` is sent as it is."""

    method: str
    path: str
    body: bytes | None = None

    def path_for(self, live: Live) -> str:
        path = self.path
        for name, value in live.seeded.items():
            path = path.replace("{" + name + "}", value)
        return path


def deep(levels: int) -> str:
    """JSON text of ``levels`` nested objects (built as text: json.dumps recurses)."""
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


DEEP = "__deep__"


def encode(value: Any) -> bytes:
    """JSON of ``value``; a ``{DEEP: n}`` object anywhere becomes ``n`` nested levels."""
    text = json.dumps(value)
    while f'{{"{DEEP}": ' in text:
        start = text.index(f'{{"{DEEP}": ')
        end = text.index("}", start)
        levels = int(text[start + len(DEEP) + 5 : end])
        text = text[:start] + deep(levels) + text[end + 1 :]
    return text.encode()


def publish(**fields: Any) -> Probe:
    return Probe("POST", EVENTS, encode({"type": "call.completed", "data": {}, **fields}))


def recover(**window: str) -> Probe:
    return Probe("POST", f"{SUBS}/{{sub}}/recover", encode(window))


NUL_TEXT = st.sampled_from(["\x00", "a\x00", "\x00b", "evt_\x00", "0123456789ABCDEFGHJKMNPQR\x00"])
TEXT = st.text(max_size=20) | NUL_TEXT
CUSTOMER_IDS = (
    st.sampled_from(
        [
            "acme",
            "other-1",
            "Cus.2:x-y_z",
            "",
            "\u202eacme",
            "../../etc/passwd",
            "a" * 129,
            "a" * 100_000,
            "acme\n",
        ]
    )
    | TEXT
)
LEVELS = st.sampled_from(
    [1, 2, MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, 252, 253, 254, 300, 1022]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
DATA = st.dictionaries(TEXT, JSON_VALUES, max_size=4) | LEVELS.map(lambda n: {DEEP: n}) | JSON_VALUES


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value, or ``...`` for leaving it out."""
    return st.just(...) | strategy


@st.composite
def bodies(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> bytes:
    """A JSON object of some of ``fields``, sometimes with an unknown one; or any bytes at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=40))
    chosen = {name: draw(optional(strategy)) for name, strategy in fields.items()}
    body = {name: value for name, value in chosen.items() if value is not ...}
    if draw(st.integers(0, 9)) == 0:
        body[draw(TEXT)] = draw(JSON_VALUES)
    return encode(body)


EVENT_TYPE = st.sampled_from([*EVENT_TYPES, "call.custom_thing"]) | TEXT
URLS = st.sampled_from(["http://127.0.0.1:9/a", "http://127.0.0.1:9/b", "https://h.example.com/x?y=1"]) | TEXT
EVENT_LISTS = st.lists(st.sampled_from(EVENT_TYPES) | TEXT, max_size=3) | JSON_VALUES
DESCRIPTION = st.none() | TEXT | st.just("d" * 501)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))])
TIMES = (
    st.datetimes(timezones=ZONES).map(lambda t: t.isoformat())
    | st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:59:59.999999Z",
            "9999-12-31T23:30:00-01:00",
            "2026-05-10T12:00:00",
        ]
    )
    | TEXT
    | st.integers()
)

PUBLISH = bodies(
    {
        "type": EVENT_TYPE,
        "data": DATA,
        "customer_id": CUSTOMER_IDS,
        "idempotency_key": TEXT | st.just("k" * 256),
        "callback_url": st.none() | URLS,
    }
).map(lambda body: Probe("POST", EVENTS, body))
SUBSCRIBE = bodies({"url": URLS, "events": EVENT_LISTS, "description": DESCRIPTION}).map(
    lambda body: Probe("POST", SUBS, body)
)


def made_up_id(prefix: str) -> st.SearchStrategy[str]:
    """Text no record has as its id, percent-encoded for a path."""
    shaped = st.sampled_from([f"{prefix}_", f"{prefix}_0123456789ABCDEFGHJKMNPQRS"])
    return (TEXT | shaped).map(lambda text: quote(text, safe="") or "x")


def any_id(prefix: str) -> st.SearchStrategy[str]:
    """The seeded record's placeholder, or a made-up id."""
    return st.just("{" + prefix + "}") | made_up_id(prefix)


PATCH = st.builds(
    lambda sub, body: Probe("PATCH", f"{SUBS}/{sub}", body),
    any_id("sub"),
    bodies({"url": URLS, "events": EVENT_LISTS, "description": DESCRIPTION}),
)
RECOVER = st.builds(
    lambda sub, body: Probe("POST", f"{SUBS}/{sub}/recover", body),
    any_id("sub"),
    bodies({"since": TIMES, "until": TIMES}),
)
CURSORS = TEXT | (TEXT | st.sampled_from(["inf|evt_x", "nan|x_y", "1e300|evt_x", "1.5|evt_\x00"])).map(
    lambda text: base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
)
QUERY = st.dictionaries(
    st.sampled_from(["limit", "page", "cursor", "type", "status"]),
    st.integers(-5, 20_000).map(str)
    | CURSORS
    | st.sampled_from([*EVENT_TYPES, *(s.value for s in DeliveryStatus)]),
    max_size=3,
)
LISTS = st.builds(
    lambda path, query: Probe("GET", f"{path}?{urlencode(query)}" if query else path),
    st.sampled_from([EVENTS, SUBS, f"{SUBS}/{{sub}}/deliveries"]),
    QUERY,
)
BY_ID = st.one_of(
    st.builds(lambda m, i: Probe(m, f"{SUBS}/{i}"), st.sampled_from(["GET", "HEAD"]), any_id("sub")),
    st.builds(lambda i: Probe("DELETE", f"{SUBS}/{i}"), made_up_id("sub")),
    st.builds(
        lambda i, action: Probe("POST", f"{SUBS}/{i}/{action}"),
        any_id("sub"),
        st.sampled_from(["enable", "rotate-secret", "test"]),
    ),
    st.builds(lambda i: Probe("GET", f"{SUBS}/{i}/deliveries"), any_id("sub")),
    st.builds(lambda i: Probe("GET", f"/api/v1/deliveries/{i}"), any_id("dlv")),
    st.builds(lambda i: Probe("POST", f"/api/v1/deliveries/{i}/retry"), any_id("dlv")),
    st.builds(lambda i: Probe("GET", f"{EVENTS}/{i}"), any_id("evt")),
)
SCOPES = (
    st.lists(st.sampled_from(["read_events", "publish_events", "admin"]) | TEXT, max_size=2) | JSON_VALUES
)
KEYS = bodies({"customer_id": CUSTOMER_IDS, "name": TEXT, "scopes": SCOPES}).map(
    lambda body: Probe("POST", "/api/v1/keys", body)
)
CREDENTIALS = st.dictionaries(st.sampled_from(["auth_token", "secret"]) | TEXT, TEXT) | JSON_VALUES
SOURCES = bodies(
    {
        "customer_id": CUSTOMER_IDS,
        "carrier": st.sampled_from(["twilio", "vapi"]) | TEXT,
        "credentials": CREDENTIALS,
    }
).map(lambda body: Probe("POST", "/api/v1/sources", body))
PROBES = st.one_of(PUBLISH, SUBSCRIBE, PATCH, RECOVER, LISTS, BY_ID, KEYS, SOURCES)


# -- the test ------------------------------------------------------------------------------------------


async def both(servers: dict[str, Live], probe: Probe) -> tuple[Reply, Reply]:
    answers = [await live.call(probe.method, probe.path_for(live), probe.body) for live in servers.values()]
    return answers[0], answers[1]


def outcome(reply: Reply) -> tuple[int, str | None]:
    if reply.status < 400 or reply.body is None:  # a HEAD answer has no body
        return reply.status, None
    return reply.error


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(probe=PROBES)
@example(probe=publish(data={DEEP: 251}))
@example(probe=publish(data={DEEP: 252}))
@example(probe=publish(data={DEEP: 300}))
@example(probe=publish(data={DEEP: 1022}))
@example(probe=Probe("GET", f"{EVENTS}?limit=100"))
@example(probe=publish(data={"note": "a\x00b"}))
@example(probe=publish(data={"a\x00": {"b": 1}}))
@example(probe=publish(idempotency_key="k\x00"))
@example(probe=publish(customer_id="cus\x00"))
@example(probe=publish(customer_id="\u202eacme"))
@example(probe=publish(customer_id=""))
@example(
    probe=Probe(
        "POST",
        SUBS,
        encode({"url": "http://127.0.0.1:9/n", "events": ["call.failed"], "description": "\x00"}),
    )
)
@example(probe=Probe("PATCH", f"{SUBS}/{{sub}}", encode({"description": "a\x00"})))
@example(probe=Probe("GET", f"{SUBS}/sub_%00"))
@example(probe=Probe("POST", f"{SUBS}/%00/enable"))
@example(probe=Probe("GET", f"{SUBS}/sub_%00/deliveries"))
@example(probe=Probe("GET", "/api/v1/deliveries/dlv_%00"))
@example(probe=Probe("POST", "/api/v1/deliveries/%00/retry"))
@example(probe=Probe("GET", f"{EVENTS}/evt_%00"))
@example(probe=Probe("GET", f"{EVENTS}?type=call.%00"))
@example(probe=Probe("GET", f"{SUBS}?cursor=AF8"))  # base64 of NUL and "_"
@example(probe=recover(since="0001-01-01T00:00:00Z"))
@example(probe=recover(since="0001-01-01T00:30:00+01:00"))
@example(probe=recover(since="2026-01-01T00:00:00Z", until="9999-12-31T23:59:59Z"))
@example(probe=recover(since="2026-01-01T00:00:00Z", until="9999-12-31T23:30:00-01:00"))
@example(probe=Probe("POST", "/api/v1/callback-secret"))
async def test_sqlite_and_postgresql_answer_every_request_alike(
    servers: dict[str, Live], probe: Probe
) -> None:
    sqlite, postgres = await both(servers, probe)

    assert sqlite.status < 500 and postgres.status < 500, (sqlite, postgres)
    assert outcome(sqlite) == outcome(postgres), (sqlite.body, postgres.body)
