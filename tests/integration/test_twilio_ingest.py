"""Twilio status callbacks through a real server: signed by the twilio SDK, delivered as call events."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook
from twilio.request_validator import RequestValidator
from yarl import URL

from tests.integration.harness import (
    Received,
    Receiver,
    auth,
    count_rows,
    provision_key,
    provision_source,
    running_receiver,
    running_server,
    server_settings,
)
from tests.paths import CARRIER_FIXTURES
from webhookd.models import CALL_EVENT_TYPES, Carrier, Scope

pytestmark = pytest.mark.anyio

FIXTURES = CARRIER_FIXTURES / "twilio"
TOKEN = json.loads((FIXTURES / "_signatures.json").read_text())["auth_token"]
LIFECYCLE = ["01_initiated.form", "02_ringing.form", "03_in-progress.form", "04_completed.form"]
EXPECTED = {
    line["file"]: line["normalized"][0]
    for line in map(json.loads, (FIXTURES / "_expected_normalized.jsonl").read_text().splitlines())
}
NOT_IN_EVENT_DATA = {"event_id", "idempotency_key", "type", "ignored", "state_update_only"}


def signed(url: str, body: bytes, token: str = TOKEN) -> dict[str, str]:
    """Headers as Twilio would send them for ``url``, signed with the twilio package itself."""
    params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(token).compute_signature(url, params),
    }


async def _setup(tmp_path: Path) -> tuple[Path, str, str]:
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS})
    source_id = await provision_source(db, "acme", Carrier.TWILIO, {"auth_token": TOKEN})
    return db, key, source_id


async def _subscribe_all(
    http: aiohttp.ClientSession, base: str, key: str, url: str, *, ordered: bool = False
) -> str:
    async with http.post(
        f"{base}/api/v1/webhook-subscriptions",
        headers=auth(key),
        json={"url": url, "events": list(CALL_EVENT_TYPES), "ordered": ordered},
    ) as response:
        assert response.status == 201
        secret: str = (await response.json())["secret"]
        return secret


async def test_lifecycle_becomes_call_events(tmp_path: Path) -> None:
    db, key, source_id = await _setup(tmp_path)
    async with (
        running_receiver() as receiver,
        running_server(server_settings(db)) as base,
        aiohttp.ClientSession() as http,
    ):
        secret = await _subscribe_all(http, base, key, receiver.url)
        url = f"{base}/ingest/twilio/{source_id}?platform_call_id=pc_0001"
        for name in LIFECYCLE:
            body = (FIXTURES / name).read_bytes()
            async with http.post(url, data=body, headers=signed(url, body)) as response:
                assert response.status == 200, await response.text()
        await receiver.wait_for(lambda got: len(got) == 4)

    events = {
        e["data"]["status_raw"]: e
        for e in (Webhook(secret).verify(r.body, r.headers) for r in receiver.requests)
    }
    assert [events[s]["type"] for s in ("initiated", "ringing", "in-progress", "completed")] == [
        "call.initiating",
        "call.ringing",
        "call.in_progress",
        "call.completed",
    ]
    for name in LIFECYCLE:
        expected = EXPECTED[name]
        data = events[expected["status_raw"]]["data"]
        for field, value in expected.items():
            if field not in NOT_IN_EVENT_DATA:
                assert data[field] == value, (name, field)
        assert data["metadata"] == {"platform_call_id": "pc_0001"}
    completed = events["completed"]["data"]
    assert completed["duration_seconds"] == 47  # CallDuration, not Duration (minutes)


async def test_an_ordered_subscription_gets_the_calls_events_in_order_through_a_retry(tmp_path: Path) -> None:
    """Ingest keys each event by its call: call.initiating fails once, and the call's later events
    wait for its retry instead of overtaking it."""
    db, key, source_id = await _setup(tmp_path)
    refused: list[str] = []

    def refuse_the_first_attempt(request: Received) -> int:
        if not refused:
            refused.append(request.json()["type"])
            return 500
        return 200

    settings = server_settings(db, WEBHOOKD_RETRY_SCHEDULE="0,0.3,0.3")
    async with (
        running_receiver(Receiver(refuse_the_first_attempt)) as receiver,
        running_server(settings) as base,
        aiohttp.ClientSession() as http,
    ):
        await _subscribe_all(http, base, key, receiver.url, ordered=True)
        url = f"{base}/ingest/twilio/{source_id}"
        for name in LIFECYCLE:
            body = (FIXTURES / name).read_bytes()
            async with http.post(url, data=body, headers=signed(url, body)) as response:
                assert response.status == 200, await response.text()
        await receiver.wait_for(lambda got: sum(r.status == 200 for r in got) == 4, timeout_s=20)

    delivered = [r.json()["type"] for r in receiver.requests if r.status == 200]
    assert refused == ["call.initiating"]
    assert delivered == ["call.initiating", "call.ringing", "call.in_progress", "call.completed"]


async def test_replayed_callback_stores_nothing_new(tmp_path: Path) -> None:
    db, _, source_id = await _setup(tmp_path)
    async with running_server(server_settings(db)) as base, aiohttp.ClientSession() as http:
        url = f"{base}/ingest/twilio/{source_id}"
        body = (FIXTURES / "04_completed.form").read_bytes()
        async with http.post(url, data=body, headers=signed(url, body)) as first:
            assert first.status == 200
            assert (await first.json())["duplicates"] == 0
        async with http.post(url, data=body, headers=signed(url, body)) as replay:
            assert replay.status == 200
            assert (await replay.json())["duplicates"] == 1
    assert count_rows(db, "events") == 1


@pytest.mark.parametrize("tamper", ["wrong_token", "changed_body", "missing_header", "other_url"])
async def test_bad_signature_is_401_and_stores_nothing(tmp_path: Path, tamper: str) -> None:
    db, _, source_id = await _setup(tmp_path)
    async with running_server(server_settings(db)) as base, aiohttp.ClientSession() as http:
        url = f"{base}/ingest/twilio/{source_id}"
        body = (FIXTURES / "04_completed.form").read_bytes()
        headers = {
            "wrong_token": signed(url, body, token="not-the-token"),
            "changed_body": signed(url, body.replace(b"CallDuration=47", b"CallDuration=48")),
            "missing_header": {"Content-Type": "application/x-www-form-urlencoded"},
            "other_url": signed(url + "?x=1", body),
        }[tamper]
        async with http.post(url, data=body, headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "invalid_signature"
    assert count_rows(db, "events") == 0


async def test_unknown_source_and_wrong_carrier_are_404(tmp_path: Path) -> None:
    db, _, source_id = await _setup(tmp_path)
    async with running_server(server_settings(db)) as base, aiohttp.ClientSession() as http:
        body = (FIXTURES / "01_initiated.form").read_bytes()
        for path in ("/ingest/twilio/src_unknown", f"/ingest/plivo/{source_id}"):
            async with http.post(base + path, data=body, headers=signed(base + path, body)) as response:
                assert response.status == 404
    assert count_rows(db, "events") == 0


async def test_oversized_body_is_413(tmp_path: Path) -> None:
    db, _, source_id = await _setup(tmp_path)
    settings = server_settings(db, WEBHOOKD_MAX_BODY_BYTES="1024")
    async with running_server(settings) as base, aiohttp.ClientSession() as http:
        url = f"{base}/ingest/twilio/{source_id}"
        body = b"CallSid=CA1&CallStatus=completed&Pad=" + b"x" * 2048
        async with http.post(url, data=body, headers=signed(url, body)) as response:
            assert response.status == 413
    assert count_rows(db, "events") == 0


async def test_public_base_url_is_what_gets_verified(tmp_path: Path) -> None:
    db, _, source_id = await _setup(tmp_path)
    settings = server_settings(db, WEBHOOKD_PUBLIC_BASE_URL="https://hooks.example.test")
    async with running_server(settings) as base, aiohttp.ClientSession() as http:
        body = (FIXTURES / "02_ringing.form").read_bytes()
        public = f"https://hooks.example.test/ingest/twilio/{source_id}"
        async with http.post(
            f"{base}/ingest/twilio/{source_id}", data=body, headers=signed(public, body)
        ) as response:
            assert response.status == 200
        async with http.post(
            f"{base}/ingest/twilio/{source_id}",
            data=body,
            headers=signed(f"{base}/ingest/twilio/{source_id}", body),
        ) as response:
            assert response.status == 401


async def test_signed_callback_url_parameter_delivers_to_that_url(tmp_path: Path) -> None:
    """The platform puts callback_url on the status-callback URL; Twilio signs it."""
    db, key, source_id = await _setup(tmp_path)
    async with (
        running_receiver() as receiver,
        running_server(server_settings(db)) as base,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{base}/api/v1/callback-secret", headers=auth(key)) as response:
            secret = (await response.json())["secret"]
        url = f"{base}/ingest/twilio/{source_id}?{urlencode({'callback_url': receiver.url + '/call-42'})}"
        body = (FIXTURES / "04_completed.form").read_bytes()
        # encoded=True: send the query bytes exactly as signed, as Twilio does.
        async with http.post(URL(url, encoded=True), data=body, headers=signed(url, body)) as response:
            assert response.status == 200
        await receiver.wait_for(lambda got: len(got) == 1)
    delivered = receiver.requests[0]
    assert delivered.path == "/hook/call-42"
    event = Webhook(secret).verify(delivered.body, delivered.headers)
    assert event["type"] == "call.completed"
    assert event["data"]["metadata"]["callback_url"] == receiver.url + "/call-42"


@pytest.mark.parametrize(
    "callback_url",
    [
        "http://[::1",  # malformed: urlsplit raises
        "http://[::127.0.0.1]:{port}/hook",
        "http://[::ffff:0:127.0.0.1]:{port}/hook",
        "http://[64:ff9b:1::7f00:1]:{port}/hook",
        "http://[::169.254.169.254]/latest",
    ],
)
async def test_signed_callback_url_that_is_malformed_or_blocked_is_dropped(
    tmp_path: Path, callback_url: str
) -> None:
    """The callback is still stored and answered 200; only its callback URL is ignored."""
    db, _, source_id = await _setup(tmp_path)
    settings = server_settings(db, WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS="false")
    async with (
        running_receiver() as receiver,
        running_server(settings) as base,
        aiohttp.ClientSession() as http,
    ):
        target = callback_url.format(port=receiver.url.split(":")[2].split("/")[0])
        url = f"{base}/ingest/twilio/{source_id}?{urlencode({'callback_url': target})}"
        body = (FIXTURES / "04_completed.form").read_bytes()
        async with http.post(URL(url, encoded=True), data=body, headers=signed(url, body)) as response:
            assert response.status == 200
            assert len((await response.json())["events"]) == 1
    assert count_rows(db, "deliveries") == 0
    assert receiver.requests == []


async def test_out_of_order_callbacks_deliver_only_forward_moves(tmp_path: Path) -> None:
    db, key, source_id = await _setup(tmp_path)
    async with (
        running_receiver() as receiver,
        running_server(server_settings(db)) as base,
        aiohttp.ClientSession() as http,
    ):
        await _subscribe_all(http, base, key, receiver.url)
        url = f"{base}/ingest/twilio/{source_id}"
        answers = []
        for name in ["03_in-progress.form", "01_initiated.form", "04_completed.form", "02_ringing.form"]:
            body = (FIXTURES / name).read_bytes()
            async with http.post(url, data=body, headers=signed(url, body)) as response:
                assert response.status == 200  # late ones are acknowledged too
                answers.append(len((await response.json())["events"]))
        await receiver.wait_for(lambda got: len(got) == 2)
    assert answers == [1, 0, 1, 0]
    assert {r.json()["type"] for r in receiver.requests} == {"call.in_progress", "call.completed"}
    assert count_rows(db, "call_callbacks") == 4  # every callback is recorded
