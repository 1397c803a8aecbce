"""Ids: ``prefix_`` + 26 Crockford base32 characters, the first ten a millisecond time."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from webhookd import models

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def decode(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + CROCKFORD.index(char)
    return value


class FixedBits:
    def __init__(self, bits: int) -> None:
        self.bits = bits

    def getrandbits(self, count: int) -> int:
        assert count == 80
        return self.bits


@given(st.integers(min_value=0, max_value=2**80 - 1))
def test_an_id_encodes_its_millisecond_time_and_random_bits(bits: int) -> None:
    saved = models._id_random
    models._id_random = FixedBits(bits)  # type: ignore[assignment]
    try:
        before = time.time_ns() // 1_000_000
        made = models.new_id("evt")
        after = time.time_ns() // 1_000_000
    finally:
        models._id_random = saved
    prefix, _, body = made.partition("_")
    assert prefix == "evt" and len(body) == 26 and set(body) <= set(CROCKFORD)
    value = decode(body)
    assert value & (2**80 - 1) == bits
    assert before <= value >> 80 <= after


def test_ids_made_later_sort_later() -> None:
    first = models.new_id("dlv")
    time.sleep(0.002)
    assert models.new_id("dlv") > first
