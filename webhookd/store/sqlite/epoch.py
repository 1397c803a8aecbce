"""How SQLite stores times: unix seconds as REAL, read back as aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

from webhookd.store.shared import Rows


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


def from_epoch(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


ROWS = Rows(from_epoch, to_epoch, float)
"""Rows as SQLite stores them, as models."""
