"""Custom headers per subscription and v1a (Ed25519) signatures, over the real API to a real receiver."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook

from tests.integration.harness import (
    MASTER_KEY,
    POSTGRES_DSN,
    MovableClock,
    Receiver,
    auth,
    create_key,
    opened_store,
    postgres_database_url,
    psql,
    query,
    running_receiver,
    running_server,
    server_settings,
)
from tests.integration.test_rotation_and_recovery import Client, _client
from webhookd.crypto import SecretBox, subscription_secret_context
from webhookd.models import Scope

pytestmark = pytest.mark.anyio

SUBSCRIPTIONS = "/api/v1/webhook-subscriptions"
TOLERANCE_S = 5 * 60
SECRET_VALUE = "Bearer s3cr3t-t0ken-that-must-not-leak"


def v1a_verifies(public_key: str, body: bytes, headers: dict[str, str]) -> bool:
    """A v1a verifier written from the Standard Webhooks spec: any ``v1a,`` entry of the space-separated
    ``webhook-signature`` that is an Ed25519 signature of ``{id}.{timestamp}.{body}`` by ``whpk_`` key,
    with the timestamp within the tolerance."""
    assert public_key.startswith("whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > TOLERANCE_S:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature), signed)
        except InvalidSignature:
            continue
        return True
    return False


def stored_bytes(db: Path) -> bytes:
    """Everything SQLite wrote: the database file and its write-ahead log, which holds recent commits."""
    return b"".join(path.read_bytes() for path in db.parent.glob(db.name + "*") if path.is_file())


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        yield running


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    async for made in _client(tmp_path, WEBHOOKD_RETRY_SCHEDULE="0"):
        yield made


async def create(client: Client, url: str, **fields: Any) -> dict[str, Any]:
    status, sub, _ = await client.call(
        "POST", SUBSCRIPTIONS, {"url": url, "events": ["call.completed"], **fields}
    )
    assert status == 201, sub
    return dict(sub)


async def delivered_once(client: Client, receiver: Receiver) -> tuple[bytes, dict[str, str]]:
    await client.publish()
    await receiver.wait_for(lambda got: len(got) == 1)
    return receiver.requests[0].body, receiver.requests[0].headers


async def test_custom_headers_arrive_and_the_signature_still_verifies(
    client: Client, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": SECRET_VALUE, "X-Tenant": "acme"}
    sub = await create(client, receiver.url, headers=headers)
    assert sub["headers"] == headers and sub["signature_scheme"] == "v1" and sub["public_key"] is None

    body, got = await delivered_once(client, receiver)

    assert got["Authorization"] == SECRET_VALUE and got["X-Tenant"] == "acme"
    assert got["Content-Type"] == "application/json"
    Webhook(sub["secret"]).verify(body, got)
    assert (await client.call("GET", f"{SUBSCRIPTIONS}/{sub['id']}"))[1]["headers"] == headers
    assert (await client.call("GET", SUBSCRIPTIONS))[1]["data"][0]["headers"] == headers
    assert SECRET_VALUE.encode() not in stored_bytes(client.db)
    assert SECRET_VALUE not in caplog.text


async def test_patch_replaces_the_headers_and_an_empty_object_clears_them(
    client: Client, receiver: Receiver
) -> None:
    sub = await create(client, receiver.url, headers={"X-One": "1", "X-Two": "2"})
    path = f"{SUBSCRIPTIONS}/{sub['id']}"

    status, patched, _ = await client.call("PATCH", path, {"headers": {"X-Three": "3"}})
    assert status == 200 and patched["headers"] == {"X-Three": "3"}
    _, got = await delivered_once(client, receiver)
    assert got["X-Three"] == "3" and "X-One" not in got

    status, cleared, _ = await client.call("PATCH", path, {"headers": {}})
    assert status == 200 and cleared["headers"] == {}


async def test_an_idempotent_create_keeps_the_original_headers(client: Client, receiver: Receiver) -> None:
    sub = await create(client, receiver.url, headers={"X-One": "1"})
    status, again, _ = await client.call(
        "POST",
        SUBSCRIPTIONS,
        {"url": receiver.url, "events": ["call.completed"], "headers": {"X-Other": "2"}},
    )
    assert status == 200 and again["id"] == sub["id"] and again["headers"] == {"X-One": "1"}
    assert "secret" not in again


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"Webhook-Signature": "v1,forged"}, "set by webhookd"),
        ({"Content-Type": "text/plain"}, "set by webhookd"),
        ({"HOST": "evil.example"}, "set by webhookd"),
        ({"Transfer-Encoding": "chunked"}, "hop-by-hop"),
        ({"Bad Name": "x"}, "header name"),
        ({"X-A": "line\r\nX-Injected: 1"}, "no line breaks"),
        ({"X-A": ""}, "1 to 1024"),
        ({"X-A": "x" * 1025}, "1 to 1024"),
        ({"X-A": 5}, "must be a string"),
        ({"X-A": "1", "x-a": "2"}, "given twice"),
        ({f"X-{n}": "v" for n in range(21)}, "at most 20"),
        (["X-A"], "at most 20"),
    ],
)
async def test_bad_headers_are_refused_with_a_reason(
    client: Client, receiver: Receiver, headers: Any, why: str
) -> None:
    status, error, _ = await client.call(
        "POST", SUBSCRIPTIONS, {"url": receiver.url, "events": ["call.completed"], "headers": headers}
    )
    assert status == 400 and why in error["error"]["message"], error


async def test_a_v1a_delivery_verifies_with_the_public_key(
    client: Client, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sub = await create(client, receiver.url, signature_scheme="v1a")
    assert sub["signature_scheme"] == "v1a" and sub["public_key"].startswith("whpk_") and "secret" not in sub

    body, got = await delivered_once(client, receiver)

    assert got["webhook-signature"].startswith("v1a,") and " " not in got["webhook-signature"]
    assert v1a_verifies(sub["public_key"], body, got)
    assert not v1a_verifies(sub["public_key"], body.replace(b"call.completed", b"call.completes"), got)
    private = client_private_key(client, sub["id"])
    assert private.startswith("whsk_")
    assert private.encode() not in stored_bytes(client.db) and private not in caplog.text
    _, shown, _ = await client.call("GET", f"{SUBSCRIPTIONS}/{sub['id']}")
    assert "whsk_" not in str(shown) and shown["public_key"] == sub["public_key"]


def client_private_key(client: Client, subscription_id: str) -> str:
    """The stored whsk_ key, decrypted with the test servers' master key, as webhookd does."""
    box = SecretBox(base64.b64decode(MASTER_KEY))
    (blob,) = query(client.db, "SELECT secret FROM subscriptions WHERE id = ?", subscription_id)[0]
    return box.decrypt(blob, subscription_secret_context(subscription_id)).decode()


