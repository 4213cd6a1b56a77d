"""`lab serve` through FastAPI's TestClient: every route, on a world built without training."""

from __future__ import annotations

import re
import shutil
import sys
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import SECONDS, SECRET, build_world

from lab.rights.records import RevokeEvent
from lab.serve import create_app
from lab.util.timestamps import utcnow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(world):
    return TestClient(create_app(world.settings()))


def section(html: str, element_id: str, end: str = "</table>") -> str:
    """The markup from the element with this id to the next `end`."""
    start = html.index(f'id="{element_id}"')
    return html[start : html.index(end, start)]


def rows(table: str) -> list[str]:
    """Each data row's text, tags stripped."""
    return [unescape(re.sub(r"<[^>]+>", " ", r)) for r in table.split("<tr>")[2:]]


def test_checkpoints_page_lists_every_checkpoint_with_its_lineage(client, world):
    page = client.get("/")
    assert page.status_code == 200
    table = rows(section(page.text, "checkpoints"))
    assert [r.split()[0] for r in table] == [world.parent_id, world.child_id]
    assert "complete" in table[0] and "not audited" in table[0]
    tree = section(page.text, "lineage", "</main>")
    # the fine-tune nests under its parent
    assert tree.index(world.parent_id) < tree.index("<ul>") < tree.index(world.child_id)


def test_card_page_shows_card_audit_exposure_licences_and_signature(client, world):
    page = client.get(f"/checkpoints/{world.child_id}")
    assert page.status_code == 200
    html = page.text
    assert 'id="status">ok<' in html
    assert "finetune from" in section(html, "identity", "</section>") and world.parent_id in html
    signature = unescape(section(html, "signature", "</section>"))
    assert "pass" in signature and "files signed by" in signature and "FAIL" not in signature
    consent = section(html, "consent", "</section>")
    assert "every source still clears" in consent and "#" in consent
    assert "Apache-2.0 AND CC-BY-4.0" in section(html, "licences", "</section>")
    chart = section(html, "exposure", "</svg>")
    own = len(re.findall(r'<rect class="own"', chart))
    inherited = len(re.findall(r'<rect class="inherited"', chart))
    assert (own, inherited) == (1, len(SECONDS))
    listed = [r.split()[0] for r in rows(section(html, "sources"))]
    assert listed == ["demo-0001", "demo-0002", "demo-0006", "demo-0005"]  # by seconds, largest first


def test_sources_table_searches_and_sorts(client, world):
    url = f"/checkpoints/{world.parent_id}"
    found = rows(section(client.get(url, params={"q": "DEMO-0002"}).text, "sources"))
    assert [r.split()[0] for r in found] == ["demo-0002"]
    by_id = rows(section(client.get(url, params={"sort": "id", "order": "asc"}).text, "sources"))
    assert [r.split()[0] for r in by_id] == sorted(SECONDS)
    fewest = rows(section(client.get(url, params={"sort": "seconds", "order": "asc", "limit": 2}).text, "sources"))
    assert [r.split()[0] for r in fewest] == sorted(SECONDS, key=SECONDS.get)[:2]
    assert "0 of 0 matching" in client.get(url, params={"q": "no such thing"}).text


def test_audit_page_is_the_html_audit_report(client, world):
    page = client.get(f"/checkpoints/{world.parent_id}/audit")
    assert page.status_code == 200
    for check in ("signature", "data_card", "lineage", "consent_now", "ledger_then"):
        assert f"<td>{check}</td>" in page.text
    assert 'class="badge s-ok">ok</span>' in page.text


def test_unknown_checkpoint_is_404(client):
    for url in ("/checkpoints/no-such-step-000001", "/checkpoints/no-such-step-000001/audit"):
        page = client.get(url)
        assert page.status_code == 404 and "no registered checkpoint no-such-step-000001" in page.text


def test_impact_of_a_grant_and_a_recording(client, world):
    empty = client.get("/impact")
    assert empty.status_code == 200 and 'id="impact-form"' in empty.text and "impact-summary" not in empty.text
    grant = client.get("/impact", params={"q": "G-0006"})
    touched = rows(section(grant.text, "impact-checkpoints"))
    assert [r.split()[0] for r in touched] == [world.parent_id, world.child_id]
    assert all("retrain" in r for r in touched)
    own = rows(section(client.get("/impact", params={"q": "demo-0005"}).text, "impact-checkpoints"))
    assert [r.split()[0] for r in own] == [world.child_id]
    assert "No registered checkpoint is touched" in client.get("/impact", params={"q": "G-9999"}).text


