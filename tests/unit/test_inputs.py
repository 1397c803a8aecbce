"""The rules every value from outside meets (``webhookd.inputs``), ids in paths and cursors sent back:
how deep JSON nests, NUL characters, customer ids, event types, times in years 1 to 9999 UTC."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhookd.exceptions import InvalidInput
from webhookd.inputs import (
    CUSTOMER_ID_RULE,
    HOLDS_NUL,
    MAX_JSON_DEPTH,
    TOO_DEEP,
    check_customer_id,
    is_event_type,
    json_problem,
    utc_time,
)
from webhookd.models import is_id, new_id
from webhookd.store.base import (
    cursor_pattern,
    decode_cursor,
    decode_log_cursor,
    encode_cursor,
    encode_log_cursor,
    log_cursor_pattern,
)

# -- JSON: nesting and NUL -------------------------------------------------------------------------


def nested(levels: int, inner: Any = None) -> Any:
    """``levels`` objects and arrays, alternating, around ``inner``."""
    value: Any = {} if inner is None else {"x": inner}
    for level in range(levels - 1):
        value = [value] if level % 2 else {"a": value}
    return value


def depth(value: Any) -> int:
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level + 1)
            pending += [(child, level + 1) for child in (item.values() if isinstance(item, dict) else item)]
    return deepest


def holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or holds_nul(item) for key, item in value.items())
    return isinstance(value, list) and any(map(holds_nul, value))


TEXT = st.text(alphabet=st.sampled_from(["a", "\x00", "\\", "u", "0", "{", "[", "é"]), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=20,
)


@given(JSON_VALUES, st.integers(0, MAX_JSON_DEPTH + 3))
def test_json_problem_finds_exactly_too_deep_nesting_and_nul(value: Any, extra_levels: int) -> None:
    """Whatever JSON text says, with any brackets and escapes in its strings: the byte scans never
    let a problem through and never invent one."""
    value = nested(extra_levels, value) if extra_levels else value
    for text in (json.dumps(value).encode(), orjson.dumps(value)):
        problem = json_problem(text, value)
        if problem is None:
            assert depth(value) <= MAX_JSON_DEPTH and not holds_nul(value)
        else:
            assert (problem == TOO_DEEP and depth(value) > MAX_JSON_DEPTH) or (
                problem == HOLDS_NUL and holds_nul(value)
            )


@pytest.mark.parametrize(
    ("levels", "expected"),
    [(1, None), (MAX_JSON_DEPTH, None), (MAX_JSON_DEPTH + 1, TOO_DEEP), (253, TOO_DEEP), (1022, TOO_DEEP)],
)
def test_nesting_up_to_the_limit_passes_and_deeper_does_not(levels: int, expected: str | None) -> None:
    text = b"".join(b'{"a":' if n % 2 == 0 else b"[" for n in range(levels - 1)) + b"{}"
    text += b"".join(b"}" if n % 2 == 0 else b"]" for n in reversed(range(levels - 1)))
    value = orjson.loads(text)  # decodes up to 1,024 levels

    assert depth(value) == levels
    assert json_problem(text, value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"note": "a\x00b"}, HOLDS_NUL),
        ({"a\x00": 1}, HOLDS_NUL),
        ({"turns": [{"text": ["ok", "\x00"]}]}, HOLDS_NUL),
        ({"note": "\\u0000 is how JSON writes NUL"}, None),  # the escape as text, no NUL in it
        ({"note": "[" * 500 + "{" * 500}, None),  # brackets in a string nest nothing
        ({"note": "é€😀"}, None),
    ],
)
def test_a_nul_anywhere_is_found_and_text_that_only_looks_like_one_is_not(
    value: dict[str, Any], expected: str | None
) -> None:
    assert json_problem(json.dumps(value).encode(), value) == expected
    assert json_problem(orjson.dumps(value), value) == expected


def test_what_passes_the_limit_encodes_again_inside_an_event_and_a_page_of_the_log() -> None:
    data = nested(MAX_JSON_DEPTH - 1)
    body = {"type": "call.completed", "data": data}
    assert json_problem(orjson.dumps(body), body) is None

    assert orjson.loads(orjson.dumps({"data": [{"id": "evt_1", "data": data}], "next_cursor": None}))


# -- event types and record ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("call.completed", True),
        ("call.transcript.ready", True),
        ("call.completed\n", False),
        ("call.%00", False),
        ("call.\x00", False),
        ("Call.Completed", False),
        ("call", False),
        (None, False),
    ],
)
def test_event_types_are_dotted_lowercase_and_nothing_more(value: object, expected: bool) -> None:
    assert is_event_type(value) is expected


@pytest.mark.parametrize("prefix", ["sub", "evt", "dlv", "src"])
def test_ids_new_id_makes_are_ids_of_their_prefix_only(prefix: str) -> None:
    made = new_id(prefix)

    assert is_id(made, prefix)
    assert not is_id(made, "key")
    assert is_id(f"{prefix}_0123456789ABCDEF0123456789", prefix)  # hex, as the SQL stores make them


@pytest.mark.parametrize(
    "value",
    [
        "sub_",
        "sub_\x00",
        "\x00",
        "sub_0123456789ABCDEFGHJKMNP\x00",
        "sub_0123456789abcdefghjkmnpq",
        "sub_é",
        "sub",
    ],
)
def test_anything_else_is_no_id(value: str) -> None:
    assert not is_id(value, "sub")


# -- times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-05-10T12:00:00Z", datetime(2026, 5, 10, 12, tzinfo=UTC)),
        ("2026-05-10T14:00:00+02:00", datetime(2026, 5, 10, 12, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime.min.replace(tzinfo=UTC)),
        ("0001-01-01T01:00:00+01:00", datetime.min.replace(tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime.max.replace(tzinfo=UTC)),
        ("0001-01-01T00:30:00+01:00", datetime.min.replace(tzinfo=UTC)),  # year 0 in UTC: the first
        ("9999-12-31T23:30:00-01:00", datetime.max.replace(tzinfo=UTC)),  # year 10000: the last
        ("2026-05-10T12:00:00", None),  # no zone
        ("2026-05-10T12:00:00Z\x00", None),
        ("yesterday", None),
        (1778400000, None),
        (None, None),
    ],
)
def test_utc_time_takes_zoned_iso_times_in_years_1_to_9999(value: object, expected: datetime | None) -> None:
    assert utc_time(value) == expected


@given(
    st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))])
    )
)
def test_utc_time_is_the_same_moment_or_the_edge_it_is_past(moment: datetime) -> None:
    parsed = utc_time(moment.isoformat())

    assert parsed is not None and parsed.tzinfo is UTC
    if parsed != moment:
        assert (moment.year, parsed) in (
            (1, datetime.min.replace(tzinfo=UTC)),
            (9999, datetime.max.replace(tzinfo=UTC)),
        )


# -- cursors a client sends back ------------------------------------------------------------------


SUB = "sub_0123456789ABCDEFGHJKMNPQRS"
EVT = "evt_0123456789ABCDEFGHJKMNPQRS"


def test_cursors_this_api_issues_decode() -> None:
    moment = datetime(2026, 5, 10, 12, 0, 0, 123456, tzinfo=UTC)

    assert decode_cursor(encode_cursor(SUB), "sub") == SUB
    assert decode_log_cursor(encode_log_cursor(moment, EVT), "evt") == (moment.timestamp(), EVT)


@settings(deadline=None)  # the machine may be busy with other tests
@given(
    st.from_regex(cursor_pattern("sub"), fullmatch=True),
    st.from_regex(log_cursor_pattern("dlv"), fullmatch=True),
)
def test_every_cursor_of_the_documented_pattern_is_a_position(cursor: str, log_cursor: str) -> None:
    """The OpenAPI document gives these patterns: whatever matches one names a place in its list."""
    assert decode_cursor(cursor, "sub") == cursor
    created, item_id = decode_log_cursor(log_cursor, "dlv")
    assert datetime.fromtimestamp(created, UTC).year >= 1970 and is_id(item_id, "dlv")


@pytest.mark.parametrize(
    ("cursor", "prefix"),
    [
        ("\x00_", "sub"),
        ("sub_\x00", "sub"),
        (f"{SUB}\n", "sub"),
        (EVT, "sub"),  # another list's
        ("c3ViXzAx", "sub"),  # a cursor of the old, base64 kind
        (f"inf-{EVT}", "evt"),
        (f"nan-{EVT}", "evt"),
        (f"1e300-{EVT}", "evt"),
        (f"-1e20-{EVT}", "evt"),
        (f"1.5-{EVT[:-1]}\x00", "evt"),
        (f"1.5-{EVT}", "dlv"),  # another log's
        (f"1.5|{EVT}", "evt"),
    ],
)
def test_a_cursor_outside_its_pattern_is_refused(cursor: str, prefix: str) -> None:
    decode = decode_log_cursor if prefix in ("evt", "dlv") else decode_cursor
    with pytest.raises(ValueError, match="cursor is not one this API returned"):
        decode(cursor, prefix)


# -- customer ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["acme", "Cus.2:x-y_z", "a" * 128, "0", "a.b_c:d-e"])
def test_a_valid_customer_id_passes(value: str) -> None:
    assert check_customer_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 129,
        "a" * 100_000,
        "acme\n",
        "\nacme",
        "a b",
        "\u202eacme",
        "../../etc/passwd",
        "a\x00",
        "é",
        42,
        None,
    ],
)
def test_anything_else_is_refused_saying_what_a_customer_id_is(value: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_customer_id(value)

    assert (refused.value.status, refused.value.code) == (400, "invalid_customer")
    assert refused.value.message == f"customer_id must be {CUSTOMER_ID_RULE}"
