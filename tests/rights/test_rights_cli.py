"""`lab rights ...` end to end through the typer app (SQLite ledger in tmp_path)."""

from __future__ import annotations

import importlib
import json

import pytest
from rights_helpers import drop_guards, grant, raw_sql, revoke, write_jsonl
from typer.testing import CliRunner

import lab.cli


@pytest.fixture(scope="module")
def app():
    try:
        lab.cli._register()
    except ImportError as exc:  # a sibling command not built yet
        if not (exc.name or "").startswith("lab.cli"):
            raise
        importlib.import_module("lab.cli.rights")
    return lab.cli.app


@pytest.fixture
def url(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "home"))  # never the repo's .lab
    return f"sqlite:///{tmp_path / 'l.sqlite'}"


def run(app, *args):
    r = CliRunner().invoke(app, ["rights", *args])
    r.text = " ".join((r.output or "").split())  # rich wraps long lines
    return r


def run_json(app, *args):
    r = run(app, *args, "--json")
    return r, json.loads(r.stdout)


def test_import_show_history_verify(app, url, tmp_path):
    path = write_jsonl(
        tmp_path / "e.jsonl",
        [grant("G-1"), grant("G-2", subject={"recording_id": "rec-9", "catalog": "cat"}), revoke("G-2")],
    )
    r, out = run_json(app, "import", str(path), "--ledger", url)
    assert r.exit_code == 0 and out["imported"] == 3 and out["head_seq"] == 3

    r, out = run_json(app, "show", "rec-9", "--ledger", url)
    assert r.exit_code == 0 and [e["seq"] for e in out["events"]] == [2, 3]
    assert out["events"][1]["kind"] == "revoke" and out["events"][1]["event"]["reason"] == "artist withdrew consent"
    r, out = run_json(app, "show", "GB-LAB-26-00001", "--ledger", url)  # by ISRC (G-2's subject has none)
    assert [e["seq"] for e in out["events"]] == [1]
    r = run(app, "show", "rec-G-1", "--ledger", url)
    assert r.exit_code == 0 and "G-1" in r.text and "CC-BY-4.0" in r.text

    r, out = run_json(app, "history", "--grant", "G-2", "--ledger", url)
    assert [e["kind"] for e in out["events"]] == ["grant", "revoke"]
    r, out = run_json(app, "history", "--limit", "2", "--ledger", url)
    assert [e["seq"] for e in out["events"]] == [2, 3]
    r = run(app, "history", "--grant", "G-404", "--ledger", url)
    assert r.exit_code == 1 and "no grant 'G-404'" in r.text

    r = run(app, "verify", "--ledger", url)
    assert r.exit_code == 0 and "ledger intact: 3 events" in r.text
    r, out = run_json(app, "verify", "--ledger", url)
    assert out["ok"] is True and out["n_events"] == 3


def test_import_bad_file_writes_nothing(app, url, tmp_path):
    bad = grant("G-2", parties=[{"name": "A", "role": "master_owner", "right": "master", "share": 90}])
    path = write_jsonl(tmp_path / "e.jsonl", [grant("G-1"), "", bad])
    r = run(app, "import", str(path), "--ledger", url)
    assert r.exit_code == 2  # bad input, not a refused append
    assert "line 3: grant.parties: party shares per right must sum to 100 (got master=90)" in r.text
    r, out = run_json(app, "import", str(path), "--ledger", url)
    assert r.exit_code == 2 and out["ok"] is False and "line 3: grant.parties" in out["error"]["message"]
    assert out["error"]["kind"] == "bad_events"
    r, out = run_json(app, "verify", "--ledger", url)
    assert out["n_events"] == 0


