"""Impact reaches outputs: a grant → its checkpoints (and descendants) → their released outputs, keep or withdraw."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from output_helpers import output_record  # noqa: E402
from registry_helpers import entry  # noqa: E402

import lab.cli  # noqa: E402
from lab.audit.impact import impact  # noqa: E402
from lab.registry import Registry  # noqa: E402
from lab.rights.ledger import Ledger  # noqa: E402


@pytest.fixture
def world(tmp_path):
    """base saw r1 under G1 (retrain); ft fine-tunes base; q saw r1 under G1 with retain; other never saw G1."""
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    with Registry(url) as reg, Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}") as led:
        reg.add(
            [
                entry("base", rows=[("r1", "G1", "retrain", 4)]),
                entry("ft", "base", rows=[("r2", "G2", "retain", 1)]),
                entry("q", rows=[("r1", "G1", "retain", 2)]),
                entry("other", rows=[("r2", "G2", "retain", 1)]),
            ]
        )
        for n, (cid, kind) in enumerate(
            [
                ("base", "released"),
                ("base", "released"),
                ("base", "withheld"),
                ("base", "refused"),
                ("ft", "released"),
                ("q", "released"),
                ("other", "released"),
            ]
        ):
            reg.record_output(output_record(cid, kind, n=n))
        yield url, reg, led


def test_outputs_of_touched_checkpoints_and_descendants(world):
    _, reg, led = world
    rep = impact(reg, led, "G1")
    by_cp = {}
    for o in rep.outputs:
        by_cp.setdefault(o.checkpoint_id, []).append(o)
    assert set(by_cp) == {"base", "ft", "q"}  # other's output is untouched; withheld/refused released nothing
    assert len(by_cp["base"]) == 2 and len(by_cp["ft"]) == 1
    assert {o.action for o in by_cp["base"] + by_cp["ft"]} == {"withdraw"}  # retrain, inherited by the fine-tune
    assert by_cp["ft"][0].rule == "retrain" and by_cp["q"][0].action == "keep"
    assert [o.created_at for o in by_cp["base"]] == sorted((o.created_at for o in by_cp["base"]), reverse=True)
    assert rep.output_counts() == {"keep": 1, "withdraw": 3}
    assert rep.counts() == {"retain": 1, "retrain": 2, "retire": 0}  # checkpoint counts unchanged
    d = rep.to_dict()
    assert d["output_counts"] == {"keep": 1, "withdraw": 3}
    assert {o["record_id"] for o in d["outputs"]} == {o.record_id for o in rep.outputs}
    assert all(o["path"] and o["audio_sha256"] for o in d["outputs"])


def test_retired_checkpoint_withdraws_and_untouched_lists_nothing(world):
    _, reg, led = world
    reg.add([entry("q", rows=[("r1", "G1", "retire", 2)])])  # re-registered under a stricter rule
    rep = impact(reg, led, "G1")
    assert {o.checkpoint_id: o.action for o in rep.outputs}["q"] == "withdraw"
    assert impact(reg, led, "G-unknown").outputs == []
    rep = impact(reg, led, "r2")  # a recording id: ft and other saw it, both retain
    assert {o.checkpoint_id for o in rep.outputs} == {"ft", "other"}
    assert {o.action for o in rep.outputs} == {"keep"}


def test_impact_cli_prints_outputs(world):
    url, _, led = world
    lab.cli._register()  # each command module adds itself to lab.cli.app on first import
    runner = CliRunner()
    args = ["impact", "G1", "--registry", url, "--ledger", led.url]
    res = runner.invoke(lab.cli.app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["output_counts"] == {"keep": 1, "withdraw": 3} and len(got["outputs"]) == 4
    res = runner.invoke(lab.cli.app, args, env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "released outputs of these checkpoints (1 keep, 3 withdraw)" in res.output
    assert "withdraw: withdraw the output" in res.output and "/out/base/0.wav" in res.output
