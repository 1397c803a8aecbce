"""``webhookd keys create`` and ``webhookd sources create`` check ``--customer`` by the one customer-id
rule before they open (and so create) a database or a master key file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from webhookd.cli import main
from webhookd.inputs import CUSTOMER_ID_RULE

BAD_CUSTOMER_IDS = ["", "\u202eacme", "../../etc/passwd", "a" * 100_000, "acme\n", "a b"]


def command(action: str, customer: str, db: Path) -> list[str]:
    args = [action, "create", "--json", "--customer", customer, "--database-url", f"sqlite:///{db}"]
    if action == "keys":
        return [*args, "--scopes", "read_events"]
    return [*args, "--carrier", "twilio", "--credential", "auth_token=t"]


@pytest.mark.parametrize("action", ["keys", "sources"])
@pytest.mark.parametrize(
    "customer", BAD_CUSTOMER_IDS, ids=["empty", "rlo", "path", "long", "newline", "space"]
)
def test_a_customer_id_outside_the_rule_is_refused_before_anything_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str, customer: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(command(action, customer, tmp_path / "w.db"))

    assert exit_.value.code == 2
    assert f"argument --customer: a customer id must be {CUSTOMER_ID_RULE}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("action", ["keys", "sources"])
def test_a_valid_customer_id_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    assert main(command(action, "Cus.2:x-y_z", tmp_path / "w.db")) == 0

    assert orjson.loads(capsys.readouterr().out)["customer_id"] == "Cus.2:x-y_z"


SERVER_FLAGS = ["--worker-concurrency", "--retry-schedule", "--max-connections", "--delivery-timeout-s"]
"""Settings only a server or a worker uses."""
COMMANDS = [
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["customers", "list"],
    ["subscriptions", "list"],
    ["subscriptions", "enable"],
    ["deliveries", "retry"],
    ["deliveries", "recover"],
    ["sources", "create"],
    ["dashboard-link"],
    ["backup"],
]


def _help(capsys: pytest.CaptureFixture[str], command: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_keys_create_help_is_short_and_names_no_server_setting(capsys: pytest.CaptureFixture[str]) -> None:
    shown = _help(capsys, ["keys", "create"])

    assert len(shown.splitlines()) < 25
    assert "--database-url" in shown
    assert not [flag for flag in [*SERVER_FLAGS, "--host", "--port", "--master-key"] if flag in shown]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_command_but_serve_worker_and_migrate_lists_a_server_setting(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    shown = _help(capsys, command)

    assert not [flag for flag in SERVER_FLAGS if flag in shown]
    assert len(shown.splitlines()) < 30


def test_serve_still_lists_every_server_setting(capsys: pytest.CaptureFixture[str]) -> None:
    shown = _help(capsys, ["serve"])

    assert all(flag in shown for flag in SERVER_FLAGS)


@pytest.mark.parametrize(
    ("action", "header"),
    [("keys", "key id customer_id scopes"), ("sources", "id carrier customer_id ingest_url")],
)
def test_without_json_a_created_key_or_source_is_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str, header: str
) -> None:
    args = [a for a in command(action, "acme", tmp_path / "w.db") if a != "--json"]

    assert main(args) == 0

    first, row = capsys.readouterr().out.splitlines()
    assert first.split() == header.split() and "acme" in row.split()
