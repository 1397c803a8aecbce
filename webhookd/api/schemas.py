"""JSON Schemas of the management API's bodies: the single source ``/openapi.json`` is built from."""

from __future__ import annotations

from typing import Any

from webhookd.ingest.callstate import CALL_STATUSES
from webhookd.inputs import (
    CUSTOMER_ID_PATTERN,
    EVENT_TYPE_PATTERN,
    FORBIDDEN_HEADER_PATTERN,
    HEADER_NAME_PATTERN,
    HEADER_VALUE_PATTERN,
    HTTP_URL_PATTERN,
    MAX_BATCH_EVENTS,
    MAX_DESCRIPTION_LENGTH,
    MAX_EVENT_TYPE_LENGTH,
    MAX_HEADERS,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_JSON_DEPTH,
    MAX_ORDERING_KEY_LENGTH,
    MAX_RATE_LIMIT_PER_SECOND,
    MAX_URL_LENGTH,
    NO_NUL_PATTERN,
)
from webhookd.models import (
    CREDENTIAL_NAMES,
    EVENT_TYPES,
    Carrier,
    DeliveryStatus,
    Scope,
    SignatureScheme,
    SubscriptionState,
)
from webhookd.provisioning import MAX_NAME_LENGTH

Schema = dict[str, Any]

TIMESTAMP: Schema = {"type": "string", "format": "date-time"}
NULLABLE_TIMESTAMP: Schema = {"type": ["string", "null"], "format": "date-time"}
EVENT_TYPE: Schema = {"type": "string", "enum": list(EVENT_TYPES)}
CUSTOMER_ID: Schema = {"type": "string", "pattern": CUSTOMER_ID_PATTERN}
RATE_LIMIT: Schema = {
    "type": ["integer", "null"],
    "minimum": 1,
    "maximum": MAX_RATE_LIMIT_PER_SECOND,
    "description": "attempts per second at most, across all workers; null: no limit",
}
PUBLISHED_TYPE: Schema = {"type": "string", "pattern": EVENT_TYPE_PATTERN, "maxLength": MAX_EVENT_TYPE_LENGTH}


def text(max_length: int | None = None, *, min_length: int = 0, nullable: bool = False) -> Schema:
    """A string in a JSON body: no NUL (no body may hold one), and the given lengths."""
    schema: Schema = {"type": ["string", "null"] if nullable else "string", "pattern": NO_NUL_PATTERN}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    return schema


HTTP_URL: Schema = {
    "type": "string",
    "pattern": HTTP_URL_PATTERN,
    "maxLength": MAX_URL_LENGTH,
}

JSON_VALUE: Schema = {
    "description": f"Any JSON without a NUL in a string or key, nested at most {MAX_JSON_DEPTH} levels"
    " deep counting the body's own braces.",
    "pattern": NO_NUL_PATTERN,
    "propertyNames": {"pattern": NO_NUL_PATTERN},
    "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
    "items": {"$ref": "#/components/schemas/JsonValue"},
}
"""Each keyword applies to its own type: ``pattern`` to strings, the others to objects and arrays."""
JSON_OBJECT: Schema = {"type": "object"} | {k: v for k, v in JSON_VALUE.items() if k != "pattern"}
SCOPES: Schema = {
    "type": "array",
    "items": {"type": "string", "enum": [s.value for s in Scope]},
    "minItems": 1,
}


def _object(required: list[str], properties: Schema, *, extra: bool = True) -> Schema:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": extra}


def _carrier_credentials(carrier: Carrier, names: tuple[str, ...]) -> Schema:
    """A source of ``carrier`` needs each of its credentials, not empty."""
    needed = {"type": "object", "required": list(names), "properties": {n: text(min_length=1) for n in names}}
    return {"properties": {"carrier": {"const": carrier.value}, "credentials": needed}}


