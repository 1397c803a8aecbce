"""How a key revoked by one process on a SQLite file stops working at once in the others.

SQLite has no NOTIFY, and a key read per request would cost the publish path a database round trip.
So a revocation, once committed, sets the modification time of ``<database>.revoked``; the serving
process's key cache reads that time (one ``stat``, a microsecond) before trusting a cached key, and
forgets every key when it changed. The processes on one SQLite file share one machine, so they see
the same file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class RevocationStamp:
    def __init__(self, database: Path) -> None:
        # A str: os.stat takes it as it is, where a Path is converted on every call (the hot path).
        self._path = os.fspath(database.with_name(f"{database.name}.revoked"))

    def touch(self) -> None:
        """Mark a revocation: a new modification time, created if missing (private to the owner)."""
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            now = time.time_ns()
            os.utime(fd, ns=(now, now))
        finally:
            os.close(fd)

    def mark(self) -> int:
        """The last revocation's time in nanoseconds; 0 before the first."""
        try:
            return os.stat(self._path).st_mtime_ns
        except FileNotFoundError:
            return 0
