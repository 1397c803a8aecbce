"""Vonage (signed JWT) and Plivo (X-Plivo-Signature-V3) callbacks: verification on raw bytes,
normalization, and a fuzz test that only IngestErrors escape."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.warnings import InsecureKeyLengthWarning
from plivo.utils.signature_v3 import (  # type: ignore[import-untyped]
    construct_post_url,
    get_signature_v3,
    validate_v3_signature,
)

from tests.paths import CARRIER_FIXTURES
from webhookd.exceptions import IngestError, PayloadInvalid, SignatureInvalid
from webhookd.ingest.base import RawCallback
from webhookd.ingest.normalize import NormalizedCall
from webhookd.ingest.plivo import PlivoAdapter, decode_form, sdk_base_string
from webhookd.ingest.vonage import VonageAdapter
from webhookd.inputs import MAX_JSON_DEPTH

NOW = datetime(2026, 3, 4, 15, 21, tzinfo=UTC)
# Keys of the expected records that the stateless adapter does not produce, or that live outside ``data``.
NOT_IN_DATA = {"event_id", "ignored", "state_update_only", "idempotency_key", "type"}


def load_signatures(carrier: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CARRIER_FIXTURES / carrier / "_signatures.json").read_text())
    return loaded


def load_expected(carrier: str) -> dict[str, list[dict[str, Any]]]:
    lines = (CARRIER_FIXTURES / carrier / "_expected_normalized.jsonl").read_text().splitlines()
    return {record["file"]: record["normalized"] for record in map(json.loads, lines)}


def fixture_files(carrier: str, suffix: str) -> list[str]:
    return sorted(path.name for path in (CARRIER_FIXTURES / carrier).glob(f"[!_]*.{suffix}"))


def raw_callback(url: str, headers: Mapping[str, str], body: bytes) -> RawCallback:
    return RawCallback(url=url, headers=dict(headers), body=body, query=parse_qsl(urlsplit(url).query))


def flip_one_byte(body: bytes, marker: bytes) -> bytes:
    at = body.index(marker) + len(marker) + 5
    return body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]


def assert_matches_expected(calls: list[NormalizedCall], expected: list[dict[str, Any]]) -> None:
    emitted = [record for record in expected if not record.get("ignored")]
    assert len(calls) == len(emitted)
    for call, record in zip(calls, emitted, strict=True):
        data = call.event_data()
        mismatched = {
            key: (data.get(key, "<missing>"), want)
            for key, want in record.items()
            if key not in NOT_IN_DATA and data.get(key, "<missing>") != want
        }
        assert mismatched == {}
        want_type = None if record.get("state_update_only") else record["type"]
        assert (call.type, call.idempotency_key) == (want_type, record["idempotency_key"])


def verify_then_parse(
    adapter: VonageAdapter | PlivoAdapter, raw: RawCallback, creds: dict[str, str], *, must_verify: bool
) -> None:
    """What the ingest route does: only IngestError subclasses may come out. A body that is validly
    signed (and, for Plivo, is a decodable form) must get past verify, so that parse is reached."""
    try:
        adapter.verify(raw, creds, NOW)
    except IngestError:
        assert not must_verify
        return
    try:
        calls = adapter.parse(raw)
    except IngestError:
        return
    assert len(calls) <= 1
    for call in calls:
        json.dumps(call.event_data())  # the update is serializable as it stands


# ==============================================================================================
# Vonage
# ==============================================================================================

VONAGE = CARRIER_FIXTURES / "vonage"
VONAGE_SIGNATURES = load_signatures("vonage")
VONAGE_SECRET: str = VONAGE_SIGNATURES["signature_secret"]
VONAGE_EXPECTED = load_expected("vonage")
VONAGE_FILES = fixture_files("vonage", "json")
VONAGE_CREDS = {"signature_secret": VONAGE_SECRET}
VONAGE_URL = "https://webhookd.example.org/ingest/vonage/src_01HZX"
CALL_UUID = "aaaaaaaa-0001-4000-8000-000000000001"


def vonage_fixture(name: str, body: bytes | None = None) -> RawCallback:
    meta = VONAGE_SIGNATURES["files"][name]
    return raw_callback(meta["url"], meta["headers"], (VONAGE / name).read_bytes() if body is None else body)


def vonage_token(
    body: bytes,
    *,
    secret: str = VONAGE_SECRET,
    algorithm: str = "HS256",
    iat: Any = NOW,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """A Vonage-style JWT made with PyJWT."""
    payload: dict[str, Any] = {
        "iat": int(iat.timestamp()) if isinstance(iat, datetime) else iat,
        "jti": "005ca1ab-1e00-0000-0000-00000000ffff",
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "api_key": "f1x7ur3s",
        "application_id": "5ca1ab1e-0000-4000-8000-0000000a9901",
        **claims,
    }
    payload = {key: value for key, value in payload.items() if key not in drop and value is not None}
    return jwt.encode(payload, "" if algorithm == "none" else secret, algorithm=algorithm)


def vonage_signed(body: bytes | dict[str, Any], **token_options: Any) -> RawCallback:
    raw = json.dumps(body, separators=(",", ":")).encode() if isinstance(body, dict) else body
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {vonage_token(raw, **token_options)}",
    }
    return raw_callback(VONAGE_URL, headers, raw)


def vonage_verify(raw: RawCallback, now: datetime = NOW) -> None:
    VonageAdapter().verify(raw, VONAGE_CREDS, now)


def vonage_event(status: str, direction: str = "outbound", **extra: Any) -> dict[str, Any]:
    return {
        "headers": {},
        "from": "15555550123",
        "to": "15555550142",
        "uuid": CALL_UUID,
        "conversation_uuid": "CON-aaaaaaaa-0001-4000-8000-00000000c001",
        "status": status,
        "direction": direction,
        "timestamp": "2026-03-04T15:20:56.000Z",
        **extra,
    }


def vonage_parse_one(fields: dict[str, Any]) -> NormalizedCall:
    raw = vonage_signed(fields)
    vonage_verify(raw)
    (call,) = VonageAdapter().parse(raw)
    return call


# -- fixtures ----------------------------------------------------------------------------------


def test_there_are_vonage_fixtures() -> None:
    assert len(VONAGE_FILES) >= 5
    assert set(VONAGE_FILES) <= set(VONAGE_SIGNATURES["files"]) & set(VONAGE_EXPECTED)


@pytest.mark.parametrize("name", VONAGE_FILES)
def test_vonage_fixture_verifies(name: str) -> None:
    vonage_verify(vonage_fixture(name))


@pytest.mark.parametrize("name", VONAGE_FILES)
def test_vonage_fixture_with_one_byte_changed_fails(name: str) -> None:
    body = flip_one_byte((VONAGE / name).read_bytes(), b'"conversation_uuid":"')

    with pytest.raises(SignatureInvalid):
        vonage_verify(vonage_fixture(name, body))


@pytest.mark.parametrize("name", VONAGE_FILES)
def test_vonage_fixture_fails_six_minutes_later(name: str) -> None:
    with pytest.raises(SignatureInvalid):
        vonage_verify(vonage_fixture(name), NOW + timedelta(minutes=6))


@pytest.mark.parametrize("name", VONAGE_FILES)
def test_vonage_fixture_fails_with_another_secret(name: str) -> None:
    with pytest.raises(SignatureInvalid):
        VonageAdapter().verify(vonage_fixture(name), {"signature_secret": "x" * 48}, NOW)


@pytest.mark.parametrize("name", VONAGE_FILES)
def test_vonage_fixture_normalizes_to_the_expected_record(name: str) -> None:
    assert_matches_expected(VonageAdapter().parse(vonage_fixture(name)), VONAGE_EXPECTED[name])


# -- JWT ---------------------------------------------------------------------------------------


def test_vonage_pyjwt_token_verifies() -> None:
    vonage_verify(vonage_signed(vonage_event("completed")))


def test_vonage_lowercase_authorization_header_verifies() -> None:
    raw = vonage_signed(vonage_event("completed"))
    headers = {key.lower(): value for key, value in raw.headers.items()}

    vonage_verify(raw_callback(raw.url, headers, raw.body))


@pytest.mark.parametrize("offset_s", [-299, 0, 299])
def test_vonage_iat_within_five_minutes_verifies(offset_s: int) -> None:
    vonage_verify(vonage_signed(vonage_event("completed"), iat=NOW + timedelta(seconds=offset_s)))


@pytest.mark.parametrize("offset_s", [-301, 301, -86_400, 86_400])
def test_vonage_stale_or_future_iat_fails(offset_s: int) -> None:
    raw = vonage_signed(vonage_event("completed"), iat=NOW + timedelta(seconds=offset_s))

    with pytest.raises(SignatureInvalid, match="iat"):
        vonage_verify(raw)


@pytest.mark.parametrize("iat", ["1772637600", True, float("inf"), [1772637600], 10**13])
def test_vonage_iat_that_is_not_a_time_fails(iat: Any) -> None:
    with pytest.raises(SignatureInvalid, match="iat"):
        vonage_verify(vonage_signed(vonage_event("completed"), iat=iat))


def test_vonage_missing_iat_fails() -> None:
    with pytest.raises(SignatureInvalid, match="iat"):
        vonage_verify(vonage_signed(vonage_event("completed"), iat=None))


def test_vonage_expired_exp_fails() -> None:
    raw = vonage_signed(vonage_event("completed"), exp=int((NOW - timedelta(minutes=10)).timestamp()))

    with pytest.raises(SignatureInvalid):
        vonage_verify(raw)


def test_vonage_wrong_secret_fails() -> None:
    raw = vonage_signed(vonage_event("completed"), secret="another_signature_secret_that_is_long_enough")

    with pytest.raises(SignatureInvalid, match="signature"):
        vonage_verify(raw)


def test_vonage_alg_none_fails() -> None:
    raw = vonage_signed(vonage_event("completed"), algorithm="none")

    with pytest.raises(SignatureInvalid, match="HS256"):
        vonage_verify(raw)


def test_vonage_alg_none_with_the_hs256_signature_appended_fails() -> None:
    good = vonage_token(b"{}")
    none = vonage_token(b"{}", algorithm="none")
    forged = none.rstrip(".") + "." + good.rsplit(".", 1)[1]

    with pytest.raises(SignatureInvalid):
        vonage_verify(raw_callback(VONAGE_URL, {"Authorization": f"Bearer {forged}"}, b"{}"))


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_vonage_other_hmac_alg_with_the_right_secret_fails(algorithm: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # the real 48-byte secret, on purpose
        raw = vonage_signed(vonage_event("completed"), algorithm=algorithm)

    with pytest.raises(SignatureInvalid, match="HS256"):
        vonage_verify(raw)


def test_vonage_missing_payload_hash_fails() -> None:
    with pytest.raises(SignatureInvalid, match="payload_hash"):
        vonage_verify(vonage_signed(vonage_event("completed"), drop=("payload_hash",)))


def test_vonage_payload_hash_of_another_body_fails() -> None:
    raw = vonage_signed(vonage_event("completed"), payload_hash=hashlib.sha256(b"{}").hexdigest())

    with pytest.raises(SignatureInvalid, match="payload_hash"):
        vonage_verify(raw)


def test_vonage_uppercase_payload_hash_verifies() -> None:
    body = json.dumps(vonage_event("completed")).encode()
    token = vonage_token(body, payload_hash=hashlib.sha256(body).hexdigest().upper())

    vonage_verify(raw_callback(VONAGE_URL, {"Authorization": f"Bearer {token}"}, body))


def test_vonage_payload_hash_over_compact_json_verifies_for_a_spaced_body() -> None:
    fields = vonage_event("completed")
    compact = json.dumps(fields, separators=(",", ":")).encode()
    spaced = json.dumps(fields, indent=2).encode()

    vonage_verify(raw_callback(VONAGE_URL, {"Authorization": f"Bearer {vonage_token(compact)}"}, spaced))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer a.b",
        "Bearer a.b.c.d",
        "Bearer !!!.e30.sig",
        "Bearer e30.e30.",
        "Bearer bm90IGpzb24.e30.sig",
        "Bearer WzFd.e30.sig",
        "Bearer eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.\u00e9\u00e9",
    ],
)
def test_vonage_malformed_authorization_fails(authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    with pytest.raises(SignatureInvalid):
        vonage_verify(raw_callback(VONAGE_URL, headers, b"{}"))


def test_vonage_valid_signature_over_non_json_claims_fails() -> None:
    import base64
    import hmac

    head = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=").decode()
    claims = base64.urlsafe_b64encode(b"[1,2]").rstrip(b"=").decode()
    mac = hmac.new(VONAGE_SECRET.encode(), f"{head}.{claims}".encode(), hashlib.sha256).digest()
    token = f"{head}.{claims}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    with pytest.raises(SignatureInvalid, match="malformed"):
        vonage_verify(raw_callback(VONAGE_URL, {"Authorization": f"Bearer {token}"}, b"{}"))


def test_vonage_source_without_a_secret_fails() -> None:
    with pytest.raises(SignatureInvalid):
        VonageAdapter().verify(vonage_signed(vonage_event("completed")), {}, NOW)


# -- normalization, one documented status at a time ---------------------------------------------

FAILED_DETAILS = [
    "invalid_number",
    "cannot_route",
    "number_out_of_service",
    "restricted",
    "internal_error",
    "carrier_timeout",
]


@pytest.mark.parametrize(
    ("fields", "event_type", "reason"),
    [
        (vonage_event("started"), "call.initiating", None),
        (vonage_event("ringing"), "call.ringing", None),
        (vonage_event("answered"), "call.in_progress", None),
        (vonage_event("completed", duration="47", disconnected_by="user"), "call.completed", "normal"),
        (vonage_event("busy"), "call.no_answer", "busy"),
        (vonage_event("timeout"), "call.no_answer", "timeout"),
        (vonage_event("unanswered"), "call.no_answer", "no_answer"),
        (vonage_event("unanswered", detail="no_answer"), "call.no_answer", "no_answer"),
        (vonage_event("unanswered", detail="declined"), "call.no_answer", "declined"),
        (vonage_event("unanswered", detail="unavailable"), "call.no_answer", "unavailable"),
        *[(vonage_event("unanswered", detail=detail), "call.failed", detail) for detail in FAILED_DETAILS],
        (vonage_event("cancelled", "outbound"), "call.failed", "canceled"),
        (vonage_event("cancelled", "inbound"), "call.no_answer", "caller_abandoned"),
        (vonage_event("rejected"), "call.failed", "rejected"),
        (vonage_event("failed"), "call.failed", "failed"),
        *[(vonage_event("failed", detail=detail), "call.failed", detail) for detail in FAILED_DETAILS],
    ],
    ids=lambda value: (
        "/".join(str(value.get(k, "")) for k in ("status", "direction", "detail"))
        if isinstance(value, dict)
        else None
    ),
)
def test_vonage_status_maps_to_type_and_reason(
    fields: dict[str, Any], event_type: str, reason: str | None
) -> None:
    call = vonage_parse_one(fields)

    assert (call.type, call.reason, call.status_raw) == (event_type, reason, fields["status"])
    assert call.idempotency_key == f"vonage:{CALL_UUID}:{fields['status']}:2026-03-04T15:20:56.000Z"


@pytest.mark.parametrize("source", ["user", "platform"])
def test_vonage_completed_takes_hangup_source_from_disconnected_by(source: str) -> None:
    call = vonage_parse_one(
        vonage_event(
            "completed",
            duration="47",
            disconnected_by=source,
            start_time="2026-03-04T15:20:09.000Z",
            end_time="2026-03-04T15:20:56.000Z",
        )
    )

    assert call.hangup_source == source
    assert call.duration_seconds == 47
    assert call.answered_at == datetime(2026, 3, 4, 15, 20, 9, tzinfo=UTC)
    assert call.ended_at == datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)


@pytest.mark.parametrize("status", ["human", "machine"])
def test_vonage_amd_event_only_updates_state(status: str) -> None:
    fields = {
        "call_uuid": CALL_UUID,
        "from": "15555550123",
        "to": "15555550142",
        "status": status,
        "sub_state": "beep_start",
        "conversation_uuid": "CON-aaaaaaaa-0001-4000-8000-00000000c001",
        "timestamp": "2026-03-04T15:20:11.000Z",
    }

    call = vonage_parse_one(fields)

    assert call.type is None
    assert (call.answered_by, call.answered_by_raw) == (status, status)
    assert call.carrier_call_id == CALL_UUID
    assert call.idempotency_key == f"vonage:{CALL_UUID}:{status}:2026-03-04T15:20:11.000Z"


def test_vonage_numbers_become_e164_and_raw_is_kept() -> None:
    call = vonage_parse_one(vonage_event("ringing"))

    assert (call.from_number, call.from_raw) == ("+15555550123", "15555550123")
    assert (call.to_number, call.to_raw) == ("+15555550142", "15555550142")


def test_vonage_sip_from_has_no_number_but_keeps_raw() -> None:
    call = vonage_parse_one(vonage_event("ringing", **{"from": "sip:alice@example.com"}))

    assert (call.from_number, call.from_raw) == (None, "sip:alice@example.com")


@pytest.mark.parametrize(
    "fields",
    [
        {"start_time": "2026-03-04T15:20:09.000Z", "recording_url": "https://x.test/r", "size": 12,
         "recording_uuid": "r1", "end_time": "2026-03-04T15:20:56.000Z", "conversation_uuid": "CON-1",
         "timestamp": "2026-03-04T15:20:56.000Z"},
        {"speech": {}, "dtmf": {"digits": "1"}, "from": "15555550123", "to": "15555550142", "uuid": CALL_UUID,
         "conversation_uuid": "CON-1", "timestamp": "2026-03-04T15:20:56.000Z"},
        {"conversation_uuid_from": "CON-1", "conversation_uuid_to": "CON-2", "uuid": CALL_UUID,
         "timestamp": "2026-03-04T15:20:56.000Z"},
        {"reason": "Syntax error", "conversation_uuid": "CON-1", "timestamp": "2026-03-04T15:20:56.000Z"},
        vonage_event("disconnected"),
    ],
    ids=["record", "input", "transfer", "error", "disconnected"],
)  # fmt: skip
def test_vonage_other_event_types_give_nothing(fields: dict[str, Any]) -> None:
    raw = vonage_signed(fields)
    vonage_verify(raw)

    assert VonageAdapter().parse(raw) == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"completed"',
        b"{}",
        b'{"status": "completed"}',
        b'{"status": "completed", "uuid": {"a": 1}}',
        b'{"status": ["completed"], "uuid": "u"}',
        b'{"status": "completed", "uuid": "\\ud800"}',
        b"\xff\xfe\x00",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"status": "completed", "uuid": "u", "x": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}",
        b'{"status": "completed", "uuid": "u", "x": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"status": "completed", "uuid": "u\\u0000"}',
        b'{"status": "completed", "uuid": "u", "note\\u0000": 1}',
    ],
)
def test_vonage_bad_payload_is_payload_invalid(body: bytes) -> None:
    raw = vonage_signed(body)
    vonage_verify(raw)

    with pytest.raises(PayloadInvalid):
        VonageAdapter().parse(raw)


def test_vonage_duration_that_is_not_seconds_is_dropped() -> None:
    for duration in ("4.5", "²", "-3", "99999999999999999999", True, {"s": 1}):
        assert vonage_parse_one(vonage_event("completed", duration=duration)).duration_seconds is None
    assert vonage_parse_one(vonage_event("completed", duration=47)).duration_seconds == 47


def test_vonage_timestamp_out_of_range_gives_no_time() -> None:
    call = vonage_parse_one(vonage_event("ringing", timestamp="9999-12-31T23:59:59-01:00"))

    assert call.occurred_at is None


# ==============================================================================================
# Plivo
# ==============================================================================================

PLIVO = CARRIER_FIXTURES / "plivo"
PLIVO_SIGNATURES = load_signatures("plivo")
PLIVO_TOKEN: str = PLIVO_SIGNATURES["auth_token"]
PLIVO_EXPECTED = load_expected("plivo")
PLIVO_FILES = fixture_files("plivo", "form")
PLIVO_CREDS = {"auth_token": PLIVO_TOKEN}
PLIVO_URL = "https://webhookd.example.org/ingest/plivo/src_01HZX"
PLIVO_UUID = "5ca1ab1e-0001-4000-8000-0000000000a1"
NONCE = "12345678901234567890"


def plivo_fixture(name: str, body: bytes | None = None) -> RawCallback:
    meta = PLIVO_SIGNATURES["files"][name]
    return raw_callback(meta["url"], meta["headers"], (PLIVO / name).read_bytes() if body is None else body)


def sdk_signature(url: str, params: Mapping[str, Any], token: str = PLIVO_TOKEN, nonce: str = NONCE) -> str:
    """The plivo SDK's own V3 signature of a POST."""
    base = construct_post_url(url, dict(params)).decode()
    signature: bytes = get_signature_v3(token, base, nonce)
    return signature.decode()


