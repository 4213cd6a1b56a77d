from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from catalog_helpers import row, write_audio, write_jsonl

from lab.catalog.importers import CatalogError
from lab.catalog.ingest import ingest
from lab.catalog.items import CatalogItem
from lab.catalog.store import (
    CatalogIntegrityError,
    CatalogNotFoundError,
    list_catalogs,
    load_catalog_table,
    manifest_path,
    save_catalog,
)
from lab.util.canonical import sha256_file


def test_round_trip(source, lab_home):
    cat = ingest(source, "demo")
    path = save_catalog(cat)
    assert path == lab_home / "catalogs" / "demo"
    assert sorted(p.name for p in path.iterdir()) == ["catalog.parquet", "manifest.json"]
    m = json.loads(manifest_path("demo").read_text())
    assert m["parquet"]["sha256"] == sha256_file(path / "catalog.parquet")
    assert m["root"] == str(source.resolve()) and m["counts"]["ok"] == 3
    t = load_catalog_table("demo")
    assert [CatalogItem.model_validate(r) for r in t.to_pylist()] == cat.items
    assert t.schema.field("artists").type == pa.list_(pa.string())
    assert t.column("recording_id").to_pylist() == ["r1", "r2", "r3"]
    assert [m["name"] for m in list_catalogs()] == ["demo"]


def test_reingest_replaces(source, lab_home, tmp_path):
    save_catalog(ingest(source, "demo"))
    write_audio(source / "d.wav", "WAV", 990)
    write_jsonl(source / "metadata.jsonl", [row("r9", "d.wav")])
    save_catalog(ingest(source, "demo"))
    assert load_catalog_table("demo").column("recording_id").to_pylist() == ["r9"]
    assert sorted(p.name for p in (lab_home / "catalogs").iterdir() if not p.name.endswith(".lock")) == ["demo"]


def test_explicit_home(source, tmp_path):
    home = tmp_path / "elsewhere"
    save_catalog(ingest(source, "x"), home=home)
    assert load_catalog_table("x", home=home).column("recording_id").to_pylist() == ["r1", "r2", "r3"]


def test_tampered_parquet_is_refused(source, lab_home):
    path = save_catalog(ingest(source, "demo")) / "catalog.parquet"
    t = pq.read_table(path)
    status = t.column("status").to_pylist()
    t = t.set_column(t.schema.get_field_index("status"), "status", pa.array(["ok"] * len(status)))
    pq.write_table(t, path)
    with pytest.raises(CatalogIntegrityError, match="modified after ingest"):
        load_catalog_table("demo")


def test_missing_and_bad_names(lab_home):
    with pytest.raises(CatalogNotFoundError):
        load_catalog_table("nothing")
    for bad in ("..", "../x", "a/b", "", ".hidden", "x" * 65, "a\n"):
        with pytest.raises(CatalogError):
            manifest_path(bad)
