"""One signer per carrier, for posting callbacks to a real server at the real current time.

The fixtures' recorded signatures are from 2026-03-04 (and, for Twilio and Plivo, over another URL), so
every request is signed again at send time with the carrier's own scheme and the fixture secrets:
Twilio with the ``twilio`` package's ``RequestValidator``, Plivo with the ``plivo`` SDK's
``signature_v3``, Telnyx (Call Control and TeXML) with Ed25519 from the fixture seed, Vonage with PyJWT
(HS256, ``payload_hash``), and ElevenLabs, Retell and Vapi with their HMACs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from plivo.utils import signature_v3
from twilio.request_validator import RequestValidator

from tests.paths import CARRIER_FIXTURES
from webhookd.models import CREDENTIAL_NAMES, Carrier


def _signatures(carrier: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CARRIER_FIXTURES / carrier / "_signatures.json").read_text())
    return loaded


_TELNYX = _signatures("telnyx")
TELNYX_SEED = bytes.fromhex(_TELNYX["private_seed_hex"])

SECRETS: dict[Carrier, str] = {
    Carrier.TWILIO: _signatures("twilio")["auth_token"],
    Carrier.TELNYX: _TELNYX["public_key_base64"],
    Carrier.TELNYX_TEXML: _TELNYX["public_key_base64"],
    Carrier.VONAGE: _signatures("vonage")["signature_secret"],
    Carrier.PLIVO: _signatures("plivo")["auth_token"],
    Carrier.ELEVENLABS: _signatures("elevenlabs")["secret"],
    Carrier.RETELL: _signatures("retell")["api_key"],
    Carrier.VAPI: _signatures("vapi")["hmac_credential_defaults"]["secret"],
}
"""What the source stores: the fixture's secret (for Telnyx, the public key of the fixture seed)."""

SIGNING_KEYS: dict[Carrier, str | bytes] = {
    **SECRETS,
    Carrier.TELNYX: TELNYX_SEED,
    Carrier.TELNYX_TEXML: TELNYX_SEED,
}
"""What the carrier signs with (for Telnyx, the private seed)."""

WRONG_KEYS: dict[Carrier, str | bytes] = {
    carrier: b"\x01" * 32 if isinstance(key, bytes) else "wrong_" + key
    for carrier, key in SIGNING_KEYS.items()
}
"""Another key of the same shape: a signature made with it must not verify."""

FORM = "application/x-www-form-urlencoded"
CONTENT_TYPES = {
    Carrier.TWILIO: FORM,
    Carrier.TELNYX_TEXML: FORM,
    Carrier.PLIVO: FORM,
}


def credentials(carrier: Carrier) -> dict[str, str]:
    """The source credentials, under the name ``CREDENTIAL_NAMES`` gives for the carrier."""
    (name,) = CREDENTIAL_NAMES[carrier]
    return {name: SECRETS[carrier]}


def fixture_dir(carrier: Carrier) -> Path:
    return CARRIER_FIXTURES / carrier.value


def _form_params(body: bytes) -> dict[str, str]:
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def sign_twilio(url: str, body: bytes, key: str | bytes, now: float) -> dict[str, str]:
    assert isinstance(key, str)
    return {"X-Twilio-Signature": RequestValidator(key).compute_signature(url, _form_params(body))}


def sign_plivo(url: str, body: bytes, key: str | bytes, now: float) -> dict[str, str]:
    assert isinstance(key, str)
    nonce = str(secrets.randbelow(10**20)).zfill(20)
    base = signature_v3.construct_post_url(url, _form_params(body)).decode()
    signature = signature_v3.get_signature_v3(key.encode(), base, nonce.encode()).decode()
    return {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}


def sign_telnyx(url: str, body: bytes, key: str | bytes, now: float) -> dict[str, str]:
    assert isinstance(key, bytes)
    timestamp = str(int(now))
    signature = Ed25519PrivateKey.from_private_bytes(key).sign(timestamp.encode() + b"|" + body)
    return {
        "telnyx-timestamp": timestamp,
        "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
    }


def sign_vonage(url: str, body: bytes, key: str | bytes, now: float) -> dict[str, str]:
    claims = {
        "iat": int(now),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "api_key": "f1x7ur3s",
        "application_id": "5ca1ab1e-0000-4000-8000-0000000a9901",
    }
    return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm='HS256')}"}


def _hex_hmac(key: str | bytes, message: bytes) -> str:
    raw = key.encode() if isinstance(key, str) else key
    return hmac.new(raw, message, hashlib.sha256).hexdigest()


def sign_elevenlabs(url: str, body: bytes, key: str | bytes, now: float) -> dict[str, str]:
    timestamp = str(int(now))
    return {"ElevenLabs-Signature": f"t={timestamp},v0={_hex_hmac(key, timestamp.encode() + b'.' + body)}"}


def sign_retell(url: str, body: bytes, key: str | bytes, now: float) -> dict[str, str]:
    millis = str(int(now * 1000))
    return {"x-retell-signature": f"v={millis},d={_hex_hmac(key, body + millis.encode())}"}


def sign_vapi(url: str, body: bytes, key: str | bytes, now: float) -> dict[str, str]:
    timestamp = str(int(now))
    return {"x-timestamp": timestamp, "x-signature": _hex_hmac(key, timestamp.encode() + b"." + body)}


Signer = Callable[[str, bytes, str | bytes, float], dict[str, str]]
SIGNERS: dict[Carrier, Signer] = {
    Carrier.TWILIO: sign_twilio,
    Carrier.TELNYX: sign_telnyx,
    Carrier.TELNYX_TEXML: sign_telnyx,
    Carrier.VONAGE: sign_vonage,
    Carrier.PLIVO: sign_plivo,
    Carrier.ELEVENLABS: sign_elevenlabs,
    Carrier.RETELL: sign_retell,
    Carrier.VAPI: sign_vapi,
}
SIGNATURE_HEADERS: dict[Carrier, tuple[str, ...]] = {
    Carrier.TWILIO: ("X-Twilio-Signature",),
    Carrier.TELNYX: ("telnyx-signature-ed25519", "telnyx-timestamp"),
    Carrier.TELNYX_TEXML: ("telnyx-signature-ed25519", "telnyx-timestamp"),
    Carrier.VONAGE: ("Authorization",),
    Carrier.PLIVO: ("X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce", "X-Plivo-Signature-Ma-V3"),
    Carrier.ELEVENLABS: ("ElevenLabs-Signature",),
    Carrier.RETELL: ("x-retell-signature",),
    Carrier.VAPI: ("x-signature", "x-timestamp", "X-Vapi-Secret"),
}


def signed_headers(
    carrier: Carrier,
    url: str,
    body: bytes,
    *,
    key: str | bytes | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """The headers ``carrier`` would send posting ``body`` to ``url`` now, signature included."""
    signing_key = SIGNING_KEYS[carrier] if key is None else key
    moment = time.time() if now is None else now
    return {
        "Content-Type": CONTENT_TYPES.get(carrier, "application/json"),
        **SIGNERS[carrier](url, body, signing_key, moment),
    }