def plivo_signed(
    fields: Mapping[str, str],
    url: str = PLIVO_URL,
    *,
    signature: str | None = None,
    token: str = PLIVO_TOKEN,
) -> RawCallback:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Plivo-Signature-V3": signature or sdk_signature(url, fields, token),
        "X-Plivo-Signature-V3-Nonce": NONCE,
    }
    return raw_callback(url, headers, urlencode(fields).encode())


def plivo_verify(raw: RawCallback) -> None:
    PlivoAdapter().verify(raw, PLIVO_CREDS, NOW)


def plivo_fields(status: str, direction: str = "outbound", **extra: str) -> dict[str, str]:
    return {
        "CallUUID": PLIVO_UUID,
        "From": "15555550123",
        "To": "15555550142",
        "CallStatus": status,
        "Direction": direction,
        "ALegUUID": PLIVO_UUID,
        "Event": "Hangup",
        "StartTime": "2026-03-04 15:20:00",
        "EndTime": "2026-03-04 15:20:56",
        "Duration": "0",
        "HangupCause": "NORMAL_CLEARING",
        "HangupSource": "Callee",
        **extra,
    }


def plivo_parse_one(fields: dict[str, str]) -> NormalizedCall:
    raw = plivo_signed(fields)
    plivo_verify(raw)
    (call,) = PlivoAdapter().parse(raw)
    return call


