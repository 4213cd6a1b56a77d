"""Exclusions name the failing term: licence symbol and class, territory asked and granted, purposes
missing, the expiry instant, the revocation, the validity start."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from rights_helpers import expire, grant, revoke

from lab.catalog.items import CatalogItem
from lab.catalog.store import items_to_table
from lab.rights.clearance import clear
from lab.rights.ledger import Ledger
from lab.rights.policy import Policy

AT = datetime(2026, 1, 1, tzinfo=timezone.utc)
SHA = "ab" * 32
POLICY = dict(
    name="shop",
    purposes=["ai_generative_training", "commercial_output"],
    territory="GB",
    accept_licence_classes=["permissive", "contract"],
)


def good(gid: str, rid: str, **over) -> dict:
    over.setdefault("subject", {"recording_id": rid, "catalog": "cat"})
    over.setdefault("purposes", ["ai_generative_training", "commercial_output"])
    return grant(gid, **over)


def item(rid: str) -> CatalogItem:
    return CatalogItem(
        recording_id=rid,
        title=rid,
        artists=["Ada"],
        description="piano",
        audio_path=f"{rid}.wav",
        catalog="cat",
        audio_sha256=SHA,
        duration_s=1.0,
        sample_rate=8000,
        channels=1,
    )


@pytest.fixture
def decide(sqlite_url):
    led = Ledger(sqlite_url)

    def run(*events: dict, rids: list[str]) -> dict[str, tuple[str | None, str]]:
        led.append_many(list(events), recorded_at=datetime(2025, 1, 1, tzinfo=timezone.utc))
        d = clear(items_to_table([item(r) for r in [*rids, "ok"]]), led.frame(), Policy(**POLICY), AT)
        out = dict(zip([*rids, "ok"], zip(d.reason, d.detail)))
        assert out.pop("ok")[0] is None  # the control clears: a test cannot pass by excluding everything
        return out

    yield run
    led.close()


def test_each_grant_reason_names_its_term(decide):
    res = decide(
        good("ok", "ok"),
        good("G-nc", "nc", licence="MIT AND CC-BY-NC-4.0"),
        good("G-ref", "ref", licence="LicenseRef-other"),
        good("G-terr", "terr", territories=["US", "DE"]),
        good("G-purp", "purp", purposes=["ai_generative_training"]),
        good("G-old", "old", valid_until="2025-06-01"),
        good("G-exp", "exp"),
        expire("G-exp"),
        good("G-rev", "rev"),
        revoke("G-rev"),
        good("G-late", "late", valid_from="2026-06-01"),
        rids=["nc", "ref", "terr", "purp", "old", "exp", "rev", "late"],
    )
    assert res["nc"] == (
        "licence_not_accepted",
        "G-nc: licence_not_accepted (licence MIT AND CC-BY-NC-4.0: CC-BY-NC-4.0 is non_commercial "
        "(Creative Commons rule: NonCommercial (-NC)), not accepted under policy 'shop' "
        "(accepts contract, permissive))",
    )
    assert res["ref"][0] == "licence_unknown" and "LicenseRef-other is unknown (not a standard licence" in res["ref"][1]
    assert res["terr"] == (
        "territory_not_granted",
        "G-terr: territory_not_granted (territory GB asked; granted: DE, US)",
    )
    assert res["purp"] == (
        "purpose_not_granted",
        "G-purp: purpose_not_granted (purposes missing: commercial_output; granted: ai_generative_training)",
    )
    assert res["old"] == ("expired", "G-old: expired (valid_until 2025-06-01T00:00:00.000000Z has passed)")
    assert (
        res["exp"][0] == "expired" and "expired by ledger seq 8, effective 2025-07-01T00:00:00.000000Z" in res["exp"][1]
    )
    assert (
        res["rev"][0] == "revoked"
        and "revoked by ledger seq 10, effective 2025-06-01T00:00:00.000000Z" in res["rev"][1]
    )
    assert res["late"] == (
        "not_yet_valid",
        "G-late: not_yet_valid (valid from 2026-06-01T00:00:00.000000Z, cleared at 2026-01-01T00:00:00.000000Z)",
    )


def test_a_long_territory_list_is_shortened_and_the_opt_out_names_its_grant(decide):
    res = decide(
        good("ok", "ok"),
        good("G-eu", "eu", territories=["EU"]),
        good("G-out", "out", status="opted_out", parties=[], purposes=[], territories=[]),
        rids=["eu", "out"],
    )
    assert res["eu"][1] == (
        "G-eu: territory_not_granted (territory GB asked; granted: AT, BE, BG, CY, CZ, DE, DK, EE and 19 more)"
    )
    assert res["out"] == ("opted_out", "opt-out on record: G-out")
