"""Optional OpenTelemetry traces (the ``otel`` extra): the one module that imports ``opentelemetry``."""

from __future__ import annotations

import contextlib
import contextvars
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

from webhookd.exceptions import ConfigError

try:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the extra is not installed: tracing is off, and nothing else changes
    INSTALLED = False
else:
    INSTALLED = True

AttributeValue = str | int | Sequence[str]
Kind = Literal["server", "client", "internal"]
TRACEPARENT = "traceparent"
"""The W3C Trace Context header: a request's parent, and what each delivery carries on."""
EXPORTERS = ("otlp", "console", "none")


class Span:
    """A span as the rest of webhookd sees it. This one is tracing switched off: it records nothing
    and has no context to pass on."""

    __slots__ = ()

    @property
    def traceparent(self) -> str | None:
        """This span's context as a ``traceparent`` header value, for a stored event or a delivery."""
        return None

    def set(self, key: str, value: AttributeValue) -> None:
        """Record an attribute. Never a secret: no API key, no payload, no full URL."""

    def fail(self, error_type: str) -> None:
        """Mark the span failed, with ``error.type`` naming why (an exception class, an HTTP status)."""


NO_SPAN = Span()


class Tracing:
    """Tracing switched off: the extra is not installed, or ``OTEL_SDK_DISABLED`` is set."""

    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        kind: Kind = "internal",
        parent: Mapping[str, str] | None = None,
    ) -> contextlib.AbstractContextManager[Span]:
        """A span, current for the ``with`` block. ``parent`` holds the headers (``traceparent``)
        to continue: a request's, or a stored event's; without it the current span is the parent."""
        return contextlib.nullcontext(NO_SPAN)

    def flush(self) -> None:
        """Export the spans that ended (at shutdown)."""


NO_TRACING = Tracing()


class _OtelSpan(Span):
    __slots__ = ("_propagator", "_span")

    def __init__(self, span: trace.Span, propagator: TraceContextTextMapPropagator) -> None:
        self._span, self._propagator = span, propagator

    @property
    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier.get(TRACEPARENT)

    def set(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def fail(self, error_type: str) -> None:
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(trace.StatusCode.ERROR)


class OtelTracing(Tracing):
    """Spans from an SDK ``provider``, exported by its processors (tests give one of their own)."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("webhookd")
        self._propagator = TraceContextTextMapPropagator()
        self._kinds = {
            "server": trace.SpanKind.SERVER,
            "client": trace.SpanKind.CLIENT,
            "internal": trace.SpanKind.INTERNAL,
        }

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        kind: Kind = "internal",
        parent: Mapping[str, str] | None = None,
    ) -> Iterator[Span]:
        # A malformed traceparent extracts to an empty context: the span starts a trace of its own.
        context = None if parent is None else self._propagator.extract(parent)
        with self._tracer.start_as_current_span(
            name, context=context, kind=self._kinds[kind], attributes=attributes
        ) as span:
            yield _OtelSpan(span, self._propagator)

    def flush(self) -> None:
        self._provider.force_flush()


class _ContextSpan(Span):
    __slots__ = ("_traceparent",)

    def __init__(self, traceparent: str) -> None:
        self._traceparent = traceparent

    @property
    def traceparent(self) -> str | None:
        return self._traceparent


def _trace_of(traceparent: str | None) -> tuple[str, str] | None:
    """``(trace id, flags)`` of a valid W3C ``traceparent``, else None."""
    parts = (traceparent or "").strip().lower().split("-")
    if len(parts) < 4 or parts[0] == "ff" or [len(p) for p in parts[:4]] != [2, 32, 16, 2]:
        return None
    try:
        values = [int(part, 16) for part in parts[:4]]
    except ValueError:
        return None
    if not (values[1] and values[2]) or (parts[0] == "00" and len(parts) != 4):
        return None
    return parts[1], parts[3]


class PropagatingTracing(Tracing):
    """The extra installed, no exporter configured: nothing is recorded, and a span is just a new
    span id in its parent's trace (an SDK span costs about 60 times as much). Deliveries still carry
    a valid ``traceparent`` that continues the publisher's trace."""

    def __init__(self) -> None:
        self._current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            "webhookd_traceparent", default=None
        )

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        kind: Kind = "internal",
        parent: Mapping[str, str] | None = None,
    ) -> Iterator[Span]:
        found = _trace_of(self._current.get() if parent is None else parent.get(TRACEPARENT))
        # A new trace says "sampled", so that the receiver's parent-based sampler keeps its side.
        trace_id, flags = found or (f"{random.getrandbits(128) or 1:032x}", "01")
        traceparent = f"00-{trace_id}-{random.getrandbits(64) or 1:016x}-{flags}"
        token = self._current.set(traceparent)
        try:
            yield _ContextSpan(traceparent)
        finally:
            self._current.reset(token)


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names; unset, OTLP if an OTLP endpoint is set."""
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - set(EXPORTERS))
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={raw!r} is not valid: webhookd exports to {', '.join(EXPORTERS)}"
        )
    return [name for name in names if name != "none"]


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol not in (None, "", "http/protobuf"):
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not available: webhookd[otel] exports over http/protobuf"
            " (unset OTEL_EXPORTER_OTLP_PROTOCOL, or set it to http/protobuf)"
        )
    # Imported only when used: the exporter's dependencies (protobuf, requests) load on demand.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout: from the OTEL_EXPORTER_OTLP_* variables


def _resource() -> Resource:
    """``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``, with ``webhookd`` as the default name."""
    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return detected.merge(Resource({SERVICE_NAME: "webhookd"}))
    return detected


def tracing_from_env(env: Mapping[str, str]) -> Tracing:
    """Tracing as the standard ``OTEL_*`` variables configure it, read once at start.

    Without the extra, or with ``OTEL_SDK_DISABLED=true``: off. With no exporter configured: no
    spans, but deliveries carry ``traceparent``. With one: spans from the SDK, exported.
    Raises :class:`ConfigError` for an exporter or protocol webhookd cannot export to."""
    if not INSTALLED or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return NO_TRACING
    processors: list[SpanProcessor] = [
        BatchSpanProcessor(_exporter(name, env)) for name in _exporter_names(env)
    ]
    if not processors:
        return PropagatingTracing()
    # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(resource=_resource())
    for processor in processors:
        provider.add_span_processor(processor)
    return OtelTracing(provider)