def test_a_revocation_shows_on_the_card_and_in_impact(world, tmp_path):
    ledger = world.demo.ledger_copy(tmp_path / "ledger")
    ledger.append(RevokeEvent(grant_id="G-0006", reason="artist withdrew", effective_at=utcnow(), issuer="test"))
    ledger.close()
    client = TestClient(create_app(world.settings(ledger_url=f"sqlite:///{tmp_path / 'ledger' / 'ledger.sqlite'}")))
    html = client.get(f"/checkpoints/{world.parent_id}").text
    assert 'id="status">retrain<' in html
    consent = unescape(section(html, "consent", "</section>"))
    assert "FAIL" in consent and "demo-0006" in consent and "G-0006" in consent
    impact = client.get("/impact", params={"q": "G-0006"}).text
    assert "artist withdrew" in impact and "revoke" in impact


def test_checkpoints_page_shows_the_status_of_the_last_audit(world, tmp_path):
    from lab.audit.verify import audit_checkpoint
    from lab.cards import card_sha256
    from lab.registry import Registry

    ledger = world.demo.ledger_copy(tmp_path / "ledger")
    ledger.append(RevokeEvent(grant_id="G-0006", reason="artist withdrew", effective_at=utcnow(), issuer="test"))
    report = audit_checkpoint(world.parent, public_key=world.demo.env.public_key, ledger=ledger)
    ledger.close()
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    with Registry(url) as registry:
        registry.register(world.parent)
        registry.register(world.child)
        registry.record_audit(world.parent_id, report.to_dict(), data_card_sha256=card_sha256(world.parent))
    markup = section(TestClient(create_app(world.settings(registry_url=url))).get("/").text, "checkpoints")
    parent, child = markup.split("<tr>")[2:]
    assert 'class="badge s-retrain">retrain<' in parent and "consent_now" in parent  # G-0006 says retrain
    assert "badge s-" not in child.replace("badge s-ok", "") and "not audited" in child and "unknown" in child


def test_a_tampered_checkpoint_fails_its_signature(world, tmp_path):
    from lab.registry import Registry

    folder = tmp_path / "copy" / "step-000010"
    shutil.copytree(world.parent, folder)
    with (folder / "config.json").open("a") as f:
        f.write(" ")
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    with Registry(url) as registry:
        registry.register(folder)
    client = TestClient(create_app(world.settings(registry_url=url)))
    html = client.get(f"/checkpoints/{world.parent_id}").text
    assert "badge s-fail" in html
    assert "FAIL" in section(html, "signature", "</section>")
    shutil.rmtree(folder)  # a registered checkpoint whose folder is gone
    gone = client.get(f"/checkpoints/{world.parent_id}")
    assert gone.status_code == 404 and "no longer exists" in gone.text
    assert "missing" in section(client.get("/").text, "checkpoints")


def test_no_secret_reaches_any_page(world):
    ledger = f"postgresql://lab:{SECRET}@127.0.0.1:1/ledger"
    registry = f"postgresql://lab:{SECRET}@127.0.0.1:1/registry"
    pages = []
    for settings in (world.settings(ledger_url=ledger), world.settings(ledger_url=ledger, registry_url=registry)):
        client = TestClient(create_app(settings))
        for url in (
            "/",
            f"/checkpoints/{world.parent_id}",
            f"/checkpoints/{world.parent_id}/audit",
            "/impact?q=G-0006",
            "/sample",
            "/royalties",
            "/checkpoints/nope",
        ):
            page = client.get(url)
            assert SECRET not in page.text, url
            pages.append(page)
        post = client.post(
            "/sample", data={"checkpoint": world.parent_id, "prompt": "x", "uses": "ai_inference", "territory": "GB"}
        )
        assert SECRET not in post.text
    assert any(p.status_code == 503 for p in pages)  # the database could not be reached, and the page said so
    assert all("postgresql://lab:***@127.0.0.1:1/ledger" in p.text for p in pages)


