"""The ``webhookd`` command: serve | worker | migrate | keys create | sources create | dashboard-link |
backup; and the operator's commands (see :mod:`webhookd.operator_cli`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from webhookd import __version__, operator_cli, provisioning
from webhookd.config import Settings, setting_fields
from webhookd.crypto import SecretBox, key_file_path, master_key_from_settings
from webhookd.exceptions import InvalidInput, WebhookdError
from webhookd.logs import configure_logging
from webhookd.models import CREDENTIAL_NAMES, Carrier, DashboardAccess, Scope, isoformat, utcnow
from webhookd.operator_cli import STORE_SETTINGS, customer_id_arg, with_store
from webhookd.store import Store, store_from_settings
from webhookd.store.sqlite.backup import backup as sqlite_backup

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def _flag(env_name: str) -> str:
    return "--" + env_name.removeprefix("WEBHOOKD_").lower().replace("_", "-")


def _settings_parent(only: frozenset[str] | None = None) -> argparse.ArgumentParser:
    """Flags for the settings (``only`` those named, for a command that uses a few); every setting is
    still read from its variable."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings (each also read from its WEBHOOKD_* variable)")
    for item in setting_fields():
        if only is not None and item.name not in only:
            continue
        env_name = item.metadata["env"]
        group.add_argument(
            _flag(env_name),
            dest=f"setting_{item.name}",
            metavar="VALUE",
            help=f"{item.metadata['help']} [{env_name}]",
        )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parent = _settings_parent()
    parser = argparse.ArgumentParser(
        prog="webhookd", description="Durable, signed webhook delivery for voice-AI call events."
    )
    parser.add_argument("--version", action="version", version=f"webhookd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", parents=[parent], help="run the HTTP API and workers")
    serve.add_argument("--no-workers", action="store_true", help="run the API only")
    serve.set_defaults(run=_serve)
    worker = commands.add_parser("worker", parents=[parent], help="run delivery workers only")
    worker.set_defaults(run=_worker)
    migrate = commands.add_parser("migrate", parents=[parent], help="apply database migrations")
    migrate.set_defaults(run=_migrate)
    _add_keys(commands)
    _add_sources(commands)
    _add_dashboard_link(commands)
    _add_backup(commands)
    operator_cli.add_commands(commands, _settings_parent)
    return parser


def _add_keys(commands: Any) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    create = keys.add_parser(
        "create", parents=[_settings_parent(STORE_SETTINGS)], help="create an API key (printed once)"
    )
    create.add_argument(
        "--customer", required=True, type=customer_id_arg, help="customer id (created if new)"
    )
    create.add_argument("--name", help="customer display name, returned by whoami")
    create.add_argument(
        "--scopes", required=True, help=f"comma-separated: {', '.join(s.value for s in Scope)}"
    )
    create.add_argument("--json", action="store_true", help="print {key, id, customer_id, scopes} as JSON")
    create.set_defaults(run=_create_key)
    operator_cli.add_key_actions(keys, _settings_parent)


KEY_COLUMNS = ("key", "id", "customer_id", "scopes")
SOURCE_COLUMNS = ("id", "carrier", "customer_id", "ingest_url")
SOURCE_SETTINGS = frozenset({"database_url", "master_key", "public_base_url", "host", "port"})
"""What registering a source depends on: the database, the key its credentials are sealed with, and
what its ingest URL starts with."""


def _add_sources(commands: Any) -> None:
    sources = commands.add_parser("sources", help="manage carrier sources").add_subparsers(
        dest="sources_command", required=True, metavar="ACTION"
    )
    create = sources.add_parser(
        "create", parents=[_settings_parent(SOURCE_SETTINGS)], help="register a carrier source"
    )
    create.add_argument(
        "--customer", required=True, type=customer_id_arg, help="customer id (created if new)"
    )
    create.add_argument("--name", help="customer display name")
    create.add_argument("--carrier", required=True, choices=[c.value for c in Carrier])
    create.add_argument(
        "--credential",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="carrier credential, e.g. auth_token=... (repeatable)",
    )
    create.add_argument(
        "--json", action="store_true", help="print {id, carrier, customer_id, ingest_url} as JSON"
    )
    create.set_defaults(run=_create_source)


