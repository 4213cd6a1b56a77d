"""`lab licences explain`, `lab clear show=...` and `lab rights show` (verdict, then events)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lab.cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app():
    lab.cli._register()
    return lab.cli.app


def run(app, *args):
    r = CliRunner().invoke(app, list(args))
    r.text = " ".join((r.output or "").split())  # rich wraps long lines
    return r


@pytest.mark.parametrize(
    "expr, klass, rule",
    [
        ("CC-BY-3.0-DE", "permissive", "Creative Commons rule: Attribution only (BY)"),
        ("GPL-2.0", "share_alike", "index category 'Copyleft'"),
    ],
)
def test_explain_one_licence(app, expr, klass, rule):
    r = run(app, "licences", "explain", expr, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["licence_class"] == klass and out["symbols"][0]["rule"] == rule
    r = run(app, "licences", "explain", expr)
    assert r.exit_code == 0 and klass in r.text and rule in r.text


def test_explain_or_and_with_a_policy(app):
    r = run(app, "licences", "explain", "CC-BY-NC-4.0 OR GPL-3.0-only", "--policy", "research")
    assert r.exit_code == 0, r.output
    assert "OR: the licensee may pick the loosest: non_commercial, share_alike" in r.text
    assert "policy 'research' accepts share_alike" in r.text
    out = json.loads(run(app, "licences", "explain", "MIT AND CC-BY-NC-4.0", "--policy", "commercial", "--json").stdout)
    assert out["licence_class"] == "non_commercial" and out["accepted"] is False and out["policy"] == "commercial"
    assert out["steps"] == [
        "MIT AND CC-BY-NC-4.0 → non_commercial (AND: every licence binds, the strictest wins: "
        "permissive, non_commercial)"
    ]
    r = run(app, "licences", "explain", "MIT AND Nope-1.0")
    assert r.exit_code == 2 and "Nope-1.0" in r.text


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from lab.cli.demo import build_demo

    root = tmp_path_factory.mktemp("verdicts")
    home, url = root / ".lab", f"sqlite:///{root / '.lab' / 'ledger.sqlite'}"
    build_demo(home, url)
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_LEDGER_URL", "LAB_CONFIG_DIR")}
    env.update(LAB_HOME=str(home), LAB_EXPERIMENTS=str(root / "experiments"), OMP_NUM_THREADS="1", COLUMNS="200")
    return env, url


def lab_cmd(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], env=env, capture_output=True, text=True, cwd=REPO, timeout=300
    )


def test_clear_show_excluded_as_table_and_json(demo):
    env, url = demo
    r = lab_cmd(env, "clear", "policy=commercial", f"ledger_url={url}", "show=excluded", "limit=null", "json=true")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = {v["recording_id"]: v for v in out["verdicts"]}
    assert len(rows) == sum(out["excluded"].values()) and all(v["verdict"] == "excluded" for v in rows.values())
    revoked = [v for v in rows.values() if v["reason"] == "revoked"]
    assert revoked and all("revoked by ledger seq" in v["detail"] for v in revoked)
    r = lab_cmd(env, "clear", "policy=commercial", f"ledger_url={url}", "show=excluded", "limit=3")
    assert r.returncode == 0, r.stderr
    assert "excluded recordings (first 3)" in r.stdout and r.stdout.count("│ excluded │") == 3
    r = lab_cmd(env, "clear", f"ledger_url={url}", "show=nope")
    assert r.returncode == 2 and "show='nope': expected one of excluded, cleared, all" in r.stderr
    assert "Traceback" not in r.stderr


def test_rights_show_gives_the_verdict_then_the_events(app, demo, monkeypatch):
    env, url = demo
    monkeypatch.setenv("LAB_HOME", env["LAB_HOME"])
    r = run(app, "rights", "show", "demo-0007", "--ledger", url, "--policy", "commercial", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    [v] = out["verdicts"]
    assert (v["recording_id"], v["catalog"], v["verdict"], v["reason"]) == ("demo-0007", "demo", "excluded", "revoked")
    assert v["detail"].startswith("G-0007: revoked (revoked by ledger seq ")
    assert [e["kind"] for e in out["events"]] == ["grant", "revoke"]
    r = run(app, "rights", "show", "demo-0007", "--ledger", url)
    assert r.exit_code == 0 and "verdict for demo-0007 under policy 'research' now" in r.text
    assert r.text.index("verdict for") < r.text.index("ledger events for demo-0007")
    r = run(app, "rights", "show", "nowhere-1", "--ledger", url)
    assert r.exit_code == 0 and "nowhere-1 is in no catalogue (demo)" in r.text
