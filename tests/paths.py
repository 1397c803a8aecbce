"""Where the test material lives: inside this repository, so a clone with nothing beside it can test."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CARRIER_FIXTURES = FIXTURES / "carriers"
