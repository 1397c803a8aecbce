"""What a customer does to a subscription: the rules its fields meet, changing them, rotating its
secret, sending it a test event, recovering its failed deliveries. The one implementation behind the
API and the dashboard; each takes the customer the request speaks for, so another customer's
subscription is never touched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from webhookd.crypto import seal_headers, subscription_secret_context
from webhookd.delivery.signing import new_secret, public_key
from webhookd.exceptions import ApiError, Conflict, DestinationBlocked
from webhookd.inputs import (
    FORBIDDEN_HEADER,
    HEADER_NAME,
    HEADER_VALUE,
    HTTP_URL,
    MAX_DESCRIPTION_LENGTH,
    MAX_HEADER_NAME_LENGTH,
    MAX_HEADER_VALUE_LENGTH,
    MAX_HEADERS,
    MAX_RATE_LIMIT_PER_SECOND,
    MAX_URL_LENGTH,
)
from webhookd.models import (
    EVENT_TYPES,
    Delivery,
    NewEvent,
    PublishResult,
    SignatureScheme,
    Subscription,
)
from webhookd.store.base import Store, SubscriptionUpdate
from webhookd.web import Services

MAX_RECOVER = 10_000
RECOVER_BATCH = 200


@dataclass(frozen=True, slots=True)
class SigningSecret:
    """A new signing secret: ``secret`` to store encrypted, and what its customer is shown."""

    scheme: SignatureScheme
    secret: str
    """The ``whsec_`` secret (shown once) or the ``whsk_`` key (never shown)."""
    ciphertext: bytes
    public_key: str | None
    """The ``whpk_`` key for v1a, shown whenever asked; ``None`` for v1."""

    @property
    def shown_secret(self) -> str | None:
        """What the customer gets once: a v1 secret; a v1a private key stays here."""
        return self.secret if self.scheme is SignatureScheme.V1 else None


@dataclass(frozen=True, slots=True)
class RotatedSecret:
    signing: SigningSecret
    previous_until: datetime
    """When the old secret stops signing."""


@dataclass(frozen=True, slots=True)
class Recovery:
    requeued: int
    more: bool
    """More failed deliveries matched than one recovery takes (``MAX_RECOVER``)."""


def valid_url(value: Any, field: str = "url") -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(f"{field} is required and must be a string", code="invalid_url")
    if len(value) > MAX_URL_LENGTH:
        raise ApiError(f"{field} is longer than {MAX_URL_LENGTH} characters", code="invalid_url")
    try:
        parts = urlsplit(value)
        hostname, _ = parts.hostname, parts.port
    except ValueError:
        raise ApiError(f"{field} is not a valid URL", code="invalid_url") from None
    if parts.scheme not in {"http", "https"} or not hostname:
        raise ApiError(f"{field} must be an absolute http:// or https:// URL", code="invalid_url")
    if parts.username or parts.password:
        raise ApiError(f"{field} must not carry credentials", code="invalid_url")
    if not HTTP_URL.fullmatch(value):  # whole: "$" would also match before a final newline
        raise ApiError(
            f"{field} must be a valid URI: percent-encode spaces, non-ASCII characters, '%' itself,"
            " and '[', ']' or a second '#' after the host",
            code="invalid_url",
        )
    return value


def valid_events(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ApiError("events must be a non-empty list of event type strings", code="invalid_events")
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise ApiError(f"unknown event types {unknown}; known: {list(EVENT_TYPES)}", code="invalid_events")
    return tuple(sorted(set(value)))


def valid_description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
        raise ApiError(
            f"description must be a string of at most {MAX_DESCRIPTION_LENGTH} characters",
            code="invalid_description",
        )
    return value


def valid_rate_limit(value: Any) -> int | None:
    """Attempts per second, or ``None`` for no limit. ``bool`` is an ``int`` in Python, not here; a
    whole ``5.0`` is the integer JSON Schema (and so the OpenAPI document) says it is."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE_LIMIT_PER_SECOND:
        raise ApiError(
            f"rate_limit_per_second must be a whole number from 1 to {MAX_RATE_LIMIT_PER_SECOND},"
            " or null for no limit",
            code="invalid_rate_limit",
        )
    return value


