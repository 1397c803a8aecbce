"""An online, consistent copy of the SQLite database, taken while webhookd serves."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from webhookd.exceptions import StoreError

BUSY_TIMEOUT_MS = 10_000
"""How long the copy waits for a moment when the writer is checkpointing (it rarely has to)."""


def backup(database: Path, target: Path) -> int:
    """Copy ``database`` into the new file ``target`` and return the copy's size in bytes.

    ``VACUUM INTO`` reads the whole database in one read transaction: under WAL, writers go on
    meanwhile, and the copy holds exactly what was committed when the copy began. (The backup API
    would start over each time a writer commits, so under steady traffic it might never finish.)"""
    if not database.is_file():
        raise StoreError(f"no SQLite database at {database}: check WEBHOOKD_DATABASE_URL")
    try:
        # Created empty and private first: VACUUM INTO fills an empty file, and the copy holds the
        # same secrets as the database, so it must never be readable by others, not even briefly.
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise StoreError(f"{target} exists: a backup never overwrites a file; name a new one") from None
    except OSError as exc:
        raise StoreError(f"cannot create {target}: {exc.strerror}") from None
    try:
        # mode=rw: a mistyped path must not create an empty database to copy.
        uri = f"file:{quote(str(database.resolve()))}?mode=rw"
        with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("VACUUM INTO ?", (str(target),))
    except BaseException as exc:
        target.unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"the backup of {database} failed: {exc}") from exc
        raise
    return target.stat().st_size
