"""SQLite migrations: apply the package's ``migrations/`` not yet applied, each in its own transaction."""

from __future__ import annotations

import logging
import sqlite3
import time

from webhookd.exceptions import StoreError
from webhookd.store.migrate import migration_files

logger = logging.getLogger(__name__)


def migrate_sqlite(conn: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet applied, each in its own transaction. Returns their names."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    current = int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])
    files = migration_files("sqlite")
    if files and current > files[-1][0]:
        raise StoreError(
            f"the database schema (v{current}) is newer than this webhookd (v{files[-1][0]}); "
            "upgrade webhookd"
        )
    applied = []
    for version, name, sql in files:
        if version > current:
            _apply(conn, version, name, sql)
            applied.append(name)
    return applied


def _apply(conn: sqlite3.Connection, version: int, name: str, sql: str) -> None:
    try:
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{sql}\nINSERT INTO schema_migrations VALUES "
            f"({version}, '{name}', {time.time()});\nCOMMIT;"
        )
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(f"migration {name} failed: {exc}") from exc
    logger.info("applied migration %s", name, extra={"action": "store.migrate"})