POSTGRES_BACKUP = """webhookd backup copies a SQLite database; this one is PostgreSQL.
pg_dump takes a consistent copy while webhookd runs:
  pg_dump --format=custom --file {path} '{url}'
Restore it into an empty database with pg_restore --dbname URL {path}, and keep
WEBHOOKD_MASTER_KEY with the copy: the secrets in it are encrypted under that key."""
RESTORE_STEPS = """to restore: stop webhookd, delete {database} and its -wal and -shm files, copy {path}
to {database}, put the key file beside it, and start webhookd."""

LINK_SETTINGS = frozenset({"database_url", "public_base_url", "host", "port", "dashboard_link_ttl_s"})
"""What a dashboard link depends on: the database it is stored in, the URL it starts with, its life."""


def _add_dashboard_link(commands: Any) -> None:
    link = commands.add_parser(
        "dashboard-link",
        parents=[_settings_parent(LINK_SETTINGS)],
        help="print a single-use link to a customer's dashboard, or to the operator's view",
        description="Print a link that opens a customer's dashboard (or with --admin the operator's view"
        " across customers) once, before it expires.",
    )
    whose = link.add_mutually_exclusive_group(required=True)
    whose.add_argument("--customer", type=customer_id_arg, help="the customer's id")
    whose.add_argument("--admin", action="store_true", help="the operator's view across customers")
    link.add_argument(
        "--json", action="store_true", help="print {url, expires_at, kind, customer_id} as JSON"
    )
    link.set_defaults(run=_dashboard_link)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        key.removeprefix("setting_"): value for key, value in vars(args).items() if key.startswith("setting_")
    }
    return Settings.from_env(os.environ, overrides)


BACKUP_SETTINGS = frozenset({"database_url", "master_key"})


def _add_backup(commands: Any) -> None:
    backup = commands.add_parser(
        "backup",
        parents=[_settings_parent(BACKUP_SETTINGS)],
        help="copy the SQLite database while webhookd runs",
        description="Write a consistent copy of the SQLite database to a new file, while webhookd"
        " serves. Keep the key file (or WEBHOOKD_MASTER_KEY) with it: the copy's secrets are"
        " encrypted under that key. On PostgreSQL it explains pg_dump instead.",
    )
    backup.add_argument("path", type=Path, help="the new file to write (never overwritten)")
    backup.add_argument("--json", action="store_true", help="print {path, bytes, seconds, key_file} as JSON")
    backup.set_defaults(run=_backup)