def test_grant_with_flags_then_amend_and_revoke(app, url):
    common = [
        "--recording-id",
        "rec-1",
        "--isrc",
        "GBLAB2600001",
        "--party",
        "Acme Records:master_owner:master:70",
        "--party",
        "Ada: the Band:performer:master:30",
        "--purpose",
        "ai_training",
        "--territory",
        "GB",
        "--territory",
        "us",
        "--valid-from",
        "2025-01-01",
        "--valid-until",
        "2027-01-01",
        "--licence",
        "LicenseRef-lab-acme",
        "--issuer",
        "Acme Records",
        "--evidence",
        "contract-17",
        "--ledger",
        url,
    ]
    r, out = run_json(app, "grant", "--grant-id", "G-1", *common)
    assert r.exit_code == 0, r.output
    g = out["event"]["grant"]
    assert out["seq"] == 1 and g["territories"] == ["GB", "US"] and g["parties"][1]["name"] == "Ada: the Band"

    r = run(app, "grant", "--grant-id", "G-1", *common)
    assert r.exit_code == 1 and "already exists" in r.text

    r, out = run_json(app, "grant", "--grant-id", "G-1", "--supersedes", "G-1", "--version", "2", *common)
    assert r.exit_code == 0 and out["kind"] == "amend" and out["seq"] == 2
    r = run(app, "grant", "--grant-id", "G-1", "--supersedes", "G-1", "--version", "2", *common)
    assert r.exit_code == 1 and "version must be greater than the current version 2" in r.text
    r, out = run_json(app, "grant", "--grant-id", "G-1", "--supersedes", "G-1", "--territory", "FR", *common)
    assert r.exit_code == 0 and out["event"]["grant"]["version"] == 3  # next version when none given

    r, out = run_json(
        app, "revoke", "G-1", "--reason", "artist withdrew", "--effective-at", "2026-02-01", "--ledger", url
    )
    assert r.exit_code == 0 and out["kind"] == "revoke" and out["event"]["issuer"]
    r = run(app, "revoke", "G-1", "--reason", "again", "--ledger", url)
    assert r.exit_code == 1 and "already revoked" in r.text
    r = run(app, "revoke", "G-404", "--reason", "x", "--ledger", url)
    assert r.exit_code == 1 and "no such grant" in r.text


def test_grant_flag_errors(app, url):
    r = run(
        app,
        "grant",
        "--grant-id",
        "G-1",
        "--recording-id",
        "r",
        "--party",
        "A:master_owner:master:100",
        "--purpose",
        "world_domination",
        "--territory",
        "WW",
        "--licence",
        "MIT",
        "--issuer",
        "me",
        "--ledger",
        url,
    )
    assert r.exit_code == 2 and "grant.purposes.0" in r.text
    r = run(app, "grant", "--grant-id", "G-1", "--recording-id", "r", "--ledger", url)
    assert r.exit_code == 2 and "missing --issuer, --licence" in r.text
    r = run(app, "grant", "--grant-id", "G-1", "--party", "no-colons", "--ledger", url)
    assert r.exit_code == 2 and "NAME:ROLE:RIGHT:SHARE" in r.text


def test_grant_from_json(app, url, tmp_path):
    f = tmp_path / "g.json"
    f.write_text(json.dumps(grant("G-7")["grant"]))
    r, out = run_json(app, "grant", "--from-json", str(f), "--ledger", url)
    assert r.exit_code == 0 and out["grant_id"] == "G-7"
    r = run(app, "grant", "--from-json", str(f), "--licence", "MIT", "--ledger", url)
    assert r.exit_code == 2 and "drop --licence" in r.text
    f.write_text(json.dumps(grant("G-8", licence="Bogus-1.0")))
    r = run(app, "grant", "--from-json", str(f), "--ledger", url)
    assert r.exit_code == 2 and "grant.licence" in r.text


def test_verify_names_the_tampered_event(app, url, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [grant("G-1"), grant("G-2"), grant("G-3")])
    run(app, "import", str(path), "--ledger", url)
    _, hist = run_json(app, "history", "--ledger", url)
    eid2 = hist["events"][1]["event_id"]
    head = f"3:{hist['events'][2]['hash']}"
    assert run(app, "verify", "--anchor", head, "--ledger", url).exit_code == 0

    drop_guards(url)
    raw_sql(url, "UPDATE ledger_events SET payload = replace(payload, '\"WW\"', '\"US\"') WHERE seq = 2")
    r = run(app, "verify", "--ledger", url)
    assert r.exit_code == 1
    assert f"ledger chain broken at seq 2 (event {eid2})" in r.text and "hash does not match" in r.text
    r, out = run_json(app, "verify", "--quick", "--ledger", url)
    assert r.exit_code == 1 and out["ok"] is False and out["error"]["problems"][0]["event_id"] == eid2

    raw_sql(url, "DELETE FROM ledger_events WHERE seq = 3")
    r = run(app, "verify", "--anchor", head, "--ledger", url)
    assert r.exit_code == 1 and "seq 2" in r.text and "(+" in r.text


def test_default_ledger_comes_from_settings(app, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LAB_LEDGER_URL", raising=False)
    r, out = run_json(app, "verify")
    assert r.exit_code == 0 and out["n_events"] == 0
    assert (tmp_path / "home" / "ledger.sqlite").exists()
    r = run(app, "verify", "--ledger", "nosuchdialect://x")
    assert r.exit_code == 2 and "cannot open ledger" in r.text
