"""The consent question (lab.rights.consent): sources already trained on, asked of the ledger now."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest
from rights_helpers import SHA, grant, raw_sql, revoke

from lab.rights.consent import LedgerBroken, check_sources
from lab.rights.ledger import Ledger
from lab.rights.policy import Policy

UTC = timezone.utc
AT = datetime(2026, 1, 1, tzinfo=UTC)
RECORDED = datetime(2025, 1, 1, tzinfo=UTC)
POLICY = Policy(
    name="t", purposes=["ai_generative_training"], territory="GB", accept_licence_classes=["permissive", "contract"]
)


def sources(*rids: str, catalog: str = "cat") -> pa.Table:
    return pa.table(
        {
            "recording_id": list(rids),
            "catalog": [catalog] * len(rids),
            "isrc": pa.nulls(len(rids), pa.string()),
            "audio_sha256": [SHA] * len(rids),
        }
    )


@pytest.fixture
def ledger(sqlite_url):
    led = Ledger(sqlite_url)
    led.append_many(
        [
            grant("G-1", subject={"recording_id": "r1", "catalog": "cat"}),
            grant("G-2", subject={"recording_id": "r2", "catalog": "cat"}),
        ],
        recorded_at=RECORDED,
    )
    yield led
    led.close()


def test_every_source_clears_then_a_revocation_names_the_source(ledger):
    answer = check_sources(sources("r1", "r2"), ledger, POLICY, at=AT)
    assert answer.ok and answer.problems() == []
    assert answer.ledger_head == ledger.head()
    ledger.append(revoke("G-2", effective_at="2025-12-01T00:00:00Z"), recorded_at=datetime(2025, 12, 2, tzinfo=UTC))
    answer = check_sources(sources("r1", "r2"), ledger, POLICY, at=AT)
    assert not answer.ok
    assert [(rid, reason) for rid, reason, _ in answer.problems()] == [("r2", "revoked")]
    assert answer.verdicts["cleared"].to_pylist() == [True, False]


def test_use_and_territory_are_the_policys(ledger):
    elsewhere = POLICY.model_copy(update={"territory": "US"})
    ok = check_sources(sources("r1"), ledger, POLICY, at=AT)
    assert ok.ok
    # the helper's grants are worldwide: narrow one to GB and ask for the US
    ledger.append(
        {
            "kind": "amend",
            "grant": grant(
                "G-1", version=2, supersedes="G-1", territories=["GB"], subject={"recording_id": "r1", "catalog": "cat"}
            )["grant"],
        },
        recorded_at=RECORDED,
    )
    refused = check_sources(sources("r1"), ledger, elsewhere, at=AT)
    assert refused.problems()[0][:2] == ("r1", "territory_not_granted")
    inference = POLICY.model_copy(update={"purposes": ["ai_inference"]})
    assert check_sources(sources("r1"), ledger, inference, at=AT).problems()[0][1] == "purpose_not_granted"


def test_a_source_from_another_catalogue_is_not_covered(ledger):
    answer = check_sources(sources("r1", catalog="other"), ledger, POLICY, at=AT)
    assert answer.problems()[0][:2] == ("r1", "no_grant")


def test_a_missing_catalog_column_is_filled(ledger):
    table = sources("r1").drop_columns(["catalog"])
    assert check_sources(table, ledger, POLICY, at=AT, catalog="cat").ok
    assert not check_sources(table, ledger, POLICY, at=AT).ok  # no catalogue: the grant does not match


def test_a_ledger_edited_in_place_gives_no_answer(ledger, sqlite_url):
    from rights_helpers import drop_guards

    drop_guards(sqlite_url)
    raw_sql(sqlite_url, "UPDATE ledger_events SET territories = 'US' WHERE seq = 2")
    with pytest.raises(LedgerBroken, match="seq 2"):
        check_sources(sources("r1"), ledger, POLICY, at=AT)
