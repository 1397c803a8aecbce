"""Voice-AI platform webhooks (ElevenLabs, Retell, Vapi): signatures and normalization.

Fresh requests are signed here from the documented algorithms, independently of the adapters' own helpers.
The Retell signer mirrors ``retell.lib.webhook_auth`` (retell-sdk 6.2.13): ``v=<ms>,d=<hex>`` over
``body + str(ms)``, refused when ``|now - v| > 5 min``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.paths import CARRIER_FIXTURES
from webhookd.exceptions import IngestError, PayloadInvalid, SignatureInvalid
from webhookd.ingest.base import CarrierAdapter, RawCallback
from webhookd.ingest.elevenlabs import ElevenLabsAdapter
from webhookd.ingest.normalize import NormalizedCall, epoch_time
from webhookd.ingest.retell import RetellAdapter
from webhookd.ingest.vapi import VapiAdapter
from webhookd.inputs import MAX_JSON_DEPTH

CARRIERS = ("elevenlabs", "retell", "vapi")
SIGNATURES = {
    carrier: json.loads((CARRIER_FIXTURES / carrier / "_signatures.json").read_text()) for carrier in CARRIERS
}
EXPECTED = {
    (carrier, record["file"]): record["normalized"]
    for carrier in CARRIERS
    for record in map(
        json.loads, (CARRIER_FIXTURES / carrier / "_expected_normalized.jsonl").read_text().splitlines()
    )
}
FIXTURE_CASES = [
    (carrier, path.name)
    for carrier in CARRIERS
    for path in sorted((CARRIER_FIXTURES / carrier).glob("[0-9]*.json"))
]
# Keys of the expected records that the stateless adapter does not produce, or that live outside ``data``.
NOT_IN_DATA = {"event_id", "ignored", "state_update_only", "idempotency_key", "type"}

ELEVENLABS_SECRET: str = SIGNATURES["elevenlabs"]["secret"]
RETELL_API_KEY: str = SIGNATURES["retell"]["api_key"]
VAPI_HMAC_SECRET: str = SIGNATURES["vapi"]["hmac_credential_defaults"]["secret"]
VAPI_LEGACY_SECRET: str = SIGNATURES["vapi"]["legacy_shared_secret_header"]["X-Vapi-Secret"]
ADAPTERS: dict[str, CarrierAdapter] = {
    "elevenlabs": ElevenLabsAdapter(),
    "retell": RetellAdapter(),
    "vapi": VapiAdapter(),
}
CREDENTIALS = {
    "elevenlabs": {"webhook_secret": ELEVENLABS_SECRET},
    "retell": {"api_key": RETELL_API_KEY},
    "vapi": {"secret": VAPI_HMAC_SECRET},  # the fixture is signed with the HMAC credential
}

NOW = datetime(2026, 3, 4, 15, 22, tzinfo=UTC)
"""Pinned clock: the fixtures were signed between 15:20:57Z and 15:21:10Z that day."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOWS = {
    # carrier: (how old a signature may be, how far ahead it may be, clock resolution)
    "elevenlabs": (timedelta(minutes=30), timedelta(minutes=5), timedelta(seconds=1)),
    "retell": (timedelta(minutes=5), timedelta(minutes=5), timedelta(milliseconds=1)),
    "vapi": (timedelta(minutes=5), timedelta(minutes=5), timedelta(seconds=1)),
}


# -- helpers -------------------------------------------------------------------------------------


