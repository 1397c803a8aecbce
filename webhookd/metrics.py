"""Prometheus metrics: one ``Metrics`` object with its own registry, no globals."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from webhookd.models import EVENT_TYPES, DisabledReason, PublishResult
from webhookd.store.base import OutboxStats

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
ATTEMPT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)


def status_class(status: int | None) -> str:
    """``2xx`` ... ``5xx``, or ``none`` when no HTTP status came back (timeout, reset)."""
    return "none" if status is None else f"{status // 100}xx"


class Metrics:
    """Every metric webhookd exports. Names follow Prometheus conventions (``_total``, ``_seconds``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingest_requests = Counter(
            "webhookd_ingest_requests",
            "Carrier callbacks received, by carrier and outcome.",
            ["carrier", "outcome"],
            registry=r,
        )
        self.events = Counter("webhookd_events_published", "Events stored, by type.", ["type"], registry=r)
        self.attempts = Counter(
            "webhookd_delivery_attempts",
            "Delivery attempts, by outcome and HTTP status class.",
            ["outcome", "status_class"],
            registry=r,
        )
        self.attempt_duration = Histogram(
            "webhookd_delivery_attempt_duration_seconds",
            "Time from sending an attempt to its answer.",
            buckets=ATTEMPT_BUCKETS_S,
            registry=r,
        )
        self.end_to_end = Histogram(
            "webhookd_delivery_latency_seconds",
            "Time from an event being stored to its delivery.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.auto_disables = Counter(
            "webhookd_subscription_auto_disables",
            "Subscriptions disabled by delivery failures.",
            ["reason"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "webhookd_outbox_pending_deliveries",
            "Deliveries waiting to be sent, by status.",
            ["status"],
            registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "webhookd_outbox_oldest_due_age_seconds",
            "How long the longest-waiting due delivery has been due.",
            registry=r,
        )
        self.subscriptions = Gauge("webhookd_subscriptions", "Subscriptions by state.", ["state"], registry=r)
        # Export the known series from the start at 0, so rules and panels see them before the first event.
        for reason in DisabledReason:
            self.auto_disables.labels(reason.value)
        self._events_by_type = {name: self.events.labels(name) for name in (*EVENT_TYPES, "other")}

    def count_event(self, result: PublishResult) -> None:
        """Count a newly stored event; free-form platform types share one label to bound cardinality."""
        if result.created:
            by_type = self._events_by_type
            by_type.get(result.event.type, by_type["other"]).inc()

    def render(self, stats: OutboxStats) -> bytes:
        """The exposition text, with the outbox gauges set from ``stats`` just before."""
        for status, count in stats.deliveries_by_status.items():
            self.outbox_pending.labels(status).set(count)
        self.outbox_oldest_age.set(stats.oldest_due_age_s)
        for state, count in stats.subscriptions_by_state.items():
            self.subscriptions.labels(state).set(count)
        return generate_latest(self.registry)
