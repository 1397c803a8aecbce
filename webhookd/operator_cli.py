"""The operator's commands of ``webhookd``: customers list, keys list | revoke, subscriptions list |
enable, deliveries retry | recover. Each acts on any customer, through the same functions as the admin
API, and prints a table, or with ``--json`` what the admin API answers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import orjson

from webhookd import actions, provisioning
from webhookd.api.views import api_key_json, customer_json, delivery_json, operator_subscription_json
from webhookd.config import Settings
from webhookd.exceptions import Conflict, InvalidInput
from webhookd.inputs import check_customer_id, utc_time
from webhookd.models import SubscriptionState, is_id, utcnow
from webhookd.store import Store, store_from_settings
from webhookd.store.base import Page, PageRequest

STORE_SETTINGS = frozenset({"database_url"})
"""What a command that only reads or changes the database depends on."""
LIST_PAGE = 100
NOT_FOUND = 1
"""The exit status for an id that names nothing (2 is a usage error)."""

Parents = Callable[[frozenset[str]], argparse.ArgumentParser]


def customer_id_arg(value: str) -> str:
    """``--customer``, checked by the one customer-id rule before anything is opened or created."""
    try:
        return check_customer_id(value, "a customer id")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _moment(value: str) -> datetime:
    moment = utc_time(value)
    if moment is None:
        raise argparse.ArgumentTypeError(
            f"{value!r}: give an ISO 8601 time with a zone, e.g. 2026-05-10T12:00:00Z"
        )
    return moment


def _command(
    group: Any, name: str, settings: Parents, help_: str, run: Callable[..., Awaitable[int]]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name, parents=[settings(STORE_SETTINGS)], help=help_, description=help_
    )
    parser.add_argument("--json", action="store_true", help="print JSON (as the admin API answers)")
    parser.set_defaults(run=run)
    return parser


def add_key_actions(keys: Any, settings: Parents) -> None:
    listed = _command(keys, "list", settings, "list a customer's API keys (never the keys themselves)", _keys)
    listed.add_argument("--customer", required=True, type=customer_id_arg, help="the customer's id")
    revoke = _command(
        keys, "revoke", settings, "revoke an API key: every API node refuses it at once", _revoke
    )
    revoke.add_argument("key_id", help="the key's id (key_...)")


def add_commands(commands: Any, settings: Parents) -> None:
    customers = commands.add_parser("customers", help="list customers").add_subparsers(
        dest="customers_command", required=True, metavar="ACTION"
    )
    _command(customers, "list", settings, "list every customer with its subscriptions and keys", _customers)
    subscriptions = commands.add_parser("subscriptions", help="list and re-enable subscriptions")
    subs = subscriptions.add_subparsers(dest="subscriptions_command", required=True, metavar="ACTION")
    listed = _command(subs, "list", settings, "list a customer's subscriptions", _subscriptions)
    listed.add_argument("--customer", required=True, type=customer_id_arg, help="the customer's id")
    listed.add_argument(
        "--state", choices=[s.value for s in SubscriptionState], help="only those in this state"
    )
    enable = _command(
        subs, "enable", settings, "re-enable a subscription: its parked deliveries go out", _enable
    )
    enable.add_argument("subscription_id", help="the subscription's id (sub_...)")
    deliveries = commands.add_parser("deliveries", help="retry and recover deliveries")
    dlv = deliveries.add_subparsers(dest="deliveries_command", required=True, metavar="ACTION")
    retry = _command(dlv, "retry", settings, "send a delivery again now", _retry)
    retry.add_argument("delivery_id", help="the delivery's id (dlv_...)")
    recover = _command(dlv, "recover", settings, "re-queue a subscription's failed deliveries", _recover)
    recover.add_argument("--subscription", required=True, help="the subscription's id (sub_...)")
    recover.add_argument(
        "--since", required=True, type=_moment, help="ISO 8601: failed deliveries created since"
    )
    recover.add_argument("--until", type=_moment, help="ISO 8601: ... and until (default: now)")


# -- running ---------------------------------------------------------------------------------------


async def with_store(settings: Settings, action: Callable[[Store], Awaitable[int]]) -> int:
    store = store_from_settings(settings)
    await store.open()
    try:
        return await action(store)
    finally:
        await store.close()


def _missing(message: str) -> int:
    print(f"webhookd: {message}", file=sys.stderr)
    return NOT_FOUND


def print_result(args: argparse.Namespace, value: Any, columns: Sequence[str]) -> None:
    """``value`` (an object or a list of them) as JSON with ``--json``, else as an aligned table."""
    if args.json:
        sys.stdout.write(orjson.dumps(value).decode() + "\n")
        return
    print(table(value if isinstance(value, list) else [value], columns))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as aligned columns under a header; a list as comma-separated values, null as ``-``."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(c) for c in (column, *(line[i] for line in cells))) for i, column in enumerate(columns)]
    lines = [list(columns), *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


async def _all_pages(read: Callable[[PageRequest], Awaitable[Page[Any]]]) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page = await read(PageRequest(LIST_PAGE, cursor))
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


CUSTOMER_COLUMNS = ("id", "name", "subscriptions", "failing", "disabled", "keys", "created_at")
KEY_COLUMNS = ("id", "name", "scopes", "created_at", "last_used_at", "revoked_at")
SUBSCRIPTION_COLUMNS = ("id", "state", "failure_count", "url", "events", "created_at")
DELIVERY_COLUMNS = ("id", "subscription_id", "status", "attempts", "next_attempt_at", "last_status")
UNKNOWN_CUSTOMER = "no customer {0}: list customers with `webhookd customers list`"


async def _customers(settings: Settings, args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        found = await _all_pages(store.list_customers)
        print_result(args, [customer_json(c) for c in found], CUSTOMER_COLUMNS)
        return 0

    return await with_store(settings, run)


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        if await store.get_customer(args.customer) is None:
            return _missing(UNKNOWN_CUSTOMER.format(args.customer))
        print_result(args, [api_key_json(k) for k in await store.list_api_keys(args.customer)], KEY_COLUMNS)
        return 0

    return await with_store(settings, run)


async def _revoke(settings: Settings, args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        key = None
        if is_id(args.key_id, "key"):
            key = await provisioning.revoke_key(store, None, args.key_id, utcnow())
        if key is None:
            return _missing(f"no key {args.key_id}: list keys with `webhookd keys list --customer ID`")
        print_result(args, api_key_json(key), ("customer_id", *KEY_COLUMNS))
        return 0

    return await with_store(settings, run)


async def _subscriptions(settings: Settings, args: argparse.Namespace) -> int:
    state = None if args.state is None else SubscriptionState(args.state)

    async def run(store: Store) -> int:
        if await store.get_customer(args.customer) is None:
            return _missing(UNKNOWN_CUSTOMER.format(args.customer))
        found = await _all_pages(lambda page: store.list_subscriptions(args.customer, page, state))
        print_result(args, [operator_subscription_json(s) for s in found], SUBSCRIPTION_COLUMNS)
        return 0

    return await with_store(settings, run)


NO_SUBSCRIPTION = "no subscription {0}: list them with `webhookd subscriptions list --customer ID`"


async def _enable(settings: Settings, args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        sub = None
        if is_id(args.subscription_id, "sub"):
            sub = await actions.enable_any(store, args.subscription_id)
        if sub is None:
            return _missing(NO_SUBSCRIPTION.format(args.subscription_id))
        print_result(args, operator_subscription_json(sub), ("customer_id", *SUBSCRIPTION_COLUMNS))
        return 0

    return await with_store(settings, run)


async def _retry(settings: Settings, args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        delivery = None
        try:
            if is_id(args.delivery_id, "dlv"):
                delivery = await actions.retry_any(store, args.delivery_id)
        except Conflict as exc:
            return _missing(f"delivery {args.delivery_id} cannot be retried now: {exc}")
        if delivery is None:
            return _missing(
                f"no delivery {args.delivery_id}: a subscription's deliveries are listed by"
                " GET /api/v1/webhook-subscriptions/SUB_ID/deliveries and on the dashboard"
            )
        print_result(args, delivery_json(delivery), DELIVERY_COLUMNS)
        return 0

    return await with_store(settings, run)


async def _recover(settings: Settings, args: argparse.Namespace) -> int:
    until = args.until or utcnow()

    async def run(store: Store) -> int:
        sub = (
            await store.get_subscription(None, args.subscription) if is_id(args.subscription, "sub") else None
        )
        if sub is None:
            return _missing(NO_SUBSCRIPTION.format(args.subscription))
        ids, more = await actions.to_recover(store, sub, args.since, until)

        def progress(done: int) -> None:
            print(f"requeued {done} of {len(ids)} failed deliveries", file=sys.stderr)

        await actions.requeue(store, ids, progress)
        if not ids:
            progress(0)
        if more:
            print(
                f"more failed deliveries matched: run it again to requeue the next {actions.MAX_RECOVER}",
                file=sys.stderr,
            )
        result = {
            "subscription_id": sub.id,
            "customer_id": sub.customer_id,
            "requeued": len(ids),
            "more": more,
        }
        print_result(args, result, ("subscription_id", "customer_id", "requeued", "more"))
        return 0

    return await with_store(settings, run)
