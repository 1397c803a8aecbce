"""Run parameters shared by every benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONCURRENCY = 64
INGEST_TARGET_RATIO = 0.5
DELIVERY_TARGET_RATIO = 0.5
PG_PUBLISH_TARGET_RATIO = 0.8
"""PostgreSQL publish rate against SQLite's, one API node each, in the same run."""
LATENCY_TARGET_P99_MS = 50.0


@dataclass(frozen=True)
class BenchConfig:
    ingest_duration_s: float
    ingest_warmup_s: float
    delivery_events: int
    latency_duration_s: float
    latency_rate: float
    tmp_parent: Path | None
    concurrency: int = CONCURRENCY
    paging_duration_s: float = 10.0
    fairness_backlog: int = 3_000
    fairness_b_events: int = 200
    fairness_a_window_s: float = 30.0
    claims_sizes: tuple[int, int] = (10_000, 1_000_000)
    claims_rounds: int = 200
    dashboard_deliveries: int = 100_000
    dashboard_requests: int = 200
    dashboard_stores: tuple[str, ...] = ("sqlite", "postgres")
    postgres_workers: tuple[int, ...] = (1, 2)
    postgres_receivers: int = 1
    postgres_api_nodes: tuple[int, ...] = (1, 2)
    postgres_dsn: str = ""
    """The server the PostgreSQL figures use (set by ``main``: a given one, or a throwaway cluster)."""

    @classmethod
    def standard(cls, quick: bool, tmp_parent: Path | None) -> BenchConfig:
        if quick:
            # paging: each stretch outlasts the 5 s API-key cache even in a quick run, so customer
            # B's key is looked up again while A's listings run.
            return cls(
                3.0,
                0.5,
                5_000,
                3.0,
                1000.0,
                tmp_parent,
                paging_duration_s=6.0,
                fairness_backlog=1_000,
                fairness_a_window_s=12.0,
                claims_sizes=(10_000, 100_000),
                claims_rounds=100,
                dashboard_requests=100,
            )
        return cls(10.0, 1.0, 20_000, 10.0, 1000.0, tmp_parent)
