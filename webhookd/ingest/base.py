"""What every carrier adapter receives and provides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from webhookd.exceptions import SignatureInvalid
from webhookd.ingest.normalize import NormalizedCall


@dataclass(frozen=True, slots=True)
class RawCallback:
    """A carrier's request exactly as it arrived, with the public URL the carrier called."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    query: Sequence[tuple[str, str]]


def credential(credentials: Mapping[str, str], name: str, carrier: str) -> str:
    """A source credential the signature check needs; a missing one fails the check (401) rather
    than the request (500)."""
    value = credentials.get(name)
    if not isinstance(value, str) or not value:
        raise SignatureInvalid(f"the {carrier} source has no {name} credential")
    return value


class CarrierAdapter(Protocol):
    """Verifies a callback on its raw bytes, then parses it. Raises only ``IngestError``."""

    credential_names: tuple[str, ...]

    def verify(self, callback: RawCallback, credentials: Mapping[str, str], now: datetime) -> None:
        """Raise ``SignatureInvalid`` unless the carrier's signature holds."""

    def parse(self, callback: RawCallback) -> list[NormalizedCall]:
        """The normalized updates in a verified callback (raise ``PayloadInvalid`` if malformed)."""
