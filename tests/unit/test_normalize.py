"""Pure normalization helpers: E.164 numbers and carrier timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from webhookd.ingest.normalize import e164, parse_int, parse_time

MOMENT = datetime(2026, 3, 4, 15, 20, 56, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+15555550123", "+15555550123"),
        ("+1-202-555-0133", "+12025550133"),
        ("+1 (202) 555.0133", "+12025550133"),
        ("  +442071838750 ", "+442071838750"),
        ("client:bob", None),
        ("Client:bob", None),
        ("sip:bob@example.com", None),
        ("bob@example.com", None),
        ("anonymous", None),
        ("Anonymous", None),
        ("", None),
        (None, None),
        ("12025550133", None),
        ("2025550133", None),
        ("+0123456789", None),
        ("+12", None),
        ("+1202555013312345678", None),
    ],
)
def test_e164(raw: str | None, expected: str | None) -> None:
    assert e164(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12025550133", "+12025550133"),
        ("442071838750", "+442071838750"),
        ("+12025550133", "+12025550133"),
        ("0202555013", None),
        ("client:12025550133", None),
    ],
)
def test_e164_digits_with_country_code(raw: str, expected: str | None) -> None:
    assert e164(raw, digits_have_country_code=True) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Wed, 04 Mar 2026 15:20:56 +0000", MOMENT),
        ("Wed, 04 Mar 2026 16:20:56 +0100", MOMENT),
        ("2026-03-04T15:20:56Z", MOMENT),
        ("2026-03-04T15:20:56.000Z", MOMENT),
        ("2026-03-04T15:20:56.123456Z", MOMENT.replace(microsecond=123456)),
        ("2026-03-04T10:20:56.5-05:00", MOMENT.replace(microsecond=500000)),
        ("2026-03-04 15:20:56", MOMENT),
        ("2026-03-04 15:20:56+00:00", MOMENT),
        ("2026-03-04T15:20:56", MOMENT),
    ],
)
def test_parse_time_gives_aware_utc(raw: str, expected: datetime) -> None:
    parsed = parse_time(raw)

    assert parsed == expected
    assert parsed is not None and parsed.tzinfo == UTC


@pytest.mark.parametrize("raw", ["", None, "garbage", "not a date at all", "2026-13-45T99:99:99Z"])
def test_parse_time_of_garbage_is_none(raw: str | None) -> None:
    assert parse_time(raw) is None


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_parse_time_out_of_range_is_none_not_an_overflow(raw: str) -> None:
    assert parse_time(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("47", 47), ("-3", -3), (" 12 ", 12), ("²", None), ("٣", None), ("", None), (None, None), ("1.5", None)],
)
def test_parse_int_takes_only_ascii_digits(raw: str | None, expected: int | None) -> None:
    assert parse_int(raw) == expected


@pytest.mark.parametrize("raw", ["--5", "1" * 19, "1" * 5000])
def test_parse_int_refuses_what_is_not_a_64_bit_number(raw: str) -> None:
    assert parse_int(raw) is None


def test_e164_takes_only_ascii_digits() -> None:
    arabic_indic = "".join(chr(0x0660 + d) for d in (2, 3, 4, 5, 6, 7, 8, 9, 0))
    assert e164("+1" + arabic_indic) is None