# -- fixtures ----------------------------------------------------------------------------------


def test_there_are_plivo_fixtures() -> None:
    assert len(PLIVO_FILES) >= 3
    assert set(PLIVO_FILES) <= set(PLIVO_SIGNATURES["files"]) & set(PLIVO_EXPECTED)


@pytest.mark.parametrize("name", PLIVO_FILES)
def test_plivo_fixture_verifies(name: str) -> None:
    plivo_verify(plivo_fixture(name))


@pytest.mark.parametrize("name", PLIVO_FILES)
def test_plivo_fixture_with_one_byte_changed_fails(name: str) -> None:
    body = flip_one_byte((PLIVO / name).read_bytes(), b"CallUUID=")

    with pytest.raises(SignatureInvalid):
        plivo_verify(plivo_fixture(name, body))


@pytest.mark.parametrize("name", PLIVO_FILES)
def test_plivo_fixture_fails_for_another_url(name: str) -> None:
    raw = plivo_fixture(name)

    with pytest.raises(SignatureInvalid):
        plivo_verify(raw_callback(PLIVO_URL, raw.headers, raw.body))


@pytest.mark.parametrize("name", PLIVO_FILES)
def test_plivo_base_string_matches_the_recorded_one_and_the_sdk(name: str) -> None:
    meta = PLIVO_SIGNATURES["files"][name]
    params = decode_form((PLIVO / name).read_bytes())
    nonce = meta["headers"]["X-Plivo-Signature-V3-Nonce"]

    ours = sdk_base_string(meta["url"], params)

    assert f"{ours}.{nonce}" == meta["signature_base_string"]
    assert ours == construct_post_url(meta["url"], dict(params)).decode()


