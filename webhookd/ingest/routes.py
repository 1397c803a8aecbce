"""``POST /ingest/{carrier}/{source_id}``: verify, normalize, store, and only then answer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webhookd.api.openapi import operation
from webhookd.crypto import source_credentials_context
from webhookd.exceptions import (
    CryptoError,
    DestinationBlocked,
    Overloaded,
    OverloadRefusal,
    PayloadInvalid,
    RequestError,
    SourceNotFound,
    StorageRefusal,
    StorageUnavailable,
)
from webhookd.ingest.base import CarrierAdapter, RawCallback
from webhookd.ingest.callstate import CallState, advance
from webhookd.ingest.elevenlabs import ElevenLabsAdapter
from webhookd.ingest.normalize import NormalizedCall
from webhookd.ingest.plivo import PlivoAdapter
from webhookd.ingest.retell import RetellAdapter
from webhookd.ingest.telnyx import TelnyxAdapter
from webhookd.ingest.telnyx_texml import TelnyxTexmlAdapter
from webhookd.ingest.twilio import TwilioAdapter
from webhookd.ingest.vapi import VapiAdapter
from webhookd.ingest.vonage import VonageAdapter
from webhookd.inputs import HOLDS_NUL, NUL, holds_nul
from webhookd.models import Carrier, Event, NewEvent, Source, call_ref, is_id, utcnow
from webhookd.store.base import CallbackReceipt, Decide
from webhookd.tracing import Span
from webhookd.web import JSONResponse, Services, read_body, services

logger = logging.getLogger(__name__)

ADAPTERS: Mapping[Carrier, CarrierAdapter] = {
    Carrier.TWILIO: TwilioAdapter(),
    Carrier.TELNYX: TelnyxAdapter(),
    Carrier.TELNYX_TEXML: TelnyxTexmlAdapter(),
    Carrier.VONAGE: VonageAdapter(),
    Carrier.PLIVO: PlivoAdapter(),
    Carrier.ELEVENLABS: ElevenLabsAdapter(),
    Carrier.RETELL: RetellAdapter(),
    Carrier.VAPI: VapiAdapter(),
}


CALLBACK_PARAM = "callback_url"
"""A query parameter on the ingest URL (signed by the carrier) naming a per-call callback URL."""


async def _callback_url(svc: Services, raw: str | None) -> str | None:
    """The per-call callback URL, if one is given and allowed. The carrier signed it, so it came
    from the platform; one that the SSRF guard refuses is logged and dropped, not fatal."""
    if not raw:
        return None
    try:
        parts = urlsplit(raw)  # raises ValueError on a malformed host such as "http://[::1"
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise DestinationBlocked("not an absolute http(s) URL")
        await svc.guard.check_url(raw)
    except (DestinationBlocked, ValueError) as exc:
        logger.warning(
            "ignoring callback_url on ingest: %s", exc, extra={"action": "ingest.callback_refused"}
        )
        return None
    return raw


def _check_storable(update: NormalizedCall) -> None:
    """``PayloadInvalid`` if the update would store a NUL (from a form field, a query parameter, a
    JSON string), which PostgreSQL refuses and SQLite keeps. Nesting needs no check here: the JSON
    an adapter reads was checked as it came in (``webhookd.inputs``)."""
    data = update.event_data()
    if holds_nul(orjson.dumps(data), data) or NUL in update.idempotency_key:
        raise PayloadInvalid(f"the callback {HOLDS_NUL}")


def decider(
    update: NormalizedCall, customer_id: str, callback_url: str | None, traceparent: str | None = None
) -> Decide:
    """The store runs this inside the callback's transaction, with the call's stored state."""

    def decide(raw: dict[str, Any] | None) -> tuple[dict[str, Any], NewEvent | None]:
        state, emitted = advance(CallState.from_json(raw), update)
        if emitted is None or emitted.type is None:
            return state.to_json(), None
        event = NewEvent(
            customer_id,
            emitted.type,
            emitted.event_data(),
            emitted.idempotency_key,
            callback_url=callback_url,
            # A call's events reach an ordered subscription one at a time, in order.
            ordering_key=call_ref(emitted.carrier, emitted.carrier_call_id),
            traceparent=traceparent,
        )
        return state.to_json(), event

    return decide


def public_url(request: Request, base_url: str) -> str:
    """The URL the carrier called: the public base URL, our path, and the query unchanged."""
    query = request.url.query
    return base_url + request.url.path + (f"?{query}" if query else "")


async def _source(svc: Services, carrier_name: str, source_id: str) -> tuple[Source, CarrierAdapter]:
    try:
        carrier = Carrier(carrier_name)
    except ValueError:
        raise SourceNotFound(f"unknown carrier {carrier_name!r}") from None
    source = await svc.store.get_source(source_id) if is_id(source_id, "src") else None
    if source is None or source.carrier is not carrier:
        raise SourceNotFound("no such source for this carrier")
    return source, ADAPTERS[carrier]


def _credentials(svc: Services, source: Source) -> dict[str, str]:
    try:
        plain = svc.box.decrypt(source.credentials, source_credentials_context(source.id))
    except CryptoError:
        logger.error(
            "credentials of source %s do not decrypt",
            source.id,
            extra={"action": "ingest.credentials_error"},
        )
        raise
    loaded: dict[str, str] = orjson.loads(plain)
    return loaded


@operation(
    summary="Receive a carrier's or voice-AI engine's status callback",
    description="Point the carrier's status callback at this URL, with the source id that"
    " `webhookd sources create` printed. The callback is verified by the carrier's own signature"
    " (Twilio's X-Twilio-Signature, Telnyx's Ed25519 headers, Vonage's and Plivo's signatures, the"
    " engines' HMAC headers), not by an API key. It is answered only after its `call.*` events are"
    " stored. `events` lists the ids of the events it produced; a repeated or late callback produces"
    " none and is counted in `duplicates` or recorded only.",
    authenticated=False,
    traced=True,
    body="CarrierCallback",
    media_types=("application/x-www-form-urlencoded", "application/json"),
    responses={200: "CallbackReceived", 401: None, 404: None, 503: None},
    tag="ingest",
)
async def ingest(request: Request) -> Response:
    """Count every callback by carrier and outcome, including the refused ones."""
    svc = services(request)
    carrier = request.path_params["carrier"]
    label = carrier if carrier in {c.value for c in Carrier} else "unknown"
    try:
        # A traceparent header on the callback is the parent; the events' deliveries continue the trace.
        attributes = {"webhookd.carrier": label, "http.request.method": "POST"}
        with svc.tracing.span("webhookd.ingest", attributes, kind="server", parent=request.headers) as span:
            response, outcome = await _ingest(request, svc, span)
            span.set("http.response.status_code", response.status_code)
    except RequestError as exc:
        svc.metrics.ingest_requests.labels(label, exc.code).inc()
        raise
    except StorageUnavailable:
        svc.metrics.ingest_requests.labels(label, StorageRefusal.code).inc()
        raise
    except Overloaded:
        svc.metrics.ingest_requests.labels(label, OverloadRefusal.code).inc()
        raise
    svc.metrics.ingest_requests.labels(label, outcome).inc()
    return response


async def _ingest(request: Request, svc: Services, span: Span) -> tuple[Response, str]:
    source, adapter = await _source(svc, request.path_params["carrier"], request.path_params["source_id"])
    span.set("webhookd.source.id", source.id)
    body = await read_body(request, svc.settings.max_body_bytes)
    callback = RawCallback(
        url=public_url(request, svc.settings.effective_public_base_url),
        headers=request.headers,
        body=body,
        query=parse_qsl(request.url.query, keep_blank_values=True),
    )
    with svc.tracing.span("webhookd.ingest.verify"):
        adapter.verify(callback, _credentials(svc, source), utcnow())
    with svc.tracing.span("webhookd.ingest.normalize") as normalizing:
        updates = adapter.parse(callback)
        for update in updates:
            _check_storable(update)
        normalizing.set("webhookd.updates", len(updates))
    # One request's updates share its signed query, so its callback URL is checked once.
    callback_url = await _callback_url(svc, updates[0].metadata.get(CALLBACK_PARAM)) if updates else None
    with svc.tracing.span("webhookd.ingest.store") as storing:
        published, duplicates = await _store(svc, source, updates, callback_url, storing.traceparent)
    span.set("webhookd.event.types", [event.type for event in published])
    events = [event.id for event in published]
    label = "accepted" if events else "duplicate" if duplicates else "recorded"
    return JSONResponse({"received": True, "events": events, "duplicates": duplicates}), label


async def _store(
    svc: Services,
    source: Source,
    updates: Sequence[NormalizedCall],
    callback_url: str | None,
    traceparent: str | None,
) -> tuple[list[Event], int]:
    """Record each update; the events they produced, and how many were duplicates."""
    events, duplicates = [], 0
    for update in updates:
        receipt = CallbackReceipt(
            source.customer_id,
            source.carrier.value,
            update.carrier_call_id,
            update.idempotency_key,
            update.status_raw,
        )
        outcome = await svc.store.record_callback(
            receipt,
            decider(update, source.customer_id, callback_url, traceparent),
            delay_s=svc.settings.retry_schedule_s[0],
        )
        duplicates += outcome.duplicate
        if outcome.published is not None:
            events.append(outcome.published.event)
            svc.metrics.count_event(outcome.published)
    return events, duplicates


def routes() -> list[Route]:
    return [Route("/ingest/{carrier}/{source_id}", ingest, methods=["POST"])]