def valid_headers(value: Any) -> dict[str, str]:
    """Custom headers for every delivery: at most ``MAX_HEADERS`` HTTP token names, none that the
    body, the connection or the signature owns, each once whatever its case, with printable values."""
    if not isinstance(value, dict) or len(value) > MAX_HEADERS:
        raise ApiError(
            f"headers must be an object of at most {MAX_HEADERS} header names to string values",
            code="invalid_headers",
        )
    seen: set[str] = set()
    for name, text in value.items():
        _check_header(name, text)
        if name.lower() in seen:
            raise ApiError(
                f"header {name!r} is given twice (names ignore case); keep one", code="invalid_headers"
            )
        seen.add(name.lower())
    return dict(value)


def _check_header(name: str, text: Any) -> None:
    if not HEADER_NAME.fullmatch(name):
        raise ApiError(
            f"header name {name!r} must be 1 to {MAX_HEADER_NAME_LENGTH} of the characters"
            " A-Z a-z 0-9 ! # $ % & ' * + - . ^ _ ` | ~",
            code="invalid_headers",
        )
    if FORBIDDEN_HEADER.fullmatch(name):
        raise ApiError(
            f"header {name!r} is set by webhookd (webhook-*, content-type, content-length, host) or is"
            " hop-by-hop; choose another name",
            code="invalid_headers",
        )
    if not isinstance(text, str) or not HEADER_VALUE.fullmatch(text):
        raise ApiError(
            f"the value of header {name!r} must be a string of 1 to {MAX_HEADER_VALUE_LENGTH} visible"
            " ASCII characters, spaces or tabs (no line breaks), not starting or ending with a space",
            code="invalid_headers",
        )


def valid_scheme(value: Any) -> SignatureScheme:
    try:
        return SignatureScheme(value)
    except ValueError:
        raise ApiError(
            'signature_scheme must be "v1" (HMAC-SHA256, a shared whsec_ secret) or "v1a"'
            " (Ed25519, verified with a whpk_ public key)",
            code="invalid_signature_scheme",
        ) from None


def signing_secret(svc: Services, subscription_id: str, scheme: SignatureScheme) -> SigningSecret:
    """A new secret of ``scheme`` for the subscription, encrypted for storing."""
    secret = new_secret(scheme)
    ciphertext = svc.box.encrypt(secret.encode(), subscription_secret_context(subscription_id))
    return SigningSecret(scheme, secret, ciphertext, public_key(secret))


