"""Twilio status callbacks: X-Twilio-Signature and normalization."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from twilio.request_validator import RequestValidator

from tests.paths import CARRIER_FIXTURES
from webhookd.exceptions import PayloadInvalid, SignatureInvalid
from webhookd.ingest.base import RawCallback
from webhookd.ingest.normalize import NormalizedCall
from webhookd.ingest.twilio import TwilioAdapter

FIXTURES = CARRIER_FIXTURES / "twilio"
SIGNATURES = json.loads((FIXTURES / "_signatures.json").read_text())
TOKEN: str = SIGNATURES["auth_token"]
EXPECTED = {
    record["file"]: record["normalized"]
    for record in map(json.loads, (FIXTURES / "_expected_normalized.jsonl").read_text().splitlines())
}
FORM_FILES = sorted(path.name for path in FIXTURES.glob("*.form"))
# Keys of the expected records that the stateless adapter does not produce, or that live outside ``data``.
NOT_IN_DATA = {"event_id", "ignored", "state_update_only", "idempotency_key", "type"}

NOW = datetime(2026, 3, 4, 15, 21, tzinfo=UTC)
INGEST_URL = "https://webhookd.example.org/ingest/twilio/src_01HZX"
CREDENTIALS = {"auth_token": TOKEN}


# -- helpers -------------------------------------------------------------------------------------


def callback(url: str, body: bytes, signature: str | None) -> RawCallback:
    headers = {} if signature is None else {"x-twilio-signature": signature}
    return RawCallback(url=url, headers=headers, body=body, query=parse_qsl(urlsplit(url).query))


def fixture_callback(name: str, body: bytes | None = None) -> RawCallback:
    meta = SIGNATURES["files"][name]
    raw = (FIXTURES / name).read_bytes() if body is None else body
    return callback(meta["url"], raw, meta["headers"]["X-Twilio-Signature"])


def twilio_signed(
    fields: dict[str, str], url: str = INGEST_URL, *, signed_url: str | None = None
) -> RawCallback:
    """A form callback signed by the twilio SDK, as Twilio would send it to ``url``."""
    signature = RequestValidator(TOKEN).compute_signature(signed_url or url, fields)
    return callback(url, urlencode(fields).encode(), signature)


def verify(raw: RawCallback) -> None:
    TwilioAdapter().verify(raw, CREDENTIALS, NOW)


def parse_one(raw: RawCallback) -> NormalizedCall:
    (call,) = TwilioAdapter().parse(raw)
    return call


def status_fields(status: str, direction: str = "outbound-api", **extra: str) -> dict[str, str]:
    return {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": "CA" + "1" * 32,
        "CallStatus": status,
        "Direction": direction,
        "From": "+15555550123",
        "To": "+15555550142",
        "Timestamp": "Wed, 04 Mar 2026 15:20:56 +0000",
        "SequenceNumber": "3",
        "CallDuration": "0",
        **extra,
    }


def flip_one_byte(body: bytes) -> bytes:
    at = body.index(b"CallSid=") + len(b"CallSid=") + 5
    return body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]


# -- fixtures: signatures --------------------------------------------------------------------------


def test_there_are_twilio_fixtures() -> None:
    assert len(FORM_FILES) >= 4
    assert set(FORM_FILES) <= set(SIGNATURES["files"]) & set(EXPECTED)


@pytest.mark.parametrize("name", FORM_FILES)
def test_fixture_signature_verifies(name: str) -> None:
    verify(fixture_callback(name))


@pytest.mark.parametrize("name", FORM_FILES)
def test_fixture_with_one_byte_changed_fails(name: str) -> None:
    body = flip_one_byte((FIXTURES / name).read_bytes())

    with pytest.raises(SignatureInvalid):
        verify(fixture_callback(name, body))


@pytest.mark.parametrize("name", FORM_FILES)
def test_fixture_signature_does_not_verify_for_another_url(name: str) -> None:
    raw = fixture_callback(name)

    with pytest.raises(SignatureInvalid):
        verify(RawCallback(INGEST_URL, raw.headers, raw.body, []))


@pytest.mark.parametrize("name", FORM_FILES)
def test_sdk_signature_for_our_url_verifies(name: str) -> None:
    fields = dict(parse_qsl((FIXTURES / name).read_text(), keep_blank_values=True))

    verify(twilio_signed(fields, f"{INGEST_URL}?tenant=t_demo"))


@pytest.mark.parametrize("name", FORM_FILES)
def test_sdk_signature_over_the_url_with_443_verifies(name: str) -> None:
    fields = dict(parse_qsl((FIXTURES / name).read_text(), keep_blank_values=True))
    with_port = INGEST_URL.replace(".org/", ".org:443/")

    verify(twilio_signed(fields, INGEST_URL, signed_url=with_port))
    verify(twilio_signed(fields, with_port, signed_url=INGEST_URL))


def test_sdk_signature_over_the_url_with_80_verifies_for_http() -> None:
    url = "http://webhookd.example.org/ingest/twilio/src_01HZX"

    verify(twilio_signed(status_fields("completed"), url, signed_url=url.replace(".org/", ".org:80/")))


# -- fixtures: normalization -------------------------------------------------------------------


@pytest.mark.parametrize("name", FORM_FILES)
def test_fixture_normalizes_to_the_expected_record(name: str) -> None:
    (expected,) = EXPECTED[name]

    call = parse_one(fixture_callback(name))

    data = call.event_data()
    mismatched = {
        key: (data.get(key, "<missing>"), want)
        for key, want in expected.items()
        if key not in NOT_IN_DATA and data.get(key, "<missing>") != want
    }
    assert mismatched == {}
    assert (call.type, call.idempotency_key) == (expected["type"], expected["idempotency_key"])


def test_query_parameters_become_metadata() -> None:
    call = parse_one(fixture_callback(FORM_FILES[0]))

    assert call.metadata == {"tenant": "t_demo"}


# -- normalization, one documented status at a time ---------------------------------------------


@pytest.mark.parametrize(
    ("fields", "event_type", "reason"),
    [
        (status_fields("queued"), "call.initiating", None),
        (status_fields("initiated"), "call.initiating", None),
        (status_fields("ringing"), "call.ringing", None),
        (status_fields("in-progress"), "call.in_progress", None),
        (status_fields("completed", CallDuration="47"), "call.completed", "normal"),
        (status_fields("busy"), "call.no_answer", "busy"),
        (status_fields("no-answer"), "call.no_answer", "no_answer"),
        (status_fields("no-answer", SipResponseCode="603"), "call.no_answer", "declined"),
        (status_fields("no-answer", SipResponseCode="600"), "call.no_answer", "declined"),
        (status_fields("failed"), "call.failed", "failed"),
        (status_fields("failed", SipResponseCode="404"), "call.failed", "invalid_number"),
        (status_fields("failed", SipResponseCode="410"), "call.failed", "invalid_number"),
        (status_fields("failed", SipResponseCode="484"), "call.failed", "invalid_number"),
        (status_fields("failed", SipResponseCode="604"), "call.failed", "invalid_number"),
        (status_fields("canceled", "outbound-api"), "call.failed", "canceled"),
        (status_fields("canceled", "outbound-dial"), "call.failed", "canceled"),
        (status_fields("canceled", "inbound"), "call.no_answer", "caller_abandoned"),
    ],
    ids=lambda value: value["CallStatus"] + "/" + value["Direction"] if isinstance(value, dict) else None,
)
def test_status_maps_to_type_and_reason(fields: dict[str, str], event_type: str, reason: str | None) -> None:
    raw = twilio_signed(fields)
    verify(raw)

    call = parse_one(raw)

    assert (call.type, call.reason) == (event_type, reason)


def test_busy_becomes_no_answer_with_reason_busy() -> None:
    call = parse_one(twilio_signed(status_fields("busy")))

    assert call.type == "call.no_answer"
    assert call.reason == "busy"
    assert call.ended_at == datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)


def test_duration_comes_from_call_duration_not_duration() -> None:
    call = parse_one(twilio_signed(status_fields("completed", CallDuration="47", Duration="1")))

    assert call.duration_seconds == 47
    assert call.answered_at == datetime(2026, 3, 4, 15, 20, 9, tzinfo=UTC)


def test_idempotency_key_without_sequence_number_ends_in_na() -> None:
    fields = status_fields("completed")
    del fields["SequenceNumber"]

    call = parse_one(twilio_signed(fields))

    assert call.idempotency_key == f"twilio:AC{'0' * 32}:CA{'1' * 32}:completed:na"


def test_missing_call_sid_is_payload_invalid() -> None:
    fields = status_fields("completed")
    del fields["CallSid"]
    raw = twilio_signed(fields)
    verify(raw)

    with pytest.raises(PayloadInvalid):
        TwilioAdapter().parse(raw)


def test_missing_signature_header_is_signature_invalid() -> None:
    raw = twilio_signed(status_fields("completed"))

    with pytest.raises(SignatureInvalid):
        verify(callback(raw.url, raw.body, None))


def test_signature_made_with_another_token_is_signature_invalid() -> None:
    fields = status_fields("completed")
    signature = RequestValidator("some_other_auth_token").compute_signature(INGEST_URL, fields)

    with pytest.raises(SignatureInvalid):
        verify(callback(INGEST_URL, urlencode(fields).encode(), signature))


# -- JSON variant: bodySHA256 ------------------------------------------------------------------


def json_callback(body: bytes, signed_body: bytes | None = None) -> RawCallback:
    digest = hashlib.sha256(body if signed_body is None else signed_body).hexdigest()
    url = f"{INGEST_URL}?bodySHA256={digest}"
    params: dict[str, Any] = {}
    return callback(url, body, RequestValidator(TOKEN).compute_signature(url, params))


def test_body_sha256_variant_verifies() -> None:
    verify(json_callback(b'{"CallSid": "CA1", "CallStatus": "completed"}'))


def test_body_sha256_variant_with_a_changed_body_fails() -> None:
    signed = b'{"CallSid": "CA1", "CallStatus": "completed"}'

    with pytest.raises(SignatureInvalid):
        verify(json_callback(signed.replace(b"completed", b"failed"), signed_body=signed))


def test_a_source_without_its_auth_token_fails_the_signature_check_not_the_request() -> None:
    body = b"CallSid=CA1&CallStatus=completed"
    callback = RawCallback("https://hooks.example.test/x", {"x-twilio-signature": "sig"}, body, [])
    with pytest.raises(SignatureInvalid, match="auth_token"):
        TwilioAdapter().verify(callback, {}, datetime.now(UTC))
