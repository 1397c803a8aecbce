"""Per-subscription failure tracking: count straight failures, probe one at a time, disable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from webhookd.delivery.retry import RetryPolicy
from webhookd.models import CircuitChange, DeliveryJob, DisabledReason


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    """Decides what one failed attempt does to its subscription.

    The change is computed from the failure count seen at claim time and applied by the store only
    if the subscription's health generation has not moved since, so an attempt that was already in
    flight when another failure was counted does not count again (a blip cannot disable an endpoint).
    """

    retry: RetryPolicy
    disable_after: int

    def on_failure(
        self, job: DeliveryJob, now: datetime, *, retry_after_s: float | None = None, gone: bool = False
    ) -> CircuitChange:
        count = job.failure_count + 1
        if gone:
            return CircuitChange(
                job.subscription_id,
                job.health_generation,
                count,
                now,
                disable=DisabledReason.ENDPOINT_GONE,
                force=True,
                customer_id=job.customer_id,
            )
        probe_at = now + timedelta(seconds=self.retry.probe_delay(count, retry_after_s))
        disable = DisabledReason.CONSECUTIVE_FAILURES if count >= self.disable_after else None
        return CircuitChange(
            job.subscription_id, job.health_generation, count, probe_at, disable, customer_id=job.customer_id
        )
