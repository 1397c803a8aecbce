"""Every exception webhookd raises on purpose, in one tree.

WebhookdError
├── ConfigError              a setting does not parse; startup stops
├── StoreError               the database failed or its schema is not what we expect
│   ├── Conflict             a uniqueness rule or the record's state forbids the change
│   ├── StorageUnavailable   the database cannot be reached or written for now (answered 503)
│   └── Overloaded           too many writes wait already; this one was not taken (answered 503)
├── CryptoError              a secret cannot be decrypted (wrong master key?)
├── RequestError             a client's request is refused: carries the HTTP status and code
│   ├── ApiError             management API refusals (400, 401, 403, 404, 409, 429)
│   ├── PayloadTooLarge      413, for any body over WEBHOOKD_MAX_BODY_BYTES
│   ├── RequestTimeout       408: the body did not arrive within WEBHOOKD_REQUEST_BODY_TIMEOUT_S
│   ├── StorageRefusal       503: the request needed the database while it was unavailable
│   ├── OverloadRefusal      503: the request's write met a full queue of writes
│   └── IngestError          a carrier callback is refused
│       ├── SourceNotFound   404: unknown source, or carrier does not match it
│       ├── SignatureInvalid 401: missing, bad or stale signature
│       └── PayloadInvalid   400: the verified body does not parse
└── DeliveryError            one attempt ended without an HTTP status
    ├── DestinationBlocked   the endpoint resolves to an address the SSRF guard refuses
    └── SendFailed           connection, timeout or protocol error"""

from __future__ import annotations


class WebhookdError(Exception):
    """Base of every error webhookd raises on purpose."""


class ConfigError(WebhookdError):
    """A configuration value is missing or malformed. The message names the variable."""


class StoreError(WebhookdError):
    """The store cannot do what was asked (database unavailable, schema too new, ...)."""


class Conflict(StoreError):
    """The change would break a uniqueness rule, or the record is in a state that forbids it."""


class StorageUnavailable(StoreError):
    """The database cannot be reached or written for now: a full disk, an I/O error, a lock held
    past its timeout, a lost or refused connection, a server shutting down or read-only.

    The store raises it after rolling back whatever the operation had begun, so nothing is half
    stored (a connection lost during a commit may leave the whole of it stored: retrying with the
    same idempotency key is safe); the same operation may succeed once the database answers."""


class Overloaded(StoreError):
    """More writes wait for the database than WEBHOOKD_MAX_PENDING_WRITES allows: this one was
    refused before anything of it was queued, so retrying it later is safe."""


class CryptoError(WebhookdError):
    """A ciphertext does not decrypt under the configured master key."""


class RequestError(WebhookdError):
    """A request is refused. ``status`` and ``code`` become the HTTP answer, the message its text."""

    status = 400
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class ApiError(RequestError):
    """A management API request is refused."""


class InvalidInput(RequestError):
    """A value a client gave (an API body or a CLI flag) is not valid; the message says which."""

    code = "invalid_input"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class RequestTimeout(RequestError):
    status = 408
    code = "request_timeout"


class StorageRefusal(RequestError):
    """The answer to a request that met :class:`StorageUnavailable`."""

    status = 503
    code = "storage_unavailable"


class OverloadRefusal(RequestError):
    """The answer to a request that met :class:`Overloaded`."""

    status = 503
    code = "overloaded"


class IngestError(RequestError):
    """A carrier callback is refused."""


class SourceNotFound(IngestError):
    status = 404
    code = "source_not_found"


class SignatureInvalid(IngestError):
    status = 401
    code = "invalid_signature"


class PayloadInvalid(IngestError):
    status = 400
    code = "invalid_payload"


class DeliveryError(WebhookdError):
    """An attempt ended without an HTTP status from the endpoint."""


class DestinationBlocked(DeliveryError):
    """The destination is a private, loopback or otherwise reserved address."""


class SendFailed(DeliveryError):
    """Connecting, sending or reading failed (timeout, reset, TLS, DNS)."""