def valid_ordered(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ApiError(
            "ordered must be true (a call's events arrive one at a time, in order) or false",
            code="invalid_ordered",
        )
    return value


async def check_destination(svc: Services, url: str, field: str = "url") -> None:
    """The SSRF guard at create time; the sender checks again at connect time."""
    try:
        await svc.guard.check_url(url)
    except DestinationBlocked as exc:
        raise ApiError(f"{field} is not allowed: {exc}", code="destination_blocked") from None


def subscription_update(svc: Services, subscription_id: str, body: dict[str, Any]) -> SubscriptionUpdate:
    """A PATCH body as an update: absent fields stay; a null description or rate limit clears it,
    and headers replace all of the old ones."""
    headers = (
        seal_headers(svc.box, subscription_id, valid_headers(body["headers"])) if "headers" in body else None
    )
    return SubscriptionUpdate(
        url=valid_url(body["url"]) if "url" in body else None,
        events=valid_events(body["events"]) if "events" in body else None,
        description=(valid_description(body["description"]) or "") if "description" in body else None,
        rate_limit_per_second=(
            (valid_rate_limit(body["rate_limit_per_second"]) or 0)
            if "rate_limit_per_second" in body
            else None
        ),
        ordered=valid_ordered(body["ordered"]) if "ordered" in body else None,
        headers=headers,
    )


async def edit_subscription(
    svc: Services, customer_id: str, subscription_id: str, changes: dict[str, Any]
) -> Subscription | None:
    """Apply ``changes`` (a PATCH body's fields) by the same rules as a create: a 400 ``ApiError``
    for a bad or blocked value, 409 if another subscription has the same url and events. ``None``
    if not found."""
    update = subscription_update(svc, subscription_id, changes)
    if update.url is not None:
        await check_destination(svc, update.url)
    try:
        return await svc.store.update_subscription(customer_id, subscription_id, update)
    except Conflict as exc:
        raise ApiError(str(exc), status=409, code="conflict") from None


async def rotate_secret(
    svc: Services, sub: Subscription, scheme: SignatureScheme | None = None
) -> RotatedSecret | None:
    """A new current secret, of ``scheme`` or else the subscription's own; the old one keeps
    signing for the grace period, whatever its scheme. ``None`` if not found."""
    signing = signing_secret(svc, sub.id, scheme or sub.signature_scheme)
    until = svc.clock() + timedelta(seconds=svc.settings.secret_grace_s)
    rotated = await svc.store.rotate_subscription_secret(
        sub.customer_id, sub.id, signing.ciphertext, until, signing.scheme, signing.public_key
    )
    return None if rotated is None else RotatedSecret(signing, until)


async def send_test_event(svc: Services, sub: Subscription) -> PublishResult:
    """A ``webhook.test`` event for ``sub`` alone. ``Conflict`` while it is disabled."""
    if not sub.is_active:
        raise Conflict("the subscription is disabled; enable it first")
    event = NewEvent(
        sub.customer_id,
        "webhook.test",
        {"subscription_id": sub.id, "message": "webhookd test"},
        only_subscription_id=sub.id,
    )
    return await svc.store.publish(event, delay_s=svc.settings.retry_schedule_s[0])


async def recover_failed(svc: Services, sub: Subscription, since: datetime, until: datetime) -> Recovery:
    """Re-queue the subscription's failed deliveries created in ``[since, until]`` (up to
    ``MAX_RECOVER``), in the background: the caller is answered at once."""
    ids, more = await to_recover(svc.store, sub, since, until)
    svc.background.spawn(_requeued(svc.store, ids), name=f"recover-{sub.id}")
    return Recovery(len(ids), more)


async def to_recover(
    store: Store, sub: Subscription, since: datetime, until: datetime
) -> tuple[list[str], bool]:
    """The ids of the subscription's failed deliveries created in ``[since, until]``, up to
    ``MAX_RECOVER``, and whether more matched."""
    ids = await store.failed_delivery_ids(sub.customer_id, sub.id, since, until, MAX_RECOVER + 1)
    return ids[:MAX_RECOVER], len(ids) > MAX_RECOVER


async def requeue(store: Store, ids: Sequence[str], progress: Callable[[int], None] | None = None) -> None:
    """Small batches, each its own transaction, so recovery never holds up ingest; ``progress`` hears
    how many are requeued so far after each."""
    for start in range(0, len(ids), RECOVER_BATCH):
        await store.requeue_deliveries(ids[start : start + RECOVER_BATCH])
        if progress is not None:
            progress(min(start + RECOVER_BATCH, len(ids)))


async def _requeued(store: Store, ids: Sequence[str]) -> None:
    await requeue(store, ids)


# -- an operator's actions: on any customer's subscription, as that customer's own would be --


async def enable_any(store: Store, subscription_id: str) -> Subscription | None:
    """Re-enable the subscription whoever's it is (the customer's own re-enable). ``None`` if none."""
    sub = await store.get_subscription(None, subscription_id)
    return None if sub is None else await store.enable_subscription(sub.customer_id, sub.id)


async def retry_any(store: Store, delivery_id: str) -> Delivery | None:
    """Send the delivery again now, whoever's it is. ``Conflict`` as for its customer; ``None`` if none."""
    found = await store.get_delivery(None, delivery_id)
    if found is None:
        return None
    return await store.retry_delivery(found.delivery.customer_id, delivery_id)
