"""Telnyx Call Control and TeXML callbacks: Ed25519 signatures and normalization."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.paths import CARRIER_FIXTURES
from webhookd.exceptions import IngestError, PayloadInvalid, SignatureInvalid
from webhookd.ingest.base import CarrierAdapter, RawCallback
from webhookd.ingest.normalize import NormalizedCall
from webhookd.ingest.telnyx import TelnyxAdapter
from webhookd.ingest.telnyx_texml import TelnyxTexmlAdapter
from webhookd.inputs import MAX_JSON_DEPTH

CC_DIR = CARRIER_FIXTURES / "telnyx"
TEXML_DIR = CARRIER_FIXTURES / "telnyx_texml"
CC_SIGNATURES = json.loads((CC_DIR / "_signatures.json").read_text())
TEXML_SIGNATURES = json.loads((TEXML_DIR / "_signatures.json").read_text())
PRIVATE_KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(CC_SIGNATURES["private_seed_hex"]))
PUBLIC_KEY_B64: str = CC_SIGNATURES["public_key_base64"]
CREDENTIALS = {"public_key": PUBLIC_KEY_B64}
# Keys of the expected records that the stateless adapter does not produce, or that live outside ``data``.
NOT_IN_DATA = {"event_id", "ignored", "state_update_only", "idempotency_key", "type"}

NOW = datetime(2026, 3, 4, 15, 21, tzinfo=UTC)
NOW_TS = int(NOW.timestamp())
URL = "https://webhookd.example.org/ingest/telnyx/src_01HZX"
CALL_CONTROL_ID = "v3:TESTCALL0001"
TEXML_CALL_SID = "v3:TEXMLTEST0001"
ACCOUNT_SID = "5ca1ab1e-0000-4000-8000-00000000acc1"


def _expected(folder: Path) -> dict[str, list[dict[str, Any]]]:
    lines = (folder / "_expected_normalized.jsonl").read_text().splitlines()
    return {record["file"]: record["normalized"] for record in map(json.loads, lines)}


CC_EXPECTED = _expected(CC_DIR)
TEXML_EXPECTED = _expected(TEXML_DIR)
CC_FILES = sorted(path.name for path in CC_DIR.glob("*.json") if not path.name.startswith("_"))
TEXML_FILES = sorted(path.name for path in TEXML_DIR.glob("*.form"))
# (adapter, folder, signatures, expected, file name) for every fixture of both adapters.
FIXTURE_CASES = [
    *((TelnyxAdapter(), CC_DIR, CC_SIGNATURES, CC_EXPECTED, name) for name in CC_FILES),
    *((TelnyxTexmlAdapter(), TEXML_DIR, TEXML_SIGNATURES, TEXML_EXPECTED, name) for name in TEXML_FILES),
]
FIXTURE_IDS = [f"{type(case[0]).__name__}/{case[4]}" for case in FIXTURE_CASES]
ADAPTERS: list[CarrierAdapter] = [TelnyxAdapter(), TelnyxTexmlAdapter()]


# -- helpers -------------------------------------------------------------------------------------


def sign(body: bytes, timestamp: int = NOW_TS) -> dict[str, str]:
    """Headers as Telnyx sends them, signed with the fixtures' test key."""
    signature = PRIVATE_KEY.sign(str(timestamp).encode() + b"|" + body)
    return {
        "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
        "telnyx-timestamp": str(timestamp),
    }


def signed(body: bytes, timestamp: int = NOW_TS) -> RawCallback:
    return RawCallback(url=URL, headers=sign(body, timestamp), body=body, query=[])


def fixture_callback(
    folder: Path, signatures: dict[str, Any], name: str, body: bytes | None = None
) -> RawCallback:
    headers = {key.lower(): value for key, value in signatures["files"][name]["headers"].items()}
    raw = (folder / name).read_bytes() if body is None else body
    return RawCallback(url=signatures["files"][name]["url"], headers=headers, body=raw, query=[])


def fixture_time(signatures: dict[str, Any], name: str) -> datetime:
    return datetime.fromtimestamp(int(signatures["files"][name]["headers"]["telnyx-timestamp"]), UTC)


def flip_one_byte(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]


def verify_and_parse(adapter: CarrierAdapter, raw: RawCallback, now: datetime = NOW) -> list[NormalizedCall]:
    adapter.verify(raw, CREDENTIALS, now)
    return adapter.parse(raw)


