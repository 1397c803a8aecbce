"""Where the shared product material lives: ``shared/`` beside this checkout."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("WEBHOOKD_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
CARRIER_FIXTURES = SHARED / "fixtures" / "carriers"
