"""Storage backends behind one ``Store`` protocol (its ``Outbox`` and ``Management`` sides), chosen by URL
scheme and imported lazily."""

from __future__ import annotations

from webhookd.config import Settings
from webhookd.exceptions import ConfigError
from webhookd.store.base import Management, Outbox, Store
from webhookd.store.circuit import CircuitPolicy


def store_from_settings(settings: Settings) -> Store:
    """Build the backend the database URL names (not yet opened)."""
    path = settings.sqlite_path
    circuit = CircuitPolicy.from_settings(settings)
    if path is not None:
        from webhookd.store.sqlite import SqliteStore

        return SqliteStore(
            path,
            list_readers=settings.sqlite_readers,
            max_pending_writes=settings.max_pending_writes,
            circuit=circuit,
        )
    try:
        from webhookd.store.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigError(
            f"WEBHOOKD_DATABASE_URL is PostgreSQL, but its driver is missing ({exc.name}): "
            "install the extra with: pip install 'webhookd[postgres]'"
        ) from None
    return PostgresStore(
        settings.database_url, max_pending_writes=settings.max_pending_writes, circuit=circuit
    )


__all__ = ["Management", "Outbox", "Store", "store_from_settings"]
