"""Per-subscription health: count straight failures, hold, probe one at a time, disable.

Both stores apply these rules inside the transaction that records the attempts, to the
subscription's current row, one outcome after another in the order the worker reported them. An
attempt counts only if no failure was counted since it was claimed (the subscription's health
generation still holds), so attempts already in flight when an endpoint started failing count once
between them: a blip cannot disable an endpoint. A 410 Gone disables at once, whatever the
generation. A success resets the count, which releases what was held.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from webhookd.config import DEFAULT_DISABLE_AFTER_FAILURES, DEFAULT_RETRY_SCHEDULE_S, Settings
from webhookd.models import AttemptResult, Disabled, DisabledReason
from webhookd.retry import RetryPolicy

GONE = 410


@dataclass(frozen=True, slots=True)
class Health:
    """A subscription's health as its row holds it."""

    customer_id: str
    subscription_id: str
    failure_count: int
    generation: int
    """Moves on with every counted failure: an attempt claimed under an older one does not count."""
    active: bool
    """Neither disabled nor deleted: only an active subscription's health changes."""
    probe_at: datetime | None = None
    disabled: DisabledReason | None = None
    """Set when these rules disabled it."""


HEALTH_COLUMNS = "id, customer_id, failure_count, health_gen, is_active AND deleted_at IS NULL"
"""What :func:`health` reads of a subscription's row (both stores select it alike)."""


def health(row: Any) -> Health:
    return Health(row[1], row[0], row[2], row[3], bool(row[4]))


@dataclass(frozen=True, slots=True)
class Outcome:
    """One recorded attempt, as the rules need it: the result, and its delivery's subscription and
    the generation it was claimed under, as the delivery's row holds them."""

    result: AttemptResult
    subscription_id: str
    claimed_generation: int


def held_outcomes(results: Sequence[AttemptResult], rows: Iterable[Any]) -> list[Outcome]:
    """The results whose claims are still held (their delivery is in flight for the attempt they
    report), given the in-flight rows ``(id, attempts, subscription_id, claimed_gen)`` of their
    deliveries."""
    held = {row[0]: row for row in rows}
    return [
        Outcome(r, held[r.delivery_id][2], held[r.delivery_id][3])
        for r in results
        if r.delivery_id in held and held[r.delivery_id][1] == r.attempt_no
    ]


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    """How long a failing subscription waits for its next probe, and how many straight failures disable it."""

    retry: RetryPolicy
    disable_after: int

    def after(self, health: Health, outcome: Outcome, now: datetime) -> Health:
        """``health`` once ``outcome`` is applied."""
        result = outcome.result
        if not health.active:
            return health
        if result.succeeded:
            return replace(health, failure_count=0, probe_at=None)
        gone = result.status_code == GONE
        if not gone and outcome.claimed_generation != health.generation:
            return health  # claimed before another failure was counted: that one stands for both
        count = health.failure_count + 1
        if gone:
            return self._failed(health, count, now, DisabledReason.ENDPOINT_GONE)
        probe_at = now + timedelta(seconds=self.retry.probe_delay(count, result.retry_after_s))
        disable = DisabledReason.CONSECUTIVE_FAILURES if count >= self.disable_after else None
        return self._failed(health, count, probe_at, disable)

    @staticmethod
    def _failed(health: Health, count: int, probe_at: datetime, disable: DisabledReason | None) -> Health:
        return replace(
            health,
            failure_count=count,
            generation=health.generation + 1,
            probe_at=probe_at,
            active=disable is None,
            disabled=disable,
        )

    def apply(self, health: Health, outcomes: Iterable[Outcome], now: datetime) -> Health:
        """``health`` once every outcome is applied, in order."""
        for outcome in outcomes:
            health = self.after(health, outcome, now)
        return health

    def settle(
        self, healths: Iterable[Health], outcomes: Sequence[Outcome], now: datetime
    ) -> tuple[list[Health], list[Disabled]]:
        """Apply a batch's outcomes to their subscriptions' ``healths`` (a subscription missing there
        was healthy, with only successes in the batch). Returns the healths that changed, for the
        store to write, and what was disabled."""
        changed: list[Health] = []
        disabled: list[Disabled] = []
        for before in healths:
            its = [o for o in outcomes if o.subscription_id == before.subscription_id]
            after = self.apply(before, its, now)
            if after != before:
                changed.append(after)
            gone = disabled_by(before, after)
            if gone is not None:
                disabled.append(gone)
        return changed, disabled

    @classmethod
    def from_settings(cls, settings: Settings) -> CircuitPolicy:
        return cls(RetryPolicy(settings.retry_schedule_s), settings.disable_after_failures)


DEFAULT_CIRCUIT = CircuitPolicy(RetryPolicy(DEFAULT_RETRY_SCHEDULE_S), DEFAULT_DISABLE_AFTER_FAILURES)


def disabled_by(before: Health, after: Health) -> Disabled | None:
    """What to log and count when applying outcomes took ``before`` to ``after``: the reason that
    disabled the subscription (no later outcome changes a disabled subscription)."""
    if not before.active or after.disabled is None:
        return None
    return Disabled(after.customer_id, after.subscription_id, after.disabled)
