"""End to end: a three-level fine-tune chain trained for real registers itself; rebuild, list, impact.

One module-scoped chain (demo catalogue; base 2 steps, a fine-tune of it, a fine-tune of that; one
step each, a checkpoint per step): the smallest run that has fine-tunes of fine-tunes.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from jobs_helpers import make_demo, stray_env, train  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("chain")
    runs: dict[str, Path] = {}
    with stray_env(tmp_path_factory.mktemp("env-unused")):
        demo = make_demo(root / "demo")
        base = None
        for name, steps in (("base", 2), ("ft1", 1), ("ft2", 1)):
            model = ["model=local_pretrained", f"model.path={base}"] if base else []
            summary = train(
                demo.train_cfg(root / "runs" / name, f"trainer.max_steps={steps}", "trainer.save_every=1", *model)
            )
            base = runs[name] = Path(summary["last_checkpoint"])
    return demo, runs, root / "runs"


def _registry(demo):
    from lab.registry import Registry

    return Registry(f"sqlite:///{demo.home / 'registry.sqlite'}")


def _strip(rows):
    return sorted(
        ({k: v for k, v in r.items() if k != "registered_at"} for r in rows), key=lambda r: r["checkpoint_id"]
    )


def test_training_registers_every_published_checkpoint(chain):
    from lab.cards import card_sha256
    from lab.util.canonical import sha256_file

    demo, runs, _ = chain
    with _registry(demo) as reg:
        rows = {r["checkpoint_id"]: r for r in reg.checkpoints()}
        n_sources = reg.counts()[1]
    assert sorted(rows) == ["base-step-000001", "base-step-000002", "ft1-step-000001", "ft2-step-000001"]
    assert rows["ft1-step-000001"]["parent_id"] == "base-step-000002"
    assert rows["ft2-step-000001"]["parent_id"] == "ft1-step-000001"
    ft2 = rows["ft2-step-000001"]
    assert ft2["folder"] == str(runs["ft2"].resolve()) and ft2["base_model_kind"] == "lab_checkpoint"
    assert ft2["weights_sha256"] == sha256_file(runs["ft2"] / "model.safetensors")
    assert ft2["data_card_sha256"] == card_sha256(runs["ft2"])
    assert n_sources > 0


def test_rebuild_round_trip_skips_tampered(chain, tmp_path):
    from lab.registry import Registry, rebuild

    demo, runs, runs_root = chain
    copy = shutil.copytree(runs_root, tmp_path / "runs")
    with _registry(demo) as reg:
        want = _strip(reg.checkpoints())
    with Registry(f"sqlite:///{tmp_path / 'fresh.sqlite'}") as fresh:
        report = rebuild(fresh, [runs_root], demo.public_key)
        assert report.skipped == [] and _strip(fresh.checkpoints()) == want
        tampered = copy / "ft1" / "checkpoints" / "step-000001"
        card = tampered / "data_card.json"
        card.write_text(card.read_text().replace('"seed": 0', '"seed": 1'))
        report = rebuild(fresh, [copy], demo.public_key)
        assert "ft1-step-000001" not in report.registered and len(report.registered) == 3
        ((folder, reason),) = report.skipped
        assert folder == str(tampered) and "signature" in reason and "data_card.json" in reason
        assert fresh.checkpoint("ft1-step-000001") is None


def test_checkpoints_list_json_with_audit(chain, monkeypatch):
    from typer.testing import CliRunner

    import lab.cli

    demo, runs, _ = chain
    monkeypatch.setenv("LAB_HOME", str(demo.home))
    monkeypatch.setenv("LAB_LEDGER_URL", demo.ledger_url)
    monkeypatch.delenv("LAB_REGISTRY_URL", raising=False)
    for name in ("registry", "audit"):
        importlib.import_module(f"lab.cli.{name}")
    r = CliRunner().invoke(lab.cli.app, ["audit", str(runs["ft2"])])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(lab.cli.app, ["checkpoints", "list", "--json"])
    assert r.exit_code == 0, r.output
    listed = {c["checkpoint_id"]: c for c in json.loads(r.stdout)["checkpoints"]}
    assert len(listed) == 4 and {c["status"] for c in listed.values()} == {"ok"}
    assert listed["ft2-step-000001"]["audit"]["ok"] is True and listed["ft1-step-000001"]["audit"] is None
    assert listed["ft2-step-000001"]["parent_id"] == "ft1-step-000001" and listed["ft2-step-000001"]["sources"] > 0


def test_impact_reaches_fine_tunes_of_fine_tunes(chain):
    from lab.audit.impact import TERMINATION_ORDER, impact
    from lab.cards import load_card
    from lab.rights.ledger import Ledger

    demo, runs, _ = chain
    own = load_card(runs["base"]).own_sources()
    grant = own["grant_ids"][0][0].as_py()
    with _registry(demo) as reg, Ledger(demo.ledger_url) as ledger:
        report = impact(reg, ledger, grant)
    got = {c.checkpoint_id: c for c in report.checkpoints}
    assert {"base-step-000002", "ft1-step-000001", "ft2-step-000001"} <= set(got)
    order = [TERMINATION_ORDER[got[c].rule] for c in ("base-step-000002", "ft1-step-000001", "ft2-step-000001")]
    assert order == sorted(order), "a fine-tune is never less strict than its parent"
    assert got["ft2-step-000001"].seconds >= got["base-step-000002"].seconds > 0
