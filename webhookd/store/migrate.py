"""Versioned SQL migrations: each backend package's ``migrations/NNNN_name.sql``, in order."""

from __future__ import annotations

from importlib import resources
from typing import Literal


def migration_files(backend: Literal["sqlite", "postgres"]) -> list[tuple[int, str, str]]:
    """``(version, file name, SQL)`` of every migration of ``backend``, in order."""
    folder = resources.files(f"webhookd.store.{backend}.migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)