@pytest.mark.parametrize("name", PLIVO_FILES)
def test_plivo_fixture_validates_with_the_sdk(name: str) -> None:
    meta = PLIVO_SIGNATURES["files"][name]
    params = dict(decode_form((PLIVO / name).read_bytes()))
    headers = meta["headers"]

    assert validate_v3_signature(
        "POST", meta["url"], headers["X-Plivo-Signature-V3-Nonce"], PLIVO_TOKEN,
        headers["X-Plivo-Signature-V3"], params,
    )  # fmt: skip


@pytest.mark.parametrize("name", PLIVO_FILES)
def test_plivo_fixture_normalizes_to_the_expected_record(name: str) -> None:
    assert_matches_expected(PlivoAdapter().parse(plivo_fixture(name)), PLIVO_EXPECTED[name])


def test_plivo_query_parameters_become_metadata() -> None:
    (call,) = PlivoAdapter().parse(plivo_fixture(PLIVO_FILES[0]))

    assert call.metadata == {"tenant": "t_demo"}


# -- signatures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        PLIVO_URL,
        f"{PLIVO_URL}?tenant=t_demo",
        f"{PLIVO_URL}?z=1&a=2&a=1",
        f"{PLIVO_URL}?callback_url=https%3A%2F%2Fapp.example.org%2Fcb%3Fx%3D1",
        PLIVO_URL.replace(".org/", ".org:8443/"),
    ],
)
def test_plivo_sdk_signature_verifies(url: str) -> None:
    plivo_verify(plivo_signed(plivo_fields("completed"), url))