def envelope(event_type: str, attempt: int = 1, event_id: str = "ev-0001", **payload: Any) -> bytes:
    base = {
        "call_control_id": CALL_CONTROL_ID,
        "call_leg_id": "leg-1",
        "call_session_id": "session-1",
        "from": "+15555550123",
        "to": "+15555550142",
    }
    data = {
        "event_type": event_type,
        "id": event_id,
        "occurred_at": "2026-03-04T15:20:56.000000Z",
        "payload": {**base, **payload},
        "record_type": "event",
    }
    return orjson.dumps({"data": data, "meta": {"attempt": attempt, "delivered_to": URL}})


def telnyx_one(event_type: str, **payload: Any) -> NormalizedCall:
    (call,) = verify_and_parse(TelnyxAdapter(), signed(envelope(event_type, **payload)))
    return call


def texml_fields(status: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "CallSid": TEXML_CALL_SID,
        "CallStatus": status,
        "CallbackSource": "call-progress-events",
        "From": "+15555550123",
        "To": "+15555550142",
        "SequenceNumber": "3",
        "Timestamp": "2026-03-04T15:20:56Z",
        **extra,
    }


def texml_one(fields: dict[str, str]) -> NormalizedCall:
    (call,) = verify_and_parse(TelnyxTexmlAdapter(), signed(urlencode(fields).encode()))
    return call


# -- fixtures: signatures --------------------------------------------------------------------------


def test_there_are_fixtures_for_both_adapters() -> None:
    assert len(CC_FILES) >= 4 and len(TEXML_FILES) >= 4
    assert set(CC_FILES) <= set(CC_SIGNATURES["files"]) & set(CC_EXPECTED)
    assert set(TEXML_FILES) <= set(TEXML_SIGNATURES["files"]) & set(TEXML_EXPECTED)


def test_the_seed_gives_the_recorded_public_key() -> None:
    raw = PRIVATE_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    assert base64.b64encode(raw).decode() == PUBLIC_KEY_B64


def test_adapters_need_the_public_key() -> None:
    assert TelnyxAdapter.credential_names == TelnyxTexmlAdapter.credential_names == ("public_key",)


@pytest.mark.parametrize(
    ("adapter", "folder", "signatures", "expected", "name"), FIXTURE_CASES, ids=FIXTURE_IDS
)
def test_fixture_verifies_with_its_recorded_headers(
    adapter: CarrierAdapter, folder: Path, signatures: dict[str, Any], expected: Any, name: str
) -> None:
    adapter.verify(fixture_callback(folder, signatures, name), CREDENTIALS, NOW)


@pytest.mark.parametrize(
    ("adapter", "folder", "signatures", "expected", "name"), FIXTURE_CASES, ids=FIXTURE_IDS
)
@pytest.mark.parametrize("where", [0, 17, -1])
def test_fixture_with_one_byte_changed_fails(
    adapter: CarrierAdapter, folder: Path, signatures: dict[str, Any], expected: Any, name: str, where: int
) -> None:
    body = (folder / name).read_bytes()
    raw = fixture_callback(folder, signatures, name, flip_one_byte(body, where % len(body)))

    with pytest.raises(SignatureInvalid):
        adapter.verify(raw, CREDENTIALS, NOW)


@pytest.mark.parametrize(
    ("adapter", "folder", "signatures", "expected", "name"), FIXTURE_CASES, ids=FIXTURE_IDS
)
@pytest.mark.parametrize(
    ("offset_s", "valid"),
    [(0, True), (300, True), (-300, True), (301, False), (-301, False), (86_400, False)],
)
def test_fixture_timestamp_window_is_300_seconds_either_way(
    adapter: CarrierAdapter,
    folder: Path,
    signatures: dict[str, Any],
    expected: Any,
    name: str,
    offset_s: int,
    valid: bool,
) -> None:
    # offset > 0: the request is stale by that much; offset < 0: it comes from the future.
    now = fixture_time(signatures, name) + timedelta(seconds=offset_s)
    raw = fixture_callback(folder, signatures, name)

    if valid:
        adapter.verify(raw, CREDENTIALS, now)
    else:
        with pytest.raises(SignatureInvalid):
            adapter.verify(raw, CREDENTIALS, now)