def test_sample_form_lists_checkpoints_and_uses(client, world):
    page = client.get("/sample", params={"checkpoint": world.child_id})
    assert page.status_code == 200
    assert f'<option value="{world.child_id}" selected>' in page.text
    for use in ("ai_inference", "commercial_output", "eval_only"):
        assert f'value="{use}"' in page.text
    missing = client.post(
        "/sample", data={"checkpoint": "nope", "prompt": "x", "uses": "ai_inference", "territory": "GB"}
    )
    assert missing.status_code == 404


def _sample(client, world, uses, **form):
    data = {"checkpoint": world.parent_id, "prompt": "warm piano", "uses": uses, "territory": "GB", "duration": "0.5"}
    return client.post("/sample", data=data | form)


def test_a_refused_sample_names_each_recording_grant_and_reason(client, world):
    from lab.registry import Registry

    page = _sample(client, world, ["eval_only"])  # no demo grant allows eval_only
    assert page.status_code == 200 and 'id="sample-refusal"' in page.text and "player" not in page.text
    refused = rows(section(page.text, "refusals"))
    assert sorted(r.split()[2] for r in refused) == sorted(SECONDS)  # every source, by recording id
    assert all("purpose_not_granted" in r and "eval_only" in r for r in refused)
    with Registry(world.registry_url) as registry:
        recorded = registry.outputs([world.parent_id], kind="refused")
    assert recorded and recorded[0]["uses"] == ["eval_only"]
    assert list((world.root / "outputs" / world.parent_id / "refusals").glob("*.json"))  # the refusal record


def test_a_sample_the_replication_check_cannot_clear_is_withheld(client, world):
    # this world has no code cache for the snapshot: the replication check cannot run, so nothing is released
    page = _sample(client, world, ["ai_inference", "commercial_output"], seed="3")
    assert page.status_code == 200 and 'id="sample-withheld"' in page.text and 'id="player"' not in page.text
    assert "not checked" in page.text
    assert not list((world.root / "outputs").rglob("*.wav"))
    assert client.get("/outputs/" + "0" * 64 + "/audio").status_code == 404


def test_impact_lists_released_outputs_and_the_audio_plays(client, world, tmp_path):
    import hashlib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
    from output_helpers import output_record

    from lab.registry import Registry

    audio = tmp_path / "out.wav"
    audio.write_bytes(b"RIFF" + bytes(range(256)))
    sha = hashlib.sha256(audio.read_bytes()).hexdigest()
    record = output_record(world.child_id, path=str(audio)).model_copy(update={"record_id": sha, "audio_sha256": sha})
    with Registry(world.registry_url) as registry:
        registry.record_output(record)
    page = client.get("/impact", params={"q": "G-0006"})
    (listed,) = rows(section(page.text, "impact-outputs"))
    assert sha[:16] in listed and world.child_id in listed and "withdraw" in listed  # G-0006 says retrain
    played = client.get(f"/outputs/{sha}/audio")
    assert played.status_code == 200 and played.content == audio.read_bytes()
    assert played.headers["content-type"] == "audio/wav"
    audio.write_bytes(b"changed")
    assert client.get(f"/outputs/{sha}/audio").status_code == 404


@pytest.mark.parametrize(
    ("form", "message"),
    [({"territory": "ZZ"}, "territory"), ({"duration": "0"}, "duration"), ({"uses": []}, "at least one use")],
)
def test_a_malformed_sample_request_is_refused_as_bad_input(client, world, form, message):
    page = _sample(client, world, form.pop("uses", ["ai_inference"]), **form)
    assert page.status_code == 400 and message in section(page.text, "sample-error", "</p>")


@pytest.fixture(scope="module")
def statement(world):
    """The statement of the world's period, issued as `lab royalties statement` issues it."""
    from lab.registry import Registry
    from lab.rights.ledger import Ledger
    from lab.royalties.statements import issue

    with Registry(world.registry_url) as registry, Ledger(world.demo.env.ledger_url) as ledger:
        period = registry.checkpoint(world.parent_id)["created_at"][:7]
        return issue(registry, ledger, period, out=world.root / "royalties", key_dir=world.demo.env.home / "keys")


