"""Every carrier's callbacks through a real server.

A real uvicorn server on a free port, a real SQLite file, and a real aiohttp receiver subscribed to every
call event. Each request is signed at send time with the carrier's own scheme and the fixture secrets
(``tests/integration/carrier_signing.py``), since the server checks time windows on the real clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from yarl import URL

from tests.integration.carrier_signing import (
    SIGNATURE_HEADERS,
    WRONG_KEYS,
    credentials,
    fixture_dir,
    signed_headers,
)
from tests.integration.harness import (
    Receiver,
    auth,
    count_rows,
    eventually,
    provision_key,
    provision_source,
    query,
    running_receiver,
    running_server,
    server_settings,
)
from webhookd.models import CALL_EVENT_TYPES, Carrier, Scope

pytestmark = pytest.mark.anyio

CUSTOMER = "acme"
ALL = list(Carrier)
LIFECYCLE_CARRIERS = [Carrier.TWILIO, Carrier.TELNYX, Carrier.TELNYX_TEXML, Carrier.VONAGE, Carrier.PLIVO]
TIME_WINDOWED = [c for c in ALL if c not in {Carrier.TWILIO, Carrier.PLIVO}]
"""Carriers whose signature carries a time: a fresh one is required."""
BYTE_EXACT = TIME_WINDOWED
"""Carriers that sign the raw body bytes (Twilio and Plivo sign decoded form fields)."""
URL_SIGNED = [Carrier.TWILIO, Carrier.PLIVO]
"""Carriers whose signature covers the URL they called."""
TERMINAL = {"call.completed", "call.failed", "call.no_answer"}
RANKS = {"call.initiating": 0, "call.ringing": 1, "call.in_progress": 2, **dict.fromkeys(TERMINAL, 3)}
NOT_IN_EVENT_DATA = {"event_id", "idempotency_key", "type", "ignored", "state_update_only"}
STATE_DEPENDENT = {"answered_at"}
"""The call state may fill this on in-progress events where the stateless reference record has none
(checked explicitly in ``STATE_FILLED`` where it matters)."""
MAX_BODY = 8192


# -- fixtures on disk --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    body: bytes
    records: list[dict[str, Any]]
    """The stateless reference normalizer's records for this body."""

    @property
    def deliverable(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] and not r["state_update_only"] and not r["ignored"]]


def samples(carrier: Carrier) -> list[Sample]:
    folder = fixture_dir(carrier)
    lines = (folder / "_expected_normalized.jsonl").read_text().splitlines()
    return [
        Sample(line["file"], (folder / line["file"]).read_bytes(), line["normalized"])
        for line in map(json.loads, lines)
    ]


def fixture_body(carrier: Carrier, name: str) -> bytes:
    return (fixture_dir(carrier) / name).read_bytes()


def recorded_headers(carrier: Carrier, name: str) -> dict[str, str]:
    meta = json.loads((fixture_dir(carrier) / "_signatures.json").read_text())
    headers: dict[str, str] = meta["files"][name]["headers"]
    return headers


def with_call_state(ordered: list[Sample]) -> list[tuple[str, dict[str, Any]]]:
    """The deliverable records as the call state machine should emit them in this order: a
    missing direction comes from an earlier callback, and an AMD result is carried on."""
    direction = answered_by = answered_by_raw = None
    out = []
    for sample in ordered:
        for record in sample.records:
            direction = direction or record["direction"]
            answered_by = record["answered_by"] or answered_by
            answered_by_raw = record["answered_by_raw"] or answered_by_raw
            if record in sample.deliverable:
                filled = dict(record)
                filled["direction"] = record["direction"] or direction
                filled["answered_by"] = record["answered_by"] or answered_by
                filled["answered_by_raw"] = record["answered_by_raw"] or answered_by_raw
                out.append((sample.name, filled))
    return out


STATE_FILLED: dict[tuple[Carrier, str], dict[str, Any]] = {
    # Telnyx hangups carry no direction and no duration: from call.initiated and call.answered
    # (answered 15:20:09, hung up 15:20:56), and the AMD result of 03 is carried onto the terminal.
    (Carrier.TELNYX, "02_answered.json"): {"direction": "outbound"},
    (Carrier.TELNYX, "04_hangup.json"): {
        "direction": "outbound",
        "duration_seconds": 47,
        "answered_at": "2026-03-04T15:20:09.000Z",
        "answered_by": "human",
        "answered_by_raw": "human",
    },
    (Carrier.VONAGE, "05_completed.json"): {"answered_by": "human", "answered_by_raw": "human"},
}
"""Hard-coded expectations for the fields the call state fills in (not derived from the code)."""


# -- a running service ---------------------------------------------------------------------------------