@pytest.mark.parametrize(
    ("adapter", "folder", "signatures", "expected", "name"), FIXTURE_CASES, ids=FIXTURE_IDS
)
def test_fixture_signed_afresh_with_the_seed_verifies(
    adapter: CarrierAdapter, folder: Path, signatures: dict[str, Any], expected: Any, name: str
) -> None:
    adapter.verify(signed((folder / name).read_bytes()), CREDENTIALS, NOW)


@pytest.mark.parametrize(
    ("adapter", "folder", "signatures", "expected", "name"), FIXTURE_CASES, ids=FIXTURE_IDS
)
def test_fixture_with_another_timestamp_header_fails(
    adapter: CarrierAdapter, folder: Path, signatures: dict[str, Any], expected: Any, name: str
) -> None:
    raw = fixture_callback(folder, signatures, name)
    headers = {**raw.headers, "telnyx-timestamp": str(int(raw.headers["telnyx-timestamp"]) + 1)}

    with pytest.raises(SignatureInvalid):
        adapter.verify(RawCallback(raw.url, headers, raw.body, []), CREDENTIALS, NOW)


# -- signatures: refusals --------------------------------------------------------------------------

BODY = envelope("call.initiated", direction="outgoing")
GOOD = sign(BODY)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: type(adapter).__name__)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"telnyx-timestamp": GOOD["telnyx-timestamp"]},
        {"telnyx-signature-ed25519": GOOD["telnyx-signature-ed25519"]},
        {**GOOD, "telnyx-signature-ed25519": ""},
        {**GOOD, "telnyx-signature-ed25519": "not base64!"},
        {**GOOD, "telnyx-signature-ed25519": base64.b64encode(b"\0" * 63).decode()},
        {**GOOD, "telnyx-signature-ed25519": base64.b64encode(b"\0" * 64).decode()},
        {**GOOD, "telnyx-signature-ed25519": "é" * 88},
        {**GOOD, "telnyx-timestamp": ""},
        {**GOOD, "telnyx-timestamp": "abc"},
        {**GOOD, "telnyx-timestamp": f"{NOW_TS}.0"},
        {**GOOD, "telnyx-timestamp": f"-{NOW_TS}"},
        {**GOOD, "telnyx-timestamp": "9" * 40},
        {**GOOD, "telnyx-timestamp": "١٧٧٢٦٣٧٦٦٠"},
    ],
    ids=lambda headers: "|".join(f"{k[7:10]}={v[:12]}" for k, v in headers.items()) or "none",
)
def test_missing_or_malformed_headers_are_signature_invalid(
    adapter: CarrierAdapter, headers: dict[str, str]
) -> None:
    with pytest.raises(SignatureInvalid):
        adapter.verify(RawCallback(URL, headers, BODY, []), CREDENTIALS, NOW)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: type(adapter).__name__)
def test_header_names_are_case_insensitive(adapter: CarrierAdapter) -> None:
    headers = {
        "Telnyx-Signature-Ed25519": GOOD["telnyx-signature-ed25519"],
        "Telnyx-Timestamp": GOOD["telnyx-timestamp"],
    }

    adapter.verify(RawCallback(URL, headers, BODY, []), CREDENTIALS, NOW)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: type(adapter).__name__)
@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"public_key": ""},
        {"public_key": "not base64!"},
        {"public_key": base64.b64encode(b"\1" * 31).decode()},
        {
            "public_key": base64.b64encode(
                Ed25519PrivateKey.generate().public_key().public_bytes_raw()
            ).decode()
        },
    ],
    ids=["none", "empty", "not-base64", "31-bytes", "another-key"],
)
def test_wrong_or_malformed_public_key_is_signature_invalid(
    adapter: CarrierAdapter, credentials: dict[str, str]
) -> None:
    with pytest.raises(SignatureInvalid):
        adapter.verify(RawCallback(URL, GOOD, BODY, []), credentials, NOW)


