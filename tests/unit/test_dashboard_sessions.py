"""Dashboard sessions and CSRF tokens: signed with a key derived from the master key, bound to one
customer and one expiry; the one-time flash a form leaves for its page; and the 24-hour chart's
arithmetic."""

from __future__ import annotations

import base64
from datetime import timedelta

import orjson

from webhookd.crypto import derive_key
from webhookd.dashboard.charts import HEIGHT, hourly_chart
from webhookd.dashboard.sessions import (
    Flash,
    Session,
    csrf_ok,
    csrf_token,
    open_flash,
    read_session,
    seal_flash,
    session_key,
    sign_session,
)
from webhookd.models import DashboardAccess, utcnow
from webhookd.store.base import AttemptTally

KEY = session_key(b"m" * 32)


def test_a_signed_session_reads_back_until_it_expires() -> None:
    now = utcnow()
    cookie = sign_session(KEY, DashboardAccess.of_customer("acme"), now + timedelta(hours=1))

    session = read_session(KEY, cookie, now)

    assert session is not None and session.access == DashboardAccess.of_customer("acme")
    assert read_session(KEY, cookie, now + timedelta(hours=1, seconds=1)) is None


def test_an_operator_session_reads_back_as_one_with_its_own_id() -> None:
    now = utcnow()
    first = read_session(KEY, sign_session(KEY, DashboardAccess.operator(), now + timedelta(hours=1)), now)
    second = read_session(KEY, sign_session(KEY, DashboardAccess.operator(), now + timedelta(hours=1)), now)

    assert first is not None and second is not None
    assert (first.access.is_operator, first.customer_id) == (True, None)
    assert first.session_id != second.session_id and len(first.session_id) >= 20


def test_a_customer_session_rewritten_as_an_operators_is_refused() -> None:
    now = utcnow()
    payload, mac = sign_session(KEY, DashboardAccess.of_customer("acme"), now + timedelta(hours=1)).split(".")
    kind, customer_id, session_id, expires_at = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    assert (kind, customer_id) == ("customer", "acme")
    forged = base64.urlsafe_b64encode(orjson.dumps(["operator", None, session_id, expires_at])).decode()

    assert read_session(KEY, f"{forged.rstrip('=')}.{mac}", now) is None


def test_a_session_with_another_customer_written_in_is_refused() -> None:
    now = utcnow()
    payload, mac = sign_session(KEY, DashboardAccess.of_customer("acme"), now + timedelta(hours=1)).split(".")
    session = read_session(KEY, f"{payload}.{mac}", now)
    assert session is not None
    fields = ["customer", "globex", session.session_id, int(now.timestamp()) + 3600]
    forged = base64.urlsafe_b64encode(orjson.dumps(fields)).decode()

    assert read_session(KEY, f"{forged.rstrip('=')}.{mac}", now) is None
    assert read_session(KEY, payload, now) is None
    assert read_session(KEY, "", now) is None and read_session(KEY, None, now) is None


def test_a_session_signed_under_another_master_key_is_refused() -> None:
    now = utcnow()
    cookie = sign_session(
        session_key(b"n" * 32), DashboardAccess.of_customer("acme"), now + timedelta(hours=1)
    )

    assert read_session(KEY, cookie, now) is None


def test_the_session_key_is_derived_for_its_purpose() -> None:
    assert session_key(b"m" * 32) == KEY
    assert KEY not in {b"m" * 32, derive_key(b"m" * 32, "another purpose")}


def test_a_csrf_token_passes_only_with_its_own_session() -> None:
    now = utcnow()
    mine = read_session(
        KEY, sign_session(KEY, DashboardAccess.of_customer("acme"), now + timedelta(hours=1)), now
    )
    theirs = read_session(
        KEY, sign_session(KEY, DashboardAccess.of_customer("globex"), now + timedelta(hours=1)), now
    )
    assert mine is not None and theirs is not None

    assert csrf_ok(KEY, mine, csrf_token(KEY, mine))
    assert not csrf_ok(KEY, mine, csrf_token(KEY, theirs))
    assert not csrf_ok(KEY, mine, "")


def _session(customer_id: str) -> Session:
    now = utcnow()
    session = read_session(
        KEY, sign_session(KEY, DashboardAccess.of_customer(customer_id), now + timedelta(hours=1)), now
    )
    assert session is not None
    return session


def test_a_flash_opens_only_for_its_session_and_page_until_it_expires() -> None:
    now, mine, theirs = utcnow(), _session("acme"), _session("globex")
    flash, page = Flash("New secret made.", "whsec_c2VjcmV0"), "/dashboard/subscriptions/sub_1"
    sealed = seal_flash(KEY, mine, page, flash, now + timedelta(seconds=60))

    assert open_flash(KEY, mine, page, sealed, now) == flash
    assert open_flash(KEY, theirs, page, sealed, now) is None
    assert open_flash(KEY, mine, "/dashboard/subscriptions/sub_2", sealed, now) is None
    assert open_flash(KEY, mine, page, sealed, now + timedelta(seconds=61)) is None
    assert open_flash(session_key(b"n" * 32), mine, page, sealed, now) is None
    assert open_flash(KEY, mine, page, sealed[:-4], now) is None


def test_a_flash_does_not_show_its_secret() -> None:
    flash = Flash("New secret made.", "whsec_c2VjcmV0")
    sealed = seal_flash(KEY, _session("acme"), "/p", flash, utcnow() + timedelta(seconds=60))

    raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    assert b"whsec_" not in raw and b"c2VjcmV0" not in raw and "whsec_" not in sealed


def test_the_chart_has_a_bar_an_hour_scaled_to_the_busiest_hour() -> None:
    chart = hourly_chart(
        [AttemptTally("sub_a", 0, 4, 1), AttemptTally("sub_a", 23, 2, 2), AttemptTally("sub_a", 24, 2, 2)]
    )

    assert len(chart.bars) == 24 and (chart.attempts, chart.succeeded) == (8, 5)
    assert (chart.bars[0].total_h, chart.bars[0].ok_h) == (HEIGHT, HEIGHT / 4)
    assert (chart.bars[23].total_h, chart.bars[23].ok_h) == (HEIGHT, HEIGHT)
    assert chart.success_rate == "62 %"
    assert hourly_chart([]).success_rate == "no attempts"
