"""Settings.from_env: defaults, errors that name the variable, overrides, secret repr."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from webhookd.config import DEFAULT_RETRY_SCHEDULE_S, Settings
from webhookd.exceptions import ConfigError

MASTER_KEY = "c2VjcmV0LW1hc3Rlci1rZXktdGhhdC1tdXN0LW5vdC1sZWFr"


def test_defaults_match_the_spec_table() -> None:
    settings = Settings.from_env({})

    assert settings.database_url == "sqlite:///./webhookd.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.public_base_url is None
    assert settings.effective_public_base_url == "http://127.0.0.1:8080"
    assert settings.master_key is None
    assert settings.worker_concurrency == 64
    assert settings.delivery_timeout_s == 15.0
    assert settings.retry_schedule_s == (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    assert settings.disable_after_failures == 10
    assert settings.secret_grace_s == 86400.0
    assert settings.allow_private_destinations is False
    assert settings.rate_limit_per_min == 60
    assert settings.max_body_bytes == 262144
    assert settings.retention_days == 30.0
    assert settings.log_format == "text"


def test_default_database_is_webhookd_db_in_the_working_directory() -> None:
    assert Settings.from_env({}).sqlite_path == Path("./webhookd.db")


def test_default_retry_schedule_constant_is_the_spec_schedule() -> None:
    assert DEFAULT_RETRY_SCHEDULE_S == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


def test_every_variable_is_read_from_the_environment() -> None:
    env = {
        "WEBHOOKD_DATABASE_URL": "sqlite:////var/lib/webhookd/w.db",
        "WEBHOOKD_HOST": "0.0.0.0",
        "WEBHOOKD_PORT": "9000",
        "WEBHOOKD_PUBLIC_BASE_URL": "https://hooks.example.com/",
        "WEBHOOKD_MASTER_KEY": MASTER_KEY,
        "WEBHOOKD_WORKER_CONCURRENCY": "8",
        "WEBHOOKD_DELIVERY_TIMEOUT_S": "2.5",
        "WEBHOOKD_RETRY_SCHEDULE": "0, 1,2.5",
        "WEBHOOKD_DISABLE_AFTER_FAILURES": "3",
        "WEBHOOKD_SECRET_GRACE_S": "60",
        "WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS": "true",
        "WEBHOOKD_ALLOWED_CIDRS": "10.0.0.0/8, fd00::/8",
        "WEBHOOKD_RATE_LIMIT_PER_MIN": "5",
        "WEBHOOKD_MAX_BODY_BYTES": "1024",
        "WEBHOOKD_RETENTION_DAYS": "7",
        "WEBHOOKD_LOG_FORMAT": "json",
    }

    settings = Settings.from_env(env)

    assert settings.sqlite_path == Path("/var/lib/webhookd/w.db")
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    assert settings.public_base_url == "https://hooks.example.com"
    assert settings.master_key == MASTER_KEY
    assert settings.worker_concurrency == 8
    assert settings.delivery_timeout_s == 2.5
    assert settings.retry_schedule_s == (0.0, 1.0, 2.5)
    assert settings.disable_after_failures == 3
    assert settings.secret_grace_s == 60.0
    assert settings.allow_private_destinations is True
    assert settings.allowed_cidrs == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    assert (settings.rate_limit_per_min, settings.max_body_bytes) == (5, 1024)
    assert settings.retention_days == 7.0
    assert settings.log_format == "json"


def test_postgresql_url_is_accepted_and_has_no_sqlite_path() -> None:
    settings = Settings.from_env({"WEBHOOKD_DATABASE_URL": "postgresql://u:p@db/webhookd"})

    assert settings.database_url == "postgresql://u:p@db/webhookd"
    assert settings.sqlite_path is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WEBHOOKD_PORT", "abc"),
        ("WEBHOOKD_PORT", "70000"),
        ("WEBHOOKD_PORT", "-1"),
        ("WEBHOOKD_RETRY_SCHEDULE", ","),
        ("WEBHOOKD_RETRY_SCHEDULE", "0,-1,5"),
        ("WEBHOOKD_RETRY_SCHEDULE", "0,soon"),
        ("WEBHOOKD_RETRY_SCHEDULE", "0,nan"),
        ("WEBHOOKD_DATABASE_URL", "mysql://x"),
        ("WEBHOOKD_DATABASE_URL", "sqlite:///"),
        ("WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS", "maybe"),
        ("WEBHOOKD_LOG_FORMAT", "xml"),
        ("WEBHOOKD_WORKER_CONCURRENCY", "0"),
        ("WEBHOOKD_DELIVERY_TIMEOUT_S", "0"),
        ("WEBHOOKD_DELIVERY_TIMEOUT_S", "nan"),
        ("WEBHOOKD_PUBLIC_BASE_URL", "hooks.example.com"),
        ("WEBHOOKD_ALLOWED_CIDRS", "10.0.0.0/33"),
        ("WEBHOOKD_MAX_BODY_BYTES", "1.5"),
    ],
)
def test_bad_value_raises_config_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})

    assert variable in str(raised.value)


def test_override_beats_the_environment() -> None:
    env = {"WEBHOOKD_PORT": "8081", "WEBHOOKD_HOST": "10.1.1.1"}

    settings = Settings.from_env(env, overrides={"port": "9090", "host": None})

    assert settings.port == 9090
    assert settings.host == "10.1.1.1"


def test_bad_override_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="WEBHOOKD_PORT"):
        Settings.from_env({"WEBHOOKD_PORT": "8081"}, overrides={"port": "eighty"})


def test_master_key_is_not_in_repr() -> None:
    settings = Settings.from_env({"WEBHOOKD_MASTER_KEY": MASTER_KEY})

    assert settings.master_key == MASTER_KEY
    assert MASTER_KEY not in repr(settings)
    assert "port=8080" in repr(settings)


def test_the_per_subscription_cap_defaults_to_16_and_must_be_positive() -> None:
    assert Settings.from_env({}).max_in_flight_per_subscription == 32
    assert (
        Settings.from_env({"WEBHOOKD_MAX_IN_FLIGHT_PER_SUBSCRIPTION": "4"}).max_in_flight_per_subscription
        == 4
    )
    with pytest.raises(ConfigError, match="WEBHOOKD_MAX_IN_FLIGHT_PER_SUBSCRIPTION"):
        Settings.from_env({"WEBHOOKD_MAX_IN_FLIGHT_PER_SUBSCRIPTION": "0"})