# -- fixtures: normalization -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "folder", "signatures", "expected", "name"), FIXTURE_CASES, ids=FIXTURE_IDS
)
def test_fixture_normalizes_to_the_expected_record(
    adapter: CarrierAdapter, folder: Path, signatures: dict[str, Any], expected: Any, name: str
) -> None:
    wanted = [record for record in expected[name] if not record["ignored"]]

    calls = verify_and_parse(adapter, fixture_callback(folder, signatures, name))

    assert len(calls) == len(wanted)
    for call, record in zip(calls, wanted, strict=True):
        data = call.event_data()
        mismatched = {
            key: (data.get(key, "<missing>"), want)
            for key, want in record.items()
            if key not in NOT_IN_DATA and data.get(key, "<missing>") != want
        }
        assert mismatched == {}
        assert (call.type, call.idempotency_key) == (record["type"], record["idempotency_key"])
        assert (call.type is None) == record["state_update_only"]


# -- Telnyx Call Control: normalization -------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "event_type", "reason"),
    [
        ({"hangup_cause": "normal_clearing", "sip_hangup_cause": "200"}, "call.completed", "normal"),
        ({"hangup_cause": "time_limit"}, "call.completed", "time_limit"),
        ({"hangup_cause": "user_busy", "sip_hangup_cause": "486"}, "call.no_answer", "busy"),
        ({"hangup_cause": "timeout"}, "call.no_answer", "timeout"),
        ({"hangup_cause": "no_answer"}, "call.no_answer", "no_answer"),
        ({"hangup_cause": "call_rejected", "sip_hangup_cause": "603"}, "call.no_answer", "declined"),
        ({"hangup_cause": "call_rejected", "sip_hangup_cause": "600"}, "call.no_answer", "declined"),
        ({"hangup_cause": "call_rejected", "sip_hangup_cause": "486"}, "call.no_answer", "busy"),
        ({"hangup_cause": "call_rejected", "sip_hangup_cause": "403"}, "call.failed", "rejected"),
        ({"hangup_cause": "call_rejected", "sip_hangup_cause": "unspecified"}, "call.failed", "rejected"),
        ({"hangup_cause": "call_rejected"}, "call.failed", "rejected"),
        ({"hangup_cause": "not_found", "sip_hangup_cause": "404"}, "call.failed", "invalid_number"),
        ({"hangup_cause": "originator_cancel", "direction": "outgoing"}, "call.failed", "canceled"),
        (
            {"hangup_cause": "originator_cancel", "direction": "incoming"},
            "call.no_answer",
            "caller_abandoned",
        ),
        ({"hangup_cause": "originator_cancel"}, "call.no_answer", "caller_abandoned"),
        ({"hangup_cause": "unspecified"}, "call.failed", "unknown"),
        ({"hangup_cause": "something_new"}, "call.failed", "unknown"),
        ({}, "call.failed", "unknown"),
    ],
    ids=lambda value: "/".join(map(str, value.values())) if isinstance(value, dict) else None,
)
def test_hangup_cause_maps_to_type_and_reason(payload: dict[str, str], event_type: str, reason: str) -> None:
    call = telnyx_one("call.hangup", state="hangup", hangup_source="caller", **payload)

    assert (call.type, call.reason) == (event_type, reason)
    assert call.status_raw == "call.hangup"
    assert call.carrier_cause == (payload.get("hangup_cause") or None)


def test_hangup_carries_cause_source_sip_and_end_but_no_direction_or_duration() -> None:
    call = telnyx_one(
        "call.hangup",
        hangup_cause="user_busy",
        hangup_source="callee",
        sip_hangup_cause="486",
        end_time="2026-03-04T15:20:55.500000Z",
    )

    assert (call.carrier_cause, call.hangup_source, call.sip_code) == ("user_busy", "callee", 486)
    assert call.ended_at == datetime(2026, 3, 4, 15, 20, 55, 500_000, tzinfo=UTC)
    assert (call.direction, call.duration_seconds, call.answered_at) == (None, None, None)


def test_hangup_without_end_time_ends_at_occurred_at_and_unspecified_sip_is_none() -> None:
    call = telnyx_one("call.hangup", hangup_cause="normal_clearing", sip_hangup_cause="unspecified")

    assert call.ended_at == call.occurred_at == datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)
    assert call.sip_code is None


@pytest.mark.parametrize(
    ("raw", "expected"), [("incoming", "inbound"), ("outgoing", "outbound"), ("x", None)]
)
def test_initiated_maps_direction(raw: str, expected: str | None) -> None:
    call = telnyx_one("call.initiated", direction=raw, state="parked", start_time="2026-03-04T15:20:00Z")

    assert (call.type, call.reason, call.direction) == ("call.initiating", None, expected)
    assert call.started_at == datetime(2026, 3, 4, 15, 20, tzinfo=UTC)


