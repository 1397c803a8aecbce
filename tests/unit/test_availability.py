"""The outage log: one line when it starts, a reminder a minute with the count, one at the end."""

from __future__ import annotations

import logging

import pytest

from webhookd.exceptions import StorageUnavailable
from webhookd.store.availability import LATELY_S, Availability


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def actions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.action for record in caplog.records]  # type: ignore[attr-defined]


def test_an_outage_is_logged_once_then_reminded_every_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    health = Availability("SQLite", reminder_s=60, clock=clock)
    for _ in range(1000):
        health.refused(StorageUnavailable("disk full"))
        clock.now += 0.125  # 1,000 refusals over 125 s
    assert actions(caplog) == ["store.unavailable", "store.still_unavailable", "store.still_unavailable"]
    assert [r.refused for r in caplog.records[1:]] == [481, 961]  # type: ignore[attr-defined]
    assert [r for r in caplog.records if r.exc_info] == []


def test_the_first_committed_write_ends_the_outage_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    health = Availability("PostgreSQL", clock=Clock())
    health.answered()  # no outage: nothing to say
    for _ in range(3):
        health.refused(StorageUnavailable("connection refused"))
    assert health.down and health.refusals == 3
    health.answered()
    health.answered()
    assert actions(caplog) == ["store.unavailable", "store.available"]
    assert "3 operations were refused" in caplog.records[1].getMessage()
    assert not health.down and health.refusals == 0


def test_an_outage_that_flickers_is_logged_at_most_twice_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    health = Availability("SQLite", reminder_s=60, clock=clock)
    for _ in range(1000):  # a full disk with room for a small write now and then, over 125 s
        health.refused(StorageUnavailable("disk full"))
        health.answered()
        clock.now += 0.125
    assert actions(caplog) == ["store.unavailable", "store.available"] * 3


def test_an_outage_soon_after_the_last_is_logged_once_the_interval_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    health = Availability("SQLite", reminder_s=60, clock=clock)
    health.refused(StorageUnavailable("disk full"))
    health.answered()
    clock.now += 30
    health.refused(StorageUnavailable("disk full"))
    assert health.down
    assert actions(caplog) == ["store.unavailable", "store.available"]
    clock.now += 30
    health.refused(StorageUnavailable("disk full"))
    assert actions(caplog) == ["store.unavailable", "store.available", "store.unavailable"]
    assert health.refusals == 1


def test_readiness_waits_a_moment_after_a_refusal_unless_a_write_commits_meanwhile() -> None:
    clock = Clock()
    health = Availability("SQLite", clock=clock)
    assert not health.refused_lately
    health.refused(StorageUnavailable("disk full"))
    clock.now += LATELY_S - 0.5
    assert health.refused_lately
    clock.now += 0.5
    assert not health.refused_lately and health.down  # time to try a write of its own
    health.refused(StorageUnavailable("disk full"))
    health.answered()
    assert not health.refused_lately and not health.down
