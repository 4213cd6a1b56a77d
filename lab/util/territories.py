"""Territories as ISO 3166-1 alpha-2 codes, checked against pycountry's maintained list.

A territory that never matches is worse than one refused: `UK` would be stored and then never
match a GB policy. So input is validated where it enters, a near miss gets a hint (`UK` → GB, an
alpha-3 code or a country name → its alpha-2) rather than a silent correction, and the only groups
are expanded explicitly (`EU` → its member states, written into the record).
"""

from __future__ import annotations

from functools import lru_cache

import pycountry

WORLDWIDE = "WW"
_WORLDWIDE_WORDS = ("WORLDWIDE", "WORLD")

# Member states of the European Union, as of 1 February 2020 (the United Kingdom left on 31 January
# 2020; no change since, checked 2026). A grant that says `EU` is stored as these 27 codes, so a later
# change of membership does not silently widen or narrow a grant already given.
EU_MEMBERS_AS_OF = "2020-02-01"
EU_MEMBERS = (
    "AT",
    "BE",
    "BG",
    "CY",
    "CZ",
    "DE",
    "DK",
    "EE",
    "ES",
    "FI",
    "FR",
    "GR",
    "HR",
    "HU",
    "IE",
    "IT",
    "LT",
    "LU",
    "LV",
    "MT",
    "NL",
    "PL",
    "PT",
    "RO",
    "SE",
    "SI",
    "SK",
)
GROUPS = {"EU": EU_MEMBERS}

# Codes people write that ISO 3166-1 does not assign (or assigns to something else), and the code meant.
_COMMON_MISTAKES = {"UK": "GB", "EL": "GR", "EN": "GB", "KO": "KR", "JA": "JP"}


class TerritoryError(ValueError):
    """Not an ISO 3166-1 alpha-2 code (nor WW, nor a supported group); the message carries any hint."""


@lru_cache(maxsize=1)
def _alpha2() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


def _hint(text: str) -> str | None:
    """The alpha-2 code `text` probably meant (common mistake, alpha-3 code, numeric code or name)."""
    upper = text.upper()
    if upper in _COMMON_MISTAKES:
        return _COMMON_MISTAKES[upper]
    country = None
    if len(upper) == 3 and upper.isalpha():
        country = pycountry.countries.get(alpha_3=upper)
    elif upper.isdigit():
        country = pycountry.countries.get(numeric=upper.zfill(3))
    if country is None and len(text) > 3:
        try:
            country = pycountry.countries.lookup(text)
        except LookupError:
            country = None
    return country.alpha_2 if country is not None else None


def check_territory(value: object, *, allow_worldwide: bool = True) -> str:
    """One canonical alpha-2 code (or `WW`) for `value`; TerritoryError naming the value otherwise."""
    if not isinstance(value, str):
        raise TerritoryError(f"territory {value!r} must be a string (an ISO 3166-1 alpha-2 code)")
    text = value.strip()
    code = text.upper()
    if code in _WORLDWIDE_WORDS:
        code = WORLDWIDE
    if code == WORLDWIDE:
        if not allow_worldwide:
            raise TerritoryError("'WW' (worldwide) is not allowed here: name one territory (ISO 3166-1 alpha-2)")
        return code
    if len(code) == 2 and code in _alpha2():
        return code
    if code in GROUPS:
        raise TerritoryError(f"territory {text!r} is a group ({len(GROUPS[code])} countries): name one country here")
    hint = _hint(text)
    if hint:
        raise TerritoryError(f"territory {text!r} is not an ISO 3166-1 alpha-2 code: did you mean {hint}?")
    raise TerritoryError(f"territory {text!r} is not an ISO 3166-1 alpha-2 code, 'WW' or a group ({', '.join(GROUPS)})")


def expand_territories(values: list[str]) -> list[str]:
    """Sorted unique codes for a list that may name groups (`EU` → its 27 members) or `WW`.

    Every entry is checked; a duplicate (after normalising, before expanding) is an error so a
    typo repeated is not hidden. `WW` with other codes is redundant and refused.
    """
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        code = value.strip().upper() if isinstance(value, str) else value
        group = GROUPS.get(code) if isinstance(code, str) else None
        codes = list(group) if group else [check_territory(value)]
        key = code if group else codes[0]
        if key in seen:
            raise TerritoryError(f"territory {value!r} is listed more than once")
        seen.add(key)
        out.extend(codes)
    unique = sorted(set(out))
    if WORLDWIDE in unique and len(unique) > 1:
        raise TerritoryError(f"'WW' (worldwide) already covers {', '.join(c for c in unique if c != WORLDWIDE)}")
    return unique
