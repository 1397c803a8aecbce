"""Domain models: frozen dataclasses and string enums shared by every layer."""

from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Ids are identifiers, not secrets: a generator seeded once from the OS avoids a getrandom()
# syscall per id, which on the hot path released the GIL to the SQLite writer thread.
_id_random = random.Random(os.urandom(32))


# Every pair of Crockford characters, indexed by the 10 bits they encode: an id is 13 lookups.
_PAIRS = [first + second for first in _CROCKFORD for second in _CROCKFORD]
_PAIR_SHIFTS = tuple(range(120, -1, -10))


def new_id(prefix: str) -> str:
    """A sortable id: ``prefix_`` + 48-bit millisecond time + 80 random bits, Crockford base32
    (26 characters carry 130 bits: the value's 128 behind two zero bits)."""
    value = (time.time_ns() // 1_000_000 << 80) | _id_random.getrandbits(80)
    return prefix + "_" + "".join([_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


ID_BODY_PATTERN = f"[{_CROCKFORD}]{{26}}"
_ID_BODY = re.compile(ID_BODY_PATTERN)


def id_pattern(prefix: str) -> str:
    """The regular expression of the ids :func:`is_id` takes for ``prefix``."""
    return f"^{prefix}_{ID_BODY_PATTERN}$"


def is_id(value: str, prefix: str) -> bool:
    """Whether ``value`` could be an id ``new_id(prefix)`` made (the SQL stores make theirs alike)."""
    head, sep, body = value.partition("_")
    return head == prefix and bool(sep) and _ID_BODY.fullmatch(body) is not None


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: the one format webhookd emits."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Scope(StrEnum):
    MANAGE_WEBHOOKS = "manage_webhooks"
    READ_EVENTS = "read_events"
    PUBLISH_EVENTS = "publish_events"
    ADMIN = "admin"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    """Due at ``next_attempt_at``."""
    IN_FLIGHT = "in_flight"
    """Claimed by a worker under a lease."""
    HELD = "held"
    """Waiting while its subscription is failing; only the subscription's probe goes out."""
    PARKED = "parked"
    """Its subscription is disabled; re-enabling resumes it."""
    DELIVERED = "delivered"
    FAILED = "failed"
    """Every attempt was used; it can be retried by hand."""
    CANCELED = "canceled"
    """Its subscription was deleted."""


class SubscriptionKind(StrEnum):
    WEBHOOK = "webhook"
    """A customer's subscription, managed through the API."""
    CALLBACK = "callback"
    """A per-call ``callback_url``, signed with the customer's callback secret."""


class SubscriptionState(StrEnum):
    """How a subscription is doing, as operators filter by it."""

    ACTIVE = "active"
    FAILING = "failing"
    """Active, with failed attempts in a row."""
    DISABLED = "disabled"


class SignatureScheme(StrEnum):
    """How deliveries to a subscription are signed (Standard Webhooks)."""

    V1 = "v1"
    """HMAC-SHA256 with a ``whsec_`` secret the receiver shares."""
    V1A = "v1a"
    """Ed25519: webhookd keeps the ``whsk_`` signing key, the receiver verifies with the ``whpk_`` key."""


class DisabledReason(StrEnum):
    CONSECUTIVE_FAILURES = "consecutive_failures"
    ENDPOINT_GONE = "endpoint_gone"


class Carrier(StrEnum):
    TWILIO = "twilio"
    TELNYX = "telnyx"
    """Telnyx Call Control (JSON)."""
    TELNYX_TEXML = "telnyx_texml"
    VONAGE = "vonage"
    PLIVO = "plivo"
    ELEVENLABS = "elevenlabs"
    RETELL = "retell"
    VAPI = "vapi"


MAX_CALL_ID_LENGTH = 255
"""The longest carrier call id a call's reference may hold (carriers' ids are under 100 characters)."""
_CARRIERS = "|".join(c.value for c in Carrier)
CALL_REF_PATTERN = rf"^(?:{_CARRIERS}):[^\x00/]{{1,{MAX_CALL_ID_LENGTH}}}$"
"""A call's public reference, ``carrier:call_id``: the carrier's call id is as the carrier sent it,
colons and all (a path segment: no ``/``; stored text: no NUL)."""
_CALL_REF = re.compile(CALL_REF_PATTERN)
CALL_REF_RULE = (
    f"carrier:call_id, such as twilio:CA0123, where carrier is one of {', '.join(Carrier)} and call_id"
    f" is 1 to {MAX_CALL_ID_LENGTH} characters without / or NUL"
)


def call_ref(carrier: str, call_id: str) -> str:
    """A call's public reference (also its events' ``ordering_key``)."""
    return f"{carrier}:{call_id}"


def parse_call_ref(ref: str) -> tuple[Carrier, str]:
    """The carrier and call id of a reference; ``ValueError`` saying the expected form otherwise."""
    if _CALL_REF.fullmatch(ref) is None:
        raise ValueError(f"a call id must be {CALL_REF_RULE}")
    carrier, _, call_id = ref.partition(":")  # carrier names hold no colon; call ids may
    return Carrier(carrier), call_id


CREDENTIAL_NAMES: dict[Carrier, tuple[str, ...]] = {
    Carrier.TWILIO: ("auth_token",),
    Carrier.TELNYX: ("public_key",),
    Carrier.TELNYX_TEXML: ("public_key",),
    Carrier.VONAGE: ("signature_secret",),
    Carrier.PLIVO: ("auth_token",),
    Carrier.ELEVENLABS: ("webhook_secret",),
    Carrier.RETELL: ("api_key",),
    Carrier.VAPI: ("secret",),
}
"""The credentials each carrier's source needs."""


CALL_EVENT_TYPES = (
    "call.initiating",
    "call.ringing",
    "call.in_progress",
    "call.completed",
    "call.failed",
    "call.no_answer",
    "call.transcript.ready",
)
EVENT_TYPES = (*CALL_EVENT_TYPES, "webhook.test")


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key. Only the SHA-256 of the key is kept; the key itself is shown once."""

    id: str
    customer_id: str
    key_hash: str
    scopes: frozenset[Scope]
    name: str | None
    created_at: datetime
    revoked_at: datetime | None = None
    """Set once the key is revoked: it authenticates no more."""
    last_used_at: datetime | None = None
    """When it last authenticated a request, to within ``KEY_USE_MARK_S`` (recorded once a minute)."""


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    """A customer as the operator sees it: its live webhook subscriptions by state, and its keys."""

    customer: Customer
    subscriptions: int
    failing: int
    disabled: int
    keys: int
    """Keys not revoked."""


class AccessKind(StrEnum):
    """Whose dashboard a link or session opens."""

    CUSTOMER = "customer"
    """One customer's subscriptions and deliveries."""
    OPERATOR = "operator"
    """The platform operator's view across customers."""


@dataclass(frozen=True, slots=True)
class DashboardAccess:
    """What a dashboard link opens and its session allows: one customer's dashboard, or the
    operator's view (``customer_id`` is then ``None``)."""

    kind: AccessKind
    customer_id: str | None = None

    @classmethod
    def of_customer(cls, customer_id: str) -> DashboardAccess:
        return cls(AccessKind.CUSTOMER, customer_id)

    @classmethod
    def operator(cls) -> DashboardAccess:
        return cls(AccessKind.OPERATOR)

    @property
    def is_operator(self) -> bool:
        return self.kind is AccessKind.OPERATOR


@dataclass(frozen=True, slots=True)
class Source:
    """A carrier account that posts callbacks for one customer. ``credentials`` is ciphertext."""

    id: str
    customer_id: str
    carrier: Carrier
    credentials: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Subscription:
    """A customer's endpoint. ``secret`` is the AES-GCM ciphertext of its signing secret: ``whsec_``
    (v1) or ``whsk_`` (v1a)."""

    id: str
    customer_id: str
    url: str
    events: tuple[str, ...]
    description: str | None
    secret: bytes
    is_active: bool
    created_at: datetime
    failure_count: int = 0
    disabled_reason: DisabledReason | None = None
    disabled_at: datetime | None = None
    previous_secret: bytes | None = None
    """The rotated-out secret's ciphertext, which keeps signing until ``previous_secret_until``."""
    previous_secret_until: datetime | None = None
    kind: SubscriptionKind = SubscriptionKind.WEBHOOK
    rate_limit_per_second: int | None = None
    """Attempts per second at most, across all workers; ``None``: no limit."""
    ordered: bool = False
    """Deliveries sharing an event's ``ordering_key`` go one at a time, in event order."""
    headers: bytes | None = None
    """The AES-GCM ciphertext of the custom headers (a JSON object) every delivery carries."""
    signature_scheme: SignatureScheme = SignatureScheme.V1
    public_key: str | None = None
    """The ``whpk_`` key that verifies a v1a subscription's signatures; ``None`` for v1."""

    @property
    def state(self) -> SubscriptionState:
        if not self.is_active:
            return SubscriptionState.DISABLED
        return SubscriptionState.FAILING if self.failure_count else SubscriptionState.ACTIVE


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as a publisher hands it in, before it is stored."""

    customer_id: str
    type: str
    data: dict[str, Any]
    idempotency_key: str | None = None
    id: str = field(default_factory=lambda: new_id("evt"))
    created_at: datetime = field(default_factory=utcnow)
    callback_url: str | None = None
    """Also deliver this event here, signed with the customer's callback secret."""
    only_subscription_id: str | None = None
    """Deliver to this subscription alone, whatever its event types (``webhook.test``)."""
    ordering_key: str | None = None
    """Events sharing a key (a call's id) reach an ordered subscription one at a time, in order."""
    traceparent: str | None = None
    """The W3C trace context of the span that published it (``webhookd.tracing``): its deliveries,
    sent later and perhaps by another process, continue that trace."""

    def envelope(self) -> dict[str, Any]:
        """The JSON body receivers get: id, type, timestamp, customer_id and data."""
        return {
            "id": self.id,
            "type": self.type,
            "timestamp": isoformat(self.created_at),
            "customer_id": self.customer_id,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event. ``payload`` is the exact JSON body every delivery sends."""

    id: str
    customer_id: str
    type: str
    idempotency_key: str | None
    payload: bytes
    created_at: datetime
    callback_url: str | None = None
    ordering_key: str | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    event: Event
    created: bool
    deliveries: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event bound for one subscription, as the delivery log shows it."""

    id: str
    event_id: str
    subscription_id: str
    customer_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One stored POST of a delivery."""

    attempt_no: int
    started_at: datetime
    duration_s: float
    status_code: int | None
    error: str | None
    response_excerpt: bytes
    succeeded: bool


@dataclass(frozen=True, slots=True)
class CallbackSecret:
    """A customer's callback secret (ciphertext), and the rotated-out one during its grace period."""

    secret: bytes
    previous: bytes | None = None
    previous_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """A claimed delivery with what the worker needs to send it, and nothing more."""

    delivery_id: str
    event_id: str
    subscription_id: str
    url: str
    secret: bytes
    payload: bytes
    attempt_no: int
    event_created_at: datetime
    previous_secret: bytes | None = None
    """During a rotation's grace period, the old secret's ciphertext: deliveries carry both."""
    kind: SubscriptionKind = SubscriptionKind.WEBHOOK
    customer_id: str = ""
    not_before: datetime | None = None
    """A paced subscription's slot: the attempt must not start earlier."""
    headers: bytes | None = None
    """The subscription's custom headers, encrypted (see :attr:`Subscription.headers`)."""
    event_type: str = ""
    traceparent: str | None = None
    """The publishing span's W3C trace context, if the event was published with tracing on."""


@dataclass(frozen=True, slots=True)
class Disabled:
    """A subscription that recording attempts disabled, and the reason of the outcome that did it."""

    customer_id: str
    subscription_id: str
    reason: DisabledReason


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one POST of a delivery came to, as the worker reports it to the store."""

    delivery_id: str
    attempt_no: int
    started_at: datetime
    duration_s: float
    status_code: int | None
    error: str | None
    response_excerpt: bytes
    succeeded: bool
    next_attempt_at: datetime | None
    """When to try again; ``None`` with ``succeeded=False`` means the delivery has failed for good."""
    subscription_id: str = ""
    retry_after_s: float | None = None
    """How long the endpoint asked to be left alone (``Retry-After`` of a 429 or 503): a failing
    subscription's next probe waits at least that long, up to the schedule's longest step."""


@dataclass(frozen=True, slots=True)
class Call:
    """A call as its carrier callbacks told it: the state machine's stored state and how much it saw."""

    carrier: Carrier
    call_id: str
    state: dict[str, Any]
    """The call state machine's JSON state (see ``webhookd.ingest.callstate``)."""
    updated_at: datetime
    callback_count: int
    event_count: int
    """The distinct events its callbacks produced."""

    @property
    def ref(self) -> str:
        return call_ref(self.carrier, self.call_id)


@dataclass(frozen=True, slots=True)
class CallCallback:
    """One verified carrier callback of a call, and the event it produced (``None``: late or repeated)."""

    carrier: Carrier
    status_raw: str | None
    received_at: datetime
    event_id: str | None


@dataclass(frozen=True, slots=True)
class EventDelivery:
    """A delivery of an event, with the URL it goes to: where the event went."""

    delivery: Delivery
    url: str


@dataclass(frozen=True, slots=True)
class CallTimeline:
    """A call's story: its callbacks as received, the events they produced, and where those went."""

    call: Call
    callbacks: tuple[CallCallback, ...]
    events: tuple[Event, ...]
    deliveries: dict[str, list[EventDelivery]]
    """By event id; an event with no delivery is absent."""
