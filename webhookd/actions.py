"""What a customer does to a subscription beyond storing a change: rotate its secret, send it a test
event, recover its failed deliveries. The one implementation behind the API and the dashboard; each
takes the customer the request speaks for, so another customer's subscription is never touched."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from webhookd.crypto import new_webhook_secret, subscription_secret_context
from webhookd.exceptions import Conflict
from webhookd.models import NewEvent, PublishResult, Subscription
from webhookd.web import Services

MAX_RECOVER = 10_000
RECOVER_BATCH = 200


@dataclass(frozen=True, slots=True)
class RotatedSecret:
    secret: str
    """The new plain secret: shown once, stored only encrypted."""
    previous_until: datetime
    """When the old secret stops signing."""


@dataclass(frozen=True, slots=True)
class Recovery:
    requeued: int
    more: bool
    """More failed deliveries matched than one recovery takes (``MAX_RECOVER``)."""


async def rotate_secret(svc: Services, customer_id: str, subscription_id: str) -> RotatedSecret | None:
    """A new current secret; the old one keeps signing for the grace period. ``None`` if not found."""
    secret = new_webhook_secret()
    ciphertext = svc.box.encrypt(secret.encode(), subscription_secret_context(subscription_id))
    until = svc.clock() + timedelta(seconds=svc.settings.secret_grace_s)
    if await svc.store.rotate_subscription_secret(customer_id, subscription_id, ciphertext, until) is None:
        return None
    return RotatedSecret(secret, until)


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
    ids = await svc.store.failed_delivery_ids(sub.customer_id, sub.id, since, until, MAX_RECOVER + 1)
    more, ids = len(ids) > MAX_RECOVER, ids[:MAX_RECOVER]
    svc.background.spawn(_requeue(svc, ids), name=f"recover-{sub.id}")
    return Recovery(len(ids), more)


async def _requeue(svc: Services, ids: list[str]) -> None:
    """Small batches, each its own transaction, so recovery never holds up ingest."""
    for start in range(0, len(ids), RECOVER_BATCH):
        await svc.store.requeue_deliveries(ids[start : start + RECOVER_BATCH])