def test_answered_is_in_progress_answered_at_occurred_at() -> None:
    call = telnyx_one("call.answered", state="answered")

    assert call.type == "call.in_progress"
    assert call.answered_at == datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)


def test_bridged_only_updates_state() -> None:
    call = telnyx_one("call.bridged", state="bridged")

    assert (call.type, call.status_raw, call.reason) == (None, "call.bridged", None)


@pytest.mark.parametrize(
    "event_type", ["call.machine.detection.ended", "call.machine.premium.detection.ended"]
)
@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ("human", "human"),
        ("human_residence", "human"),
        ("human_business", "human"),
        ("machine", "machine"),
        ("fax_detected", "fax"),
        ("not_sure", "unknown"),
        ("silence", "unknown"),
    ],
)
def test_machine_detection_sets_answered_by_only(event_type: str, result: str, expected: str) -> None:
    call = telnyx_one(event_type, result=result)

    assert call.type is None
    assert (call.answered_by, call.answered_by_raw) == (expected, result)


def test_transcription_saved_is_transcript_ready() -> None:
    call = telnyx_one(
        "call.recording.transcription.saved",
        recording_id="rec-1",
        recording_transcription_id="tr-1",
        status="completed",
        transcription_text="Hello, this is a test.",
    )

    assert call.type == "call.transcript.ready"
    assert call.transcript == {"format": "text", "text": "Hello, this is a test."}


def test_transcription_without_text_is_payload_invalid() -> None:
    raw = signed(envelope("call.recording.transcription.saved", status="completed"))

    with pytest.raises(PayloadInvalid):
        verify_and_parse(TelnyxAdapter(), raw)


@pytest.mark.parametrize(
    "event_type", ["call.speak.ended", "call.machine.greeting.ended", "call.cost", "call.ringing", "x"]
)
def test_unknown_event_types_are_ignored(event_type: str) -> None:
    assert verify_and_parse(TelnyxAdapter(), signed(envelope(event_type))) == []


def test_unknown_event_type_needs_no_payload() -> None:
    body = orjson.dumps({"data": {"event_type": "call.dtmf.received"}})

    assert verify_and_parse(TelnyxAdapter(), signed(body)) == []


def test_redelivery_keeps_the_idempotency_key() -> None:
    first = verify_and_parse(TelnyxAdapter(), signed(envelope("call.answered", attempt=1)))
    again = verify_and_parse(TelnyxAdapter(), signed(envelope("call.answered", attempt=2), NOW_TS + 30))

    assert first[0].idempotency_key == again[0].idempotency_key == "telnyx:ev-0001"
    assert first[0].carrier_event_id == "ev-0001"


DEEP_OBJECT = b'{"a":' * MAX_JSON_DEPTH + b"{}" + b"}" * MAX_JSON_DEPTH
"""A JSON object nested one level deeper than any JSON webhookd takes in."""
DEEP_STATE = base64.b64encode(DEEP_OBJECT).decode()
NUL_STATE = base64.b64encode(b'{"a":"\\u0000"}').decode()


@pytest.mark.parametrize(
    ("client_state", "expected"),
    [
        (base64.b64encode(b'{"platform_call_id":"pc_9"}').decode(), {"platform_call_id": "pc_9"}),
        (base64.b64encode(b'{"a":1}').decode().rstrip("="), {"a": 1}),
        ("not base64 at all", {"raw": "not base64 at all"}),
        (base64.b64encode(b"plain words").decode(), {"raw": base64.b64encode(b"plain words").decode()}),
        (base64.b64encode(b"[1, 2]").decode(), {"raw": base64.b64encode(b"[1, 2]").decode()}),
        (base64.b64encode(b"\xff\xfe").decode(), {"raw": base64.b64encode(b"\xff\xfe").decode()}),
        (DEEP_STATE, {"raw": DEEP_STATE}),
        (NUL_STATE, {"raw": NUL_STATE}),
        ("", None),
        (7, None),
        (None, None),
    ],
)
def test_client_state_becomes_client_ref(client_state: Any, expected: dict[str, Any] | None) -> None:
    assert telnyx_one("call.initiated", client_state=client_state).client_ref == expected


