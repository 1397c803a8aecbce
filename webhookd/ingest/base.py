"""What every carrier adapter receives and provides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from webhookd.ingest.normalize import NormalizedCall


@dataclass(frozen=True, slots=True)
class RawCallback:
    """A carrier's request exactly as it arrived, with the public URL the carrier called."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    query: Sequence[tuple[str, str]]


class CarrierAdapter(Protocol):
    """Verifies a callback on its raw bytes, then parses it. Raises only ``IngestError``."""

    credential_names: tuple[str, ...]

    def verify(self, callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
        """Raise ``SignatureInvalid`` unless the carrier's signature holds."""

    def parse(self, callback: RawCallback) -> list[NormalizedCall]:
        """The normalized updates in a verified callback (raise ``PayloadInvalid`` if malformed)."""