async def test_a_v1a_rotation_signs_with_both_keys_then_the_new_alone(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = MovableClock()
    async for client in _client(tmp_path, clock):
        old = await create(client, receiver.url, signature_scheme="v1a")
        status, new, _ = await client.call("POST", f"{SUBSCRIPTIONS}/{old['id']}/rotate-secret")
        assert status == 200 and new["signature_scheme"] == "v1a" and new["secret"] is None
        assert new["public_key"] != old["public_key"]
        await client.publish()
        await receiver.wait_for(lambda got: len(got) == 1)
        clock.move_past(datetime.fromisoformat(new["previous_secret_expires_at"]))
        await client.publish()
        await receiver.wait_for(lambda got: len(got) == 2)
    during, after = receiver.requests
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert v1a_verifies(old["public_key"], during.body, during.headers)
    assert v1a_verifies(new["public_key"], during.body, during.headers)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert v1a_verifies(new["public_key"], after.body, after.headers)
    assert not v1a_verifies(old["public_key"], after.body, after.headers)


async def test_rotating_to_another_scheme_signs_with_both_schemes_meanwhile(
    client: Client, receiver: Receiver
) -> None:
    old = await create(client, receiver.url)
    path = f"{SUBSCRIPTIONS}/{old['id']}"
    status, new, _ = await client.call("POST", f"{path}/rotate-secret", {"signature_scheme": "v1a"})
    assert status == 200 and new["public_key"].startswith("whpk_") and new["secret"] is None

    body, got = await delivered_once(client, receiver)

    Webhook(old["secret"]).verify(body, got)
    assert v1a_verifies(new["public_key"], body, got)
    shown = (await client.call("GET", path))[1]
    assert (shown["signature_scheme"], shown["public_key"]) == ("v1a", new["public_key"])
    status, error, _ = await client.call("PATCH", path, {"signature_scheme": "v1"})
    assert status == 400 and "rotate-secret" in error["error"]["message"]


async def test_postgres_keeps_header_values_and_the_v1a_key_encrypted(schema: str, tmp_path: Path) -> None:
    url = await postgres_database_url(POSTGRES_DSN, schema)
    settings = server_settings(tmp_path / "unused.db", WEBHOOKD_DATABASE_URL=url)
    async with opened_store(settings) as store:
        key = await create_key(store, "acme", {Scope.MANAGE_WEBHOOKS})
    async with running_server(settings) as base, aiohttp.ClientSession() as http:
        body = {
            "url": "https://hooks.example.com/pg",
            "events": ["call.completed"],
            "headers": {"X-A": SECRET_VALUE},
        }
        async with http.post(
            base + SUBSCRIPTIONS, json={**body, "signature_scheme": "v1a"}, headers=auth(key)
        ) as r:
            assert r.status == 201
            sub = await r.json()
        async with http.get(f"{base}{SUBSCRIPTIONS}/{sub['id']}", headers=auth(key)) as r:
            assert (await r.json())["headers"] == {"X-A": SECRET_VALUE}
    stored = psql(f"SELECT headers, secret FROM {schema}.subscriptions", "-At").stdout
    assert stored.count("\\x") == 2  # both columns hold bytes, shown as hex
    box = SecretBox(base64.b64decode(MASTER_KEY))
    sealed = bytes.fromhex(stored.split("|")[1].strip().removeprefix("\\x"))
    private = box.decrypt(sealed, subscription_secret_context(sub["id"]))
    assert private.startswith(b"whsk_")
    assert SECRET_VALUE.encode().hex() not in stored and private.hex() not in stored
