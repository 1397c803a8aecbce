"""Dashboard sessions: a signed cookie, the CSRF token each form carries, and the one-time flash a
form's POST leaves for the page it redirects to.

A session is a cookie holding what it opens (a customer's dashboard or the operator's view), a random
session id and an expiry, signed with HMAC-SHA256 under a key derived from the master key, rather than
a row in the database: a login costs no session write, and every webhookd process that shares the
master key (several behind a load balancer) accepts it. Signing out is the one thing a signed cookie
cannot do alone, so a signed-out session's id is stored until the session would have ended, and each
page checks it (one primary-key read). Sessions stay short (``WEBHOOKD_DASHBOARD_SESSION_S``, hours)
and a link that opens one is single-use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import orjson

from webhookd.crypto import SecretBox, derive_key
from webhookd.exceptions import CryptoError
from webhookd.models import AccessKind, DashboardAccess

COOKIE = "webhookd_dashboard"
COOKIE_PATH = "/dashboard"
FLASH_COOKIE = "webhookd_flash"
_PURPOSE = "webhookd dashboard sessions v1"
_FLASH_PURPOSE = "webhookd dashboard flash v1"


def session_key(master_key: bytes) -> bytes:
    """The key that signs sessions and CSRF tokens, derived from the master key."""
    return derive_key(master_key, _PURPOSE)


@dataclass(frozen=True, slots=True)
class Session:
    access: DashboardAccess
    session_id: str
    """Random; what signing out remembers."""
    expires_at: int
    """Unix seconds."""
    cookie: str
    """The signed cookie value, to which the session's CSRF token is bound."""

    @property
    def customer_id(self) -> str | None:
        return self.access.customer_id


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, kind: str, payload: str) -> str:
    return _b64(hmac.new(key, f"{kind}:{payload}".encode(), hashlib.sha256).digest())


def sign_session(key: bytes, access: DashboardAccess, expires_at: datetime) -> str:
    """The cookie value of a new session opening ``access`` that ends at ``expires_at``."""
    session_id = _b64(secrets.token_bytes(16))
    fields = [access.kind.value, access.customer_id, session_id, int(expires_at.timestamp())]
    payload = _b64(orjson.dumps(fields))
    return f"{payload}.{_mac(key, 'session', payload)}"


def read_session(key: bytes, cookie: str | None, now: datetime) -> Session | None:
    """The session ``cookie`` holds if this server signed it and it has not ended; else ``None``."""
    payload, dot, mac = (cookie or "").partition(".")
    if not dot or not hmac.compare_digest(mac, _mac(key, "session", payload)):
        return None
    try:
        kind, customer_id, session_id, expires_at = orjson.loads(_unb64(payload))
        access = DashboardAccess(AccessKind(kind), customer_id)
    except (binascii.Error, ValueError, TypeError):
        return None  # signed by us, so only a change of format (an older session) could bring this
    if not isinstance(session_id, str) or not isinstance(expires_at, int) or expires_at <= now.timestamp():
        return None
    return Session(access, session_id, expires_at, cookie or "")


def csrf_token(key: bytes, session: Session) -> str:
    """The token every form of this session carries: bound to the session, so a page of another
    site, which cannot read the session's pages, cannot make a form that passes."""
    return _mac(key, "csrf", session.cookie)


def csrf_ok(key: bytes, session: Session, given: str) -> bool:
    return hmac.compare_digest(given.encode(), csrf_token(key, session).encode())


@dataclass(frozen=True, slots=True)
class Flash:
    """What a form's POST tells the page it redirects to, once."""

    notice: str = ""
    secret: str = ""
    """A new signing secret, which the page shows this once."""


def _flash_box(key: bytes) -> SecretBox:
    return SecretBox(derive_key(key, _FLASH_PURPOSE))


def _flash_context(session: Session, path: str) -> str:
    # Bound to the session and the page: a flash copied to another session or page opens nowhere.
    return f"dashboard-flash:{path}:{session.cookie}"


def seal_flash(key: bytes, session: Session, path: str, flash: Flash, expires_at: datetime) -> str:
    """The cookie value carrying ``flash`` to ``path``'s page. Encrypted, not only signed: it may
    hold a signing secret, which must not sit readable in the browser's cookie store."""
    plain = orjson.dumps([flash.notice, flash.secret, int(expires_at.timestamp())])
    return _b64(_flash_box(key).encrypt(plain, _flash_context(session, path)))


def open_flash(key: bytes, session: Session, path: str, sealed: str, now: datetime) -> Flash | None:
    """The flash ``sealed`` carries to ``path`` for ``session``, unless it is not ours or has expired."""
    try:
        notice, secret, expires_at = orjson.loads(
            _flash_box(key).decrypt(_unb64(sealed), _flash_context(session, path))
        )
    except (CryptoError, binascii.Error, ValueError, TypeError):
        return None
    if not isinstance(notice, str) or not isinstance(secret, str) or not isinstance(expires_at, int):
        return None
    return Flash(notice, secret) if expires_at > now.timestamp() else None