def list_of(item: str) -> Schema:
    return _object(
        ["data", "next_cursor"],
        {
            "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    )


API_KEY = _object(
    ["id", "customer_id", "name", "scopes", "created_at", "last_used_at", "revoked_at"],
    {
        "id": {"type": "string"},
        "customer_id": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "scopes": {"type": "array", "items": {"type": "string", "enum": [s.value for s in Scope]}},
        "created_at": TIMESTAMP,
        "last_used_at": {**NULLABLE_TIMESTAMP, "description": "to within a minute"},
        "revoked_at": NULLABLE_TIMESTAMP,
    },
)
"""A key's record; the key itself is shown once, when it is created."""

SIGNATURE_SCHEME: Schema = {
    "type": "string",
    "enum": [scheme.value for scheme in SignatureScheme],
    "description": "v1: HMAC-SHA256 with the whsec_ secret; v1a: Ed25519, verified with the whpk_ public_key",
}
HEADERS: Schema = {
    "type": "object",
    "maxProperties": MAX_HEADERS,
    "propertyNames": {"pattern": HEADER_NAME_PATTERN, "not": {"pattern": FORBIDDEN_HEADER_PATTERN}},
    "additionalProperties": {"type": "string", "pattern": HEADER_VALUE_PATTERN},
    "description": "Headers every delivery carries, values encrypted at rest. Names are HTTP tokens, each"
    " once whatever its case; webhook-*, content-type, content-length, host and hop-by-hop headers are"
    " webhookd's. Values: visible ASCII, spaces and tabs, without white space at either end.",
}

SUBSCRIPTION = _object(
    [
        "id",
        "url",
        "events",
        "description",
        "is_active",
        "disabled_reason",
        "disabled_at",
        "failure_count",
        "rate_limit_per_second",
        "ordered",
        "signature_scheme",
        "public_key",
        "created_at",
    ],
    {
        "id": {"type": "string"},
        "url": {"type": "string", "format": "uri"},
        "events": {"type": "array", "items": EVENT_TYPE},
        "description": {"type": ["string", "null"]},
        "is_active": {"type": "boolean"},
        "disabled_reason": {
            "type": ["string", "null"],
            "enum": ["consecutive_failures", "endpoint_gone", None],
        },
        "disabled_at": NULLABLE_TIMESTAMP,
        "failure_count": {"type": "integer", "minimum": 0},
        "rate_limit_per_second": {"type": ["integer", "null"], "minimum": 1},
        "ordered": {"type": "boolean"},
        "signature_scheme": SIGNATURE_SCHEME,
        "public_key": {"type": ["string", "null"], "pattern": "^whpk_", "description": "v1a only"},
        "headers": HEADERS,
        "created_at": TIMESTAMP,
        "secret": {"type": "string", "pattern": "^whsec_"},
        "previous_secret_expires_at": NULLABLE_TIMESTAMP,
    },
)

EVENT = _object(
    ["id", "type", "timestamp", "customer_id", "data"],
    {
        "id": {"type": "string"},
        "type": {"type": "string"},
        "timestamp": TIMESTAMP,
        "customer_id": {"type": "string"},
        "data": {"type": "object"},
        "idempotency_key": {"type": ["string", "null"]},
        "callback_url": {"type": ["string", "null"]},
        "ordering_key": {"type": ["string", "null"]},
    },
)

DELIVERY = _object(
    ["id", "event_id", "subscription_id", "status", "attempts", "next_attempt_at", "created_at"],
    {
        "id": {"type": "string"},
        "event_id": {"type": "string"},
        "subscription_id": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in DeliveryStatus]},
        "attempts": {"type": "integer", "minimum": 0},
        "next_attempt_at": NULLABLE_TIMESTAMP,
        "created_at": TIMESTAMP,
        "updated_at": NULLABLE_TIMESTAMP,
        "last_status": {"type": ["integer", "null"]},
        "last_error": {"type": ["string", "null"]},
        "delivered_at": NULLABLE_TIMESTAMP,
    },
)

ATTEMPT = _object(
    ["attempt_no", "started_at", "duration_ms", "status_code", "error", "succeeded"],
    {
        "attempt_no": {"type": "integer", "minimum": 1},
        "started_at": TIMESTAMP,
        "duration_ms": {"type": "number", "minimum": 0},
        "status_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "response_excerpt": {"type": "string"},
        "succeeded": {"type": "boolean"},
    },
)

BACKLOG = _object(
    ["subscription_id", "customer_id", "url", "pending", "held", "in_flight", "parked", "oldest_due_at"],
    {
        "subscription_id": {"type": "string"},
        "customer_id": {"type": "string"},
        "url": {"type": "string"},
        "is_active": {"type": "boolean"},
        "failure_count": {"type": "integer", "minimum": 0},
        "rate_limit_per_second": {"type": ["integer", "null"]},
        "ordered": {"type": "boolean"},
        "pending": {"type": "integer", "minimum": 0},
        "held": {"type": "integer", "minimum": 0},
        "in_flight": {"type": "integer", "minimum": 0},
        "parked": {"type": "integer", "minimum": 0},
        "oldest_due_at": NULLABLE_TIMESTAMP,
    },
)

CALL = _object(
    ["id", "carrier", "call_id", "state", "updated_at", "callback_count", "event_count"],
    {
        "id": {"type": "string", "description": "carrier:call_id, the call's reference in /calls/{call_ref}"},
        "carrier": {"type": "string", "enum": [c.value for c in Carrier]},
        "call_id": {"type": "string", "description": "the carrier's own id of the call"},
        "state": {"type": "string", "enum": list(CALL_STATUSES)},
        "updated_at": TIMESTAMP,
        "callback_count": {"type": "integer", "minimum": 0},
        "event_count": {"type": "integer", "minimum": 0},
    },
)