def test_plivo_sdk_signature_over_an_empty_body_verifies() -> None:
    url = f"{PLIVO_URL}?tenant=t_demo"
    headers = {"X-Plivo-Signature-V3": sdk_signature(url, {}), "X-Plivo-Signature-V3-Nonce": NONCE}

    plivo_verify(raw_callback(url, headers, b""))


def test_plivo_repeated_form_field_verifies() -> None:
    body = b"CallUUID=u&CallStatus=ringing&X-PH-Tag=b&X-PH-Tag=a"
    signature = sdk_signature(PLIVO_URL, parse_qs(body.decode()))
    headers = {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": NONCE}

    plivo_verify(raw_callback(PLIVO_URL, headers, body))


def test_plivo_docs_form_signature_verifies_for_a_url_without_query() -> None:
    import base64
    import hmac

    fields = plivo_fields("completed")
    concat = "".join(name + fields[name] for name in sorted(fields))
    base = f"{PLIVO_URL}.{concat}.{NONCE}"
    signature = base64.b64encode(hmac.new(PLIVO_TOKEN.encode(), base.encode(), hashlib.sha256).digest())

    assert signature.decode() != sdk_signature(PLIVO_URL, fields)
    plivo_verify(plivo_signed(fields, signature=signature.decode()))


def test_plivo_several_signatures_one_matching_verifies() -> None:
    fields = plivo_fields("completed")
    good = sdk_signature(PLIVO_URL, fields)
    other = sdk_signature(PLIVO_URL, fields, token="SOME_OTHER_SUBACCOUNT_TOKEN_0000000000")

    plivo_verify(plivo_signed(fields, signature=f"{other}, {good}"))
    plivo_verify(plivo_signed(fields, signature=f"{good},{other}"))


def test_plivo_several_signatures_none_matching_fails() -> None:
    fields = plivo_fields("completed")
    others = [sdk_signature(PLIVO_URL, fields, token=f"OTHER_TOKEN_{n}_000000000000") for n in range(3)]

    with pytest.raises(SignatureInvalid):
        plivo_verify(plivo_signed(fields, signature=",".join(others)))


def test_plivo_main_account_header_verifies() -> None:
    fields = plivo_fields("completed")
    raw = plivo_signed(fields, signature="bm90IHRoaXMgb25l")
    headers = {**raw.headers, "X-Plivo-Signature-Ma-V3": sdk_signature(PLIVO_URL, fields)}

    plivo_verify(raw_callback(raw.url, headers, raw.body))


def test_plivo_lowercase_header_names_verify() -> None:
    raw = plivo_signed(plivo_fields("completed"))

    plivo_verify(raw_callback(raw.url, {key.lower(): value for key, value in raw.headers.items()}, raw.body))


def test_plivo_wrong_token_fails() -> None:
    with pytest.raises(SignatureInvalid):
        plivo_verify(plivo_signed(plivo_fields("completed"), token="SOME_OTHER_AUTH_TOKEN_000000000000"))


@pytest.mark.parametrize("missing", ["X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce"])
def test_plivo_missing_header_fails(missing: str) -> None:
    raw = plivo_signed(plivo_fields("completed"))
    headers = {key: value for key, value in raw.headers.items() if key != missing}

    with pytest.raises(SignatureInvalid):
        plivo_verify(raw_callback(raw.url, headers, raw.body))


def test_plivo_other_nonce_fails() -> None:
    raw = plivo_signed(plivo_fields("completed"))
    headers = {**raw.headers, "X-Plivo-Signature-V3-Nonce": "99999999999999999999"}

    with pytest.raises(SignatureInvalid):
        plivo_verify(raw_callback(raw.url, headers, raw.body))


def test_plivo_non_ascii_signature_header_fails_cleanly() -> None:
    with pytest.raises(SignatureInvalid):
        plivo_verify(plivo_signed(plivo_fields("completed"), signature="\u00e9\u00e9\u00e9"))


def test_plivo_source_without_a_token_fails() -> None:
    with pytest.raises(SignatureInvalid):
        PlivoAdapter().verify(plivo_signed(plivo_fields("completed")), {}, NOW)


# -- normalization, one documented status at a time ---------------------------------------------


@pytest.mark.parametrize(
    ("fields", "event_type", "reason"),
    [
        (plivo_fields("ringing", Event="Ring"), "call.ringing", None),
        (plivo_fields("in-progress", Event="StartApp"), "call.in_progress", None),
        (plivo_fields("completed", Duration="47"), "call.completed", "normal"),
        (plivo_fields("busy"), "call.no_answer", "busy"),
        (plivo_fields("no-answer"), "call.no_answer", "no_answer"),
        (plivo_fields("timeout"), "call.no_answer", "timeout"),
        (plivo_fields("failed"), "call.failed", "failed"),
        (plivo_fields("failed", HangupCauseName="Unallocated Number"), "call.failed", "invalid_number"),
        (plivo_fields("cancel", "outbound"), "call.failed", "canceled"),
        (plivo_fields("cancel", "inbound"), "call.no_answer", "caller_abandoned"),
        (plivo_fields("canceled", "outbound"), "call.failed", "canceled"),
        (plivo_fields("canceled", "inbound"), "call.no_answer", "caller_abandoned"),
    ],
    ids=lambda value: (
        "/".join(value.get(k, "") for k in ("CallStatus", "Direction", "HangupCauseName"))
        if isinstance(value, dict)
        else None
    ),
)
def test_plivo_status_maps_to_type_and_reason(
    fields: dict[str, str], event_type: str, reason: str | None
) -> None:
    call = plivo_parse_one(fields)

    assert (call.type, call.reason, call.status_raw) == (event_type, reason, fields["CallStatus"])
    assert call.idempotency_key == f"plivo:{PLIVO_UUID}:{fields['Event']}:{fields['CallStatus']}"


def test_plivo_idempotency_key_without_event_uses_call_status() -> None:
    fields = plivo_fields("ringing")
    del fields["Event"]

    assert plivo_parse_one(fields).idempotency_key == f"plivo:{PLIVO_UUID}:ringing:ringing"


def test_plivo_terminal_fields() -> None:
    call = plivo_parse_one(plivo_fields("completed", Duration="47", AnswerTime="2026-03-04 15:20:09"))

    assert call.duration_seconds == 47
    assert (call.hangup_source, call.carrier_cause) == ("callee", "NORMAL_CLEARING")
    assert call.started_at == datetime(2026, 3, 4, 15, 20, tzinfo=UTC)
    assert call.answered_at == datetime(2026, 3, 4, 15, 20, 9, tzinfo=UTC)
    assert call.ended_at == call.occurred_at == datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)
    assert (call.from_number, call.from_raw) == ("+15555550123", "15555550123")


