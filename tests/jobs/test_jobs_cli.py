"""The commands a researcher types, as subprocesses: the main job and a Hydra sweep."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from jobs_helpers import QUIET, python

from lab.cards.signing import verify_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_main_job_end_to_end(tmp_path):
    """`lab demo` from nothing: catalogue, ledger, clearance, training, signed checkpoints."""
    env = dict(
        os.environ,
        LAB_HOME=str(tmp_path / ".lab"),
        LAB_EXPERIMENTS=str(tmp_path / "experiments"),
        OMP_NUM_THREADS="1",
        WANDB_MODE="disabled",
    )
    out = subprocess.run(
        [python(), "-m", "lab", "demo", "--json", "trainer.max_steps=6", "trainer.save_every=3", *QUIET],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)  # stdout is the JSON document alone: logs and progress go to stderr
    assert doc["clearance"]["cleared"] > 0 and doc["clearance"]["excluded"]
    ckpt = Path(doc["training"]["last_checkpoint"])
    assert ckpt.name == "step-000006" and doc["training"]["steps"] == 6
    assert verify_folder(ckpt, tmp_path / ".lab" / "keys" / "signing_key.pub.pem").ok
    audit = subprocess.run(
        [python(), "-m", "lab", "audit", str(ckpt), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]
    assert json.loads(audit.stdout)["ok"] is True


@pytest.mark.slow
def test_sweep_with_basic_launcher(demo, tmp_path):
    """`lab train -m ... trainer.lr=a,b`: one run folder with a checkpoint per sweep job."""
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [
            python(),
            "-m",
            "lab",
            "train",
            "-m",
            *demo.overrides(),
            "experiment=demo",
            f"policy={demo.policy}",
            f"data.snapshot={demo.snapshot}",
            *QUIET,
            "trainer.max_steps=2",
            "trainer.save_every=2",
            "trainer.lr=1e-3,3e-4",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=demo.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = []
    for job in jobs:
        assert (job / "checkpoints" / "step-000002" / "data_card.json").is_file()
        lrs.append(json.loads((job / "checkpoints" / "step-000002" / "config.lab.json").read_text())["trainer"]["lr"])
    assert sorted(lrs) == [3e-4, 1e-3]


@pytest.mark.slow
def test_train_says_what_it_did(demo, tmp_path):
    """`lab train … json=true`: stdout is one JSON summary (logs on stderr); without it, a closing table."""
    run = tmp_path / "run"
    args = [
        python(),
        "-m",
        "lab",
        "train",
        *demo.overrides(),
        "experiment=demo",
        f"policy={demo.policy}",
        f"data.snapshot={demo.snapshot}",
        *QUIET,
        "trainer.max_steps=2",
        "trainer.save_every=2",
        f"run_dir={run}",
    ]
    out = subprocess.run(
        [*args, "json=true"], cwd=tmp_path, env=demo.env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["steps"] == 2 and summary["last_checkpoint"] == str(run / "checkpoints" / "step-000002")
    assert summary["data_card"].endswith("step-000002/data_card.json") and Path(summary["data_card"]).is_file()
    assert summary["audit"] == f"lab audit {summary['last_checkpoint']}"
    again = subprocess.run(
        [*args, "trainer.max_steps=3", "trainer.save_every=3"],
        cwd=tmp_path,
        env=demo.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"last checkpoint  {run / 'checkpoints' / 'step-000003'}\n" in again.stdout  # whole, not cut to a column
    assert "audit it: lab audit" in again.stdout and "2 → 3" in again.stdout
