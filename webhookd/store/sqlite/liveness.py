"""Which workers on one SQLite file are alive, proved by lock files rather than guessed from heartbeats.

Every worker process holds an exclusive ``flock`` on ``<database>.workers/<worker id>`` while it runs;
the kernel drops the lock the moment the process dies, ``kill -9`` included. So a restarted
``webhookd serve`` takes its dead predecessor's claims back at once, while a ``webhookd worker`` still
running on the same file keeps its own. A worker's lock file is created and locked before its row is
written, so a row whose file is missing or unlocked belongs to a dead worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class WorkerLocks:
    """The lock files of one database's workers: this process's, held, and the others', tested."""

    def __init__(self, database: Path) -> None:
        self._dir = database.with_name(f"{database.name}.workers")
        self._held: dict[str, int] = {}

    def hold(self, worker_id: str) -> None:
        """Create and lock this process's worker file (the directory and file private to the owner)."""
        self._dir.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self._dir / worker_id, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._held[worker_id] = fd

    def drop(self, worker_id: str) -> None:
        """Remove and unlock this process's worker file (a clean stop)."""
        fd = self._held.pop(worker_id, None)
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._dir / worker_id)
            os.close(fd)

    def is_dead(self, worker_id: str) -> bool:
        """True if no live process holds ``worker_id``'s lock. The dead one's file is removed."""
        if worker_id in self._held:
            return False
        try:
            fd = os.open(self._dir / worker_id, os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._dir / worker_id)
        return True

    def close(self) -> None:
        for worker_id in list(self._held):
            self.drop(worker_id)
