"""Rules every value from outside meets before it is stored or looked up, each defined once: how
deeply JSON may nest, that stored text holds no NUL character, what a customer id and an event
type look like, and which times every store holds.

They hold whichever store is behind: PostgreSQL refuses NUL in text and jsonb where SQLite keeps it,
and times outside years 1 to 9999 UTC; orjson decodes JSON nested 1,024 deep but encodes no deeper
than 255, so an event stored near that edge could never be listed again. Checked on the way in,
such input is the same 400 on every backend.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TypeGuard

from webhookd.exceptions import InvalidInput

MAX_JSON_DEPTH = 64
"""How deeply objects and arrays may nest in JSON that comes in (a body's own braces are level 1).
What is stored wraps it in a few more levels (an event's envelope, a page of the event log), far
below the 255 orjson encodes."""

NUL = "\x00"
_NUL_ESCAPE = b"\\u0000"
"""The only way JSON text can carry a NUL: raw control characters are not valid JSON."""
_BACKSLASH = ord("\\")  # an int: ``in`` then scans with memchr, several times faster than for b"\\"

NO_NUL_PATTERN = "^[^\\x00]*$"
"""The JSON Schema ``pattern`` of text without a NUL: every string a JSON body may hold."""

TOO_DEEP = f"nests objects and arrays more than {MAX_JSON_DEPTH} levels deep; send at most {MAX_JSON_DEPTH}"
HOLDS_NUL = "holds a NUL character (U+0000) in a string; remove it"

MAX_CUSTOMER_ID_LENGTH = 128
CUSTOMER_ID_PATTERN = rf"^[A-Za-z0-9._:-]{{1,{MAX_CUSTOMER_ID_LENGTH}}}$"
_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
CUSTOMER_ID_RULE = f"1 to {MAX_CUSTOMER_ID_LENGTH} characters of A-Z a-z 0-9 . _ : -"

MAX_RATE_LIMIT_PER_SECOND = 10_000
"""The highest per-subscription rate limit; beyond it a limit is no limit in practice."""
MAX_ORDERING_KEY_LENGTH = 255

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
MAX_EVENT_TYPE_LENGTH = 100
EVENT_TYPE_RULE = (
    f"a dotted lowercase event type of at most {MAX_EVENT_TYPE_LENGTH} characters, such as call.completed"
)


def _ipv6() -> str:
    """RFC 3986's IPv6address: eight groups, or fewer around one ``::``, the last two maybe IPv4."""
    h16, octet = "[0-9A-Fa-f]{1,4}", "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    ls32 = rf"(?:{h16}:{h16}|{octet}(?:\.{octet}){{3}})"
    forms = [rf"(?:{h16}:){{6}}{ls32}", rf"::(?:{h16}:){{5}}{ls32}"]
    for before in range(7):  # at most ``before`` groups ahead of the ::, the rest after it
        head = rf"(?:(?:{h16}:){{0,{before}}}{h16})?::"
        tail = {4: ls32, 5: h16, 6: ""}.get(before, rf"(?:{h16}:){{{3 - before}}}{ls32}")
        forms.append(head + tail)
    return "|".join(forms)


_HOST = r"[A-Za-z0-9\-._~!$&'()*+,;=]+"
_PORT = r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]|0))?"
_PCHARS = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*"
HTTP_URL_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:{_HOST}|\[(?:{_ipv6()})\]){_PORT}(?:[/?]{_PCHARS})?(?:#{_PCHARS})?$"
)
"""An absolute http(s) URI by RFC 3986, without credentials: a host name (not percent-encoded) or
an IPv6 address, a port, then a path and query, and a fragment, of their characters (any other
percent-encoded). Written flat: generating test data for nested repeats is slow."""
HTTP_URL = re.compile(HTTP_URL_PATTERN)
MAX_URL_LENGTH = 2048
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 500
MAX_BATCH_EVENTS = 500
"""Events one ``POST /api/v1/events/batch`` may hold: one transaction's worth."""

