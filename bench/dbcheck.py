"""Read-only looks into a webhookd SQLite file after its processes stopped: what is really stored."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def _query(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return list(conn.execute(sql).fetchall())


def row_count(db_path: Path, table: str) -> int:
    return int(str(_query(db_path, f"SELECT count(*) FROM {table}")[0][0]))


def delivery_statuses(db_path: Path) -> dict[str, int]:
    rows = _query(db_path, "SELECT status, count(*) FROM deliveries GROUP BY status")
    return {str(status): int(str(count)) for status, count in rows}
