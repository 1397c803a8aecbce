"""Settings: parsed once from ``WEBHOOKD_*`` variables (and matching CLI flags) into a frozen object."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from webhookd.exceptions import ConfigError

LogFormat = Literal["text", "json"]


DEFAULT_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
# Listings that scan are CPU-bound. In the paging benchmark on 2 cores, 4 list connections served
# customer A no more listings than 1 or 2 did, and took CPU from customer B's publishes (B's p99
# 54 ms with 4, against 28 and 31 ms with 1 and 2; one run each).
DEFAULT_DISABLE_AFTER_FAILURES = 10
"""Straight failures that disable a subscription."""
DEFAULT_SQLITE_READERS = 2
# A few seconds of publishes at the rate one SQLite writer commits them; beyond that a client is
# better told to come back than left waiting.
DEFAULT_MAX_PENDING_WRITES = 4096
# Below the usual 1024 open files a process may have, with room for the database, the delivery
# worker's connections and the log.
DEFAULT_MAX_CONNECTIONS = 800


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _parse_port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return value


def _parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("must be a finite number greater than 0")
    return value


def _parse_schedule(raw: str) -> tuple[float, ...]:
    steps = tuple(float(part) for part in raw.split(",") if part.strip())
    if not steps:
        raise ValueError("needs at least one delay, e.g. 0,5,300")
    if not all(math.isfinite(step) and step >= 0 for step in steps):
        raise ValueError("delays must be finite numbers of seconds, not negative")
    return steps


def _parse_database_url(raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if scheme == "sqlite" and raw.startswith("sqlite:///") and len(raw) > len("sqlite:///"):
        return raw
    if scheme in {"postgresql", "postgres"}:
        return raw
    raise ValueError("expected sqlite:///PATH or postgresql://...")


def _parse_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("expected an absolute http(s) URL such as https://hooks.example.com")
    return raw.rstrip("/")


def _parse_log_format(raw: str) -> str:
    if raw not in {"text", "json"}:
        raise ValueError("expected text or json")
    return raw


def _parse_cidrs(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(part.strip()) for part in raw.split(",") if part.strip())


def _setting(env: str, parse: Callable[[str], Any], default: Any, help: str, *, secret: bool = False) -> Any:
    meta = {"env": env, "parse": parse, "help": help, "secret": secret}
    return field(default=default, repr=not secret, metadata=meta)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of webhookd. Build it with :meth:`from_env`; it never reads the environment itself."""

    database_url: str = _setting(
        "WEBHOOKD_DATABASE_URL",
        _parse_database_url,
        "sqlite:///./webhookd.db",
        "sqlite:///PATH or postgresql://...",
    )
    host: str = _setting("WEBHOOKD_HOST", str, "127.0.0.1", "address the HTTP API listens on")
    port: int = _setting("WEBHOOKD_PORT", _parse_port, 8080, "port the HTTP API listens on")
    public_base_url: str | None = _setting(
        "WEBHOOKD_PUBLIC_BASE_URL",
        _parse_url,
        None,
        "the URL carriers call; Twilio signs it (default http://HOST:PORT)",
    )
    master_key: str | None = _setting(
        "WEBHOOKD_MASTER_KEY",
        str,
        None,
        "base64 of 32 bytes that encrypts secrets at rest (default: key file beside the database)",
        secret=True,
    )
    worker_concurrency: int = _setting(
        "WEBHOOKD_WORKER_CONCURRENCY",
        _parse_positive_int,
        64,
        "attempts in flight per worker",
    )
    delivery_timeout_s: float = _setting(
        "WEBHOOKD_DELIVERY_TIMEOUT_S",
        _parse_positive_float,
        15.0,
        "per-attempt timeout in seconds",
    )
    retry_schedule_s: tuple[float, ...] = _setting(
        "WEBHOOKD_RETRY_SCHEDULE",
        _parse_schedule,
        DEFAULT_RETRY_SCHEDULE_S,
        "delay in seconds before each attempt; the count is the number of attempts",
    )
    disable_after_failures: int = _setting(
        "WEBHOOKD_DISABLE_AFTER_FAILURES",
        _parse_positive_int,
        DEFAULT_DISABLE_AFTER_FAILURES,
        "consecutive failures that auto-disable a subscription",
    )
    secret_grace_s: float = _setting(
        "WEBHOOKD_SECRET_GRACE_S",
        _parse_positive_float,
        86400.0,
        "how long a rotated-out secret keeps signing",
    )
    allow_private_destinations: bool = _setting(
        "WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS",
        _parse_bool,
        False,
        "lift the SSRF guard (local development and tests only)",
    )
    allowed_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _setting(
        "WEBHOOKD_ALLOWED_CIDRS",
        _parse_cidrs,
        (),
        "comma-separated CIDRs that may be delivered to despite the SSRF guard",
    )
    rate_limit_per_min: int = _setting(
        "WEBHOOKD_RATE_LIMIT_PER_MIN",
        _parse_positive_int,
        60,
        "management API requests per key per minute",
    )
    max_body_bytes: int = _setting(
        "WEBHOOKD_MAX_BODY_BYTES",
        _parse_positive_int,
        262144,
        "largest ingest or API body",
    )
    retention_days: float = _setting(
        "WEBHOOKD_RETENTION_DAYS",
        _parse_positive_float,
        30.0,
        "how long delivered events and attempts are kept",
    )
    sqlite_readers: int = _setting(
        "WEBHOOKD_SQLITE_READERS",
        _parse_positive_int,
        DEFAULT_SQLITE_READERS,
        "SQLite connections that serve list reads at once, in turns between customers (lookups and"
        " writes have their own)",
    )
    log_format: LogFormat = _setting(
        "WEBHOOKD_LOG_FORMAT",
        _parse_log_format,
        "text",
        "text or json",
    )
    max_in_flight_per_subscription: int = _setting(
        "WEBHOOKD_MAX_IN_FLIGHT_PER_SUBSCRIPTION",
        _parse_positive_int,
        32,
        "attempts in flight for one subscription at most, across all workers (keep it at most half"
        " of WEBHOOKD_WORKER_CONCURRENCY, so one slow endpoint leaves the other half to the rest)",
    )
    poll_interval_s: float = _setting(
        "WEBHOOKD_POLL_INTERVAL_S",
        _parse_positive_float,
        0.5,
        "how often an idle worker looks for due retries",
    )
    worker_metrics_port: int = _setting(
        "WEBHOOKD_WORKER_METRICS_PORT",
        _parse_port,
        0,
        "port where `webhookd worker` serves /metrics (0: off; `serve` has /metrics on its API port)",
    )
    shutdown_grace_s: float = _setting(
        "WEBHOOKD_SHUTDOWN_GRACE_S",
        _parse_positive_float,
        10.0,
        "how long in-flight attempts may finish after SIGTERM",
    )
    max_pending_writes: int = _setting(
        "WEBHOOKD_MAX_PENDING_WRITES",
        _parse_positive_int,
        DEFAULT_MAX_PENDING_WRITES,
        "writes that may wait for the writer (SQLite's, or a PostgreSQL API node's); past it"
        " publishes and carrier callbacks are answered 503 overloaded",
    )
    max_connections: int = _setting(
        "WEBHOOKD_MAX_CONNECTIONS",
        _parse_positive_int,
        DEFAULT_MAX_CONNECTIONS,
        "open HTTP connections (or requests in progress) the server takes; past it, new requests"
        " are answered 503",
    )
    dashboard_link_ttl_s: float = _setting(
        "WEBHOOKD_DASHBOARD_LINK_TTL_S",
        _parse_positive_float,
        900.0,
        "how long a dashboard link may be opened (once) after it is made",
    )
    dashboard_session_s: float = _setting(
        "WEBHOOKD_DASHBOARD_SESSION_S",
        _parse_positive_float,
        28800.0,
        "how long a dashboard session lasts after its link was opened",
    )
    request_head_timeout_s: float = _setting(
        "WEBHOOKD_REQUEST_HEAD_TIMEOUT_S",
        _parse_positive_float,
        10.0,
        "how long a client may take to send a request's line and headers before the connection is closed",
    )
    request_body_timeout_s: float = _setting(
        "WEBHOOKD_REQUEST_BODY_TIMEOUT_S",
        _parse_positive_float,
        30.0,
        "how long a client may take to send a request's body before it is answered 408 and closed",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str], overrides: Mapping[str, str | None] | None = None) -> Settings:
        """Parse settings from ``env``; ``overrides`` (CLI flags, by field name) win over it.

        Raises :class:`ConfigError` naming the variable when a value does not parse.
        """
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            name = item.metadata["env"]
            raw = (overrides or {}).get(item.name)
            if raw is None:
                raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[item.name] = item.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None
        return cls(**values)

    @property
    def effective_public_base_url(self) -> str:
        """The base URL carriers are told to call."""
        return self.public_base_url or f"http://{self.host}:{self.port}"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or ``None`` for other backends."""
        if not self.database_url.startswith("sqlite:///"):
            return None
        return Path(self.database_url[len("sqlite:///") :])


def setting_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The settings with their env names and help, for building CLI flags and docs."""
    return dataclasses.fields(Settings)