MAX_HEADERS = 20
MAX_HEADER_NAME_LENGTH = 64
MAX_HEADER_VALUE_LENGTH = 1024
HEADER_NAME_PATTERN = rf"^[!#$%&'*+.^_`|~0-9A-Za-z-]{{1,{MAX_HEADER_NAME_LENGTH}}}$"
"""A custom header's name: an RFC 9110 token (``tchar``s)."""
HEADER_VALUE_PATTERN = rf"^[\x21-\x7E](?:[\t\x20-\x7E]{{0,{MAX_HEADER_VALUE_LENGTH - 2}}}[\x21-\x7E])?$"
"""A custom header's value: visible ASCII, spaces and tabs (never CR, LF or NUL), not starting or
ending with white space, which HTTP would drop on the way."""
FORBIDDEN_HEADERS = (
    "content-type",
    "content-length",
    "host",
    *("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer"),
    *("trailers", "transfer-encoding", "upgrade"),
)
"""Headers a subscription may not set: the body's, the connection's and the hop-by-hop ones
(and every ``webhook-`` one, the signature's)."""


def _any_case(text: str) -> str:
    """A pattern matching ``text`` in any case, without flags (JSON Schema patterns have none)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in text)


FORBIDDEN_HEADER_PATTERN = f"^(?:{_any_case('webhook-')}.*|{'|'.join(map(_any_case, FORBIDDEN_HEADERS))})$"
HEADER_NAME = re.compile(HEADER_NAME_PATTERN)
HEADER_VALUE = re.compile(HEADER_VALUE_PATTERN)
FORBIDDEN_HEADER = re.compile(FORBIDDEN_HEADER_PATTERN)


def json_problem(text: bytes, value: object) -> str | None:
    """Why ``value``, parsed from the JSON ``text``, may not be stored (:data:`TOO_DEEP` or
    :data:`HOLDS_NUL`), or ``None``.

    Byte scans settle almost every body at C speed: text with at most ``MAX_JSON_DEPTH`` brackets
    cannot nest deeper than that (see :func:`holds_nul` for the other). Only what they cannot
    rule out is looked for in ``value``.
    """
    if text.count(b"{") + text.count(b"[") > MAX_JSON_DEPTH and _nests_too_deep(value):
        return TOO_DEEP
    return HOLDS_NUL if holds_nul(text, value) else None


def holds_nul(text: bytes, value: object) -> bool:
    """Whether a string or key in ``value``, parsed from (or encoded as) the JSON ``text``, holds
    a NUL. Text without a backslash (most bodies), or without the escape, holds none."""
    if _BACKSLASH not in text or _NUL_ESCAPE not in text:
        return False
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if NUL in item:
                return True
        elif isinstance(item, dict):
            if any(NUL in key for key in item):
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _nests_too_deep(value: object) -> bool:
    # Level by level, without recursion (the value may nest a thousand levels): a body of many
    # small objects, such as a transcript's turns, has many brackets and is looked into often.
    level: list[object] = [value]
    for _ in range(MAX_JSON_DEPTH):
        below: list[object] = []
        for item in level:
            if isinstance(item, dict):
                below.extend(item.values())
            elif isinstance(item, list):
                below.extend(item)
        if not below:
            return False
        level = below
    return any(isinstance(item, dict | list) for item in level)


def is_customer_id(value: str) -> bool:
    return _CUSTOMER_ID.fullmatch(value) is not None


def check_customer_id(value: object, name: str = "customer_id") -> str:
    """``value`` if it is a valid customer id; else :class:`InvalidInput` saying what one is."""
    if not isinstance(value, str) or not _CUSTOMER_ID.fullmatch(value):
        raise InvalidInput(f"{name} must be {CUSTOMER_ID_RULE}", code="invalid_customer")
    return value


def is_event_type(value: object) -> TypeGuard[str]:
    """Whether ``value`` is :data:`EVENT_TYPE_RULE`."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_EVENT_TYPE_LENGTH
        and _EVENT_TYPE.fullmatch(value) is not None
    )


FIRST_MOMENT = datetime.min.replace(tzinfo=UTC)
LAST_MOMENT = datetime.max.replace(tzinfo=UTC)


def utc_time(value: object) -> datetime | None:
    """An ISO-8601 time with a zone (``Z`` or an offset), in UTC; ``None`` for anything else.

    Every such time of years 1 to 9999 is valid RFC 3339, but some fall outside those years in
    UTC (``0001-01-01T00:30:00+01:00`` is in year 0), which no store holds: those are taken as
    the first or the last moment, since nothing stored is older or newer.
    """
    if not isinstance(value, str) or not value.isprintable():  # fromisoformat stops at a NUL
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return FIRST_MOMENT if moment.year == 1 else LAST_MOMENT
