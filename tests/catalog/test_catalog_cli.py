from __future__ import annotations

import importlib
import json

import pytest
from catalog_helpers import row, write_jsonl
from typer.testing import CliRunner

import lab.cli


@pytest.fixture(scope="module")
def app():
    try:
        lab.cli._register()
    except ImportError as exc:  # a sibling command not built yet (ours imports first)
        if not (exc.name or "").startswith("lab.cli"):
            raise
        importlib.import_module("lab.cli.catalog")
    return lab.cli.app


def run(app, *args):
    return CliRunner().invoke(app, list(args))


def test_ingest_show_list_round_trip(app, source, lab_home):
    (source / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    write_jsonl(
        source / "metadata.jsonl",
        [row("r1", "a.wav"), row("r2", "sub/b.flac"), row("r3", "bad.wav"), row("r4", "../x.wav")],
    )
    res = run(app, "catalog", "ingest", str(source), "--catalog", "demo", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["counts"] == {
        "total": 4,
        "ok": 2,
        "rejected": 2,
        "rejected_by_reason": {"decode_error": 1, "path_outside_catalogue": 1},
    }
    assert {r["recording_id"]: r["reason"] for r in out["rejected"]} == {
        "r3": "decode_error",
        "r4": "path_outside_catalogue",
    }
    assert (lab_home / "catalogs" / "demo" / "catalog.parquet").exists()

    res = run(app, "catalog", "ingest", str(source), "--catalog", "demo", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "path_outside_catalogue" in res.stdout and "written to" in res.stdout

    res = run(app, "catalog", "show", "demo", "--json")
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["items_total"] == 4 and shown["manifest"]["counts"]["ok"] == 2
    assert run(app, "catalog", "show", "demo").exit_code == 0

    res = run(app, "catalog", "list", "--json")
    assert [c["name"] for c in json.loads(res.stdout)["catalogs"]] == ["demo"]
    assert "demo" in run(app, "catalog", "list").stdout


def test_malformed_metadata_exits_nonzero_and_writes_nothing(app, source, lab_home):
    write_jsonl(source / "metadata.jsonl", [row("r1", "a.wav"), row("r2", "b.wav", artists=[])])
    res = run(app, "catalog", "ingest", str(source), "--catalog", "demo", "--json")
    assert res.exit_code == 2  # bad input
    out = json.loads(res.stdout)
    errs = out["error"]["errors"]
    assert out["ok"] is False and errs[0]["line"] == 2 and errs[0]["field"] == "artists"
    assert not (lab_home / "catalogs" / "demo").exists()
    res = run(app, "catalog", "ingest", str(source), "--catalog", "demo")
    assert res.exit_code != 0 and "artists" in res.output


def test_show_missing_and_tampered(app, source, lab_home):
    assert run(app, "catalog", "show", "nope").exit_code != 0
    assert run(app, "catalog", "ingest", str(source), "--catalog", "demo").exit_code == 0
    with open(lab_home / "catalogs" / "demo" / "catalog.parquet", "ab") as f:
        f.write(b"x")
    res = run(app, "catalog", "show", "demo", "--json")
    assert res.exit_code == 1 and "modified after ingest" in json.loads(res.stdout)["error"]["message"]


def test_catalogue_text_is_not_markup(app, source, lab_home):
    write_jsonl(source / "metadata.jsonl", [row("r1", "[/]odd[bold].wav", title="[/] title")])
    res = run(app, "catalog", "ingest", str(source), "--catalog", "odd")
    assert res.exit_code == 0, res.output
    assert "[/]odd[bold].wav" in res.stdout
    assert run(app, "catalog", "show", "odd").exit_code == 0
