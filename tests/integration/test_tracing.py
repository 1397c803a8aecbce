"""OpenTelemetry traces (the otel extra): spans for ingest, publish and delivery, and the trace context
carried from a publisher's request through the store to the receiver's traceparent header."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from standardwebhooks.webhooks import Webhook

from tests.integration.carrier_signing import credentials, fixture_dir, signed_headers
from tests.integration.harness import (
    auth,
    eventually,
    free_port,
    provision_key,
    provision_source,
    running_receiver,
    running_server,
    server_settings,
    subprocess_env,
    webhookd_process,
)
from webhookd.exceptions import ConfigError
from webhookd.models import Carrier, Scope
from webhookd.tracing import NO_TRACING, OtelTracing, PropagatingTracing, tracing_from_env

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
# The subscription URL's query holds a token: no span may record it.
TOKEN = "s3cr3t-token"


@pytest.fixture
def spans() -> Iterator[tuple[OtelTracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield OtelTracing(provider), exporter
    provider.shutdown()


def _parts(traceparent: str) -> tuple[str, str]:
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, len(trace_id), len(span_id), len(flags)) == ("00", 32, 16, 2)
    return trace_id, span_id


def _named(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [span for span in finished if span.name == name]
    assert len(found) == 1, [span.name for span in finished]
    return found[0]


def _ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    """(trace id, span id, parent span id) in hex."""
    assert span.context is not None
    parent = None if span.parent is None else f"{span.parent.span_id:016x}"
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}", parent


async def _subscribe(http: aiohttp.ClientSession, base: str, key: str, url: str) -> str:
    body = {"url": url, "events": ["call.completed"]}
    async with http.post(f"{base}/api/v1/webhook-subscriptions", headers=auth(key), json=body) as response:
        assert response.status == 201
        secret: str = (await response.json())["secret"]
        return secret


async def _publish(http: aiohttp.ClientSession, base: str, key: str, headers: dict[str, str]) -> str:
    body = {"type": "call.completed", "data": {"call_id": "c1"}}
    async with http.post(f"{base}/api/v1/events", headers={**auth(key), **headers}, json=body) as response:
        assert response.status == 202, await response.text()
        event_id: str = (await response.json())["id"]
        return event_id


async def test_publish_and_delivery_spans_continue_the_callers_trace(
    tmp_path: Path, spans: tuple[OtelTracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = spans
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    async with (
        running_receiver() as receiver,
        running_server(server_settings(db), tracing=tracing) as base,
        aiohttp.ClientSession() as http,
    ):
        secret = await _subscribe(http, base, key, f"{receiver.url}?token={TOKEN}")
        event_id = await _publish(http, base, key, {"traceparent": TRACEPARENT})
        await receiver.wait_for(lambda got: len(got) == 1)
        await eventually(lambda: any(s.name == "webhookd.deliver" for s in exporter.get_finished_spans()))

    finished = exporter.get_finished_spans()
    publish, deliver = _named(finished, "webhookd.publish"), _named(finished, "webhookd.deliver")
    assert _ids(publish)[0] == TRACE_ID and _ids(publish)[2] == PARENT_SPAN_ID
    assert _ids(deliver)[0] == TRACE_ID and _ids(deliver)[2] == _ids(publish)[1]
    assert publish.attributes is not None and deliver.attributes is not None
    assert publish.attributes["webhookd.event.type"] == "call.completed"
    assert publish.attributes["webhookd.customer.id"] == "acme"
    assert publish.attributes["http.response.status_code"] == 202
    assert deliver.attributes["http.response.status_code"] == 200
    assert deliver.attributes["webhookd.event.type"] == "call.completed"
    assert deliver.attributes["webhookd.event.id"] == event_id
    assert str(deliver.attributes["webhookd.subscription.id"]).startswith("sub_")
    assert deliver.attributes["webhookd.delivery.attempt"] == 1
    assert deliver.attributes["server.address"] == "127.0.0.1"
    recorded = repr([dict(span.attributes or {}) for span in finished])
    assert TOKEN not in recorded and key not in recorded
    received = receiver.requests[0]
    assert _parts(received.headers["traceparent"]) == (TRACE_ID, _ids(deliver)[1])
    Webhook(secret).verify(received.body, received.headers)


async def test_a_batch_publish_is_one_span_that_parents_each_of_its_deliveries(
    tmp_path: Path, spans: tuple[OtelTracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = spans
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    batch = {"events": [{"type": "call.completed", "data": {"call_id": f"c{n}"}} for n in range(3)]}
    async with (
        running_receiver() as receiver,
        running_server(server_settings(db), tracing=tracing) as base,
        aiohttp.ClientSession() as http,
    ):
        await _subscribe(http, base, key, receiver.url)
        headers = {**auth(key), "traceparent": TRACEPARENT}
        async with http.post(f"{base}/api/v1/events/batch", headers=headers, json=batch) as response:
            assert response.status == 202, await response.text()
        await receiver.wait_for(lambda got: len(got) == 3)
        await eventually(
            lambda: sum(s.name == "webhookd.deliver" for s in exporter.get_finished_spans()) == 3
        )

    finished = exporter.get_finished_spans()
    publish = _named(finished, "webhookd.publish")
    assert _ids(publish)[0] == TRACE_ID and _ids(publish)[2] == PARENT_SPAN_ID
    assert publish.attributes is not None and publish.attributes["webhookd.batch.events"] == 3
    delivers = [span for span in finished if span.name == "webhookd.deliver"]
    assert {_ids(span)[:1] + _ids(span)[2:] for span in delivers} == {(TRACE_ID, _ids(publish)[1])}
    assert {_parts(r.headers["traceparent"])[0] for r in receiver.requests} == {TRACE_ID}


async def test_ingest_spans_name_the_carrier_and_parent_the_delivery(
    tmp_path: Path, spans: tuple[OtelTracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = spans
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS})
    source = await provision_source(db, "acme", Carrier.TWILIO, credentials(Carrier.TWILIO))
    body = (fixture_dir(Carrier.TWILIO) / "04_completed.form").read_bytes()
    settings = server_settings(db)
    async with (
        running_receiver() as receiver,
        running_server(settings, tracing=tracing) as base,
        aiohttp.ClientSession() as http,
    ):
        await _subscribe(http, base, key, receiver.url)
        url = f"{settings.effective_public_base_url}/ingest/twilio/{source}"
        headers = {**signed_headers(Carrier.TWILIO, url, body), "traceparent": TRACEPARENT}
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        async with http.post(f"{base}/ingest/twilio/{source}", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()
        await receiver.wait_for(lambda got: len(got) == 1)
        await eventually(lambda: any(s.name == "webhookd.deliver" for s in exporter.get_finished_spans()))

    finished = exporter.get_finished_spans()
    ingest = _named(finished, "webhookd.ingest")
    assert ingest.attributes is not None
    assert ingest.attributes["webhookd.carrier"] == "twilio"
    assert list(ingest.attributes["webhookd.event.types"]) == ["call.completed"]  # type: ignore[arg-type]
    assert _ids(ingest)[0] == TRACE_ID and _ids(ingest)[2] == PARENT_SPAN_ID
    for step in ("verify", "normalize", "store"):
        assert _ids(_named(finished, f"webhookd.ingest.{step}"))[2] == _ids(ingest)[1]
    store, deliver = _named(finished, "webhookd.ingest.store"), _named(finished, "webhookd.deliver")
    assert _ids(deliver)[0] == TRACE_ID and _ids(deliver)[2] == _ids(store)[1]
    assert _parts(receiver.requests[0].headers["traceparent"]) == (TRACE_ID, _ids(deliver)[1])


async def test_default_tracing_without_exporter_still_carries_the_trace(tmp_path: Path) -> None:
    """The app's own tracing (no exporter configured): the receiver's traceparent continues the
    publisher's trace, with a span id of its own, and the delivery still verifies."""
    assert not any(name.startswith("OTEL_") for name in os.environ)
    db = tmp_path / "w.db"
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    async with (
        running_receiver() as receiver,
        running_server(server_settings(db)) as base,
        aiohttp.ClientSession() as http,
    ):
        secret = await _subscribe(http, base, key, receiver.url)
        await _publish(http, base, key, {"traceparent": TRACEPARENT})
        await receiver.wait_for(lambda got: len(got) == 1)

    received = receiver.requests[0]
    trace_id, span_id = _parts(received.headers["traceparent"])
    assert trace_id == TRACE_ID and span_id != PARENT_SPAN_ID
    Webhook(secret).verify(received.body, received.headers)


