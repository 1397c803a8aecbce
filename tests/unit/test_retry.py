"""RetryPolicy: an attempt budget from the schedule, ±20 % jitter around each step."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhookd.config import DEFAULT_RETRY_SCHEDULE_S
from webhookd.retry import RetryPolicy, parse_retry_after

schedules = st.lists(
    st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=12
).map(tuple)
attempts = st.integers(min_value=1, max_value=20)
# A schedule with a step still left after attempt ``n`` (1-based), and that ``n``.
schedules_with_a_step_left = schedules.filter(lambda s: len(s) >= 2).flatmap(
    lambda s: st.tuples(st.just(s), st.integers(min_value=1, max_value=len(s) - 1))
)
unit_interval = st.floats(min_value=0, max_value=1, exclude_max=True)


@given(schedules, attempts)
def test_delay_is_none_exactly_when_the_schedule_is_spent(
    schedule: tuple[float, ...], attempt_no: int
) -> None:
    delay = RetryPolicy(schedule).delay_after(attempt_no, rand=lambda: 0.5)

    assert (delay is None) == (attempt_no >= len(schedule))


@given(schedules_with_a_step_left, unit_interval)
def test_jittered_delay_stays_within_20_percent_of_the_step(
    schedule_and_attempt: tuple[tuple[float, ...], int], draw: float
) -> None:
    schedule, attempt_no = schedule_and_attempt

    delay = RetryPolicy(schedule).delay_after(attempt_no, rand=lambda: draw)

    base = schedule[attempt_no]
    assert delay is not None
    assert 0.8 * base * (1 - 1e-12) <= delay <= 1.2 * base * (1 + 1e-12)


@given(schedules_with_a_step_left)
def test_middle_of_the_jitter_range_is_the_step_itself(
    schedule_and_attempt: tuple[tuple[float, ...], int],
) -> None:
    schedule, attempt_no = schedule_and_attempt

    assert RetryPolicy(schedule).delay_after(attempt_no, rand=lambda: 0.5) == schedule[attempt_no]


def test_extremes_of_the_jitter_range_are_plus_and_minus_20_percent() -> None:
    policy = RetryPolicy((0.0, 100.0))

    low = policy.delay_after(1, rand=lambda: 0.0)
    high = policy.delay_after(1, rand=lambda: 1.0)

    assert low is not None and math.isclose(low, 80.0)
    assert high is not None and math.isclose(high, 120.0)


def test_default_schedule_allows_eight_attempts_and_never_shrinks() -> None:
    policy = RetryPolicy(DEFAULT_RETRY_SCHEDULE_S)
    bases = [policy.delay_after(n, rand=lambda: 0.5) for n in range(1, policy.max_attempts)]

    assert policy.max_attempts == 8
    assert bases == [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    assert list(DEFAULT_RETRY_SCHEDULE_S) == sorted(DEFAULT_RETRY_SCHEDULE_S)
    assert policy.delay_after(8) is None


retry_afters = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)


@given(schedules_with_a_step_left, retry_afters, unit_interval)
def test_retry_after_is_honoured_up_to_the_longest_step(
    schedule_and_attempt: tuple[tuple[float, ...], int], retry_after_s: float, draw: float
) -> None:
    schedule, attempt_no = schedule_and_attempt
    policy = RetryPolicy(schedule)

    delay = policy.delay_after(attempt_no, retry_after_s, rand=lambda: draw)
    jittered = policy.delay_after(attempt_no, rand=lambda: draw)

    assert delay is not None and jittered is not None
    assert delay >= min(retry_after_s, max(schedule))  # waits at least Retry-After, capped
    assert delay <= max(jittered, max(schedule))  # and never longer than the cap or the step
    probe = policy.probe_delay(attempt_no, retry_after_s, rand=lambda: draw)
    assert min(retry_after_s, max(schedule)) <= probe <= max(schedule) * 1.2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("Sat, 21 Nov 2026 10:00:30 GMT", 30.0),
        ("Sat, 21 Nov 2026 09:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after_seconds_and_http_date(header: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(header, now) == expected