def unix_s(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(seconds=1)


def unix_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


ARABIC_INDIC_NOW = "".join(chr(0x0660 + int(digit)) for digit in str(unix_s(NOW)))
"""``NOW`` in unix seconds in Arabic-Indic digits: ``str.isdigit`` accepts them, a signature must not."""


def hex_hmac(key: str, message: bytes) -> str:
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(carrier: str, body: bytes, at: datetime = NOW, key: str | None = None) -> dict[str, str]:
    """The headers each platform would send with ``body`` at ``at``, by its documented scheme."""
    if carrier == "elevenlabs":
        t = unix_s(at)
        return {
            "ElevenLabs-Signature": f"t={t},v0={hex_hmac(key or ELEVENLABS_SECRET, f'{t}.'.encode() + body)}"
        }
    if carrier == "retell":
        ms = unix_ms(at)
        return {"x-retell-signature": f"v={ms},d={hex_hmac(key or RETELL_API_KEY, body + str(ms).encode())}"}
    t = unix_s(at)
    return {"x-timestamp": str(t), "x-signature": hex_hmac(key or VAPI_HMAC_SECRET, f"{t}.".encode() + body)}


def callback(carrier: str, body: bytes, headers: dict[str, str]) -> RawCallback:
    return RawCallback(f"https://webhookd.example.org/ingest/{carrier}/src_01HZX", headers, body, [])


def fixture_body(carrier: str, name: str) -> bytes:
    return (CARRIER_FIXTURES / carrier / name).read_bytes()


def fixture_payload(carrier: str) -> dict[str, Any]:
    """The (first) fixture body of a carrier, as a fresh dict to edit."""
    name = next(file for owner, file in FIXTURE_CASES if owner == carrier)
    payload: dict[str, Any] = json.loads(fixture_body(carrier, name))
    return payload


def fixture_callback(carrier: str, name: str, body: bytes | None = None) -> RawCallback:
    headers = SIGNATURES[carrier]["files"][name]["headers"]
    return callback(carrier, fixture_body(carrier, name) if body is None else body, dict(headers))


def verify(
    carrier: str, raw: RawCallback, now: datetime = NOW, credentials: dict[str, str] | None = None
) -> None:
    ADAPTERS[carrier].verify(raw, CREDENTIALS[carrier] if credentials is None else credentials, now)


def signed(carrier: str, payload: dict[str, Any] | bytes, at: datetime = NOW) -> RawCallback:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return callback(carrier, body, signed_headers(carrier, body, at))


def signed_parse(carrier: str, payload: dict[str, Any] | bytes) -> list[NormalizedCall]:
    raw = signed(carrier, payload)
    verify(carrier, raw)
    return ADAPTERS[carrier].parse(raw)


def flip_one_byte(body: bytes) -> bytes:
    at = len(body) // 2
    return body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]


def types(calls: list[NormalizedCall]) -> list[str | None]:
    return [call.type for call in calls]


# -- fixtures: signatures --------------------------------------------------------------------------


def test_every_platform_has_fixtures() -> None:
    for carrier in CARRIERS:
        names = {name for owner, name in FIXTURE_CASES if owner == carrier}
        assert names
        assert names <= set(SIGNATURES[carrier]["files"]) & {
            name for owner, name in EXPECTED if owner == carrier
        }


@pytest.mark.parametrize(("carrier", "name"), FIXTURE_CASES)
def test_fixture_verifies_with_its_recorded_headers(carrier: str, name: str) -> None:
    verify(carrier, fixture_callback(carrier, name))


@pytest.mark.parametrize(("carrier", "name"), FIXTURE_CASES)
@pytest.mark.parametrize("case", [str.lower, str.upper], ids=["lower", "upper"])
def test_header_names_are_case_insensitive(carrier: str, name: str, case: Any) -> None:
    raw = fixture_callback(carrier, name)

    verify(carrier, callback(carrier, raw.body, {case(key): value for key, value in raw.headers.items()}))


@pytest.mark.parametrize(("carrier", "name"), FIXTURE_CASES)
def test_fixture_with_one_byte_changed_fails(carrier: str, name: str) -> None:
    body = flip_one_byte(fixture_body(carrier, name))

    with pytest.raises(SignatureInvalid):
        verify(carrier, fixture_callback(carrier, name, body))


@pytest.mark.parametrize(("carrier", "name"), FIXTURE_CASES)
def test_fixture_with_one_byte_appended_fails(carrier: str, name: str) -> None:
    body = fixture_body(carrier, name) + b" "

    with pytest.raises(SignatureInvalid):
        verify(carrier, fixture_callback(carrier, name, body))


