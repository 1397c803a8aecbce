"""The subscriptions page's 24-hour chart: bars of attempts per hour, drawn on the server as SVG."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from webhookd.store.base import AttemptTally

HOURS = 24
BUCKET_S = 3600
BAR_W, GAP, HEIGHT = 5, 1, 28


@dataclass(frozen=True, slots=True)
class Bar:
    x: int
    total_h: float
    """Height of the hour's attempts; the failed ones are the part above ``ok_h``."""
    ok_h: float
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    bars: tuple[Bar, ...]
    attempts: int
    succeeded: int
    width: int = HOURS * (BAR_W + GAP)
    height: int = HEIGHT

    @property
    def success_rate(self) -> str:
        return f"{100 * self.succeeded / self.attempts:.0f} %" if self.attempts else "no attempts"


def hourly_chart(tallies: Iterable[AttemptTally]) -> Chart:
    """Bars for the last 24 hours, oldest first, from one subscription's hourly tallies (bucket 0
    starts 24 hours ago); each bar's height is its share of the busiest hour."""
    by_hour = [(0, 0)] * HOURS
    for tally in tallies:
        hour = min(max(tally.bucket, 0), HOURS - 1)  # an attempt at the very end counts in the last hour
        attempts, succeeded = by_hour[hour]
        by_hour[hour] = (attempts + tally.attempts, succeeded + tally.succeeded)
    busiest = max(attempts for attempts, _ in by_hour) or 1
    bars = tuple(
        Bar(
            hour * (BAR_W + GAP),
            HEIGHT * attempts / busiest,
            HEIGHT * succeeded / busiest,
            f"{HOURS - hour} h ago: {attempts} attempts, {succeeded} succeeded",
        )
        for hour, (attempts, succeeded) in enumerate(by_hour)
    )
    return Chart(bars, sum(a for a, _ in by_hour), sum(s for _, s in by_hour))