def test_plivo_b_leg_names_its_a_leg_as_parent() -> None:
    call = plivo_parse_one(plivo_fields("completed", CallUUID="b-leg", ALegUUID=PLIVO_UUID))

    assert (call.carrier_call_id, call.carrier_parent_call_id) == ("b-leg", PLIVO_UUID)


def test_plivo_times_use_the_timezone_credential() -> None:
    raw = plivo_signed(plivo_fields("completed"))

    (call,) = PlivoAdapter().parse(raw, {"auth_token": PLIVO_TOKEN, "timezone": "America/New_York"})

    assert call.ended_at == datetime(2026, 3, 4, 20, 20, 56, tzinfo=UTC)
    assert call.started_at == datetime(2026, 3, 4, 20, 20, tzinfo=UTC)


def test_plivo_times_are_utc_without_a_timezone_credential() -> None:
    (call,) = PlivoAdapter().parse(plivo_signed(plivo_fields("completed")), PLIVO_CREDS)

    assert call.ended_at == datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)


@pytest.mark.parametrize("zone", ["Not/AZone", "../../etc/passwd", "America", "bad\x00zone"])
def test_plivo_unknown_timezone_credential_is_payload_invalid(zone: str) -> None:
    with pytest.raises(PayloadInvalid, match="timezone"):
        PlivoAdapter().parse(plivo_signed(plivo_fields("completed")), {"timezone": zone})


