"""Creating API keys, carrier sources and dashboard links: the one implementation behind the CLI and
the API."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import orjson

from webhookd.crypto import (
    SecretBox,
    hash_api_key,
    hash_token,
    new_api_key,
    new_link_token,
    source_credentials_context,
)
from webhookd.exceptions import InvalidInput
from webhookd.inputs import check_customer_id
from webhookd.models import ApiKey, Carrier, DashboardAccess, Scope, Source, new_id, utcnow
from webhookd.store.base import Store

MAX_NAME_LENGTH = 200
DASHBOARD_LOGIN_PATH = "/dashboard/login"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: str
    """The plain key: shown once, never stored."""
    record: ApiKey


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    try:
        scopes = frozenset(Scope(name.strip()) for name in names if name.strip())
    except ValueError:
        raise InvalidInput(f"unknown scope; choose from {', '.join(s.value for s in Scope)}") from None
    if not scopes:
        raise InvalidInput("give at least one scope")
    return scopes


def check_name(name: str | None) -> str | None:
    if name is not None and len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"name must be at most {MAX_NAME_LENGTH} characters")
    return name


async def create_key(
    store: Store, customer_id: str, scopes: frozenset[Scope], customer_name: str | None = None
) -> CreatedKey:
    """A new key for the customer (created if new; ``customer_name`` replaces its display name)."""
    await store.ensure_customer(check_customer_id(customer_id), check_name(customer_name))
    key = new_api_key()
    record = ApiKey(new_id("key"), customer_id, hash_api_key(key), scopes, None, utcnow())
    await store.create_api_key(record)
    return CreatedKey(key, record)


def check_credentials(carrier: Carrier, credentials: Mapping[str, str], required: Iterable[str]) -> None:
    missing = [name for name in required if not credentials.get(name)]
    if missing:
        raise InvalidInput(f"{carrier.value} needs the credentials {', '.join(missing)}")


async def create_source(
    store: Store,
    box: SecretBox,
    customer_id: str,
    carrier: Carrier,
    credentials: Mapping[str, str],
    *,
    required: Iterable[str],
    customer_name: str | None = None,
) -> Source:
    """Register a carrier source; its credentials are encrypted before they are stored."""
    check_credentials(carrier, credentials, required)
    await store.ensure_customer(check_customer_id(customer_id), check_name(customer_name))
    source_id = new_id("src")
    sealed = box.encrypt(orjson.dumps(dict(credentials)), source_credentials_context(source_id))
    source = Source(source_id, customer_id, carrier, sealed, utcnow())
    await store.create_source(source)
    return source


def ingest_url(public_base_url: str, source: Source) -> str:
    return f"{public_base_url}/ingest/{source.carrier.value}/{source.id}"


@dataclass(frozen=True, slots=True)
class DashboardLink:
    url: str
    """Carries the single-use token: for the customer's eyes, never for a log."""
    expires_at: datetime


async def create_dashboard_link(
    store: Store, access: DashboardAccess, public_base_url: str, ttl_s: float, now: datetime
) -> DashboardLink:
    """A link that opens ``access`` (a customer's dashboard, or the operator's view) once, until
    ``ttl_s`` from ``now``. Only the token's SHA-256 is stored."""
    customer_id = access.customer_id
    if customer_id is not None and await store.get_customer(customer_id) is None:
        raise InvalidInput(
            f"no customer {customer_id} yet: make its first API key with"
            f" `webhookd keys create --customer {customer_id} --scopes manage_webhooks`",
            code="unknown_customer",
        )
    token, expires_at = new_link_token(), now + timedelta(seconds=ttl_s)
    await store.create_dashboard_link(hash_token(token), access, now, expires_at)
    url = f"{public_base_url}{DASHBOARD_LOGIN_PATH}?{urlencode({'token': token})}"
    return DashboardLink(url, expires_at)


async def revoke_key(store: Store, customer_id: str | None, key_id: str, now: datetime) -> ApiKey | None:
    """Revoke the key ``key_id`` (of ``customer_id``, or anyone's with ``None``). Once this returns it
    authenticates no more on any node of a SQLite file, nor on this PostgreSQL node; other PostgreSQL
    nodes refuse it as soon as the revocation's NOTIFY reaches them (see ``Store.key_revocations``).
    ``None`` if not found."""
    return await store.revoke_api_key(customer_id, key_id, now)
