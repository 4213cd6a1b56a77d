"""Royalties end to end on the shared run: steps 10 and 20 of one run pay the step-20 card's own exposure
once, the statement reconciles against the signed cards, and a tampered statement fails."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from jobs_helpers import card_seconds

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stated(shared_run, demo, tmp_path_factory):
    from lab.registry import Registry
    from lab.rights.ledger import Ledger
    from lab.royalties.statements import issue

    where = tmp_path_factory.mktemp("royalties")
    reg = Registry(f"sqlite:///{where / 'registry.sqlite'}")
    for step in sorted(shared_run.checkpoints):
        reg.register(shared_run.checkpoints[step])
    created = reg.checkpoints()[-1]["created_at"]
    period = created[:7]
    with Ledger(demo.ledger_url) as led:
        done = issue(reg, led, period, out=where / "statements", key_dir=demo.home / "keys")
    return reg, done, period, where


def test_one_run_pays_its_last_card_once(stated, shared_run):
    reg, done, _, _ = stated
    lines = [dict(r) for r in _csv(done.folder / "lines.csv")]
    header = json.loads((done.folder / "statement.json").read_text())
    ids = {c["checkpoint_id"]: c["previous"] for c in header["checkpoints"]}
    first, last = (json.loads((shared_run.checkpoints[s] / "data_card.json").read_text()) for s in (10, 20))
    id10, id20 = first["identity"]["checkpoint_id"], last["identity"]["checkpoint_id"]
    assert ids == {id10: None, id20: id10}
    # paid ms per recording (a line per party repeats it: take it once per checkpoint × recording)
    paid: dict[str, int] = {}
    for (_ck, rec), ms in {(x["checkpoint_id"], x["recording_id"]): int(x["exposure_ms"]) for x in lines}.items():
        paid[rec] = paid.get(rec, 0) + ms
    want = {r: round(s * 1000) for r, s in card_seconds(shared_run.checkpoints[20]).items()}
    paying = {r for r in want if r in paid}
    assert paying and all(paid[r] == want[r] for r in paying), "steps 10 + 20 must pay exactly the step-20 card"
    assert not set(paid) - set(want)


def test_rerun_is_idempotent_and_reconciles(stated, demo):
    from lab.rights.ledger import Ledger
    from lab.royalties.reconcile import reconcile
    from lab.royalties.statements import issue

    reg, done, period, where = stated
    with Ledger(demo.ledger_url) as led:
        again = issue(reg, led, period, out=where / "statements", key_dir=demo.home / "keys")
    assert again.statement_id == done.statement_id and not again.reissued
    res = reconcile(done.folder, public_key=demo.public_key, registry=reg)
    assert res.ok, res.problem
    assert any("equals the signed cards" in c for c in res.checks)


def test_cli_reconcile_then_tampered_fails(stated, demo):
    reg, done, period, where = stated
    env = demo.env()
    cmd = [sys.executable, "-m", "lab", "royalties"]
    ok = subprocess.run(
        [*cmd, "reconcile", "--period", period, "--registry", reg.url], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    path = done.folder / "lines.csv"
    original = path.read_bytes()
    try:
        path.write_bytes(original.replace(b'"master"', b'"composition"', 1))
        for args in (["verify", str(done.folder)], ["reconcile", "--period", period, "--registry", reg.url]):
            p = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True)
            assert p.returncode == 1 and "modified" in p.stderr, p.stderr
    finally:
        path.write_bytes(original)


def _csv(path):
    import csv

    with path.open() as fh:
        yield from csv.DictReader(fh)