@dataclass
class Rig:
    db: Path
    base: str
    http: aiohttp.ClientSession
    receiver: Receiver
    secret: str
    sources: dict[Carrier, str]
    key: str

    def url(self, carrier: Carrier, source: str | None = None, query_string: str = "") -> str:
        source_id = self.sources[carrier] if source is None else source
        return f"{self.base}/ingest/{carrier}/{source_id}" + (f"?{query_string}" if query_string else "")

    async def post_to(self, url: str, body: bytes | Any, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.http.post(URL(url, encoded=True), data=body, headers=headers) as response:
            text = await response.text()
            assert response.status < 500, (url, response.status, text)
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    async def post(self, carrier: Carrier, body: bytes, query_string: str = "") -> tuple[int, Any]:
        """Post ``body`` as ``carrier`` would, signed now for the exact URL."""
        url = self.url(carrier, query_string=query_string)
        return await self.post_to(url, body, signed_headers(carrier, url, body))

    async def delivered(self, ids: list[str]) -> list[dict[str, Any]]:
        """Wait for exactly these events; verify each; return them in the order of ``ids``."""
        await self.receiver.wait_for(lambda got: len(got) >= len(ids))
        await eventually(lambda: self.undelivered() == 0)
        hook = Webhook(self.secret)
        events = {}
        for request in self.receiver.requests:
            event = hook.verify(request.body, request.headers)
            assert event["id"] == request.headers["webhook-id"]
            assert event["customer_id"] == CUSTOMER
            events[event["id"]] = event
        assert len(self.receiver.requests) == len(ids), "each event is delivered exactly once"
        assert set(events) == set(ids)
        return [events[i] for i in ids]

    def undelivered(self) -> int:
        return int(query(self.db, "SELECT count(*) FROM deliveries WHERE status <> 'delivered'")[0][0])


async def _subscribe_all(http: aiohttp.ClientSession, base: str, key: str, url: str) -> str:
    async with http.post(
        f"{base}/api/v1/webhook-subscriptions",
        headers=auth(key),
        json={"url": url, "events": list(CALL_EVENT_TYPES)},
    ) as response:
        assert response.status == 201, await response.text()
        secret: str = (await response.json())["secret"]
        return secret


async def _provision(db: Path) -> tuple[str, dict[Carrier, str]]:
    key = await provision_key(db, CUSTOMER, {Scope.MANAGE_WEBHOOKS})
    sources = {c: await provision_source(db, CUSTOMER, c, credentials(c)) for c in ALL}
    return key, sources


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, **env: str) -> AsyncIterator[Rig]:
    """webhookd with one source per carrier, and a receiver subscribed to every call event."""
    db = tmp_path / "w.db"
    key, sources = await _provision(db)
    async with (
        running_receiver() as receiver,
        running_server(server_settings(db, **env)) as base,
        aiohttp.ClientSession() as http,
    ):
        secret = await _subscribe_all(http, base, key, receiver.url)
        yield Rig(db, base, http, receiver, secret, sources, key)


def stored(db: Path) -> tuple[int, int]:
    return count_rows(db, "events"), count_rows(db, "call_callbacks")


# -- 1. every fixture lifecycle ------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", ALL)
async def test_fixture_lifecycle_delivers_the_expected_events(tmp_path: Path, carrier: Carrier) -> None:
    ordered = samples(carrier)
    async with rig(tmp_path) as r:
        ids = []
        for sample in ordered:
            status, answer = await r.post(carrier, sample.body)
            assert status == 200, (sample.name, answer)
            assert answer["duplicates"] == 0
            assert len(answer["events"]) == len(sample.deliverable), sample.name
            ids += answer["events"]
        events = await r.delivered(ids)

    expected = with_call_state(ordered)
    assert [e["type"] for e in events] == [record["type"] for _, record in expected]
    for event, (name, record) in zip(events, expected, strict=True):
        want = {k: v for k, v in record.items() if k not in NOT_IN_EVENT_DATA | STATE_DEPENDENT}
        if record["type"] != "call.transcript.ready":
            want.update(STATE_FILLED.get((carrier, name), {}))
        data = event["data"]
        got = {k: data.get(k) for k in want}
        assert got == want, (name, {k: (got[k], want[k]) for k in want if got[k] != want[k]})
        assert data["carrier"] == carrier.value
    terminals = sum(e["type"] in TERMINAL for e in events)
    assert terminals == (0 if carrier is Carrier.ELEVENLABS else 1), "exactly one terminal event"
    assert count_rows(r.db, "events") == len(ids)
    assert count_rows(r.db, "call_callbacks") == sum(len(s.records) for s in ordered)


