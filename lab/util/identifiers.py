"""Recording identifiers in one canonical form, so catalogue and ledger compare equal.

Validation is python-stdnum's (length, alphabet, known country code); `ISRC_PATTERN` is the shape of
the canonical form for schemas (pydantic `Field(pattern=...)`, JSON Schema) that cannot call Python.
"""

from __future__ import annotations

from stdnum import isrc as _isrc
from stdnum.exceptions import ValidationError

ISRC_PATTERN = r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$"


def normalize_isrc(value: str | None) -> str | None:
    """`gb-lab-26-00001` → `GBLAB2600001`; anything that is not an ISRC raises ValueError."""
    if value is None:
        return None
    try:
        return _isrc.validate(value)
    except ValidationError as exc:
        raise ValueError(f"not an ISRC: {value!r} (expected CC-XXX-YY-NNNNN; {exc.message})") from None


def as_isrc(value: str) -> str | None:
    """The canonical ISRC if `value` is one, else None (for lookups that accept several kinds of id)."""
    try:
        return normalize_isrc(value)
    except ValueError:
        return None