@pytest.mark.parametrize(
    ("adapter", "body"),
    [
        (TelnyxAdapter(), envelope("call.initiated")[:-1] + b',"x":' + DEEP_OBJECT + b"}"),
        (TelnyxAdapter(), envelope("call.initiated", note="a\u0000b")),
        (TelnyxTexmlAdapter(), orjson.dumps(texml_fields("ringing"))[:-1] + b',"X":' + DEEP_OBJECT + b"}"),
        (TelnyxTexmlAdapter(), orjson.dumps(texml_fields("ringing", CallSid="v3:\u0000"))),
    ],
    ids=["call control too deep", "call control nul", "texml json too deep", "texml json nul"],
)
def test_json_nested_too_deep_or_holding_a_nul_is_payload_invalid(
    adapter: CarrierAdapter, body: bytes
) -> None:
    with pytest.raises(PayloadInvalid):
        verify_and_parse(adapter, signed(body))


def test_sip_uri_numbers_are_kept_raw() -> None:
    call = telnyx_one("call.initiated", **{"from": "sip:bob@example.test", "to": 15555550142})

    assert (call.from_number, call.from_raw) == (None, "sip:bob@example.test")
    assert (call.to_number, call.to_raw) == (None, None)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[]",
        b"{}",
        b'{"data": []}',
        b'{"data": {}}',
        b'{"data": {"event_type": 5}}',
        b'{"data": {"event_type": "call.hangup", "payload": {"call_control_id": "v3:x"}}}',
        b'{"data": {"event_type": "call.hangup", "id": "e1"}}',
        b'{"data": {"event_type": "call.hangup", "id": "e1", "payload": []}}',
        b'{"data": {"event_type": "call.hangup", "id": "e1", "payload": {}}}',
        b'{"data": {"event_type": "call.hangup", "id": "e1", "payload": {"call_control_id": 5}}}',
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_malformed_call_control_bodies_are_payload_invalid(body: bytes) -> None:
    raw = signed(body)
    TelnyxAdapter().verify(raw, CREDENTIALS, NOW)

    with pytest.raises(PayloadInvalid):
        TelnyxAdapter().parse(raw)


# -- TeXML: normalization -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "event_type", "reason"),
    [
        (texml_fields("initiated"), "call.initiating", None),
        (texml_fields("ringing"), "call.ringing", None),
        (texml_fields("in-progress"), "call.in_progress", None),
        (texml_fields("completed", CallDuration="47"), "call.completed", "normal"),
        (texml_fields("busy"), "call.no_answer", "busy"),
        (texml_fields("no-answer"), "call.no_answer", "no_answer"),
        (texml_fields("no-answer", SipResponseCode="603"), "call.no_answer", "declined"),
        (texml_fields("no-answer", SipHangupCause="600"), "call.no_answer", "declined"),
        (texml_fields("failed"), "call.failed", "failed"),
        (texml_fields("failed", SipHangupCause="404"), "call.failed", "invalid_number"),
        (texml_fields("canceled"), "call.failed", "canceled"),
        (texml_fields("canceled", Direction="outbound"), "call.failed", "canceled"),
        (texml_fields("canceled", Direction="outbound-dial"), "call.failed", "canceled"),
        (texml_fields("canceled", Direction="inbound"), "call.no_answer", "caller_abandoned"),
    ],
    ids=lambda value: (
        "/".join(value[k] for k in ("CallStatus", "Direction") if k in value)
        if isinstance(value, dict)
        else None
    ),
)
def test_texml_status_maps_to_type_and_reason(
    fields: dict[str, str], event_type: str, reason: str | None
) -> None:
    call = texml_one(fields)

    assert (call.type, call.reason) == (event_type, reason)
    assert call.carrier == "telnyx_texml"
    assert call.idempotency_key == f"telnyx_texml:{ACCOUNT_SID}:{TEXML_CALL_SID}:{fields['CallStatus']}:3"


@pytest.mark.parametrize("status", ["completed", "busy", "no-answer", "failed", "canceled"])
def test_texml_terminal_statuses_end_the_call(status: str) -> None:
    call = texml_one(texml_fields(status, CallDuration="0"))

    assert call.ended_at == datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)
    assert call.duration_seconds == 0


@pytest.mark.parametrize("status", ["initiated", "ringing", "in-progress"])
def test_texml_live_statuses_have_no_end(status: str) -> None:
    assert texml_one(texml_fields(status, EndTime="2026-03-04T15:20:56Z")).ended_at is None


