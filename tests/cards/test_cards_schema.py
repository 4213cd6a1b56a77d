"""data_card.json (lab.data_card/2): committed JSON Schemas, jsonschema validation, pydantic cross-field rules."""

from __future__ import annotations

import json

import orjson
import pytest

from lab.cards.files import dump_card
from lab.cards.schema import (
    ROW_SCHEMA_FILE,
    SCHEMA_FILE,
    CardError,
    json_schema,
    row_json_schema,
    schema_errors,
    validate_card_json,
    write_json_schema,
)
from lab.resources import schema_dir


def test_committed_schemas_are_current():
    for name, doc in ((SCHEMA_FILE, json_schema()), (ROW_SCHEMA_FILE, row_json_schema())):
        committed = json.loads((schema_dir() / name).read_text())
        assert committed == json.loads(json.dumps(doc)), f"{name} is stale: run `python -m lab.cards.schema`"


def test_write_json_schema(tmp_path):
    out = write_json_schema(tmp_path)
    assert sorted(p.name for p in out) == sorted([SCHEMA_FILE, ROW_SCHEMA_FILE])
    assert json.loads((tmp_path / SCHEMA_FILE).read_text())["$id"] == "urn:lab:schema:data_card:2"


def test_jsonschema_validates_the_written_card(bundle, tmp_path):
    import jsonschema

    raw = json.loads(dump_card(bundle.card))
    schema = json.loads((schema_dir() / SCHEMA_FILE).read_text())
    jsonschema.validate(raw, schema)  # the third-party validator, straight from the committed file
    assert raw["schema"] == "lab.data_card/2" and raw["sources"]["file"] == "sources.parquet"
    assert "rows" not in raw and "recording_id" not in dump_card(bundle.card).decode()  # rows live in the parquet
    broken = json.loads(dump_card(bundle.card))
    del broken["sources"]["sha256"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_source_row_schema_validates_rows(bundle):
    import jsonschema

    schema = json.loads((schema_dir() / ROW_SCHEMA_FILE).read_text())
    rows = orjson.loads(orjson.dumps(bundle.sources.to_pylist(), option=orjson.OPT_UTC_Z))
    for row in rows:
        jsonschema.validate(row, schema)
    rows[0]["territories"] = ["usa"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rows[0], schema)


def _on_disk(bundle) -> dict:
    return json.loads(dump_card(bundle.card))


@pytest.mark.parametrize(
    "path",
    [
        ("identity", "checkpoint_id"),
        ("snapshot", "merkle_root"),
        ("validity",),
        ("sources", "sha256"),
        ("exposure", "tokens"),
    ],
)
def test_schema_rejects_missing_required_field(bundle, path):
    data = _on_disk(bundle)
    node = data
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    assert schema_errors(data)
    with pytest.raises(CardError, match=str(path[-1])):
        validate_card_json(data)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["identity"].__setitem__("step", "200"),
        lambda d: d["sources"].__setitem__("rows", -1),
        lambda d: d["sources"].__setitem__("file", "../elsewhere.parquet"),
        lambda d: d["validity"].__setitem__("purposes", ["ai_training", "world_domination"]),
        lambda d: d["snapshot"].__setitem__("merkle_root", "xyz"),
        lambda d: d["validity"].__setitem__("territories", ["usa"]),
        lambda d: d.__setitem__("schema", "lab.data_card/1"),
        lambda d: d.__setitem__("surprise", 1),
        lambda d: d["exclusions"].__setitem__("revoked", -1),
    ],
    ids=[
        "step-str",
        "negative-rows",
        "other-file",
        "unknown-purpose",
        "bad-sha",
        "bad-territory",
        "old-schema",
        "extra-key",
        "negative-count",
    ],
)
def test_schema_rejects_wrong_values(bundle, mutate):
    data = _on_disk(bundle)
    mutate(data)
    assert schema_errors(data), "the committed JSON Schema should catch this"
    with pytest.raises(CardError):
        validate_card_json(data)


def test_pydantic_cross_field_rules(bundle):
    data = _on_disk(bundle)
    data["exposure"]["total_seconds"] += 5  # passes the JSON Schema, not the totals rule
    assert schema_errors(data) == []
    with pytest.raises(CardError, match="total_seconds"):
        validate_card_json(data)
    data = _on_disk(bundle)
    data["sources"]["own_rows"] -= 1
    with pytest.raises(CardError, match="own_rows"):
        validate_card_json(data)
    data = _on_disk(bundle)
    data["lineage"]["base_model"]["kind"] = "lab_checkpoint"
    with pytest.raises(CardError, match="parent_checkpoint"):
        validate_card_json(data)
    data = _on_disk(bundle)
    data["lineage"]["inherited_sources"] = {"rows": 0, "total_seconds": 0.0, "seen_by": []}
    with pytest.raises(CardError, match="parent checkpoint"):
        validate_card_json(data)
