"""Recording identifiers in one canonical form, so catalogue and ledger compare equal."""

from __future__ import annotations

import re

_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{2}[0-9]{5}$")


def normalize_isrc(value: str | None) -> str | None:
    """`gb-lab-26-00001` → `GBLAB2600001`; anything that is not an ISRC raises ValueError."""
    if value is None:
        return None
    v = value.replace("-", "").replace(" ", "").upper()
    if not _ISRC.match(v):
        raise ValueError(f"not an ISRC: {value!r} (expected CC-XXX-YY-NNNNN)")
    return v
