"""Delivery signatures verify with the third-party ``standardwebhooks`` package."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from webhookd.crypto import new_webhook_secret
from webhookd.delivery.signing import signing_key, webhook_headers

MSG_ID = "evt_01HZX0000000000000000000"
BODY = b'{"id":"evt_01HZX0000000000000000000","type":"call.completed","data":{"duration_seconds":47}}'


def headers_for(*secrets: str, body: bytes = BODY) -> dict[str, str]:
    keys = [signing_key(secret) for secret in secrets]
    return webhook_headers(keys, MSG_ID, int(time.time()), body)


def test_headers_carry_id_timestamp_and_a_v1_signature() -> None:
    now = int(time.time())

    headers = webhook_headers([signing_key(new_webhook_secret())], MSG_ID, now, BODY)

    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-timestamp"] == str(now)
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]


def test_signature_verifies_with_standardwebhooks() -> None:
    secret = new_webhook_secret()

    payload = Webhook(secret).verify(BODY, headers_for(secret))

    assert payload["data"] == {"duration_seconds": 47}


def test_tampered_body_fails_verification() -> None:
    secret = new_webhook_secret()
    headers = headers_for(secret)

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"47", b"48"), headers)


def test_wrong_secret_fails_verification() -> None:
    headers = headers_for(new_webhook_secret())

    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(BODY, headers)


def test_two_keys_give_two_signatures_that_each_verify() -> None:
    new, old = new_webhook_secret(), new_webhook_secret()

    headers = headers_for(new, old)

    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, headers)
    Webhook(old).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(BODY, headers)