@pytest.mark.parametrize(("carrier", "name"), FIXTURE_CASES)
@pytest.mark.parametrize("days", [1, -1], ids=["stale", "future"])
def test_fixture_replayed_a_day_off_fails(carrier: str, name: str, days: int) -> None:
    with pytest.raises(SignatureInvalid):
        verify(carrier, fixture_callback(carrier, name), NOW + timedelta(days=days))


@pytest.mark.parametrize(("carrier", "name"), FIXTURE_CASES)
def test_fixture_with_another_secret_fails(carrier: str, name: str) -> None:
    (credential,) = CREDENTIALS[carrier]

    with pytest.raises(SignatureInvalid):
        verify(carrier, fixture_callback(carrier, name), credentials={credential: "some_other_secret"})


@pytest.mark.parametrize("carrier", CARRIERS)
def test_source_without_its_credential_fails(carrier: str) -> None:
    raw = signed(carrier, fixture_payload(carrier))

    with pytest.raises(SignatureInvalid):
        verify(carrier, raw, credentials={})


@pytest.mark.parametrize("carrier", CARRIERS)
def test_credential_names_match_the_model(carrier: str) -> None:
    assert ADAPTERS[carrier].credential_names == tuple(CREDENTIALS[carrier])


# -- fresh signatures and time windows ---------------------------------------------------------------


@pytest.mark.parametrize(("carrier", "name"), FIXTURE_CASES)
def test_fresh_signature_over_the_fixture_verifies(carrier: str, name: str) -> None:
    at = NOW + timedelta(hours=3, milliseconds=417)

    verify(carrier, signed(carrier, fixture_body(carrier, name), at), at)


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("edge", ["oldest", "newest"])
def test_signature_at_the_edge_of_the_window_verifies(carrier: str, edge: str) -> None:
    max_age, max_ahead, _ = WINDOWS[carrier]
    now = NOW + max_age if edge == "oldest" else NOW - max_ahead

    verify(carrier, signed(carrier, fixture_payload(carrier)), now)


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("edge", ["stale", "future"])
def test_signature_just_outside_the_window_fails(carrier: str, edge: str) -> None:
    max_age, max_ahead, tick = WINDOWS[carrier]
    now = NOW + max_age + tick if edge == "stale" else NOW - max_ahead - tick

    with pytest.raises(SignatureInvalid):
        verify(carrier, signed(carrier, fixture_payload(carrier)), now)


@pytest.mark.parametrize("carrier", CARRIERS)
def test_missing_signature_headers_fail(carrier: str) -> None:
    raw = signed(carrier, fixture_payload(carrier))

    with pytest.raises(SignatureInvalid):
        verify(carrier, callback(carrier, raw.body, {"Content-Type": "application/json"}))


def good_elevenlabs_header() -> str:
    return signed_headers("elevenlabs", b"{}")["ElevenLabs-Signature"]


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={unix_s(NOW)}",
        "v0=" + "0" * 64,
        good_elevenlabs_header().replace("t=", "t=x"),
        good_elevenlabs_header().replace("v0=", "v1="),
        good_elevenlabs_header().replace(str(unix_s(NOW)), ARABIC_INDIC_NOW),
        good_elevenlabs_header().replace(str(unix_s(NOW)), "9" * 400),
        good_elevenlabs_header()[:-1],
    ],
)
def test_malformed_elevenlabs_signature_fails(header: str) -> None:
    with pytest.raises(SignatureInvalid):
        verify("elevenlabs", callback("elevenlabs", b"{}", {"ElevenLabs-Signature": header}))


def test_elevenlabs_accepts_any_matching_v0() -> None:
    good = good_elevenlabs_header()
    t, v0 = good.split(",")

    verify("elevenlabs", callback("elevenlabs", b"{}", {"ElevenLabs-Signature": f"{t},v0={'0' * 64},{v0}"}))


def good_retell_header() -> str:
    return signed_headers("retell", b"{}")["x-retell-signature"]


