"""``python -m bench --only dashboard`` at a tiny size, on each backend: it builds its store, signs in
through a link to a real ``webhookd serve``, and times every page this webhookd has, each answering
200."""

from __future__ import annotations

import dataclasses
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from bench import dashboard
from bench.config import BenchConfig
from bench.report import table
from tests.contract.conftest import postgres_server  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DELIVERIES = 400
FAILED = DELIVERIES // dashboard.FAILED_EVERY
TIMED = {"subscriptions", "subscription", "subscription, failed only", "delivery", "events", "calls", "call"}
CALLS = DELIVERIES // 4 // dashboard.CALL_EVENTS
"""Each of the 4 subscriptions gets every event; every ``CALL_EVENTS`` events are one call's."""


def _built(db: Path) -> tuple[dict[str, int], tuple[int, int], tuple[int, int, int]]:
    """Deliveries by status, the attempts with how many name their subscription, and the calls with
    their callbacks and how many produced an event."""
    with closing(sqlite3.connect(db)) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY 1").fetchall())
        attempts = conn.execute("SELECT count(*), count(subscription_id) FROM attempts").fetchone()
        calls = conn.execute(
            "SELECT (SELECT count(*) FROM calls), count(*), count(event_id) FROM call_callbacks"
        ).fetchone()
        return statuses, attempts, calls


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_the_dashboard_bench_times_each_page_over_the_store_it_built(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("postgres_server").dsn if store == "postgres" else ""
    quick = BenchConfig.standard(True, tmp_path)
    cfg = dataclasses.replace(
        quick,
        dashboard_deliveries=DELIVERIES,
        dashboard_requests=3,
        dashboard_stores=(store,),
        postgres_dsn=dsn,
    )

    result = await dashboard.run(cfg, tmp_path)

    pages = result["stores"][store]["pages"]
    assert TIMED <= set(pages)
    assert all(page["requests"] == 3 and page["p50_ms"] > 0 for page in pages.values())
    if store == "sqlite":
        assert _built(tmp_path / "sqlite" / "bench.db") == (
            {"delivered": DELIVERIES - FAILED, "failed": FAILED},
            (DELIVERIES - FAILED + FAILED * dashboard.FAILED_ATTEMPTS,) * 2,
            (CALLS, CALLS * (dashboard.CALL_EVENTS + 1), CALLS * dashboard.CALL_EVENTS),
        )
    lines = table({"dashboard": result})
    assert any(line.startswith("dashboard") and f"{store} subscriptions p50 / p99" in line for line in lines)
