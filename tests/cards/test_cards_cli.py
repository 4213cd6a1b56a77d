"""`lab card show`: the validated card and its sources, as a table or JSON; a broken card exits 1 naming why."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lab.cards import write_card_files
from lab.cli import _register, app


@pytest.fixture
def folder(bundle, tmp_path):
    write_card_files(bundle, tmp_path, base_model_hub_id=None)
    return tmp_path


def _run(*args: str):
    _register()
    return CliRunner().invoke(app, ["card", "show", *args], env={"COLUMNS": "200"})


def test_show_table(folder):
    out = _run(str(folder), "--limit", "2")
    assert out.exit_code == 0, out.output
    assert "run-abc-step-000200" in out.output and "FR, GB" in out.output and "retire" in out.output
    assert "demo-0001" in out.output and "demo-0002" in out.output and "demo-0003" not in out.output
    assert "1 more in" in out.output


def test_show_json_sorted_by_id(folder):
    out = _run(str(folder), "--json", "--sort", "id", "--limit", "2")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["card"]["schema"] == "lab.data_card/2" and doc["card"]["sources"]["rows"] == 3
    assert [r["recording_id"] for r in doc["sources"]] == ["demo-0001", "demo-0002"]
    by_seconds = json.loads(_run(str(folder), "--json", "--limit", "3").output)["sources"]
    assert [r["seconds_seen"] for r in by_seconds] == [12.5, 7.5, 4.0]


def test_show_refuses_a_tampered_card(folder):
    (folder / "sources.parquet").write_bytes((folder / "sources.parquet").read_bytes()[:-10] + b"0" * 10)
    out = _run(str(folder), "--json")
    assert out.exit_code == 2  # a malformed card is bad input
    doc = json.loads(out.output)
    assert doc["ok"] is False and any("sources.parquet" in p for p in doc["error"]["problems"])
