"""How SQLite stores times: unix seconds as REAL, read back as aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


def from_epoch(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def from_epoch_or_none(epoch: float | None) -> datetime | None:
    return None if epoch is None else from_epoch(epoch)
