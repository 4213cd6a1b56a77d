"""build_card: rows from the snapshot and the exposure, derived terms per recording, inheritance, validity."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest
from conftest import build, grant, h, item, lineage, snapshot

UTC = timezone.utc


def _row(bundle, rid: str, seen_by: str | None = None) -> dict:
    rows = [
        r
        for r in bundle.sources.to_pylist()
        if r["recording_id"] == rid and (seen_by is None or r["seen_by"] == seen_by)
    ]
    assert len(rows) == 1, rows
    return rows[0]


def test_only_recordings_seen_become_rows(bundle):
    assert bundle.sources.column("recording_id").to_pylist() == ["demo-0001", "demo-0002", "demo-0003"]
    assert set(bundle.sources.column("seen_by").to_pylist()) == {"run-abc-step-000200"}
    card = bundle.card
    assert (card.sources.rows, card.sources.own_rows, card.sources.inherited_rows) == (3, 3, 0)
    assert card.exposure.total_seconds == card.sources.total_seconds == 24.0
    assert card.exclusions == {"revoked": 2, "no_grant": 1}
    assert card.snapshot.catalog == "demo" and card.snapshot.ledger_head_seq == 42


def test_single_grant_row_copies_the_grant(bundle):
    row = _row(bundle, "demo-0001")
    assert row["catalog"] == "demo" and row["isrc"] == "GBLAB2600001" and row["audio_sha256"] == h("demo-0001")
    assert row["licence"] == "CC-BY-4.0" and row["grant_ids"] == ["G-0001"]
    assert row["purposes"] == ["ai_generative_training", "ai_training"] and row["territories"] == ["WW"]
    assert row["valid_until"] == datetime(2027, 12, 31, tzinfo=UTC) and row["on_termination"] == "retain"
    assert row["credit"] == "'Song demo-0001' courtesy of Example Records"
    assert [(p["name"], p["right"], p["share"], p["party_id"], p["grant_id"]) for p in row["rights_holders"]] == [
        ("Example Records", "master", 100.0, None, "G-0001"),
        ("Ada Example", "composition", 60.0, "IPI:00012345678", "G-0001"),
        ("Example Music Publishing", "composition", 40.0, None, "G-0001"),
    ]
    assert _row(bundle, "demo-0002")["isrc"] is None


def test_two_grant_item_keeps_what_both_allow(bundle):
    row = _row(bundle, "demo-0003")
    assert row["grant_ids"] == ["G-0003a", "G-0003b"]
    assert row["purposes"] == ["ai_generative_training"]  # {training, generative, commercial} ∩ {generative, eval}
    assert row["territories"] == ["FR", "GB"]  # {GB, FR, DE} ∩ {FR, GB, US}
    assert row["valid_until"] == datetime(2027, 3, 1, tzinfo=UTC)  # earliest; the other grant is open-ended
    assert row["on_termination"] == "retire"  # strictest of retire / retain
    assert row["licence"] == "CC-BY-4.0 AND CC-BY-NC-4.0"
    assert row["credit"] == "credit A / credit B"  # grant order, not sorted
    # rights holders of the most recent grant (seq 9), not the older one
    assert [(p["name"], p["share"], p["grant_id"]) for p in row["rights_holders"]] == [
        ("New Label", 70.0, "G-0003b"),
        ("Co Label", 30.0, "G-0003b"),
    ]


def test_worldwide_is_the_identity_and_same_licence_collapses():
    grants = [
        grant("G-a", seq=1, territories=("WW",), licence="CC-BY-4.0", valid_until=None),
        grant("G-b", seq=2, territories=("US", "GB"), licence="CC-BY-4.0", valid_until=None, attribution="B"),
        grant("G-c", seq=3, territories=("WW", "GB"), valid_until=None, attribution="B"),
    ]
    snap = snapshot([item("r1", ["G-a", "G-b"]), item("r2", ["G-a", "G-c"]), item("r3", ["G-c"])], grants)
    bundle = build(snap, {"r1": 1.0, "r2": 2.0, "r3": 3.0})
    r1, r2, r3 = (_row(bundle, r) for r in ("r1", "r2", "r3"))
    assert r1["territories"] == ["GB", "US"] and r1["licence"] == "CC-BY-4.0" and r1["credit"] == "B"
    assert r2["territories"] == ["WW"] and r2["valid_until"] is None and r2["credit"] == "B"
    assert r3["territories"] == ["WW"]  # a grant naming WW allows anywhere, whatever else it lists
    assert bundle.card.validity.territories == ["GB", "US"] and bundle.card.validity.earliest_expiry is None


def test_validity_is_derived_from_every_row(bundle):
    v = bundle.card.validity
    assert v.purposes == ["ai_generative_training"]
    assert v.territories == ["FR", "GB"]
    assert v.earliest_expiry == datetime(2027, 3, 1, tzinfo=UTC)
    assert v.on_termination == "retire"


def test_no_rows_allows_nothing():
    bundle = build(seconds={"demo-0001": 0.0})
    assert bundle.sources.num_rows == 0
    v = bundle.card.validity
    assert v.purposes == [] and v.territories == [] and v.on_termination is None


def test_exposure_outside_the_snapshot_is_refused():
    with pytest.raises(RuntimeError, match="outside the snapshot"):
        build(seconds={"demo-0001": 1.0, "not-cleared": 2.0})
    with pytest.raises(RuntimeError, match="non-finite"):
        build(seconds={"demo-0001": float("nan")})


def test_inherited_rows_keep_who_saw_them(bundle):
    parent = bundle  # the parent checkpoint's card; the child saw demo-0001 again and demo-0004
    child_lineage = lineage(
        base_model={
            "id": "run-abc-step-000200",
            "digest": h("w"),
            "licence": "CC-BY-4.0",
            "declared_training_data": "lab checkpoint",
            "kind": "lab_checkpoint",
        },
        parent_checkpoint={"checkpoint_id": "run-abc-step-000200", "data_card_sha256": h("card"), "path": "/p"},
    )
    snap = snapshot(
        [item("demo-0001", ["G-0001"]), item("demo-0004", ["G-us"])],
        [grant("G-0001", seq=3), grant("G-us", seq=11, territories=("GB", "US"))],
    )
    child = build(
        snap,
        {"demo-0001": 2.0, "demo-0004": 3.0},
        checkpoint_id="run-child-step-000002",
        lineage_=child_lineage,
        inherited=parent.sources,
    )
    card = child.card
    assert (card.sources.rows, card.sources.own_rows, card.sources.inherited_rows) == (5, 2, 3)
    assert card.lineage.inherited_sources.model_dump() == {
        "rows": 3,
        "total_seconds": 24.0,
        "seen_by": ["run-abc-step-000200"],
    }
    assert card.exposure.total_seconds == 5.0 and card.sources.total_seconds == 29.0
    assert _row(child, "demo-0001", "run-child-step-000002")["seconds_seen"] == 2.0
    assert _row(child, "demo-0001", "run-abc-step-000200")["seconds_seen"] == 12.5
    # validity spans inherited rows too: the parent's FR/GB rows narrow the child's GB/US one to GB
    assert card.validity.territories == ["GB"] and card.validity.on_termination == "retire"
    # a grandchild inherits both generations, each row still naming the checkpoint that saw it
    grandchild = build(
        snap, {"demo-0004": 1.0}, checkpoint_id="run-grand-step-000001", lineage_=child_lineage, inherited=child.sources
    )
    assert grandchild.card.lineage.inherited_sources.seen_by == ["run-abc-step-000200", "run-child-step-000002"]


def test_inherited_rows_need_a_parent(bundle):
    with pytest.raises(ValueError, match="parent checkpoint"):
        build(inherited=bundle.sources)


def test_accepts_parquet_read_types(bundle):
    """Inherited tables read back from Parquet (list<element>) conform to the row schema."""
    import pyarrow.parquet as pq

    from lab.cards.sources import SOURCE_SCHEMA, read_parquet

    back = read_parquet(bundle.parquet)
    assert back.schema.equals(SOURCE_SCHEMA, check_metadata=False)
    assert pq.read_metadata(pa.BufferReader(bundle.parquet)).num_rows == 3
    assert back.schema.metadata[b"lab.schema"] == b"lab.source_row/1"