def _print_json(value: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


def _without_password(url: str) -> str:
    """The database URL as it may be printed: a PostgreSQL password is masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    async def done(store: Store) -> int:
        print(f"database is up to date: {_without_password(settings.database_url)}", file=sys.stderr)
        return 0

    return await with_store(settings, done)


async def _create_key(settings: Settings, args: argparse.Namespace) -> int:
    scopes = provisioning.parse_scopes(args.scopes.split(","))

    async def create(store: Store) -> int:
        created = await provisioning.create_key(store, args.customer, scopes, args.name)
        record = created.record
        shown = {"key": created.key, "id": record.id, "customer_id": args.customer, "scopes": sorted(scopes)}
        operator_cli.print_result(args, shown, KEY_COLUMNS)
        if not args.json:
            print("the key is shown only now: keep it (webhookd stores its hash)", file=sys.stderr)
        return 0

    return await with_store(settings, create)


def _parse_credentials(pairs: Sequence[str]) -> dict[str, str]:
    credentials = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise InvalidInput(f"--credential {name or pair!r}: write it as NAME=VALUE")
        credentials[name] = value
    return credentials


async def _create_source(settings: Settings, args: argparse.Namespace) -> int:
    carrier = Carrier(args.carrier)
    credentials = _parse_credentials(args.credential)
    provisioning.check_credentials(carrier, credentials, CREDENTIAL_NAMES[carrier])
    box = SecretBox(master_key_from_settings(settings.master_key, settings.sqlite_path))

    async def create(store: Store) -> int:
        source = await provisioning.create_source(
            store,
            box,
            args.customer,
            carrier,
            credentials,
            required=CREDENTIAL_NAMES[carrier],
            customer_name=args.name,
        )
        url = provisioning.ingest_url(settings.effective_public_base_url, source)
        shown = {"id": source.id, "carrier": carrier.value, "customer_id": args.customer, "ingest_url": url}
        operator_cli.print_result(args, shown, SOURCE_COLUMNS)
        return 0

    return await with_store(settings, create)


async def _dashboard_link(settings: Settings, args: argparse.Namespace) -> int:
    access = DashboardAccess.operator() if args.admin else DashboardAccess.of_customer(args.customer)

    async def create(store: Store) -> int:
        link = await provisioning.create_dashboard_link(
            store, access, settings.effective_public_base_url, settings.dashboard_link_ttl_s, utcnow()
        )
        if args.json:
            expires_at = isoformat(link.expires_at)
            kind, customer_id = access.kind.value, access.customer_id
            _print_json({"url": link.url, "expires_at": expires_at, "kind": kind, "customer_id": customer_id})
        else:
            print(link.url)
            print(f"opens once, until {isoformat(link.expires_at)}", file=sys.stderr)
        return 0

    return await with_store(settings, create)


async def _backup(settings: Settings, args: argparse.Namespace) -> int:
    database = settings.sqlite_path
    if database is None:
        print(
            POSTGRES_BACKUP.format(path=args.path, url=_without_password(settings.database_url)),
            file=sys.stderr,
        )
        return 2
    key_file = None if settings.master_key else key_file_path(database)
    if key_file is not None and not key_file.exists():
        key_file = None  # made with the first secret: until then the database holds none
    if not args.json:
        print(f"copying {database} to {args.path} ...", file=sys.stderr)
    began = time.perf_counter()
    size = await asyncio.to_thread(sqlite_backup, database, args.path)
    seconds = round(time.perf_counter() - began, 3)
    if args.json:
        _print_json(
            {
                "path": str(args.path),
                "bytes": size,
                "seconds": seconds,
                "key_file": key_file and str(key_file),
            }
        )
        return 0
    print(f"wrote {args.path}: {size:,} bytes in {seconds:.1f} s")
    if key_file or settings.master_key:
        keep = f"the key file {key_file}" if key_file else "WEBHOOKD_MASTER_KEY"
        print(f"keep {keep} with this backup: the secrets in it are encrypted under that key.")
    print(RESTORE_STEPS.format(path=args.path, database=database))
    return 0


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from webhookd.app import create_app
    from webhookd.server import server_config

    app = create_app(settings, run_workers=not args.no_workers)
    loop = asyncio.get_running_loop()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # SIGTERM stops claiming at once; in-flight attempts get the grace period.
            stop = getattr(app.state, "stop_delivery", None)
            if stop is not None:
                loop.call_soon_threadsafe(stop)
            super().handle_exit(sig, frame)

    server = Server(server_config(app, settings))
    await server.serve()
    return 0 if server.started else 1


async def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from webhookd.app import build_worker, default_sender, run_delivery
    from webhookd.metrics import Metrics
    from webhookd.tracing import tracing_from_env

    tracing = tracing_from_env(os.environ)
    store = store_from_settings(settings)
    box = SecretBox(master_key_from_settings(settings.master_key, settings.sqlite_path))
    await store.open()
    sender = default_sender(settings)
    metrics = Metrics()
    if settings.worker_metrics_port:
        # A worker has no API server: its delivery metrics get their own small HTTP endpoint.
        start_http_server(settings.worker_metrics_port, addr=settings.host, registry=metrics.registry)
    worker = build_worker(settings, store, sender, box, metrics, tracing=tracing)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    try:
        await run_delivery(settings, store, worker)
    finally:
        await sender.close()
        await store.close()
        tracing.flush()
    return 0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (it comes with uvicorn[standard]): a faster event loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        configure_logging(settings.log_format)
        command: Command = args.run
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(command(settings, args))
    except WebhookdError as exc:
        print(f"webhookd: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