@pytest.mark.parametrize(
    "header",
    [
        "",
        "v=,d=",
        good_retell_header()[:-1],
        good_retell_header() + "0",
        ",".join(reversed(good_retell_header().split(","))),
        good_retell_header().replace("v=", "v=\u0661"),
        good_retell_header().replace(str(unix_ms(NOW)), str(unix_s(NOW))),
        good_retell_header().replace(str(unix_ms(NOW)), "9" * 40),
    ],
)
def test_malformed_retell_signature_fails(header: str) -> None:
    with pytest.raises(SignatureInvalid):
        verify("retell", callback("retell", b"{}", {"x-retell-signature": header}))


def test_retell_signs_body_then_milliseconds_not_the_other_way() -> None:
    ms = unix_ms(NOW)
    digest = hex_hmac(RETELL_API_KEY, str(ms).encode() + b"{}")

    with pytest.raises(SignatureInvalid):
        verify("retell", callback("retell", b"{}", {"x-retell-signature": f"v={ms},d={digest}"}))


def test_vapi_legacy_shared_secret_header_verifies() -> None:
    raw = callback("vapi", b"{}", {"X-Vapi-Secret": VAPI_LEGACY_SECRET})

    verify("vapi", raw, credentials={"secret": VAPI_LEGACY_SECRET})


@pytest.mark.parametrize("given", ["", VAPI_HMAC_SECRET, VAPI_LEGACY_SECRET + "x", VAPI_LEGACY_SECRET[:-1]])
def test_vapi_wrong_legacy_secret_fails(given: str) -> None:
    with pytest.raises(SignatureInvalid):
        verify(
            "vapi",
            callback("vapi", b"{}", {"X-Vapi-Secret": given}),
            credentials={"secret": VAPI_LEGACY_SECRET},
        )


@pytest.mark.parametrize("name", [name for carrier, name in FIXTURE_CASES if carrier == "vapi"])
def test_vapi_fixture_hmac_does_not_verify_with_the_legacy_secret(name: str) -> None:
    with pytest.raises(SignatureInvalid):
        verify("vapi", fixture_callback("vapi", name), credentials={"secret": VAPI_LEGACY_SECRET})


def test_vapi_valid_hmac_with_a_wrong_legacy_header_verifies() -> None:
    raw = signed("vapi", b"{}")

    verify("vapi", callback("vapi", raw.body, {**raw.headers, "X-Vapi-Secret": "wrong"}))


@pytest.mark.parametrize("timestamp", [None, "", "abc", str(unix_ms(NOW)), ARABIC_INDIC_NOW, "9" * 400])
def test_vapi_hmac_without_a_usable_timestamp_fails(timestamp: str | None) -> None:
    headers = signed_headers("vapi", b"{}")
    if timestamp is None:
        del headers["x-timestamp"]
    else:
        headers["x-timestamp"] = timestamp

    with pytest.raises(SignatureInvalid):
        verify("vapi", callback("vapi", b"{}", headers))


# -- fixtures: normalization ---------------------------------------------------------------------


@pytest.mark.parametrize(("carrier", "name"), FIXTURE_CASES)
def test_fixture_normalizes_to_the_expected_records(carrier: str, name: str) -> None:
    expected = [record for record in EXPECTED[(carrier, name)] if not record["ignored"]]

    calls = ADAPTERS[carrier].parse(fixture_callback(carrier, name))

    assert len(calls) == len(expected)
    for call, want in zip(calls, expected, strict=True):
        data = call.event_data()
        mismatched = {
            key: (data.get(key, "<missing>"), value)
            for key, value in want.items()
            if key not in NOT_IN_DATA and data.get(key, "<missing>") != value
        }
        assert mismatched == {}
        want_type = None if want["state_update_only"] else want["type"]
        assert (call.type, call.idempotency_key) == (want_type, want["idempotency_key"])


@pytest.mark.parametrize(("carrier", "name"), FIXTURE_CASES)
def test_fixture_event_data_serializes(carrier: str, name: str) -> None:
    for call in ADAPTERS[carrier].parse(fixture_callback(carrier, name)):
        assert orjson.loads(orjson.dumps(call.event_data()))["source_kind"] == "ai_platform"