@pytest.mark.parametrize(
    "timestamp",
    [
        "Wed, 04 Mar 2026 15:20:56 +0000",
        "Wed, 04 Mar 2026 16:20:56 +0100",
        "2026-03-04T15:20:56Z",
        "2026-03-04T15:20:56.000Z",
        "2026-03-04 15:20:56Z",
        "2026-03-04 15:20:56.000000Z",
        "2026-03-04 15:20:56.000000+00:00",
    ],
)
def test_texml_timestamp_formats(timestamp: str) -> None:
    call = texml_one(texml_fields("ringing", Timestamp=timestamp))

    assert call.occurred_at == datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)


def test_texml_unparsable_timestamp_leaves_occurred_at_empty() -> None:
    assert texml_one(texml_fields("ringing", Timestamp="yesterday")).occurred_at is None


def test_texml_sequence_number_as_string_zero() -> None:
    call = texml_one(texml_fields("initiated", SequenceNumber="0"))

    assert call.sequence == 0
    assert call.idempotency_key.endswith(":initiated:0")


def test_texml_json_body_with_integer_sequence_number() -> None:
    fields: dict[str, Any] = {**texml_fields("initiated"), "SequenceNumber": 0, "ShakenStirValidated": True}

    (call,) = verify_and_parse(TelnyxTexmlAdapter(), signed(orjson.dumps(fields)))

    assert call.sequence == 0
    assert call.idempotency_key == f"telnyx_texml:{ACCOUNT_SID}:{TEXML_CALL_SID}:initiated:0"


def test_texml_completed_carries_telnyx_additions() -> None:
    call = texml_one(
        texml_fields(
            "completed",
            CallDuration="45",
            CallInitiatedAt="2026-03-04T15:20:00.000Z",
            AnsweredTime="2026-03-04T15:20:10Z",
            EndTime="2026-03-04T15:20:55Z",
            HangupCause="normal_clearing",
            HangupSource="caller",
            CallSessionId="session-9",
            ParentCallSid="v3:parent",
        )
    )

    assert call.started_at == datetime(2026, 3, 4, 15, 20, tzinfo=UTC)
    assert call.answered_at == datetime(2026, 3, 4, 15, 20, 10, tzinfo=UTC)
    assert call.ended_at == datetime(2026, 3, 4, 15, 20, 55, tzinfo=UTC)
    assert (call.carrier_cause, call.hangup_source, call.carrier_session_id) == (
        "normal_clearing",
        "caller",
        "session-9",
    )
    assert (call.duration_seconds, call.carrier_parent_call_id, call.direction) == (
        45,
        "v3:parent",
        "outbound",
    )


def test_texml_answered_time_falls_back_to_timestamp_minus_duration() -> None:
    call = texml_one(texml_fields("completed", CallDuration="47"))

    assert call.answered_at == datetime(2026, 3, 4, 15, 20, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"CallStatus=completed",
        b"CallSid=v3%3Ax",
        b"CallSid=\xff&CallStatus=completed",
        b"[1]",
        b"{not json",
        b'{"CallSid": "v3:x"}',
        b"&".join([b"a=b"] * 1000),
    ],
)
def test_malformed_texml_bodies_are_payload_invalid(body: bytes) -> None:
    raw = signed(body)
    TelnyxTexmlAdapter().verify(raw, CREDENTIALS, NOW)

    with pytest.raises(PayloadInvalid):
        TelnyxTexmlAdapter().parse(raw)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"CallSid=v3%3Ax&CallStatus=completed&SequenceNumber=%C2%B2", "sequence"),
        (b"CallSid=v3%3Ax&CallStatus=completed&Timestamp=0001-01-01T00%3A00%3A00%2B01%3A00", "occurred_at"),
        (b"CallSid=v3%3Ax&CallStatus=completed&SequenceNumber=9223372036854775808", "sequence"),
        (b"CallSid=v3%3Ax&CallStatus=completed&CallDuration=-9223372036854775809", "duration_seconds"),
        (b"CallSid=v3%3Ax&CallStatus=failed&SipResponseCode=99999999999999999999", "sip_code"),
    ],
)
def test_an_unreadable_optional_field_is_read_as_absent(body: bytes, field: str) -> None:
    """Numbers that are not 64-bit ASCII integers and impossible times count as missing; the
    callback itself still counts, and its data still serializes."""
    raw = signed(body)
    TelnyxTexmlAdapter().verify(raw, CREDENTIALS, NOW)
    (call,) = TelnyxTexmlAdapter().parse(raw)
    assert getattr(call, field) is None
    assert orjson.dumps(call.event_data())


