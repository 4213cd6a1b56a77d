"""`lab audit --html`: one self-contained page with the checks, status, consent, impact, sources, lineage."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from audit_helpers import build_audit_demo
from typer.testing import CliRunner

from lab.audit.report import lineage_chain, render_html
from lab.audit.verify import audit_checkpoint
from lab.cards import load_card
from lab.rights.records import RevokeEvent
from lab.util.timestamps import utcnow

HOSTILE = '<script>alert("pwned")</script> & <img src=x onerror=1>'
SECONDS = {"demo-0001": 4.0, "demo-0002": 3.0, "demo-0006": 2.0}  # G-0001 retain, G-0002 retain, G-0006 retrain


@pytest.fixture(scope="module")
def audit_demo(tmp_path_factory):
    return build_audit_demo(tmp_path_factory.mktemp("audit-demo"))


def _revoked_audit(audit_demo, tmp_path, folder):
    ledger = audit_demo.ledger_copy(tmp_path / "ledger")
    ledger.append(RevokeEvent(grant_id="G-0006", reason="artist withdrew", effective_at=utcnow(), issuer="test"))
    return audit_checkpoint(folder, public_key=audit_demo.env.public_key, ledger=ledger)


def test_html_has_checks_status_impact_and_escapes_a_hostile_title(audit_demo, tmp_path):
    folder = audit_demo.checkpoint(tmp_path / "ck", SECONDS, title=HOSTILE)
    report = _revoked_audit(audit_demo, tmp_path, folder)
    html = render_html(report)
    for check in report.checks:
        assert f"<td>{check.name}</td>" in html
    assert 'class="badge s-retrain">retrain</span>' in html
    # impact: the revoked source with its grant and rule
    impact = html[html.index("<h2>Impact</h2>") : html.index("<h2>Sources</h2>")]
    assert "demo-0006" in impact and "G-0006" in impact and "retrain" in impact and "demo-0001" not in impact
    # consent then and now: the snapshot's ledger head, and the check now
    assert audit_demo.snapshot.ledger["head_hash"] in html and "no longer clear" in html
    # every value escaped: the title never becomes markup
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; &amp; &lt;img src=x onerror=1&gt;" in html
    # self-contained: no external stylesheet, script, image or font
    assert not re.search(r"<(link|script|img|iframe)\b", html) and "url(" not in html


def test_html_lists_the_top_sources_and_counts_the_rest(audit_demo, tmp_path):
    folder = audit_demo.checkpoint(tmp_path / "ck", SECONDS)
    html = render_html(audit_checkpoint(folder, public_key=audit_demo.env.public_key), top=2)
    sources = html[html.index("<h2>Sources</h2>") : html.index("<h2>Lineage</h2>")]
    assert sources.count("<tr><td>") == 2 and "demo-0001" in sources and "demo-0006" not in sources
    assert "and 1 more rows" in sources and "3 row(s)" in sources
    assert 'class="badge s-unchecked"' in html  # offline: consent now unknown, said so


def test_lineage_chain_walks_parents_while_their_folders_exist(audit_demo, tmp_path):
    grand = audit_demo.checkpoint(tmp_path / "grand", {"demo-0001": 1.0}, checkpoint_id="g-step-000001")
    parent = audit_demo.checkpoint(
        tmp_path / "parent",
        {"demo-0002": 1.0},
        checkpoint_id="p-step-000002",
        parent=grand,
        inherited=load_card(grand).sources,
    )
    child = audit_demo.checkpoint(
        tmp_path / "child",
        {"demo-0006": 1.0},
        checkpoint_id="c-step-000003",
        parent=parent,
        inherited=load_card(parent).sources,
    )
    chain = lineage_chain(load_card(child).card)
    assert [link["checkpoint_id"] for link in chain] == ["c-step-000003", "p-step-000002", "g-step-000001"]
    assert [link["status"] for link in chain] == ["this checkpoint", "card matches", "card matches"]
    assert chain[1]["relation"] == "finetune" and chain[2]["relation"] == "pretrain"
    html = render_html(audit_checkpoint(child, public_key=audit_demo.env.public_key))
    assert "g-step-000001" in html[html.index("<h2>Lineage</h2>") :]

    shutil.rmtree(grand)
    chain = lineage_chain(load_card(child).card)
    assert [link["status"] for link in chain] == ["this checkpoint", "card matches", "folder not found"]


def test_cli_writes_the_html_and_reports_status(audit_demo, tmp_path, monkeypatch):
    from lab.cli import _register, app

    monkeypatch.setenv("LAB_HOME", str(tmp_path / "home"))
    folder = audit_demo.checkpoint(tmp_path / "ck", SECONDS)
    ledger = audit_demo.ledger_copy(tmp_path / "ledger")
    ledger.append(RevokeEvent(grant_id="G-0006", reason="artist withdrew", effective_at=utcnow(), issuer="test"))
    out_file = tmp_path / "report.html"
    _register()
    args = [
        "audit",
        str(folder),
        "--public-key",
        str(audit_demo.env.public_key),
        "--ledger",
        ledger.url,
        "--html",
        str(out_file),
    ]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output  # no weights, unsigned, and a retrain source revoked
    data = json.loads(result.stdout)
    assert data["status"] == "retrain" and data["html"] == str(out_file)
    assert out_file.read_text().startswith("<!DOCTYPE html>")
    table = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert "status: retrain" in table.output and f"report: {out_file}" in table.output
