"""Files are written with the process umask like any tool's (0644 under umask 022): weights, cards, model
card, signature, training state, snapshot; the signing private key stays 0600 whatever the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def _lab() -> list[str]:
    script = Path(sys.executable).with_name("lab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lab"]


def _modes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): oct(stat.S_IMODE(p.stat().st_mode)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_checkpoint_and_snapshot_files_follow_the_umask(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env.update(
        LAB_HOME=str(tmp_path / "home"),
        LAB_EXPERIMENTS=str(tmp_path / "experiments"),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
    )

    def lab(umask: int, *args: str) -> str:
        r = subprocess.run(
            [*_lab(), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            preexec_fn=lambda: os.umask(umask),
        )
        assert r.returncode == 0, f"lab {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    snapshot = Path(json.loads(lab(0o022, "demo", "--no-train", "--json"))["clearance"]["path"])
    lab(
        0o022,
        "train",
        "experiment=demo",
        "policy=commercial",
        f"data.snapshot={snapshot}",
        "run_name=modes",
        "trainer.max_steps=2",
        "trainer.save_every=2",
        "trainer.progress=false",
        "logger=none",
    )
    checkpoint = tmp_path / "experiments" / "runs" / "modes" / "checkpoints" / "step-000002"
    for folder in (checkpoint, snapshot):
        modes = _modes(folder)
        assert "model.safetensors" in modes or "items.parquet" in modes or len(modes) > 3, modes
        wrong = {name: m for name, m in modes.items() if m != "0o644"}
        assert not wrong, f"{folder}: not 0644 under umask 022: {wrong}"
    assert {"model.safetensors", "data_card.json", "README.md", "model.sig", "COMPLETE"} <= set(_modes(checkpoint))
    keys = tmp_path / "home" / "keys"
    private = [p for p in keys.iterdir() if p.suffix == ".pem" and "PRIVATE" in p.read_text()]
    assert private and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in private), _modes(keys)

    # the umask, not a fixed 0644: under 077 a new snapshot is private to its owner
    private_snapshot = Path(json.loads(lab(0o077, "clear", "policy=research", "json=true"))["path"])
    assert set(_modes(private_snapshot).values()) == {"0o600"}, _modes(private_snapshot)