# -- ElevenLabs normalization ---------------------------------------------------------------------


def elevenlabs_failure(reason: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "agent_id": "agent_5ca1ab1e0000000000000001",
        "conversation_id": "conv_5ca1ab1e0000000000000002",
        "metadata": {
            "type": "twilio",
            "body": {
                "CallSid": "CA5ca1ab1e000000000000000000000002",
                "CallStatus": "busy",
                "Direction": "outbound-api",
                "From": "+15555550123",
                "To": "+15555550142",
            },
        },
    }
    if reason is not None:
        data["failure_reason"] = reason
    return {"type": "call_initiation_failure", "event_timestamp": 1772637670, "data": data}


@pytest.mark.parametrize(
    ("reason", "event_type"),
    [
        ("busy", "call.no_answer"),
        ("no-answer", "call.no_answer"),
        ("unknown", "call.failed"),
        ("failed", "call.failed"),
        (None, "call.failed"),
    ],
)
def test_elevenlabs_call_initiation_failure(reason: str | None, event_type: str) -> None:
    (call,) = signed_parse("elevenlabs", elevenlabs_failure(reason))

    assert (call.type, call.reason, call.carrier_cause) == (event_type, reason, reason)
    assert call.idempotency_key == "elevenlabs:conv_5ca1ab1e0000000000000002:call_initiation_failure"
    assert call.linked_carrier_call_id == "CA5ca1ab1e000000000000000000000002"
    assert (call.direction, call.from_number, call.to_number) == ("outbound", "+15555550123", "+15555550142")
    assert call.occurred_at == call.ended_at == datetime(2026, 3, 4, 15, 21, 10, tzinfo=UTC)
    assert (call.source_kind, call.transcript) == ("ai_platform", None)


def test_elevenlabs_sip_initiation_failure_links_the_sip_call_id() -> None:
    payload = elevenlabs_failure("busy")
    payload["data"]["metadata"] = {"type": "sip", "body": {"call_sid": "sip-leg-1", "sip_status_code": 486}}

    (call,) = signed_parse("elevenlabs", payload)

    assert (call.type, call.linked_carrier_call_id, call.direction) == ("call.no_answer", "sip-leg-1", None)


def test_elevenlabs_inbound_call_comes_from_the_external_number() -> None:
    payload = fixture_payload("elevenlabs")
    payload["data"]["metadata"]["phone_call"]["direction"] = "inbound"

    (call,) = signed_parse("elevenlabs", payload)

    assert (call.direction, call.from_number, call.to_number) == ("inbound", "+15555550142", "+15555550123")


def test_elevenlabs_system_dynamic_variables_are_not_client_ref() -> None:
    payload = fixture_payload("elevenlabs")
    variables = payload["data"]["conversation_initiation_client_data"]["dynamic_variables"]
    variables.update({"system__caller_id": "+15555550142", "system__call_sid": "CA1"})

    (call,) = signed_parse("elevenlabs", payload)

    assert call.client_ref == {"platform_call_id": "pc_0001"}


@pytest.mark.parametrize("event_type", ["post_call_audio", "voice_removal_notice", "something_new"])
def test_other_elevenlabs_types_give_nothing(event_type: str) -> None:
    assert signed_parse("elevenlabs", {"type": event_type, "event_timestamp": 1772637670, "data": {}}) == []


# -- Retell rows -------------------------------------------------------------------------------------


def retell_ended(**call: Any) -> dict[str, Any]:
    payload = fixture_payload("retell")
    payload["call"].update(call)
    return {**payload, "call": {key: value for key, value in payload["call"].items() if value is not None}}


