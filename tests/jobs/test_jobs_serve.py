"""`lab serve` in a real browser: Debian's Chromium driven by Playwright clicks through checkpoints →
card → impact → sample → royalties on the shared training run (no browser download: the system binary).

Screenshots go to $LAB_SCREENSHOTS when set (`LAB_SCREENSHOTS=docs/screenshots` refreshes the
README's), else to the test's tmp folder."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")


def _browser() -> str:
    for path in CHROMIUM:
        if Path(path).is_file() and os.access(path, os.X_OK):
            return path
    pytest.skip(f"no Chromium at {' or '.join(CHROMIUM)} (apt-get install chromium; CI installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def registry_copy(shared_run, demo, tmp_path) -> str:
    """A private copy of the demo's registry: what this test samples and pays stays out of the shared one."""
    src, dst = demo.home / "registry.sqlite", tmp_path / "registry.sqlite"
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:  # the backup API: WAL content included
        a.backup(b)
    return f"sqlite:///{dst}"


@pytest.fixture()
def served(registry_copy, demo, tmp_path):
    """The app over the demo's lab, served by uvicorn on a free localhost port in a thread."""
    import uvicorn

    from lab.cards.signing import PUBLIC_KEY_NAME
    from lab.serve import ServeSettings, create_app

    settings = ServeSettings(
        home=demo.home,
        experiments=demo.experiments,
        ledger_url=demo.ledger_url,
        registry_url=registry_copy,
        public_key=demo.home / "keys" / PUBLIC_KEY_NAME,
        sample_out=tmp_path / "outputs",
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.slow
def test_click_through_checkpoints_card_impact_sample(served, shared_run, demo, registry_copy, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from lab.audit.verify import audit_checkpoint
    from lab.cards import card_sha256, load_card
    from lab.registry import Registry
    from lab.rights.ledger import Ledger
    from lab.royalties.statements import issue

    shots = Path(os.environ.get("LAB_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    ids = {step: load_card(folder).card.identity.checkpoint_id for step, folder in shared_run.checkpoints.items()}
    last = ids[max(ids)]
    bundle = load_card(shared_run.last)
    top = min(bundle.sources.to_pylist(), key=lambda r: (-r["seconds_seen"], r["recording_id"]))  # the chart's order

    with Registry(registry_copy) as registry, Ledger(demo.ledger_url) as ledger:  # as `lab audit` records it
        report = audit_checkpoint(shared_run.last, public_key=demo.public_key, ledger=ledger)
        registry.record_audit(last, report.to_dict(), data_card_sha256=card_sha256(shared_run.last))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_browser(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            # checkpoints: both of the run's checkpoints, complete
            page.goto(served + "/")
            table = page.locator("#checkpoints")
            for cid in ids.values():
                expect(table).to_contain_text(cid)
            expect(table.locator("tr", has_text=last)).to_contain_text("complete")
            expect(table.locator("tr", has_text=last).locator(".badge.s-ok")).to_have_count(2)  # complete, ok
            page.screenshot(path=shots / "checkpoints.png")

            # card: audited now, every source listed, the largest bar first, then a search
            page.locator("#checkpoints").get_by_role("link", name=last, exact=True).click()
            expect(page.locator("h1")).to_contain_text(last)
            expect(page.locator("#status")).to_have_text("ok")
            expect(page.locator("#signature")).to_contain_text("files signed by")
            expect(page.locator("#sources tr")).to_have_count(1 + min(bundle.card.sources.rows, 50))
            expect(page.locator("#exposure text").first).to_have_text(top["recording_id"])
            page.screenshot(
                path=shots / "card.png", full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": 1700}
            )
            page.locator("#source-search input[name=q]").fill(top["recording_id"])
            page.locator("#source-search input[name=q]").press("Enter")
            expect(page.locator("#sources tr")).to_have_count(2)

            # impact: the grant behind that source touches this checkpoint
            grant = top["grant_ids"][0]
            page.locator("#sources").get_by_role("link", name=grant, exact=True).click()
            expect(page.locator("h1")).to_contain_text(grant)
            expect(page.locator("#impact-checkpoints")).to_contain_text(last)
            page.screenshot(path=shots / "impact.png")

            # sample: a use no grant gives is refused, naming each recording, grant and reason
            page.get_by_role("link", name="Sample", exact=True).click()
            form = page.locator("#sample-form")
            form.locator("#checkpoint").select_option(last)
            form.locator("input[name=uses][value=ai_inference]").uncheck()
            form.locator("input[name=uses][value=eval_only]").check()
            form.locator("#duration").fill("1")
            form.locator("#generate").click()
            expect(page.locator("#sample-refusal")).to_contain_text("refused")
            expect(page.locator("#refusals tr")).to_have_count(1 + bundle.card.sources.rows)
            expect(page.locator("#refusals")).to_contain_text("purpose_not_granted")

            # … and uses every grant gives are allowed: a player, and a credential that reads back trusted
            form.locator("input[name=uses][value=eval_only]").uncheck()
            form.locator("input[name=uses][value=ai_inference]").check()
            form.locator("input[name=uses][value=commercial_output]").check()
            form.locator("#prompt").fill("warm piano, slow")
            form.locator("#generate").click()
            expect(page.locator("#sample-result")).to_contain_text("released", timeout=120_000)
            expect(page.locator("#credential")).to_contain_text("trusted")
            playable = page.locator("#player").evaluate(
                "a => new Promise(ok => { if (a.readyState >= 1) ok(a.duration);"
                " a.onloadedmetadata = () => ok(a.duration); a.onerror = () => ok(-1); a.load(); })"
            )
            assert playable == pytest.approx(1.0, abs=0.1)  # the browser decoded the released WAV
            page.screenshot(path=shots / "sample.png")

            # royalties: the run's statement, as `lab royalties statement` issues it, per rights holder
            with Registry(registry_copy) as registry, Ledger(demo.ledger_url) as ledger:
                period = registry.checkpoint(last)["created_at"][:7]
                issued = issue(registry, ledger, period, out=tmp_path / "royalties", key_dir=demo.home / "keys")
            page.get_by_role("link", name="Royalties", exact=True).click()
            expect(page.locator("#statement")).to_contain_text(issued.statement_id)
            expect(page.locator("#statement-signature")).to_contain_text("pass")
            holders = page.locator("#holders tr")
            assert holders.count() > 1
            page.screenshot(path=shots / "royalties.png")
            holders.nth(1).get_by_role("link").click()
            expect(page.locator("body")).to_contain_text(period)
        finally:
            browser.close()