BLOCK_OTEL = """
import importlib.abc, sys

class _NoOtel(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"{name} is blocked: this process runs without the otel extra")
        return None

sys.meta_path.insert(0, _NoOtel())
"""


@pytest.mark.slow
async def test_without_the_extra_delivery_works_and_sends_no_traceparent(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_OTEL)
    db, port = tmp_path / "w.db", free_port()
    key = await provision_key(db, "acme", {Scope.MANAGE_WEBHOOKS, Scope.PUBLISH_EVENTS})
    env = subprocess_env({"WEBHOOKD_DATABASE_URL": f"sqlite:///{db}", "WEBHOOKD_PORT": str(port)})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(blocker), env.get("PYTHONPATH", "")) if p)
    base = f"http://127.0.0.1:{port}"
    async with (
        running_receiver() as receiver,
        webhookd_process(env, base, tmp_path / "serve.log"),
        aiohttp.ClientSession() as http,
    ):
        secret = await _subscribe(http, base, key, receiver.url)
        await _publish(http, base, key, {"traceparent": TRACEPARENT})
        await receiver.wait_for(lambda got: len(got) == 1)

    received = receiver.requests[0]
    assert "traceparent" not in {name.lower() for name in received.headers}
    Webhook(secret).verify(received.body, received.headers)


def test_exporters_come_from_the_otel_variables() -> None:
    assert isinstance(tracing_from_env({}), PropagatingTracing)
    assert isinstance(tracing_from_env({"OTEL_TRACES_EXPORTER": "console"}), OtelTracing)
    assert tracing_from_env({"OTEL_SDK_DISABLED": "true"}) is NO_TRACING
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        tracing_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigError, match="http/protobuf"):
        tracing_from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_without_an_exporter_spans_are_new_ids_in_their_parents_trace() -> None:
    tracing = PropagatingTracing()
    with tracing.span("request", parent={"traceparent": TRACEPARENT}) as request:
        with tracing.span("store") as store:
            stored = store.traceparent
    assert request.traceparent is not None and stored is not None
    assert _parts(request.traceparent)[0] == _parts(stored)[0] == TRACE_ID
    assert len({_parts(request.traceparent)[1], _parts(stored)[1], PARENT_SPAN_ID}) == 3
    with tracing.span("deliver", parent={"traceparent": stored}) as deliver:
        assert deliver.traceparent is not None and _parts(deliver.traceparent)[0] == TRACE_ID
    for malformed in ("", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "junk", TRACEPARENT + "-extra"):
        with tracing.span("request", parent={"traceparent": malformed}) as fresh:
            assert fresh.traceparent is not None and _parts(fresh.traceparent)[0] != TRACE_ID