@pytest.mark.parametrize(
    "fields",
    [
        {"CallUUID": PLIVO_UUID, "RecordUrl": "https://x.test/r.mp3", "RecordingID": "r1"},
        {"CallUUID": PLIVO_UUID, "CallStatus": "early-media"},
    ],
    ids=["recording", "unknown-status"],
)
def test_plivo_callbacks_without_a_known_status_give_nothing(fields: dict[str, str]) -> None:
    raw = plivo_signed(fields)
    plivo_verify(raw)

    assert PlivoAdapter().parse(raw) == []


@pytest.mark.parametrize(
    "body",
    [b"", b"Foo=bar", b"CallStatus=completed", b"CallStatus=completed&CallUUID=", b"\xff\xfe", b"a=%ff"],
)
def test_plivo_bad_payload_is_payload_invalid(body: bytes) -> None:
    with pytest.raises(PayloadInvalid):
        PlivoAdapter().parse(raw_callback(PLIVO_URL, {}, body))


def test_plivo_undecodable_body_is_refused_by_verify() -> None:
    raw = plivo_signed(plivo_fields("completed"))

    with pytest.raises(IngestError):
        plivo_verify(raw_callback(raw.url, raw.headers, b"CallUUID=\xff"))


# ==============================================================================================
# Fuzz: verify + parse raise only IngestError subclasses
# ==============================================================================================

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
)
VONAGE_KEYS = [
    "status", "uuid", "call_uuid", "conversation_uuid", "direction", "from", "to", "timestamp", "detail",
    "duration", "start_time", "end_time", "disconnected_by", "sub_state",
]  # fmt: skip
VONAGE_SAMPLES = [
    "started", "completed", "unanswered", "failed", "cancelled", "human", "machine", "inbound", "outbound",
    "2026-03-04T15:20:56.000Z", "9999-12-31T23:59:59-01:00", "47", "\u00b2", "15555550123", *FAILED_DETAILS,
]  # fmt: skip
VONAGE_VALUES = st.sampled_from(VONAGE_SAMPLES) | JSON_VALUES
PLIVO_KEYS = [
    "CallUUID", "CallStatus", "Direction", "From", "To", "Event", "ALegUUID", "StartTime", "AnswerTime",
    "EndTime", "SessionStart", "Duration", "HangupCause", "HangupCauseName", "HangupSource",
]  # fmt: skip
PLIVO_SAMPLES = [
    "ringing", "completed", "failed", "cancel", "inbound", "outbound", "2026-03-04 15:20:56",
    "0001-01-01 00:00:00", "9999-12-31 23:59:59", "47", "\u00b2", "Unallocated Number", "Caller",
    "15555550123", "",
]  # fmt: skip
PLIVO_VALUES = st.sampled_from(PLIVO_SAMPLES) | st.text(max_size=30)


