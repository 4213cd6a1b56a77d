"""Metadata for real catalogues: `extra` facts carried to the snapshot and the card, the metadata
licence compared with the grant's, and the committed JSON Schema of a metadata row."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from catalog_helpers import row, write_audio, write_jsonl

from lab.cards.build import source_rows
from lab.cards.sources import _value_errors, parquet_bytes, read_parquet
from lab.catalog.importers import CatalogError, load_metadata
from lab.catalog.ingest import ingest
from lab.catalog.items import METADATA_SCHEMA_FILE, RecordingMeta, metadata_json_schema
from lab.catalog.licence import licence_mismatch, normalise_licence
from lab.catalog.store import load_catalog_table, save_catalog
from lab.cli.hydra_apps import print_clear_summary
from lab.cli.verdicts import snapshot_verdicts
from lab.recipes.clear import run_clearance
from lab.resources import schema_dir
from lab.rights.ledger import Ledger
from lab.rights.policy import Policy
from lab.snapshot import SnapshotError, load_snapshot
from lab.util.canonical import sha256_file

AT = datetime(2026, 1, 1, tzinfo=timezone.utc)
RECORDED = datetime(2025, 1, 1, tzinfo=timezone.utc)
POLICY = dict(
    name="meta",
    purposes=["ai_generative_training"],
    territory="GB",
    accept_licence_classes=["permissive", "contract", "share_alike"],
)
EXTRA = {
    "composer": "J. S. Bach",
    "source_url": "https://example.org/bwv-1",
    "year": 1723,
    "tags": ["chorale", 4],
    "public_domain": True,
    "note": 'says "hi" \\ twice\nand a newline',
}
ROOT = Path(__file__).resolve().parents[2]


def _grant(rid: str, catalog: str, licence: str = "CC-BY-4.0") -> dict:
    return {
        "kind": "grant",
        "grant": {
            "grant_id": f"G-{rid}",
            "version": 1,
            "issued_at": "2025-01-01T00:00:00Z",
            "issuer": "Acme Records",
            "subject": {"recording_id": rid, "catalog": catalog},
            "status": "opted_in",
            "parties": [{"name": "Acme Records", "role": "master_owner", "right": "master", "share": 100}],
            "purposes": ["ai_training", "ai_generative_training"],
            "territories": ["WW"],
            "valid_from": "2025-01-01",
            "valid_until": "2027-01-01",
            "licence": licence,
            "attribution": "Acme",
        },
    }


def _clear(tmp_path: Path, metadata: str, rows: list[dict] | str, grants: dict[str, str]):
    """Ingest a folder of clips with `metadata` (JSONL rows or CSV text), grant `grants` (rid → licence), clear."""
    src, home = tmp_path / "src", tmp_path / "home"
    for i, rid in enumerate(grants):
        write_audio(src / f"{rid}.wav", "WAV", 300 + 40 * i)
    if metadata.endswith(".jsonl"):
        write_jsonl(src / metadata, rows)
    else:
        (src / metadata).write_text(rows, encoding="utf-8")
    save_catalog(ingest(src, "meta", workers=1), home)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.append_many([_grant(rid, "meta", lic) for rid, lic in grants.items()], recorded_at=RECORDED)
    try:
        result = run_clearance(
            catalog="meta",
            ledger=ledger,
            policy=Policy(**POLICY),
            snapshots_dir=tmp_path / "snapshots",
            home=home,
            at=AT,
        )
    finally:
        ledger.close()
    return result, load_snapshot(result.snapshot_path)


@pytest.fixture
def cleared(tmp_path):
    rows = [
        row("r1", "r1.wav", extra=EXTRA),  # same licence as its grant
        row("r2", "r2.wav", licence="CC-BY-SA-4.0"),  # disagrees
        row("r3", "r3.wav", licence="Creative Commons Attribution 4.0"),  # free text: never agrees
        row("r4", "r4.wav", licence="cc-by-4.0 and MIT"),  # agrees once normalised
        row("r5", "r5.wav", licence=None),  # states nothing
    ]
    grants = {"r1": "CC-BY-4.0", "r2": "CC-BY-4.0", "r3": "CC-BY-4.0", "r4": "MIT AND CC-BY-4.0", "r5": "CC0-1.0"}
    return _clear(tmp_path, "metadata.jsonl", rows, grants)


# --------------------------------------------------------------------------- extra


def test_jsonl_extra_reaches_the_snapshot_and_the_card(cleared):
    result, snap = cleared
    item = snap.item("r1")
    assert json.loads(item["extra"]) == EXTRA
    assert snap.item("r2")["extra"] == "{}"
    rows = source_rows(snap, {"r1": 1.5, "r2": 2.0}, "ckpt-1")
    card = read_parquet(parquet_bytes(rows))  # sources.parquet as written
    by_id = {r["recording_id"]: r for r in card.to_pylist()}
    assert json.loads(by_id["r1"]["extra"]) == EXTRA and by_id["r2"]["extra"] == "{}"


def test_csv_unknown_columns_become_extra_and_reach_the_snapshot_and_the_card(tmp_path):
    csv = (
        "recording_id,title,artists,description,audio_path,composer,Source URL,licence\n"
        "c1,Chorale,Ada;Bo,organ,c1.wav,J. S. Bach,https://example.org/c1,CC0-1.0\n"
        "c2,Fugue,Ada,organ,c2.wav,,https://example.org/c2,\n"
    )
    _, snap = _clear(tmp_path, "metadata.csv", csv, {"c1": "CC0-1.0", "c2": "CC0-1.0"})
    assert json.loads(snap.item("c1")["extra"]) == {"composer": "J. S. Bach", "Source URL": "https://example.org/c1"}
    assert json.loads(snap.item("c2")["extra"]) == {"Source URL": "https://example.org/c2"}  # empty cell: no key
    card = read_parquet(parquet_bytes(source_rows(snap, {"c1": 1.0}, "ckpt-1")))
    assert json.loads(card["extra"][0].as_py())["composer"] == "J. S. Bach"


def test_catalogue_store_keeps_extra_as_canonical_json(cleared, tmp_path):
    table = load_catalog_table("meta", tmp_path / "home")
    texts = dict(zip(table["recording_id"].to_pylist(), table["extra"].to_pylist()))
    assert texts["r1"] == orjson.dumps(EXTRA, option=orjson.OPT_SORT_KEYS).decode() and texts["r5"] == "{}"


def _rewrite(folder: Path, name: str, table: pa.Table) -> None:
    """Replace a snapshot file and re-hash it in the header: only the leaf digests can catch the edit."""
    pq.write_table(table, folder / name)
    header = orjson.loads((folder / "snapshot.json").read_bytes())
    header["files"][name]["sha256"] = sha256_file(folder / name)
    (folder / "snapshot.json").write_bytes(orjson.dumps(header))


def test_tampered_extra_fails_snapshot_verification(cleared):
    _, snap = cleared
    folder = snap.folder
    items = pq.read_table(folder / "items.parquet")
    i = items["recording_id"].to_pylist().index("r1")
    forged = {**EXTRA, "composer": "Someone Else"}
    extra = items["extra"].to_pylist()
    extra[i] = orjson.dumps(forged, option=orjson.OPT_SORT_KEYS).decode()
    _rewrite(
        folder,
        "items.parquet",
        items.set_column(items.schema.get_field_index("extra"), items.schema.field("extra"), pa.array(extra)),
    )
    with pytest.raises(SnapshotError, match=r"recording r1: digest does not match"):
        load_snapshot(folder)


def test_card_rows_refuse_an_extra_that_is_not_an_object(cleared):
    _, snap = cleared
    rows = source_rows(snap, {"r1": 1.0}, "ckpt-1")
    bad = rows.set_column(rows.schema.get_field_index("extra"), rows.schema.field("extra"), pa.array(["[1]"]))
    assert any("extra does not match" in e for e in _value_errors(bad))
    assert not any("extra" in e for e in _value_errors(rows))


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"a": {"nested": 1}}, "not an object"),
        ({"a": [[1]]}, "only JSON scalars"),
        ({"": 1}, "keys are text"),
        ({"k": "x" * 2001}, "at most 2000"),
        ({str(i): i for i in range(51)}, "at most 50"),
        ({f"k{i}": "x" * 1900 for i in range(9)}, "bytes as JSON"),
    ],
)
def test_extra_shape_and_size_are_checked_with_line_and_field(tmp_path, extra, message):
    p = write_jsonl(tmp_path / "metadata.jsonl", [row("r1", "a.wav", extra=extra)])
    with pytest.raises(CatalogError) as ei:
        load_metadata(p)
    (issue,) = ei.value.issues
    assert (issue.line, issue.field) == (1, "extra") and message in issue.message


def test_unknown_top_level_jsonl_fields_are_still_refused(tmp_path):
    p = write_jsonl(tmp_path / "metadata.jsonl", [{**row("r1", "a.wav"), "composer": "Bach"}])
    with pytest.raises(CatalogError) as ei:
        load_metadata(p)
    (issue,) = ei.value.issues
    assert issue.field == "composer" and "put other facts in 'extra'" in issue.message


def test_a_csv_column_named_extra_is_refused(tmp_path):
    p = tmp_path / "metadata.csv"
    p.write_text('recording_id,title,artists,description,audio_path,extra\nr1,T,Ada,d,a.wav,"{""a"": 1}"\n')
    with pytest.raises(CatalogError) as ei:
        load_metadata(p)
    assert [(i.line, i.field) for i in ei.value.issues] == [(1, "extra")]


# --------------------------------------------------------------------------- licence


def test_licence_mismatch_is_noted_not_excluded(cleared):
    result, snap = cleared
    notes = dict(zip(snap.items["recording_id"].to_pylist(), snap.items["notes"].to_pylist()))
    assert notes == {"r1": [], "r2": ["licence_mismatch"], "r3": ["licence_mismatch"], "r4": [], "r5": []}
    assert snap.counts["cleared"] == 5 and snap.counts["notes"] == {"licence_mismatch": 2}
    assert snap.header["counts"]["notes"] == {"licence_mismatch": 2}
    assert snap.item("r2")["metadata_licence"] == "CC-BY-SA-4.0"
    assert result.summary()["notes"] == {"licence_mismatch": 2}


def test_matching_licences_add_no_note(tmp_path):
    rows = [row("m1", "m1.wav", licence="GPL-2.0+"), row("m2", "m2.wav", licence="CC0-1.0")]
    result, snap = _clear(tmp_path, "metadata.jsonl", rows, {"m1": "GPL-2.0-or-later", "m2": "CC0-1.0"})
    assert snap.items["notes"].to_pylist() == [[], []]
    assert "notes" not in snap.header["counts"] and result.summary()["notes"] == {}


def test_clear_summary_counts_mismatches_and_points_to_show_cleared(cleared, capsys):
    result, snap = cleared
    print_clear_summary(result.summary())
    out = capsys.readouterr().out
    assert re.search(r"note: 2 cleared recording\(s\) whose metadata states another licence", out)
    assert "lab clear show=cleared" in out
    shown = {r["recording_id"]: r for r in snapshot_verdicts(snap, "cleared")}
    assert "'CC-BY-SA-4.0'" in shown["r2"]["detail"] and "'CC-BY-4.0'" in shown["r2"]["detail"]
    assert shown["r2"]["notes"] == ["licence_mismatch"] and shown["r1"]["detail"] == ""


def test_card_row_keeps_the_metadata_licence_beside_the_grants(cleared):
    _, snap = cleared
    rows = source_rows(snap, {"r2": 1.0, "r5": 1.0}, "ckpt-1").to_pylist()
    got = {r["recording_id"]: (r["licence"], r["metadata_licence"]) for r in rows}
    assert got == {"r2": ("CC-BY-4.0", "CC-BY-SA-4.0"), "r5": ("CC0-1.0", None)}


def test_licence_comparison_is_spdx_normalised_and_any_grant_agreeing_is_enough():
    assert normalise_licence("mit AND cc-by-4.0") == normalise_licence("CC-BY-4.0 AND MIT")
    assert normalise_licence("Creative Commons Attribution 4.0") is None and normalise_licence("  ") is None
    stated = pa.array(["CC-BY-4.0", "CC-BY-4.0", None, "not a licence", "LicenseRef-lab-deal"])
    grants = pa.array(
        ["CC-BY-SA-4.0", "LicenseRef-lab-x", "CC-BY-4.0", "CC-BY-4.0", "not a licence", "LicenseRef-lab-deal"]
    )
    owner = [0, 1, 1, 2, 3, 4]  # row 1 has two grants, one agrees; row 3's free text never agrees
    assert licence_mismatch(stated, grants, owner).tolist() == [True, False, False, True, False]


# --------------------------------------------------------------------------- documentation


def test_committed_metadata_schema_is_current():
    committed = json.loads((schema_dir() / METADATA_SCHEMA_FILE).read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(metadata_json_schema())), (
        f"{METADATA_SCHEMA_FILE} is stale: run `python -m lab.catalog.items`"
    )
    assert (ROOT / "data_cards" / "schema" / METADATA_SCHEMA_FILE).is_file()


def test_metadata_schema_validates_demo_rows(tmp_path):
    import jsonschema

    from lab.catalog.demo import write_demo_source

    demo = write_demo_source(tmp_path / "demo", AT, n=6)
    rows = [json.loads(line) for line in demo.metadata.read_text().splitlines()]
    schema = json.loads((schema_dir() / METADATA_SCHEMA_FILE).read_text(encoding="utf-8"))
    for r in rows:
        jsonschema.validate(r, schema)  # the third-party validator, straight from the committed file
    assert rows[2]["extra"]["composer"] and rows[5]["licence"] == "CC-BY-SA-4.0"  # the demo's mismatch
    for broken in ({**rows[2], "composer": "x"}, {**rows[2], "extra": {"a": {"b": 1}}}, {**rows[2], "artists": []}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_docs_document_every_metadata_field():
    doc = (ROOT / "docs" / "catalogue-metadata.md").read_text(encoding="utf-8")  # linked from the README
    assert "docs/catalogue-metadata.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    section = doc.split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert documented == list(RecordingMeta.model_fields)


def test_stored_catalogue_without_extra_still_loads(cleared, tmp_path):
    """A catalogue ingested before `extra` existed reads as rows without extra facts."""
    home = tmp_path / "home"
    folder = home / "catalogs" / "meta"
    table = pq.read_table(folder / "catalog.parquet").drop_columns(["extra"])
    pq.write_table(table, folder / "catalog.parquet")
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    manifest["parquet"]["sha256"] = sha256_file(folder / "catalog.parquet")
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))
    loaded = load_catalog_table("meta", home)
    assert pc.all(pc.equal(loaded["extra"], "{}")).as_py()


def test_demo_carries_extra_and_notes_its_one_licence_mismatch(tmp_path, capsys):
    from lab.cli.demo import build_demo, compose
    from lab.recipes.clear import main as clear_main

    home = tmp_path / ".lab"
    url = f"sqlite:///{home / 'ledger.sqlite'}"
    build_demo(home, url)
    cfg = compose(
        "clear", [f"paths.home={home}", f"paths.experiments={tmp_path / 'exp'}", f"ledger_url={url}", "policy=research"]
    )
    result = clear_main(cfg)
    snap = load_snapshot(result.snapshot_path)
    assert json.loads(snap.item("demo-0002")["extra"])["composer"] == "Ines Varga"
    noted = snap.items.filter(pc.greater(pc.list_value_length(snap.items["notes"]), 0))
    assert noted["recording_id"].to_pylist() == ["demo-0005"]  # non-commercial and contract rows agree / say none
    print_clear_summary(result.summary())
    assert "note: 1 cleared recording(s)" in capsys.readouterr().out