# -- fuzz: verified garbage never raises anything but IngestError -------------------------------------


def dumps(value: Any) -> bytes:
    """JSON bytes, big integers included (orjson refuses those; carriers might not)."""
    return json.dumps(value).encode()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
CC_EVENT_TYPES = st.sampled_from(
    [
        "call.initiated",
        "call.answered",
        "call.bridged",
        "call.hangup",
        "call.machine.detection.ended",
        "call.machine.premium.detection.ended",
        "call.recording.transcription.saved",
        "call.speak.ended",
    ]
) | st.text(max_size=12)
CC_PAYLOAD_KEYS = st.sampled_from(
    [
        "call_control_id",
        "call_leg_id",
        "call_session_id",
        "client_state",
        "from",
        "to",
        "direction",
        "start_time",
        "end_time",
        "hangup_cause",
        "hangup_source",
        "sip_hangup_cause",
        "result",
        "transcription_text",
    ]
)
TEXT_OR_TIME = (
    st.text(max_size=30) | st.datetimes().map(str) | st.datetimes().map(lambda d: d.isoformat() + "Z")
)
CC_PAYLOADS = st.dictionaries(CC_PAYLOAD_KEYS, TEXT_OR_TIME | JSON_VALUES, max_size=14)
CC_BODIES = st.builds(
    lambda event_type, event_id, occurred, payload: dumps(
        {"data": {"event_type": event_type, "id": event_id, "occurred_at": occurred, "payload": payload}}
    ),
    CC_EVENT_TYPES,
    st.text(max_size=8) | JSON_VALUES,
    TEXT_OR_TIME | JSON_VALUES,
    CC_PAYLOADS,
)
TEXML_KEYS = st.sampled_from(
    [
        "AccountSid",
        "CallSid",
        "CallStatus",
        "Direction",
        "From",
        "To",
        "SequenceNumber",
        "Timestamp",
        "CallDuration",
        "CallInitiatedAt",
        "AnsweredTime",
        "EndTime",
        "HangupCause",
        "HangupSource",
        "SipResponseCode",
        "SipHangupCause",
        "AnsweredBy",
    ]
)
TEXML_VALUES = (
    st.sampled_from(
        ["initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled"]
    )
    | TEXT_OR_TIME
    | st.integers().map(str)
)
TEXML_FIELDS = st.dictionaries(TEXML_KEYS, TEXML_VALUES, max_size=17)
TEXML_BODIES = TEXML_FIELDS.map(lambda fields: urlencode(fields).encode()) | st.dictionaries(
    TEXML_KEYS, TEXML_VALUES | JSON_VALUES, max_size=17
).map(dumps)
ANY_BODY = st.binary(max_size=300) | JSON_VALUES.map(dumps) | CC_BODIES | TEXML_BODIES


def only_ingest_errors(adapter: CarrierAdapter, body: bytes) -> None:
    raw = signed(body)
    adapter.verify(raw, CREDENTIALS, NOW)  # a valid signature: parse is always reached
    try:
        calls = adapter.parse(raw)
    except IngestError:
        return
    for call in calls:
        orjson.dumps(call.event_data())


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(ANY_BODY)
def test_fuzz_call_control_raises_only_ingest_errors(body: bytes) -> None:
    only_ingest_errors(TelnyxAdapter(), body)


@FUZZ
@given(ANY_BODY)
def test_fuzz_texml_raises_only_ingest_errors(body: bytes) -> None:
    only_ingest_errors(TelnyxTexmlAdapter(), body)


@FUZZ
@given(st.binary(max_size=120), st.text(max_size=20), st.text(max_size=100))
def test_fuzz_verify_raises_only_signature_invalid(body: bytes, timestamp: str, signature: str) -> None:
    headers = {"telnyx-timestamp": timestamp, "telnyx-signature-ed25519": signature}
    for adapter in ADAPTERS:
        with pytest.raises(SignatureInvalid):
            adapter.verify(RawCallback(URL, headers, body, []), CREDENTIALS, NOW)
