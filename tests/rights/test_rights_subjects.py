"""Subjects that mean one thing: a recording id only within its catalogue; an opt-out or a
revocation reaches every catalogue item that carries any identifier it names."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import ValidationError
from rights_helpers import grant, revoke

from lab.catalog.items import CatalogItem
from lab.catalog.store import items_to_table
from lab.rights.clearance import clear
from lab.rights.ledger import Ledger, LedgerError
from lab.rights.policy import Policy
from lab.rights.records import parse_event

UTC = timezone.utc
AT = datetime(2026, 1, 1, tzinfo=UTC)
RECORDED = datetime(2025, 1, 1, tzinfo=UTC)  # before AT: the machine clock may be past it
SHA_A, SHA_B, SHA_C = "aa" * 32, "bb" * 32, "cc" * 32
POLICY = Policy(name="t", purposes=["ai_generative_training"], territory="GB", accept_licence_classes=["permissive"])
OPT_OUT = dict(status="opted_out", purposes=[], territories=[], parties=[])


def item(rid: str, catalog: str, sha: str, isrc: str | None = None) -> CatalogItem:
    return CatalogItem(
        recording_id=rid,
        isrc=isrc,
        title=rid,
        artists=["Ada"],
        description="piano",
        audio_path=f"{rid}.wav",
        catalog=catalog,
        status="ok",
        audio_sha256=sha,
        duration_s=1.0,
        sample_rate=8000,
        channels=1,
    )


@pytest.fixture
def ledger(sqlite_url):
    led = Ledger(sqlite_url)
    yield led
    led.close()


def decide(ledger: Ledger, items: list[CatalogItem]) -> dict[tuple[str, str], str | None]:
    """(catalog, recording id) → None when cleared, else the exclusion reason."""
    d = clear(items_to_table(items), ledger.frame(), POLICY, AT)
    return {(it.catalog, it.recording_id): d.reason[i] for i, it in enumerate(items)}


def test_a_bare_recording_id_grant_is_refused_at_the_boundary(ledger):
    with pytest.raises(LedgerError) as exc:
        ledger.append(grant("G-1", subject={"recording_id": "r1"}))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("grant.subject: recording_id 'r1' alone is ambiguous")
    assert len(ledger) == 0
    with pytest.raises(ValidationError):
        parse_event(grant("G-1", subject={"recording_id": "r1"}, **OPT_OUT))  # an opt-out too
    for ok in (
        {"recording_id": "r1", "catalog": "a"},
        {"recording_id": "r1", "isrc": "GBLAB2600001"},
        {"recording_id": "r1", "audio_sha256": SHA_A},
        {"catalog": "a"},
    ):
        parse_event(grant("G-1", subject=ok))


def test_a_recording_id_collision_across_catalogues_clears_only_its_own(ledger):
    ledger.append(grant("G-a", subject={"recording_id": "r1", "catalog": "label-a"}), recorded_at=RECORDED)
    res = decide(ledger, [item("r1", "label-a", SHA_A), item("r1", "label-b", SHA_B)])
    assert res[("label-a", "r1")] is None
    assert res[("label-b", "r1")] == "no_grant"


def test_an_opt_out_by_audio_hash_reaches_the_same_bytes_in_another_catalogue(ledger):
    ledger.append_many(
        [
            grant("G-a", subject={"recording_id": "x1", "catalog": "label-a"}),
            grant("G-b", subject={"recording_id": "y9", "catalog": "label-b"}),
            grant("G-c", subject={"recording_id": "z3", "catalog": "label-b"}),
            grant("G-no", subject={"recording_id": "x1", "catalog": "label-a", "audio_sha256": SHA_A}, **OPT_OUT),
        ],
        recorded_at=RECORDED,
    )
    res = decide(ledger, [item("x1", "label-a", SHA_A), item("y9", "label-b", SHA_A), item("z3", "label-b", SHA_C)])
    assert res[("label-a", "x1")] == "opted_out"
    assert res[("label-b", "y9")] == "opted_out"  # same bytes, another id, another catalogue
    assert res[("label-b", "z3")] is None  # the control


def test_an_opt_out_matches_any_identifier_it_names(ledger):
    # Names a recording in label-a AND an ISRC: each identifier excludes on its own.
    ledger.append_many(
        [
            grant("G-a", subject={"recording_id": "x1", "catalog": "label-a"}),
            grant("G-b", subject={"recording_id": "y9", "catalog": "label-b"}),
            grant("G-c", subject={"recording_id": "x1", "catalog": "label-c"}),
            grant("G-no", subject={"recording_id": "x1", "catalog": "label-a", "isrc": "GBLAB2600009"}, **OPT_OUT),
        ],
        recorded_at=RECORDED,
    )
    res = decide(
        ledger,
        [item("x1", "label-a", SHA_A), item("y9", "label-b", SHA_B, isrc="GBLAB2600009"), item("x1", "label-c", SHA_C)],
    )
    assert res[("label-a", "x1")] == "opted_out"
    assert res[("label-b", "y9")] == "opted_out"  # by ISRC
    assert res[("label-c", "x1")] is None  # the same id in another catalogue is another recording


def test_a_revocation_reaches_the_same_bytes_elsewhere_until_consent_is_given_again(ledger):
    ledger.append_many(
        [
            grant("G-a", subject={"recording_id": "x1", "catalog": "label-a", "audio_sha256": SHA_A}),
            grant("G-b", subject={"recording_id": "y9", "catalog": "label-b"}),
            grant("G-c", subject={"recording_id": "z3", "catalog": "label-b"}),
        ],
        recorded_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    ledger.append(revoke("G-a", effective_at="2025-06-01T00:00:00Z"), recorded_at=datetime(2025, 6, 1, tzinfo=UTC))
    items = [item("x1", "label-a", SHA_A), item("y9", "label-b", SHA_A), item("z3", "label-b", SHA_C)]
    res = decide(ledger, items)
    assert res[("label-a", "x1")] == "revoked"
    assert res[("label-b", "y9")] == "revoked"  # its own grant predates the revocation of these bytes
    assert res[("label-b", "z3")] is None
    ledger.append(
        grant("G-b2", subject={"recording_id": "y9", "catalog": "label-b"}),
        recorded_at=datetime(2025, 7, 1, tzinfo=UTC),
    )
    again = decide(ledger, items)
    assert again[("label-b", "y9")] is None  # consent given again after the revocation
    assert again[("label-a", "x1")] == "revoked"