CALL_CALLBACK = _object(
    ["carrier", "status_raw", "received_at", "event_id"],
    {
        "carrier": {"type": "string", "enum": [c.value for c in Carrier]},
        "status_raw": {"type": ["string", "null"]},
        "received_at": TIMESTAMP,
        "event_id": {"type": ["string", "null"], "description": "null: a late or repeated callback"},
    },
)

EVENT_DELIVERY = _object(
    ["id", "subscription_id", "url", "status", "attempts", "last_status"],
    {
        "id": {"type": "string"},
        "subscription_id": {"type": "string"},
        "url": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in DeliveryStatus]},
        "attempts": {"type": "integer", "minimum": 0},
        "last_status": {"type": ["integer", "null"]},
    },
)

CALL_EVENT = _object(
    ["id", "type", "created_at", "payload", "deliveries"],
    {
        "id": {"type": "string"},
        "type": {"type": "string"},
        "created_at": TIMESTAMP,
        "payload": {"type": "object", "description": "the JSON body receivers get"},
        "deliveries": {"type": "array", "items": EVENT_DELIVERY},
    },
)

SCHEMAS: dict[str, Schema] = {
    "JsonValue": JSON_VALUE,
    "Error": _object(
        ["error"],
        {"error": _object(["code", "message"], {"code": {"type": "string"}, "message": {"type": "string"}})},
    ),
    "Challenge": _object(["challenge"], {"challenge": {"type": "string"}}),
    "CarrierCallback": {
        "type": "object",
        "description": "The carrier's own status callback, form-encoded or JSON as the carrier sends it.",
    },
    "CallbackReceived": _object(
        ["received", "events", "duplicates"],
        {
            "received": {"type": "boolean"},
            "events": {"type": "array", "items": {"type": "string"}},
            "duplicates": {"type": "integer", "minimum": 0},
        },
    ),
    "Health": _object(["status"], {"status": {"type": "string"}}),
    "WhoAmI": _object(
        ["customer_id", "customer_name", "mode", "permissions"],
        {
            "customer_id": {"type": "string"},
            "customer_name": {"type": ["string", "null"]},
            "mode": {"type": "string", "enum": ["live"]},
            "permissions": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
    ),
    "SubscriptionCreate": _object(
        ["url", "events"],
        {
            "url": HTTP_URL,
            "events": {"type": "array", "items": EVENT_TYPE, "minItems": 1},
            "description": text(MAX_DESCRIPTION_LENGTH, nullable=True),
            "rate_limit_per_second": RATE_LIMIT,
            "ordered": {"type": "boolean"},
            "headers": HEADERS,
            "signature_scheme": SIGNATURE_SCHEME,
        },
        extra=False,
    ),
    "SubscriptionPatch": _object(
        [],
        {
            "url": HTTP_URL,
            "events": {"type": "array", "items": EVENT_TYPE, "minItems": 1},
            "description": text(MAX_DESCRIPTION_LENGTH, nullable=True),
            "rate_limit_per_second": RATE_LIMIT,
            "ordered": {"type": "boolean"},
            "headers": HEADERS,
        },
        extra=False,
    )
    | {"minProperties": 1},
    "Subscription": SUBSCRIPTION,
    "SubscriptionList": list_of("Subscription"),
    "OperatorSubscription": SUBSCRIPTION
    | {
        "required": [*SUBSCRIPTION["required"], "customer_id", "state"],
        "properties": {
            **SUBSCRIPTION["properties"],
            "customer_id": {"type": "string"},
            "state": {"type": "string", "enum": [s.value for s in SubscriptionState]},
        },
    },
    "OperatorSubscriptionList": list_of("OperatorSubscription"),
    "Customer": _object(
        ["id", "name", "created_at", "subscriptions", "failing", "disabled", "keys"],
        {
            "id": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "created_at": TIMESTAMP,
            "subscriptions": {"type": "integer", "minimum": 0},
            "failing": {"type": "integer", "minimum": 0},
            "disabled": {"type": "integer", "minimum": 0},
            "keys": {"type": "integer", "minimum": 0, "description": "keys not revoked"},
        },
    ),
    "CustomerList": list_of("Customer"),
    "ApiKey": API_KEY,
    "ApiKeyList": _object(["data"], {"data": {"type": "array", "items": API_KEY}}),
    "Rotate": _object([], {"signature_scheme": SIGNATURE_SCHEME}, extra=False),
    "SigningKey": _object(
        ["signature_scheme", "secret", "public_key", "previous_secret_expires_at"],
        {
            "signature_scheme": SIGNATURE_SCHEME,
            "secret": {"type": ["string", "null"], "pattern": "^whsec_", "description": "v1 only"},
            "public_key": {"type": ["string", "null"], "pattern": "^whpk_", "description": "v1a only"},
            "previous_secret_expires_at": TIMESTAMP,
        },
    ),
    "Secret": _object(
        ["secret"],
        {
            "secret": {"type": "string", "pattern": "^whsec_"},
            "previous_secret_expires_at": NULLABLE_TIMESTAMP,
        },
    ),
    "PublishEvent": _object(
        ["type"],
        {
            "type": PUBLISHED_TYPE,
            "data": JSON_OBJECT,
            "customer_id": {**CUSTOMER_ID, "type": ["string", "null"]},
            "idempotency_key": text(MAX_IDEMPOTENCY_KEY_LENGTH, min_length=1, nullable=True),
            "callback_url": {**HTTP_URL, "type": ["string", "null"]},
            "ordering_key": text(MAX_ORDERING_KEY_LENGTH, min_length=1, nullable=True),
        },
        extra=False,
    ),
    "PublishBatch": _object(
        ["events"],
        {
            "events": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/PublishEvent"},
                "minItems": 1,
                "maxItems": MAX_BATCH_EVENTS,
            }
        },
        extra=False,
    ),
    "BatchResult": _object(
        ["data"],
        {
            "data": {
                "type": "array",
                "description": "one item per event sent, in order",
                "items": _object(
                    ["status", "event"],
                    {
                        "status": {
                            "type": "integer",
                            "enum": [202, 200],
                            "description": "202: stored now; 200: a repeated idempotency_key, the original",
                        },
                        "event": EVENT,
                    },
                ),
            }
        },
    ),
    "Event": EVENT,
    "EventList": list_of("Event"),
    "BacklogList": _object(["data"], {"data": {"type": "array", "items": BACKLOG}}),
    "EventTypes": _object(
        ["data"],
        {
            "data": {
                "type": "array",
                "items": _object(
                    ["type", "description"], {"type": {"type": "string"}, "description": {"type": "string"}}
                ),
            }
        },
    ),
    "Delivery": DELIVERY,
    "DeliveryList": list_of("Delivery"),
    "Attempt": ATTEMPT,
    "DeliveryDetail": DELIVERY
    | {
        "required": [*DELIVERY["required"], "attempts_log"],
        "properties": {
            **DELIVERY["properties"],
            "attempts_log": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"}},
        },
    },
    "Call": CALL,
    "CallList": list_of("Call"),
    "CallTimeline": CALL
    | {
        "required": [*CALL["required"], "callbacks", "events"],
        "properties": {
            **CALL["properties"],
            "callbacks": {"type": "array", "items": CALL_CALLBACK},
            "events": {"type": "array", "items": CALL_EVENT},
        },
    },
    "Recover": _object(["since"], {"since": TIMESTAMP, "until": NULLABLE_TIMESTAMP}, extra=False),
    "DashboardLink": _object(
        ["url", "expires_at"], {"url": {"type": "string", "format": "uri"}, "expires_at": TIMESTAMP}
    ),
    "Recovered": _object(
        ["requeued", "more"], {"requeued": {"type": "integer", "minimum": 0}, "more": {"type": "boolean"}}
    ),
    "KeyCreate": _object(
        ["customer_id", "scopes"],
        {
            "customer_id": CUSTOMER_ID,
            "name": text(MAX_NAME_LENGTH, min_length=1, nullable=True),
            "scopes": SCOPES,
        },
        extra=False,
    ),
    "KeyCreated": _object(
        ["id", "key", "customer_id", "scopes"],
        {
            "id": {"type": "string"},
            "key": {"type": "string", "pattern": "^whd_"},
            "customer_id": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
        },
    ),
    "SourceCreate": _object(
        ["customer_id", "carrier", "credentials"],
        {
            "customer_id": CUSTOMER_ID,
            "name": text(MAX_NAME_LENGTH, min_length=1, nullable=True),
            "carrier": {"type": "string", "enum": [c.value for c in Carrier]},
            "credentials": {
                "type": "object",
                "propertyNames": {"pattern": NO_NUL_PATTERN},
                "additionalProperties": text(),
            },
        },
        extra=False,
    )
    | {"oneOf": [_carrier_credentials(carrier, names) for carrier, names in CREDENTIAL_NAMES.items()]},
    "SourceCreated": _object(
        ["id", "carrier", "customer_id", "ingest_url"],
        {
            "id": {"type": "string"},
            "carrier": {"type": "string"},
            "customer_id": {"type": "string"},
            "ingest_url": {"type": "string", "format": "uri"},
        },
    ),
}
