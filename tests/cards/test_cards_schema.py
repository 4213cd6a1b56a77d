"""data_card.json: pydantic models, the committed JSON Schema, derived validity."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest

from lab.cards.schema import (
    REPO_SCHEMA_DIR,
    SCHEMA_FILE,
    CardError,
    DataCard,
    card_sha256,
    derive_validity,
    dump_card,
    json_schema,
    load_card,
    schema_errors,
    source_row_from_item,
    SnapshotRef,
    validate_card,
    write_card,
    write_json_schema,
)


def test_committed_schema_is_current():
    committed = json.loads((REPO_SCHEMA_DIR / SCHEMA_FILE).read_text())
    assert committed == json.loads(json.dumps(json_schema())), (
        "data_cards/schema/data_card.schema.json is stale: run `python -m lab.cards.schema`"
    )


def test_write_json_schema(tmp_path):
    out = write_json_schema(tmp_path)
    assert out.name == "data_card.schema.json"
    assert json.loads(out.read_text())["$id"] == "urn:lab:schema:data_card:1"


def test_valid_card_round_trip(card, tmp_path):
    assert card.schema_id == "lab.data_card/1"
    path = write_card(card, tmp_path / "data_card.json")
    raw = json.loads(path.read_text())
    assert raw["schema"] == "lab.data_card/1" and "validity" in raw
    assert schema_errors(raw) == []
    again = load_card(path)
    assert again == card
    assert path.read_bytes() == dump_card(again)  # stable bytes → stable sha256
    assert card_sha256(path) == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


def _on_disk(card):
    return json.loads(dump_card(card))


@pytest.mark.parametrize("path", [("identity", "checkpoint_id"), ("snapshot", "merkle_root"), ("validity",),
                                  ("sources", 0, "rights_holders"), ("exposure", "tokens")])
def test_schema_rejects_missing_required_field(card, path):
    data = _on_disk(card)
    node = data
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    assert schema_errors(data)
    with pytest.raises(CardError, match=str(path[-1])):
        validate_card(data)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["identity"].__setitem__("step", "200"),
        lambda d: d["sources"][0].__setitem__("seconds_seen", "12.5"),
        lambda d: d["sources"][0].__setitem__("purposes", ["ai_training", "world_domination"]),
        lambda d: d["snapshot"].__setitem__("merkle_root", "xyz"),
        lambda d: d["sources"][0].__setitem__("territories", ["usa"]),
        lambda d: d.__setitem__("schema", "lab.data_card/2"),
        lambda d: d.__setitem__("surprise", 1),
        lambda d: d["exclusions"].__setitem__("revoked", -1),
    ],
    ids=["step-str", "seconds-str", "unknown-purpose", "bad-sha", "bad-territory", "schema-id", "extra-key",
         "negative-count"],
)
def test_schema_rejects_wrong_types(card, mutate):
    data = _on_disk(card)
    mutate(data)
    assert schema_errors(data), "the committed JSON Schema should catch this"
    with pytest.raises(CardError):
        validate_card(data)


def test_pydantic_cross_field_rules(card):
    # widened validity: passes the JSON Schema, refused by the model
    data = _on_disk(card)
    data["validity"]["territories"] = ["WW"]
    assert schema_errors(data) == []
    with pytest.raises(CardError, match="validity does not match"):
        validate_card(data)
    # exposure must add up
    data = _on_disk(card)
    data["exposure"]["total_seconds"] += 5
    with pytest.raises(CardError, match="total_seconds"):
        validate_card(data)
    # shares per right sum to 100
    data = _on_disk(card)
    data["sources"][0]["rights_holders"][0]["share"] = 90.0
    with pytest.raises(CardError, match="sum to 100"):
        validate_card(data)
    # a lab_checkpoint base must say which checkpoint
    data = _on_disk(card)
    data["lineage"]["base_model"]["kind"] = "lab_checkpoint"
    with pytest.raises(CardError, match="parent_checkpoint"):
        validate_card(data)


def test_derive_validity(make_source):
    a = make_source("a", purposes=["ai_training", "ai_generative_training", "commercial_output"],
                    territories=["WW"], valid_until="2028-01-01", on_termination="retain")
    b = make_source("b", purposes=["ai_generative_training", "ai_training"], territories=["GB", "FR", "DE"],
                    valid_until="2027-03-01T12:00:00Z", on_termination="retire")
    c = make_source("c", purposes=["ai_generative_training", "eval_only", "ai_training"],
                    territories=["FR", "GB", "US"], valid_until=None, on_termination="retrain")
    v = derive_validity([a, b, c])
    assert v.purposes == ["ai_training", "ai_generative_training"]
    assert v.territories == ["FR", "GB"]
    assert v.earliest_expiry == datetime(2027, 3, 1, 12, tzinfo=timezone.utc)
    assert v.on_termination == "retire"


def test_derive_validity_worldwide_and_edges(make_source):
    ww = make_source("a", territories=["WW"], valid_until=None)
    ww2 = make_source("b", territories=["WW"], valid_until=None)
    v = derive_validity([ww, ww2])
    assert v.territories == ["WW"] and v.earliest_expiry is None and v.on_termination == "retain"
    disjoint = derive_validity([make_source("a", territories=["GB"]), make_source("b", territories=["US"])])
    assert disjoint.territories == []
    empty = derive_validity([])
    assert empty.purposes == [] and empty.territories == [] and empty.on_termination is None


def test_validity_includes_inherited_sources(raw_card, make_source):
    raw = copy.deepcopy(raw_card)
    raw["lineage"]["base_model"]["kind"] = "lab_checkpoint"
    raw["lineage"]["relation"] = "finetune"
    raw["lineage"]["parent_checkpoint"] = {"checkpoint_id": "run-old.step-000100", "data_card_sha256": "0" * 64,
                                           "path": "experiments/runs/run-old/step-000100"}
    raw["lineage"]["inherited_sources"] = [make_source("old-1", territories=["GB"], purposes=["ai_training"])]
    card = DataCard.model_validate(raw)
    assert card.validity.territories == ["GB"] and card.validity.purposes == ["ai_training"]


def test_from_snapshot_helpers():
    item = {
        "recording_id": "demo-0001", "isrc": "GBLAB2600001", "title": "T", "artists": ["A"],
        "description": "warm piano", "audio_path": "a.wav", "audio_sha256": "a" * 64, "duration_s": 8.0,
        "sample_rate": 32000, "channels": 1, "grant_ids": ["G-0001"], "licence": "CC-BY-4.0",
        "rights_holders": [{"name": "L", "role": "master_owner", "right": "master", "share": 100.0,
                            "grant_id": "G-0001"}],
        "purposes": ["ai_generative_training"], "territories": ["WW"], "valid_until": "2027-12-31T00:00:00Z",
        "on_termination": "retrain", "attribution": "credit text", "digest": "b" * 64,
    }
    row = source_row_from_item(item, 16.0)
    assert row.credit == "credit text" and row.seconds_seen == 16.0
    snap = {
        "schema": "lab.snapshot/1", "snapshot_id": "snap-0123456789abcdef", "merkle_root": "c" * 64,
        "created_at": "2026-11-23T17:00:00Z", "cleared_at": "2026-11-23T17:00:00Z",
        "catalog": {"name": "demo", "root": "/x", "manifest_sha256": "d" * 64},
        "policy": {"name": "research", "purposes": ["ai_generative_training"], "territory": "GB",
                   "accept_licence_classes": ["permissive", "contract"], "digest": "e" * 64},
        "ledger": {"head_seq": 42, "head_hash": "f" * 64}, "items": [item], "excluded": [],
    }
    ref = SnapshotRef.from_snapshot(snap)
    assert ref.catalog == "demo" and ref.ledger_head_seq == 42