def fuzz_vonage(body: bytes) -> None:
    headers = {"Authorization": f"Bearer {vonage_token(body)}"}
    verify_then_parse(
        VonageAdapter(), raw_callback(VONAGE_URL, headers, body), VONAGE_CREDS, must_verify=True
    )


def fuzz_plivo(body: bytes, url: str = f"{PLIVO_URL}?tenant=t_demo") -> None:
    """Signed by the SDK over the params Plivo would have sent (the decoded form)."""
    try:
        decode_form(body)
        params: dict[str, Any] = parse_qs(body.decode(), keep_blank_values=True)
        decodable = True
    except PayloadInvalid:
        params, decodable = {}, False
    headers = {"X-Plivo-Signature-V3": sdk_signature(url, params), "X-Plivo-Signature-V3-Nonce": NONCE}
    verify_then_parse(PlivoAdapter(), raw_callback(url, headers, body), PLIVO_CREDS, must_verify=decodable)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_raise_only_ingest_errors(body: bytes) -> None:
    fuzz_vonage(body)
    fuzz_plivo(body)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES | st.dictionaries(st.sampled_from(VONAGE_KEYS), VONAGE_VALUES, max_size=len(VONAGE_KEYS)))
def test_fuzz_vonage_json_raises_only_ingest_errors(value: Any) -> None:
    fuzz_vonage(json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(PLIVO_KEYS) | st.text(max_size=8), PLIVO_VALUES, max_size=len(PLIVO_KEYS))
)
def test_fuzz_plivo_form_raises_only_ingest_errors(fields: dict[str, str]) -> None:
    body = urlencode(fields).encode()
    fuzz_plivo(body)
    fuzz_plivo(body, PLIVO_URL)


PARAM_TEXT = st.text(max_size=6)
# The SDK itself raises on a query with non-ASCII values, so the comparison keeps queries ASCII.
QUERY_TEXT = st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(QUERY_TEXT, QUERY_TEXT), max_size=4),
    st.dictionaries(PARAM_TEXT, st.lists(PARAM_TEXT, min_size=1, max_size=2), max_size=4),
)
def test_fuzz_plivo_base_string_is_the_sdk_one(
    query: list[tuple[str, str]], params: dict[str, list[str]]
) -> None:
    url = f"{PLIVO_URL}?{urlencode(query)}" if query else PLIVO_URL
    pairs = [(name, value) for name, values in params.items() for value in values]

    sdk = construct_post_url(url, {name: list(values) for name, values in params.items()}).decode()

    assert sdk_base_string(url, pairs) == sdk
