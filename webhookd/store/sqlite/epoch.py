"""How SQLite stores times: unix seconds as REAL, read back as aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

from webhookd.store.shared import Rows


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


def from_epoch(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _scope_names(stored: str) -> list[str]:
    return stored.split(",")


ROWS = Rows(from_epoch, to_epoch, float, _scope_names)
"""Rows as SQLite stores them (times as epoch seconds, scopes comma-separated), as models."""