def test_royalties_without_a_statement_says_how_to_issue_one(world, tmp_path):
    client = TestClient(create_app(world.settings(registry_url=f"sqlite:///{tmp_path / 'empty.sqlite'}")))
    page = client.get("/royalties")
    assert page.status_code == 200 and 'id="royalties-none"' in page.text


def test_royalties_per_rights_holder(client, statement):
    import json

    header = json.loads((statement.folder / "statement.json").read_text())
    page = client.get("/royalties")
    assert page.status_code == 200 and statement.statement_id in page.text
    assert "pass" in section(page.text, "statement-signature", "</dd>")
    holders = rows(section(page.text, "holders"))
    assert len(holders) == len(header["totals"]) > 0
    for row, total in zip(holders, header["totals"]):
        assert total["rights_holder"] in row and total["payable"] in row and total["currency"] in row
    name = header["totals"][0]["rights_holder"]
    mine = rows(section(client.get("/royalties", params={"holder": name.upper()}).text, "holders"))
    assert mine and all(name in r for r in mine)
    links = re.findall(r'href="(/royalties/[^"]+/holders/[^"]+)"', page.text)
    assert len(links) == len(holders) and name in client.get(links[0]).text
    assert client.get(f"/royalties/{statement.period}/holders/nobody").status_code == 404
    assert client.get("/royalties", params={"period": "1999-01"}).status_code == 404


def test_a_changed_statement_shows_its_signature_failing(client, statement):
    lines = statement.folder / "lines.csv"
    original = lines.read_bytes()
    try:
        lines.write_bytes(original.replace(b",", b";", 1))
        assert "FAIL" in section(client.get("/royalties").text, "statement-signature", "</dd>")
    finally:
        lines.write_bytes(original)


def test_what_a_visitor_types_comes_back_escaped(client, world):
    hostile = '<script>alert("x")</script><img src=x onerror=1>'
    for url in (f"/checkpoints/{world.parent_id}", "/impact", "/royalties"):
        page = client.get(url, params={"q": hostile, "holder": hostile})
        assert page.status_code in (200, 404) and "<script>" not in page.text and "<img" not in page.text
        assert "&lt;script&gt;" in page.text or url == "/royalties"


def test_pages_write_nothing(client, world, statement):
    # SQLite's journal files and the ledger's verified-head cache (what `lab audit` refreshes too) may change
    cache = ("-wal", "-shm", ".heads.verified.json")

    def state() -> dict[str, tuple[int, int]]:
        files = (p for p in world.root.rglob("*") if p.is_file() and not p.name.endswith(cache))
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}

    before = state()
    for url in (
        "/",
        f"/checkpoints/{world.child_id}",
        f"/checkpoints/{world.child_id}/audit",
        "/impact?q=G-0006",
        "/sample",
        "/royalties",
    ):
        assert client.get(url).status_code == 200, url
    assert state() == before


def test_read_only_and_offline(client, world):
    for url in ("/", f"/checkpoints/{world.parent_id}", "/impact", "/royalties"):
        assert client.post(url).status_code == 405
    html = client.get(f"/checkpoints/{world.parent_id}").text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no asset from another host
    assert client.get("/static/style.css").status_code == 200


@pytest.mark.parametrize(
    ("args", "host", "warned"), [([], "127.0.0.1", False), (["--host", "0.0.0.0"], "0.0.0.0", True)]
)
def test_cli_binds_to_localhost_by_default(world, monkeypatch, args, host, warned):
    import uvicorn
    from typer.testing import CliRunner

    from lab.cli import _register, app

    env = world.demo.env
    monkeypatch.setenv("LAB_HOME", str(env.home))
    monkeypatch.setenv("LAB_REGISTRY_URL", world.registry_url)
    monkeypatch.setenv("LAB_LEDGER_URL", env.ledger_url)
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: seen.update(kw, app=application))
    _register()
    result = CliRunner().invoke(app, ["serve", *args, "--port", "8765"])
    assert result.exit_code == 0, result.output
    assert (seen["host"], seen["port"]) == (host, 8765)
    assert ("warning: serving on" in result.output) is warned
    page = TestClient(seen["app"]).get("/")  # the app reads the lab the environment names
    assert world.parent_id in page.text
