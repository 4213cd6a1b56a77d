"""Territories: ISO 3166-1 alpha-2 via pycountry, hints for near misses, groups written out."""

from __future__ import annotations

import pytest

from lab.util.territories import EU_MEMBERS, TerritoryError, check_territory, expand_territories


@pytest.mark.parametrize(
    "value, hint",
    [
        ("UK", "GB"),
        ("uk", "GB"),
        ("GBR", "GB"),
        ("deu", "DE"),
        ("Germany", "DE"),
        ("United Kingdom", "GB"),
        ("826", "GB"),
        ("EL", "GR"),
    ],
)
def test_near_misses_are_refused_with_a_hint(value, hint):
    with pytest.raises(
        TerritoryError, match=rf"territory '{value}' is not an ISO 3166-1 alpha-2 code: did you mean {hint}\?"
    ):
        check_territory(value)


def test_codes_are_canonical_and_unknown_ones_refused():
    assert check_territory(" gb ") == "GB" and check_territory("worldwide") == "WW"
    for bad in ("XX", "ZZ", "G", "", "Atlantis"):
        with pytest.raises(TerritoryError, match="is not an ISO 3166-1 alpha-2 code, 'WW' or a group"):
            check_territory(bad)
    with pytest.raises(TerritoryError, match="not allowed here"):
        check_territory("WW", allow_worldwide=False)
    with pytest.raises(TerritoryError, match="must be a string"):
        check_territory(44)


def test_eu_expands_to_its_27_members():
    assert len(EU_MEMBERS) == 27 and "GB" not in EU_MEMBERS and {"DE", "FR", "HR", "IE"} <= set(EU_MEMBERS)
    assert expand_territories(["EU"]) == sorted(EU_MEMBERS)
    assert expand_territories(["eu", "GB"]) == sorted([*EU_MEMBERS, "GB"])
    with pytest.raises(TerritoryError, match="is a group"):
        check_territory("EU")  # one territory (a policy's) cannot be a group


def test_lists_refuse_duplicates_and_redundant_worldwide():
    assert expand_territories(["us", "GB"]) == ["GB", "US"]
    with pytest.raises(TerritoryError, match="'gb' is listed more than once"):
        expand_territories(["GB", "gb"])
    with pytest.raises(TerritoryError, match="already covers GB"):
        expand_territories(["WW", "GB"])
    with pytest.raises(TerritoryError, match="did you mean GB"):
        expand_territories(["FR", "UK"])