async def test_telnyx_hangup_gets_direction_duration_and_amd_from_the_call_state(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        ids = []
        for sample in samples(Carrier.TELNYX):
            status, answer = await r.post(Carrier.TELNYX, sample.body)
            assert status == 200
            ids += answer["events"]
        events = await r.delivered(ids)
    completed = events[-1]["data"]
    assert events[-1]["type"] == "call.completed"
    assert (completed["direction"], completed["duration_seconds"], completed["answered_by"]) == (
        "outbound",
        47,
        "human",
    )
    assert completed["reason"] == "normal"


# -- 2. edge cases from the carriers' documented status tables -----------------------------------------


def form(carrier: Carrier, name: str, **changes: str | None) -> bytes:
    """A fixture form body with fields replaced, added, or (``None``) removed."""
    pairs = parse_qsl(fixture_body(carrier, name).decode(), keep_blank_values=True)
    out = [(k, changes[k] if k in changes else v) for k, v in pairs]
    out += [(k, v) for k, v in changes.items() if k not in dict(pairs)]
    return urlencode([(k, v) for k, v in out if v is not None]).encode()


def twilio(name: str, **changes: str | None) -> bytes:
    return form(Carrier.TWILIO, name, **changes)


def twilio_end(status: str, seq: int, sip: str, **changes: str | None) -> bytes:
    return twilio(
        "04_completed.form",
        CallStatus=status,
        SequenceNumber=str(seq),
        CallDuration="0",
        Duration=None,
        SipResponseCode=sip,
        **changes,
    )


def jdump(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def telnyx(base: str, event_type: str, n: int, **payload: Any) -> bytes:
    """A Call Control event from a fixture, with its own event id (the dedupe key) and payload changes."""
    doc = json.loads(fixture_body(Carrier.TELNYX, base))
    doc["data"]["event_type"] = event_type
    doc["data"]["id"] = f"22222222-0000-4000-8000-{n:012d}"
    for name, value in payload.items():
        if value is None:
            doc["data"]["payload"].pop(name, None)
        else:
            doc["data"]["payload"][name] = value
    return jdump(doc)


def telnyx_hangup(cause: str, sip: str, n: int = 9) -> bytes:
    return telnyx("04_hangup.json", "call.hangup", n, hangup_cause=cause, sip_hangup_cause=sip)


TELNYX_OUT = telnyx("01_initiated.json", "call.initiated", 1)
TELNYX_IN = telnyx("01_initiated.json", "call.initiated", 1, direction="incoming", state="parked")
TELNYX_ANSWERED = telnyx("02_answered.json", "call.answered", 2)


def vonage(status: str, second: int, **changes: Any) -> bytes:
    doc = json.loads(fixture_body(Carrier.VONAGE, "02_ringing.json"))
    doc.update(status=status, timestamp=f"2026-03-04T15:20:{second:02d}.000Z", **changes)
    return jdump(doc)


VONAGE_STARTED = fixture_body(Carrier.VONAGE, "01_started.json")
VONAGE_RINGING = fixture_body(Carrier.VONAGE, "02_ringing.json")


def plivo_end(status: str, cause: str, cause_name: str) -> bytes:
    return form(
        Carrier.PLIVO,
        "03_completed.form",
        CallStatus=status,
        HangupCause=cause,
        HangupCauseName=cause_name,
        AnswerTime="",
        Duration="0",
        BillDuration="0",
        TotalCost="0.00000",
        HangupSource="Callee",
    )


PLIVO_RINGING = fixture_body(Carrier.PLIVO, "01_ringing.form")


def ai(carrier: Carrier, change: Callable[[dict[str, Any]], None]) -> bytes:
    (sample,) = samples(carrier)
    doc = json.loads(sample.body)
    change(doc)
    return jdump(doc)


def _retell_dial_no_answer(doc: dict[str, Any]) -> None:
    doc["call"].update(disconnection_reason="dial_no_answer", transcript=None, transcript_object=[])


def _vapi_customer_busy(doc: dict[str, Any]) -> None:
    doc["message"]["endedReason"] = "customer-busy"
    doc["message"]["artifact"].pop("transcript")


def _elevenlabs_busy(doc: dict[str, Any]) -> None:
    doc["type"] = "call_initiation_failure"
    doc["data"] = {
        "agent_id": doc["data"]["agent_id"],
        "conversation_id": "conv_5ca1ab1e0000000000000002",
        "failure_reason": "busy",
        "metadata": {"type": "twilio", "body": {"CallSid": "CA2", "Direction": "outbound-api"}},
    }


@dataclass(frozen=True)
class Case:
    id: str
    carrier: Carrier
    bodies: list[bytes]
    want: list[tuple[str, str | None]]
    """Delivered (type, reason), in posting order."""
    fields: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Further expected data fields of the n-th delivered event."""


T_INIT, T_RING = twilio("01_initiated.form"), twilio("02_ringing.form")
T_INBOUND = {"Direction": "inbound"}
INITIATING, RINGING, IN_PROGRESS = (
    ("call.initiating", None),
    ("call.ringing", None),
    ("call.in_progress", None),
)

EDGE_CASES = [
    Case(
        "twilio-busy",
        Carrier.TWILIO,
        [T_INIT, T_RING, twilio_end("busy", 2, "486")],
        [INITIATING, RINGING, ("call.no_answer", "busy")],
        {2: {"direction": "outbound", "duration_seconds": 0}},
    ),
    Case(
        "twilio-no-answer",
        Carrier.TWILIO,
        [T_INIT, T_RING, twilio_end("no-answer", 2, "487")],
        [INITIATING, RINGING, ("call.no_answer", "no_answer")],
    ),
    Case(
        "twilio-no-answer-declined-603",
        Carrier.TWILIO,
        [T_RING, twilio_end("no-answer", 2, "603")],
        [RINGING, ("call.no_answer", "declined")],
    ),
    Case(
        "twilio-failed",
        Carrier.TWILIO,
        [T_INIT, twilio_end("failed", 1, "500")],
        [INITIATING, ("call.failed", "failed")],
    ),
    Case(
        "twilio-failed-invalid-number-404",
        Carrier.TWILIO,
        [T_INIT, twilio_end("failed", 1, "404")],
        [INITIATING, ("call.failed", "invalid_number")],
    ),
    Case(
        "twilio-outbound-canceled",
        Carrier.TWILIO,
        [T_INIT, T_RING, twilio_end("canceled", 2, "487")],
        [INITIATING, RINGING, ("call.failed", "canceled")],
    ),
    Case(
        "twilio-inbound-canceled",
        Carrier.TWILIO,
        [
            twilio("02_ringing.form", SequenceNumber="0", **T_INBOUND),
            twilio_end("canceled", 1, "487", **T_INBOUND),
        ],
        [RINGING, ("call.no_answer", "caller_abandoned")],
        {1: {"direction": "inbound"}},
    ),
    Case(
        "twilio-amd-then-completed",
        Carrier.TWILIO,
        [T_INIT, twilio("03_in-progress.form", AnsweredBy="machine_end_beep"), twilio("04_completed.form")],
        [INITIATING, IN_PROGRESS, ("call.completed", "normal")],
        {2: {"answered_by": "machine", "answered_by_raw": "machine_end_beep", "duration_seconds": 47}},
    ),
    Case(
        "telnyx-user-busy",
        Carrier.TELNYX,
        [TELNYX_OUT, telnyx_hangup("user_busy", "486")],
        [INITIATING, ("call.no_answer", "busy")],
        {1: {"direction": "outbound"}},
    ),
    Case(
        "telnyx-timeout",
        Carrier.TELNYX,
        [TELNYX_OUT, telnyx_hangup("timeout", "487")],
        [INITIATING, ("call.no_answer", "timeout")],
    ),
    Case(
        "telnyx-call-rejected-603-is-declined",
        Carrier.TELNYX,
        [TELNYX_OUT, telnyx_hangup("call_rejected", "603")],
        [INITIATING, ("call.no_answer", "declined")],
    ),
    Case(
        "telnyx-not-found-is-invalid-number",
        Carrier.TELNYX,
        [TELNYX_OUT, telnyx_hangup("not_found", "404")],
        [INITIATING, ("call.failed", "invalid_number")],
    ),
    Case(
        "telnyx-outbound-originator-cancel",
        Carrier.TELNYX,
        [TELNYX_OUT, telnyx_hangup("originator_cancel", "487")],
        [INITIATING, ("call.failed", "canceled")],
        {1: {"direction": "outbound"}},
    ),
    Case(
        "telnyx-inbound-originator-cancel",
        Carrier.TELNYX,
        [TELNYX_IN, telnyx_hangup("originator_cancel", "unspecified")],
        [INITIATING, ("call.no_answer", "caller_abandoned")],
        {1: {"direction": "inbound"}},
    ),
    Case(
        "telnyx-answered-then-unspecified-is-completed",
        Carrier.TELNYX,
        [TELNYX_OUT, TELNYX_ANSWERED, telnyx_hangup("unspecified", "unspecified")],
        [INITIATING, IN_PROGRESS, ("call.completed", "unspecified")],
    ),
    Case(
        "telnyx-amd-machine-then-hangup",
        Carrier.TELNYX,
        [
            TELNYX_OUT,
            TELNYX_ANSWERED,
            telnyx("03_machine_detection_ended.json", "call.machine.detection.ended", 3, result="machine"),
            telnyx_hangup("normal_clearing", "200", 4),
        ],
        [INITIATING, IN_PROGRESS, ("call.completed", "normal")],
        {2: {"answered_by": "machine", "answered_by_raw": "machine", "duration_seconds": 47}},
    ),
    Case(
        "telnyx-premium-amd-fax",
        Carrier.TELNYX,
        [
            TELNYX_OUT,
            TELNYX_ANSWERED,
            telnyx(
                "03_machine_detection_ended.json",
                "call.machine.premium.detection.ended",
                3,
                result="fax_detected",
            ),
            telnyx_hangup("normal_clearing", "200", 4),
        ],
        [INITIATING, IN_PROGRESS, ("call.completed", "normal")],
        {2: {"answered_by": "fax"}},
    ),
    Case(
        "texml-busy",
        Carrier.TELNYX_TEXML,
        [
            fixture_body(Carrier.TELNYX_TEXML, "01_initiated.form"),
            form(
                Carrier.TELNYX_TEXML,
                "04_completed.form",
                CallStatus="busy",
                SequenceNumber="1",
                CallDuration="0",
                AnsweredTime=None,
                HangupCause="user_busy",
            ),
        ],
        [INITIATING, ("call.no_answer", "busy")],
    ),
    Case(
        "vonage-busy",
        Carrier.VONAGE,
        [VONAGE_STARTED, VONAGE_RINGING, vonage("busy", 20)],
        [INITIATING, RINGING, ("call.no_answer", "busy")],
    ),
    Case(
        "vonage-timeout",
        Carrier.VONAGE,
        [VONAGE_STARTED, VONAGE_RINGING, vonage("timeout", 40)],
        [INITIATING, RINGING, ("call.no_answer", "timeout")],
    ),
    Case(
        "vonage-unanswered-declined",
        Carrier.VONAGE,
        [VONAGE_STARTED, VONAGE_RINGING, vonage("unanswered", 20, detail="declined")],
        [INITIATING, RINGING, ("call.no_answer", "declined")],
    ),
    Case(
        "vonage-unanswered-invalid-number-is-failed",
        Carrier.VONAGE,
        [VONAGE_STARTED, vonage("unanswered", 3, detail="invalid_number")],
        [INITIATING, ("call.failed", "invalid_number")],
    ),
    Case(
        "vonage-busy-then-generic-completed-is-ignored",
        Carrier.VONAGE,
        [
            VONAGE_STARTED,
            vonage("busy", 20),
            vonage("completed", 21, duration="0", disconnected_by="platform"),
        ],
        [INITIATING, ("call.no_answer", "busy")],
    ),
    Case(
        "vonage-failed-cannot-route",
        Carrier.VONAGE,
        [VONAGE_STARTED, vonage("failed", 3, detail="cannot_route")],
        [INITIATING, ("call.failed", "cannot_route")],
    ),
    Case(
        "vonage-rejected",
        Carrier.VONAGE,
        [VONAGE_STARTED, vonage("rejected", 3)],
        [INITIATING, ("call.failed", "rejected")],
    ),
    Case(
        "vonage-outbound-cancelled",
        Carrier.VONAGE,
        [VONAGE_STARTED, VONAGE_RINGING, vonage("cancelled", 10)],
        [INITIATING, RINGING, ("call.failed", "canceled")],
    ),
    Case(
        "vonage-amd-machine-then-completed",
        Carrier.VONAGE,
        [
            VONAGE_STARTED,
            fixture_body(Carrier.VONAGE, "03_answered.json"),
            fixture_body(Carrier.VONAGE, "04_human.json").replace(b'"human"', b'"machine"'),
            fixture_body(Carrier.VONAGE, "05_completed.json"),
        ],
        [INITIATING, IN_PROGRESS, ("call.completed", "normal")],
        {2: {"answered_by": "machine", "duration_seconds": 47}},
    ),
    Case(
        "plivo-busy",
        Carrier.PLIVO,
        [PLIVO_RINGING, plivo_end("busy", "USER_BUSY", "Busy Line")],
        [RINGING, ("call.no_answer", "busy")],
    ),
    Case(
        "plivo-no-answer",
        Carrier.PLIVO,
        [PLIVO_RINGING, plivo_end("no-answer", "NO_ANSWER", "No Answer")],
        [RINGING, ("call.no_answer", "no_answer")],
    ),
    Case(
        "plivo-inbound-cancel",
        Carrier.PLIVO,
        [
            form(Carrier.PLIVO, "01_ringing.form", Direction="inbound"),
            form(Carrier.PLIVO, "03_completed.form", Direction="inbound", CallStatus="cancel", AnswerTime=""),
        ],
        [RINGING, ("call.no_answer", "caller_abandoned")],
    ),
    Case(
        "plivo-failed-unallocated-number",
        Carrier.PLIVO,
        [plivo_end("failed", "UNALLOCATED_NUMBER", "Unallocated Number")],
        [("call.failed", "invalid_number")],
    ),
    Case(
        "retell-completed-and-transcript",
        Carrier.RETELL,
        [fixture_body(Carrier.RETELL, "01_call_ended.json")],
        [("call.completed", "user_hangup"), ("call.transcript.ready", None)],
        {
            0: {"duration_seconds": 47, "linked_carrier_call_id": "CA5ca1ab1e000000000000000000000001"},
            1: {"linked_carrier_call_id": "CA5ca1ab1e000000000000000000000001"},
        },
    ),
    Case(
        "retell-dial-no-answer-without-transcript",
        Carrier.RETELL,
        [ai(Carrier.RETELL, _retell_dial_no_answer)],
        [("call.no_answer", "dial_no_answer")],
    ),
    Case(
        "vapi-completed-and-transcript",
        Carrier.VAPI,
        [fixture_body(Carrier.VAPI, "01_end-of-call-report.json")],
        [("call.completed", "customer-ended-call"), ("call.transcript.ready", None)],
        {0: {"duration_seconds": 47}},
    ),
    Case(
        "vapi-customer-busy-without-transcript",
        Carrier.VAPI,
        [ai(Carrier.VAPI, _vapi_customer_busy)],
        [("call.no_answer", "customer-busy")],
    ),
    Case(
        "elevenlabs-initiation-failure-busy",
        Carrier.ELEVENLABS,
        [ai(Carrier.ELEVENLABS, _elevenlabs_busy)],
        [("call.no_answer", "busy")],
    ),
]


@pytest.mark.parametrize("case", EDGE_CASES, ids=[c.id for c in EDGE_CASES])
async def test_reference_table_edge_case(tmp_path: Path, case: Case) -> None:
    async with rig(tmp_path) as r:
        ids = []
        for body in case.bodies:
            status, answer = await r.post(case.carrier, body)
            assert status == 200, answer
            ids += answer["events"]
        events = await r.delivered(ids)
    assert [(e["type"], e["data"]["reason"]) for e in events] == case.want
    assert sum(e["type"] in TERMINAL for e in events) == 1, "exactly one terminal event"
    for index, wanted in case.fields.items():
        data = events[index]["data"]
        assert {k: data[k] for k in wanted} == wanted, index
    transcripts = [e["data"]["transcript"] for e in events if e["type"] == "call.transcript.ready"]
    assert all(t and (t.get("text") or t.get("turns")) for t in transcripts)


@pytest.mark.parametrize("carrier", ALL)
async def test_duplicate_callback_is_acknowledged_and_delivered_once(
    tmp_path: Path, carrier: Carrier
) -> None:
    last = samples(carrier)[-1]
    async with rig(tmp_path) as r:
        status, first = await r.post(carrier, last.body)
        assert status == 200 and first["duplicates"] == 0
        assert len(first["events"]) == len(last.deliverable)
        # A carrier retry: the same bytes, signed again (new timestamp or nonce).
        status, again = await r.post(carrier, last.body)
        assert status == 200, again
        assert again["events"] == []
        assert again["duplicates"] == len(last.records)
        events = await r.delivered(first["events"])
    assert [e["type"] for e in events] == [rec["type"] for rec in last.deliverable]
    assert stored(r.db) == (len(last.deliverable), len(last.records))


def _out_of_order(carrier: Carrier) -> list[Sample]:
    """The answered callback first, then the terminal, then the rest in their order."""
    ordered = samples(carrier)
    answered = next(
        i for i, s in enumerate(ordered) if any(r["type"] == "call.in_progress" for r in s.records)
    )
    terminal = len(ordered) - 1
    rest = [s for i, s in enumerate(ordered) if i not in {answered, terminal}]
    return [ordered[answered], ordered[terminal], *rest]


@pytest.mark.parametrize("carrier", LIFECYCLE_CARRIERS)
async def test_out_of_order_callbacks_deliver_only_forward_moves(tmp_path: Path, carrier: Carrier) -> None:
    shuffled = _out_of_order(carrier)
    async with rig(tmp_path) as r:
        ids, counts = [], []
        for sample in shuffled:
            status, answer = await r.post(carrier, sample.body)
            assert status == 200, (sample.name, answer)  # late ones are acknowledged too
            counts.append(len(answer["events"]))
            ids += answer["events"]
        events = await r.delivered(ids)
    assert counts == [1, 1] + [0] * (len(shuffled) - 2)
    assert [e["type"] for e in events] == ["call.in_progress", "call.completed"]
    assert events[1]["data"]["duration_seconds"] == 47
    assert stored(r.db) == (2, sum(len(s.records) for s in shuffled))  # every callback is recorded


@pytest.mark.parametrize("carrier", LIFECYCLE_CARRIERS)
async def test_terminal_first_then_earlier_stages_delivers_one_event(
    tmp_path: Path, carrier: Carrier
) -> None:
    ordered = samples(carrier)
    async with rig(tmp_path) as r:
        ids = []
        for sample in [ordered[-1], *ordered[:-1]]:
            status, answer = await r.post(carrier, sample.body)
            assert status == 200, (sample.name, answer)
            ids += answer["events"]
        events = await r.delivered(ids)
    assert [e["type"] for e in events] == ["call.completed"]
    assert count_rows(r.db, "call_callbacks") == sum(len(s.records) for s in ordered)


@pytest.mark.parametrize("carrier", LIFECYCLE_CARRIERS)
async def test_concurrent_callbacks_and_retries_move_the_call_once(tmp_path: Path, carrier: Carrier) -> None:
    """Every callback of the lifecycle, each sent twice, all at once: each stage is emitted at most once,
    there is exactly one terminal, and every repeat is acknowledged as a duplicate."""
    ordered = samples(carrier)
    async with rig(tmp_path) as r:
        answers = await asyncio.gather(*(r.post(carrier, s.body) for s in ordered for _ in range(2)))
        assert all(status == 200 for status, _ in answers), answers
        ids = [i for _, answer in answers for i in answer["events"]]
        events = await r.delivered(ids)
    types = [e["type"] for e in events]
    assert len(types) == len(set(types)), types
    assert sum(t in TERMINAL for t in types) == 1, types
    committed = [RANKS[t] for (t,) in query(r.db, "SELECT type FROM events ORDER BY seq")]
    assert committed == sorted(set(committed)), "only forward moves, in commit order"
    assert sum(answer["duplicates"] for _, answer in answers) == sum(len(s.records) for s in ordered)
    assert stored(r.db) == (len(ids), sum(len(s.records) for s in ordered))


# -- 3. bad input ---------------------------------------------------------------------------------------


def _padded(carrier: Carrier, body: bytes, size: int) -> bytes:
    if carrier in {Carrier.TWILIO, Carrier.PLIVO, Carrier.TELNYX_TEXML}:
        return body + b"&Pad=" + b"x" * size
    return body + b" " * size


UNPARSEABLE: dict[Carrier, list[bytes]] = {
    Carrier.TWILIO: [b"Foo=bar", b"CallStatus=completed"],
    Carrier.PLIVO: [b"Foo=bar", b"CallStatus=completed"],
    Carrier.TELNYX_TEXML: [b"Foo=bar", b'{"CallSid": "v3:x"}', b"[1, 2]"],
    Carrier.TELNYX: [b"{not json", b"[]", b'{"data": 5}', b'{"data": {"event_type": "call.hangup"}}'],
    Carrier.VONAGE: [b"{not json", b"[]", b'{"status": "completed"}'],
    Carrier.ELEVENLABS: [b"{not json", b"[]", b'{"type": "post_call_transcription", "data": 1}'],
    Carrier.RETELL: [b"{not json", b"[]", b'{"event": "call_ended", "call": {}}'],
    Carrier.VAPI: [b"{not json", b"[]", b'{"message": {"type": "end-of-call-report", "call": {}}}'],
}
"""Validly signed bodies that do not parse as a callback of the carrier."""


def _tampered(body: bytes) -> bytes:
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :]


async def _stream(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 1024):
        yield body[start : start + 1024]


@pytest.mark.parametrize("carrier", ALL)
async def test_bad_input_is_refused_and_stores_nothing(tmp_path: Path, carrier: Carrier) -> None:
    sample = samples(carrier)[-1]
    body = sample.body
    problems: list[str] = []

    def expect(case: str, status: int, want: int, answer: Any) -> None:
        if status != want:
            problems.append(f"{case}: got {status} want {want}: {answer}")

    async with rig(tmp_path, WEBHOOKD_MAX_BODY_BYTES=str(MAX_BODY)) as r:
        url = r.url(carrier)
        good = signed_headers(carrier, url, body)
        unsigned = {k: v for k, v in good.items() if k not in SIGNATURE_HEADERS[carrier]}
        attempts: list[tuple[str, bytes, dict[str, str]]] = [
            ("no signature", body, unsigned),
            ("wrong key", body, signed_headers(carrier, url, body, key=WRONG_KEYS[carrier])),
            ("body changed after signing", _tampered(body), good),
            ("recorded (stale or other-URL) headers", body, recorded_headers(carrier, sample.name)),
            ("garbage signature", body, {**unsigned, **{h: "garbage" for h in SIGNATURE_HEADERS[carrier]}}),
        ]
        if carrier in URL_SIGNED:
            attempts.append(("signed for another URL", body, signed_headers(carrier, url + "x", body)))
        if carrier in TIME_WINDOWED:
            for label, offset in (("an hour ago", -3600), ("an hour ahead", 3600)):
                later = signed_headers(carrier, url, body, now=time.time() + offset)
                attempts.append((f"signed {label}", body, later))
        for case, sent, headers in attempts:
            status, answer = await r.post_to(url, sent, headers)
            expect(case, status, 401, answer)
        if stored(r.db) != (0, 0):
            problems.append(f"a refused signature stored something: {stored(r.db)}")

        other = ALL[(ALL.index(carrier) + 1) % len(ALL)]
        for case, target in [
            ("unknown source", r.url(carrier, source="src_does_not_exist")),
            ("source of another carrier", r.url(carrier, source=r.sources[other])),
            ("this source under another carrier", r.url(other, source=r.sources[carrier])),
            ("unknown carrier", f"{r.base}/ingest/nokia/{r.sources[carrier]}"),
        ]:
            status, answer = await r.post_to(target, body, signed_headers(carrier, target, body))
            expect(case, status, 404, answer)

        big = _padded(carrier, body, MAX_BODY)
        status, answer = await r.post_to(url, big, signed_headers(carrier, url, big))
        expect("body over the limit", status, 413, answer)
        status, answer = await r.post_to(url, _stream(big), signed_headers(carrier, url, big))
        expect("body over the limit, chunked", status, 413, answer)

        for garbage in UNPARSEABLE[carrier]:
            status, answer = await r.post(carrier, garbage)
            expect(f"signed unparseable {garbage!r}", status, 400, answer)
        if stored(r.db) != (0, 0):
            problems.append(f"bad input stored something: {stored(r.db)}")

        status, answer = await r.post(carrier, body)
        expect("the good request still works", status, 200, answer)
    assert not problems, "\n".join(problems)


# -- 4. route-level fuzz -------------------------------------------------------------------------------


@dataclass
class FuzzTarget:
    base: str
    sources: dict[Carrier, str]
    http: aiohttp.ClientSession


@pytest.fixture
async def fuzz_target(tmp_path: Path) -> AsyncIterator[FuzzTarget]:
    """One server for every example of the fuzz test."""
    db = tmp_path / "fuzz.db"
    _, sources = await _provision(db)
    async with (
        running_server(server_settings(db, WEBHOOKD_MAX_BODY_BYTES=str(MAX_BODY))) as base,
        aiohttp.ClientSession() as http,
    ):
        yield FuzzTarget(base, sources, http)


HEADER_NAMES = sorted({h for names in SIGNATURE_HEADERS.values() for h in names} | {"Content-Type"})
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)
FIXTURE_BODIES = [s.body for c in ALL for s in samples(c)]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Random bytes, or a fixture with a random slice replaced by random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=1024))
    body = draw(st.sampled_from(FIXTURE_BODIES))
    start = draw(st.integers(0, len(body)))
    end = draw(st.integers(start, len(body)))
    return body[:start] + draw(st.binary(max_size=64)) + body[end:]


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    carrier=st.sampled_from(ALL),
    body=bodies(),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES, max_size=6),
    sign=st.booleans(),
)
async def test_random_requests_never_get_a_5xx(
    fuzz_target: FuzzTarget, carrier: Carrier, body: bytes, headers: dict[str, str], sign: bool
) -> None:
    url = f"{fuzz_target.base}/ingest/{carrier}/{fuzz_target.sources[carrier]}"
    if sign:
        good = signed_headers(carrier, url, body)
        taken = {name.lower() for name in good}
        headers = {**{k: v for k, v in headers.items() if k.lower() not in taken}, **good}
    async with fuzz_target.http.post(URL(url, encoded=True), data=body, headers=headers) as response:
        text = await response.text()
        assert 200 <= response.status < 500, (response.status, text)
        if sign and carrier in BYTE_EXACT:
            assert response.status != 401, f"a correctly signed body was refused: {text}"
        if response.status != 200:
            assert "error" in json.loads(text)


# -- 5. source metadata --------------------------------------------------------------------------------

METADATA = {
    # The plivo SDK cannot sign a query with non-ASCII values, so only Twilio gets one.
    Carrier.TWILIO: {"platform_call_id": "pc_0001", "tenant": "t_demo", "note": "a b&c/é"},
    Carrier.PLIVO: {"platform_call_id": "pc_0001", "tenant": "t_demo", "note": "a b&c/d"},
}


@pytest.mark.parametrize("carrier", URL_SIGNED)
async def test_ingest_url_query_parameters_become_event_metadata(tmp_path: Path, carrier: Carrier) -> None:
    async with rig(tmp_path) as r:
        ids = []
        for sample in samples(carrier):
            status, answer = await r.post(carrier, sample.body, query_string=urlencode(METADATA[carrier]))
            assert status == 200, answer
            ids += answer["events"]
        events = await r.delivered(ids)
    assert len(events) == sum(len(s.deliverable) for s in samples(carrier))
    assert all(e["data"]["metadata"] == METADATA[carrier] for e in events)


async def test_plivo_signed_callback_url_parameter_delivers_to_that_url(tmp_path: Path) -> None:
    """A per-call callback_url on the (signed) status-callback URL."""
    async with rig(tmp_path) as r:
        async with r.http.get(f"{r.base}/api/v1/callback-secret", headers=auth(r.key)) as response:
            assert response.status == 200
            callback_secret = (await response.json())["secret"]
        callback_url = r.receiver.url + "/call-42"
        status, answer = await r.post(
            Carrier.PLIVO,
            fixture_body(Carrier.PLIVO, "03_completed.form"),
            query_string=urlencode({"callback_url": callback_url}),
        )
        assert status == 200, answer
        await r.receiver.wait_for(lambda got: len(got) == 2)
        await eventually(lambda: r.undelivered() == 0)
    (to_callback,) = [q for q in r.receiver.requests if q.path == "/hook/call-42"]
    event = Webhook(callback_secret).verify(to_callback.body, to_callback.headers)
    assert event["type"] == "call.completed"
    assert event["data"]["metadata"]["callback_url"] == callback_url
