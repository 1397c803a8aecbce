"""Storage backends behind one ``Store`` protocol, chosen by URL scheme and imported lazily."""

from __future__ import annotations

from webhookd.config import Settings
from webhookd.exceptions import ConfigError
from webhookd.store.base import Store


def store_from_settings(settings: Settings) -> Store:
    """Build the backend the database URL names (not yet opened)."""
    path = settings.sqlite_path
    if path is not None:
        from webhookd.store.sqlite import SqliteStore

        return SqliteStore(path)
    raise ConfigError(
        f"WEBHOOKD_DATABASE_URL={settings.database_url!r}: the PostgreSQL backend is not "
        "available in this version; use sqlite:///PATH"
    )


__all__ = ["Store", "store_from_settings"]
