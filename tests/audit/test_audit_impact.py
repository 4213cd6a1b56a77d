"""Impact of a grant or recording over a synthetic registry: lineage, strictness, ledger terms, CLI."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from registry_helpers import entry, grant  # noqa: E402

import lab.cli  # noqa: E402
from lab.audit.impact import ended_subjects, impact  # noqa: E402
from lab.registry import Registry  # noqa: E402
from lab.rights.ledger import Ledger  # noqa: E402


@pytest.fixture
def reg(tmp_path):
    with Registry(f"sqlite:///{tmp_path / 'r.sqlite'}") as r:
        yield r


@pytest.fixture
def ledger(tmp_path):
    with Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}") as led:
        yield led


def _by_id(report):
    return {c.checkpoint_id: c for c in report.checkpoints}


def test_three_level_chain_through_lineage(reg, ledger):
    # base saw r1 under G1; the fine-tune and its fine-tune inherit nothing here (their rows name other
    # grants), so only lineage can find them; an unrelated checkpoint stays out.
    reg.add(
        [
            entry("base", rows=[("r1", "G1", "retrain", 4)]),
            entry("ft1", "base", rows=[("r2", "G2", "retain", 1)]),
            entry("ft2", "ft1", rows=[("r3", "G3", "retain", 1)]),
            entry("other", rows=[("r2", "G2", "retain", 1)]),
        ]
    )
    rep = impact(reg, ledger, "G1")
    got = _by_id(rep)
    assert set(got) == {"base", "ft1", "ft2"} and rep.kind == "grant"
    assert [got[c].rule for c in ("base", "ft1", "ft2")] == ["retrain"] * 3
    assert got["base"].direct and not got["ft1"].direct and got["ft2"].via == "ft1"
    assert got["base"].seconds == 4 and got["ft2"].seconds == 0
    assert got["base"].commands[0] == "lab clear policy=commercial data.catalog=demo"
    assert "model=tiny" in got["base"].commands[1] and "retrained ft1" in got["ft2"].commands[1]
    assert rep.rule == "retrain" and rep.counts() == {"retain": 0, "retrain": 3, "retire": 0}


def test_descendant_never_less_strict(reg, ledger):
    reg.add(
        [
            entry("p", rows=[("r1", "G1", "retire", 1)]),
            entry("c", "p", rows=[("r1", "G1", "retain", 1, "p"), ("r9", "G1", "retain", 1)]),
            entry("g", "c", rows=[("r5", "G5", "retain", 1)]),
            # a stricter child under a lenient parent keeps its own rule; the parent is not raised
            entry("q", rows=[("r1", "G1", "retain", 1)]),
            entry("qc", "q", rows=[("r1", "G1", "retrain", 1, "qc")]),
        ]
    )
    got = _by_id(impact(reg, ledger, "G1"))
    assert {k: v.rule for k, v in got.items()} == {
        "p": "retire",
        "c": "retire",
        "g": "retire",
        "q": "retain",
        "qc": "retrain",
    }
    assert got["c"].via == "p" and got["qc"].via is None and got["g"].commands == []


def test_rule_is_the_grants_own_in_the_ledger(reg, ledger):
    # r1 was cleared by G1 (retain) and G2 (retire): its row records the strictest (retire). Revoking G1
    # alone applies G1's rule, as the ledger had it at the checkpoint's head.
    ledger.append_many([grant("G1", rule="retain"), grant("G2", rule="retire")])
    head = ledger.head()[0]
    ledger.append(grant("G1v2", rule="retire", version=2, supersedes="G1"))  # later than the checkpoint
    reg.add([entry("a", rows=[("r1", "G1", "retire", 3), ("r1", "G2", "retire", 3)], head=head)])
    rep = impact(reg, ledger, "G1")
    assert rep.grant_ids == ["G1", "G1v2"] and _by_id(rep)["a"].rule == "retain"
    assert _by_id(rep)["a"].seconds == 3  # per recording, not per grant row
    assert _by_id(impact(reg, ledger, "G2"))["a"].rule == "retire"


def test_recording_and_hash_queries(reg, ledger):
    reg.add([entry("a", rows=[("r1", "G1", "retain", 1), ("r1", "G7", "retrain", 1, "a", "other")])])
    assert impact(reg, ledger, "r1").rule == "retrain"  # both catalogues
    rep = impact(reg, ledger, "r1", catalog="demo")
    assert rep.kind == "recording" and rep.rule == "retain" and rep.grant_ids == ["G1"]
    sha = reg.source_rows(recording_id="r1", catalog="other")["audio_sha256"][0].as_py()
    rep = impact(reg, ledger, sha)
    assert rep.kind == "audio_sha256" and _by_id(rep)["a"].recordings == ["other:r1"]
    nothing = impact(reg, ledger, "no-such-thing")
    assert nothing.kind == "unknown" and nothing.checkpoints == [] and nothing.rule is None


def test_ended_subjects(ledger):
    stored = ledger.append_many(
        [
            grant("G1"),
            grant(
                "G2", status="opted_out", subject={"recording_id": "r1", "catalog": "demo", "audio_sha256": "cd" * 32}
            ),
            {
                "kind": "revoke",
                "grant_id": "G1",
                "reason": "asked",
                "effective_at": "2025-06-01T00:00:00Z",
                "issuer": "Ada",
            },
        ]
    )
    assert ended_subjects(stored) == [("r1", "demo"), ("cd" * 32, None), ("G1", None)]


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAB_REGISTRY_URL", f"sqlite:///{tmp_path / 'r.sqlite'}")
    for name in ("rights", "impact", "registry"):
        importlib.import_module(f"lab.cli.{name}")

    def run(*args):
        r = CliRunner().invoke(lab.cli.app, list(args))
        r.text = " ".join((r.output or "").split())
        return r

    return run


def test_revoke_prints_impact(cli, reg, ledger):
    ledger.append(grant("G1", rule="retire"))
    reg.add([entry("base", rows=[("r1", "G1", "retire", 2)]), entry("ft", "base", rows=[("r2", "G2", "retain", 1)])])
    r = cli("rights", "revoke", "G1", "--reason", "artist asked", "--ledger", ledger.url)
    assert r.exit_code == 0, r.output
    assert "impact of G1" in r.text and "base" in r.text and "lineage (from base)" in r.text and "retire" in r.text
    r = cli("impact", "G1", "--ledger", ledger.url, "--json")
    out = json.loads(r.stdout)
    assert out["rule"] == "retire" and {c["checkpoint_id"]: c["rule"] for c in out["checkpoints"]} == {
        "base": "retire",
        "ft": "retire",
    }
    assert [e["kind"] for e in out["events"]] == ["revoke"]


def test_revoke_without_registry_prints_no_impact(cli, ledger, tmp_path):
    ledger.append(grant("G1"))
    r = cli("rights", "revoke", "G1", "--reason", "asked", "--ledger", ledger.url)
    assert r.exit_code == 0 and "impact" not in r.text
    assert not (tmp_path / "r.sqlite").exists()


def test_import_prints_impact_of_opt_out(cli, reg, ledger, tmp_path):
    reg.add([entry("a", rows=[("r1", "G1", "retrain", 2)])])
    path = tmp_path / "e.jsonl"
    path.write_text(
        json.dumps(grant("OUT-1", status="opted_out", subject={"recording_id": "r1", "catalog": "demo"})) + "\n"
    )
    r = cli("rights", "import", str(path), "--ledger", ledger.url, "--json")
    assert r.exit_code == 0, r.output
    impacts = json.loads(r.stdout)["impact"]
    assert impacts[0]["query"] == "r1" and impacts[0]["checkpoints"][0]["rule"] == "retrain"
