"""The circuit rules as pure functions over a subscription's health (the stores apply them in SQL
transactions; tests/contract checks both stores end alike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from webhookd.models import AttemptResult, Disabled, DisabledReason
from webhookd.retry import RetryPolicy
from webhookd.store.circuit import CircuitPolicy, Health, Outcome, disabled_by

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = CircuitPolicy(RetryPolicy((0.0, 10.0, 20.0, 600.0), jitter_ratio=0.0), disable_after=3)
HEALTHY = Health("cus_a", "sub_a", failure_count=0, generation=0, active=True)


def result(status: int | None, *, retry_after_s: float | None = None) -> AttemptResult:
    ok = status is not None and 200 <= status < 300
    return AttemptResult("dlv_a", 1, NOW, 0.1, status, None, b"", ok, None, "sub_a", retry_after_s)


def reported(status: int | None, generation: int, *, retry_after_s: float | None = None) -> Outcome:
    return Outcome(result(status, retry_after_s=retry_after_s), "sub_a", generation)


def test_a_counted_failure_moves_the_generation_and_sets_the_probe() -> None:
    after = POLICY.after(HEALTHY, reported(500, 0), NOW)

    assert (after.failure_count, after.generation, after.active) == (1, 1, True)
    assert after.probe_at == NOW + timedelta(seconds=10)


def test_retry_after_puts_the_probe_off_up_to_the_longest_step() -> None:
    asked = POLICY.after(HEALTHY, reported(503, 0, retry_after_s=100.0), NOW)
    greedy = POLICY.after(HEALTHY, reported(503, 0, retry_after_s=10_000.0), NOW)

    assert asked.probe_at == NOW + timedelta(seconds=100)
    assert greedy.probe_at == NOW + timedelta(seconds=600)


@given(st.lists(st.sampled_from([500, 502, None, 429]), min_size=1, max_size=50))
def test_failures_claimed_under_one_generation_count_once(statuses: list[int | None]) -> None:
    after = POLICY.apply(HEALTHY, [reported(status, 0) for status in statuses], NOW)

    assert (after.failure_count, after.active) == (1, True)


def test_straight_failures_disable_after_the_policys_count() -> None:
    health = HEALTHY
    for _ in range(POLICY.disable_after):
        health = POLICY.after(health, reported(500, health.generation), NOW)

    assert (health.active, health.disabled) == (False, DisabledReason.CONSECUTIVE_FAILURES)
    assert disabled_by(HEALTHY, health) == Disabled("cus_a", "sub_a", DisabledReason.CONSECUTIVE_FAILURES)


def test_gone_disables_at_once_whatever_the_generation() -> None:
    failing = POLICY.after(HEALTHY, reported(500, 0), NOW)
    after = POLICY.after(failing, reported(410, 0), NOW)

    assert (after.active, after.disabled) == (False, DisabledReason.ENDPOINT_GONE)


def test_a_success_resets_the_count_and_keeps_the_generation() -> None:
    failing = POLICY.after(HEALTHY, reported(500, 0), NOW)
    after = POLICY.after(failing, reported(200, 0), NOW)

    assert (after.failure_count, after.generation, after.probe_at) == (0, 1, None)


def test_nothing_changes_a_disabled_subscription_and_the_first_reason_stands() -> None:
    gone = POLICY.after(HEALTHY, reported(410, 0), NOW)

    after = POLICY.apply(gone, [reported(200, 1), reported(500, 1), reported(410, 1)], NOW)

    assert after == gone
    assert disabled_by(HEALTHY, after) == Disabled("cus_a", "sub_a", DisabledReason.ENDPOINT_GONE)
    assert disabled_by(gone, after) is None  # already disabled before: nothing new to log


def test_settle_returns_only_what_changed_and_what_was_disabled() -> None:
    other = Health("cus_a", "sub_b", failure_count=0, generation=4, active=True)
    outcomes = [reported(410, 0), Outcome(result(200), "sub_b", 4)]

    changed, disabled = POLICY.settle([HEALTHY, other], outcomes, NOW)

    assert [h.subscription_id for h in changed] == ["sub_a"]
    assert disabled == [Disabled("cus_a", "sub_a", DisabledReason.ENDPOINT_GONE)]