@pytest.mark.parametrize(
    ("reason", "event_type"),
    [
        ("dial_busy", "call.no_answer"),
        ("dial_no_answer", "call.no_answer"),
        ("dial_failed", "call.failed"),
        ("invalid_destination", "call.failed"),
        ("user_hangup", "call.completed"),
        ("agent_hangup", "call.completed"),
        ("voicemail_reached", "call.completed"),
        ("max_duration_reached", "call.completed"),
    ],
)
def test_retell_call_ended_maps_disconnection_reason(reason: str, event_type: str) -> None:
    lifecycle, transcript = signed_parse("retell", retell_ended(disconnection_reason=reason))

    assert (lifecycle.type, lifecycle.reason, lifecycle.carrier_cause) == (event_type, reason, reason)
    assert lifecycle.ended_at == datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)
    assert transcript.type == "call.transcript.ready"


@pytest.mark.parametrize("reason", ["dial_busy", "dial_no_answer", "dial_failed", "invalid_destination"])
def test_retell_unanswered_call_has_no_answer_time_or_duration(reason: str) -> None:
    (call,) = signed_parse("retell", retell_ended(disconnection_reason=reason, transcript=None))

    assert (call.answered_at, call.duration_seconds) == (None, None)


def test_retell_call_ended_without_a_reason_is_completed() -> None:
    (call, _) = signed_parse("retell", retell_ended(disconnection_reason=None))

    assert (call.type, call.reason) == ("call.completed", None)


@pytest.mark.parametrize("transcript", [None, ""])
def test_retell_without_a_transcript_gives_only_the_terminal(transcript: str | None) -> None:
    calls = signed_parse("retell", retell_ended(transcript=transcript, transcript_object=[]))

    assert types(calls) == ["call.completed"]


def test_retell_transcript_object_alone_gives_turns() -> None:
    turns = [
        {"role": "agent", "content": "Hi there.", "words": [{"word": "Hi", "start": 0.4, "end": 0.6}]},
        {"role": "user", "content": "Hello.", "words": []},
    ]

    _, call = signed_parse("retell", retell_ended(transcript=None, transcript_object=turns))

    assert call.transcript == {
        "format": "turns",
        "text": None,
        "turns": [
            {"role": "agent", "text": "Hi there.", "offset_seconds": 0.4},
            {"role": "user", "text": "Hello.", "offset_seconds": None},
        ],
    }


def test_retell_linked_call_id_from_a_non_twilio_identifier() -> None:
    (call, _) = signed_parse(
        "retell", retell_ended(telephony_identifier={"telnyx_call_control_id": "v3:abc"})
    )

    assert call.linked_carrier_call_id == "v3:abc"


@pytest.mark.parametrize("event", ["call_started", "call_analyzed", "transcript_updated"])
def test_other_retell_events_give_nothing(event: str) -> None:
    assert signed_parse("retell", {**fixture_payload("retell"), "event": event}) == []


# -- Vapi rows ---------------------------------------------------------------------------------------


def vapi_report(**message: Any) -> dict[str, Any]:
    payload = fixture_payload("vapi")
    payload["message"].update(message)
    return {"message": {key: value for key, value in payload["message"].items() if value is not None}}


@pytest.mark.parametrize(
    ("reason", "event_type"),
    [
        ("customer-busy", "call.no_answer"),
        ("customer-did-not-answer", "call.no_answer"),
        ("pipeline-error-openai-llm-failed", "call.failed"),
        ("twilio-failed-to-connect-call", "call.failed"),
        ("call.in-progress.error-vapifault-transport-never-connected", "call.failed"),
        ("customer-ended-call", "call.completed"),
        ("assistant-ended-call", "call.completed"),
        ("silence-timed-out", "call.completed"),
        ("voicemail", "call.completed"),
        (None, "call.completed"),
    ],
)
def test_vapi_end_of_call_report_maps_ended_reason(reason: str | None, event_type: str) -> None:
    lifecycle, transcript = signed_parse("vapi", vapi_report(endedReason=reason))

    assert (lifecycle.type, lifecycle.reason, lifecycle.carrier_cause) == (event_type, reason, reason)
    assert lifecycle.ended_at == datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)
    answered = event_type == "call.completed"
    assert (lifecycle.answered_at is not None, lifecycle.duration_seconds is not None) == (answered, answered)
    assert transcript.type == "call.transcript.ready"


def test_vapi_without_an_artifact_transcript_gives_only_the_terminal() -> None:
    payload = vapi_report()
    del payload["message"]["artifact"]["transcript"]

    assert types(signed_parse("vapi", payload)) == ["call.completed"]


def test_vapi_inbound_call_comes_from_the_customer() -> None:
    payload = vapi_report()
    payload["message"]["call"]["type"] = "inboundPhoneCall"

    lifecycle, _ = signed_parse("vapi", payload)

    assert (lifecycle.direction, lifecycle.from_number, lifecycle.to_number) == (
        "inbound",
        "+15555550142",
        "+15555550123",
    )


def test_vapi_iso_timestamp_is_accepted() -> None:
    lifecycle, _ = signed_parse("vapi", vapi_report(timestamp="2026-03-04T15:20:58.000Z"))

    assert lifecycle.occurred_at == datetime(2026, 3, 4, 15, 20, 58, tzinfo=UTC)


@pytest.mark.parametrize(
    "message_type", ["status-update", "transcript", "tool-calls", "hang", "speech-update"]
)
def test_other_vapi_message_types_give_nothing(message_type: str) -> None:
    assert signed_parse("vapi", vapi_report(type=message_type)) == []


# -- malformed bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("carrier", "body"),
    [
        (carrier, body)
        for carrier in CARRIERS
        for body in [b"", b"not json", b"\xff\xfe", b"[]", b'"text"', b"null", b'{"a": NaN}', b"[" * 5000]
    ]
    + [
        ("elevenlabs", b"{}"),
        ("elevenlabs", b'{"type": 3, "data": {}}'),
        ("elevenlabs", b'{"type": "post_call_transcription"}'),
        ("elevenlabs", b'{"type": "post_call_transcription", "data": []}'),
        ("elevenlabs", b'{"type": "post_call_transcription", "data": {"conversation_id": 5}}'),
        ("elevenlabs", b'{"type": "call_initiation_failure", "data": {"conversation_id": ""}}'),
        ("retell", b"{}"),
        ("retell", b'{"event": "call_ended"}'),
        ("retell", b'{"event": "call_ended", "call": "x"}'),
        ("retell", b'{"event": "call_ended", "call": {"call_id": null}}'),
        ("vapi", b"{}"),
        ("vapi", b'{"message": []}'),
        ("vapi", b'{"message": {"type": null}}'),
        ("vapi", b'{"message": {"type": "end-of-call-report"}}'),
        ("vapi", b'{"message": {"type": "end-of-call-report", "call": {"id": 7}}}'),
    ],
)
def test_malformed_body_is_payload_invalid(carrier: str, body: bytes) -> None:
    raw = signed(carrier, body)
    verify(carrier, raw)

    with pytest.raises(PayloadInvalid):
        ADAPTERS[carrier].parse(raw)


# -- time conversion -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "milliseconds", "expected"),
    [
        (1772637670, False, datetime(2026, 3, 4, 15, 21, 10, tzinfo=UTC)),
        ("1772637670", False, datetime(2026, 3, 4, 15, 21, 10, tzinfo=UTC)),
        (1772637670.5, False, datetime(2026, 3, 4, 15, 21, 10, 500000, tzinfo=UTC)),
        (1772637658123, True, datetime(2026, 3, 4, 15, 20, 58, 123000, tzinfo=UTC)),
        ("2026-03-04T15:20:58.000Z", True, datetime(2026, 3, 4, 15, 20, 58, tzinfo=UTC)),
        ("2026-03-04T16:20:58+01:00", False, datetime(2026, 3, 4, 15, 20, 58, tzinfo=UTC)),
        (None, False, None),
        (True, False, None),
        ("", True, None),
        ("soon", True, None),
        ([1], True, None),
        (float("nan"), True, None),
        (float("inf"), False, None),
        (1e300, True, None),
        ("0001-01-01T00:00:00+01:00", False, None),
    ],
)
def test_epoch_time(value: object, milliseconds: bool, expected: datetime | None) -> None:
    assert epoch_time(value, milliseconds=milliseconds) == expected


# -- fuzz: only IngestError comes out ----------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "post_call_transcription",
            "call_initiation_failure",
            "call_ended",
            "end-of-call-report",
            "busy",
            "outbound",
            "inbound",
            "outboundPhoneCall",
            "2026-03-04T15:20:58.000Z",
            "1772637670",
            "\u0000",
            "call\u0000id",
        ]
    )
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_refuse(carrier: str, body: bytes) -> None:
    """Verify and parse a correctly signed body: any outcome but an IngestError subclass is a bug."""
    raw = signed(carrier, body)
    adapter = ADAPTERS[carrier]
    try:
        adapter.verify(raw, CREDENTIALS[carrier], NOW)
        calls = adapter.parse(raw)
    except IngestError:
        return
    for call in calls:
        orjson.dumps(call.event_data())
        assert call.idempotency_key.startswith(f"{carrier}:")


def mutate(data: st.DataObject, value: Any) -> Any:
    """``value`` with random parts replaced by random JSON, removed, or left alone."""
    action = data.draw(st.integers(0, 7))
    if action == 0:
        return data.draw(JSON_VALUES)
    if isinstance(value, dict):
        kept = {key: item for key, item in value.items() if data.draw(st.integers(0, 9)) > 0}
        return {key: mutate(data, item) for key, item in kept.items()}
    if isinstance(value, list):
        return [mutate(data, item) for item in value]
    return value


@FUZZ
@given(st.sampled_from(CARRIERS), st.binary(max_size=1024))
def test_random_bytes_raise_only_ingest_errors(carrier: str, body: bytes) -> None:
    parse_or_refuse(carrier, body)


@FUZZ
@given(st.sampled_from(CARRIERS), JSON_VALUES)
def test_random_json_raises_only_ingest_errors(carrier: str, value: Any) -> None:
    parse_or_refuse(carrier, json.dumps(value).encode())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CARRIERS), st.data())
def test_mutated_fixtures_raise_only_ingest_errors(carrier: str, data: st.DataObject) -> None:
    payload = mutate(data, copy.deepcopy(fixture_payload(carrier)))

    parse_or_refuse(carrier, json.dumps(payload).encode())


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize(
    "extra",
    [
        json.loads('{"a":' * MAX_JSON_DEPTH + "{}" + "}" * MAX_JSON_DEPTH),
        "\u0000",
        {"k\u0000": "v"},
    ],
    ids=["nested too deep", "nul", "nul in a key"],
)
def test_a_fixture_with_json_nested_too_deep_or_a_nul_is_payload_invalid(carrier: str, extra: Any) -> None:
    with pytest.raises(PayloadInvalid):
        signed_parse(carrier, {**fixture_payload(carrier), "extra": extra})


@pytest.mark.parametrize("carrier", CARRIERS)
def test_a_fixture_nested_to_the_limit_parses_and_encodes_again(carrier: str) -> None:
    payload = fixture_payload(carrier)
    body = json.dumps({**payload, "extra": {}}).encode()
    levels = MAX_JSON_DEPTH - 1  # the body's own braces are the first level
    body = body[:-3] + b'{"a":' * (levels - 1) + b"{}" + b"}" * (levels - 1) + b"}"

    for call in signed_parse(carrier, body):
        orjson.dumps(call.event_data())


@FUZZ
@given(st.sampled_from(CARRIERS), st.text(max_size=120), st.text(max_size=30))
def test_random_signature_headers_raise_only_signature_invalid(carrier: str, header: str, stamp: str) -> None:
    name = {"elevenlabs": "ElevenLabs-Signature", "retell": "x-retell-signature", "vapi": "x-signature"}[
        carrier
    ]
    raw = callback(carrier, b"{}", {name: header, "x-timestamp": stamp, "X-Vapi-Secret": header})

    with pytest.raises(SignatureInvalid):
        verify(carrier, raw)
