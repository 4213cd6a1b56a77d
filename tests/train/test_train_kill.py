"""kill -9 in the middle of writing a checkpoint: the previous one stays the trusted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from train_toy import ExposureHook, Toy, factory, loss_fn

from lab import checkpoint as ck
from lab.train.trainer import Trainer, TrainerConfig

HERE = Path(__file__).resolve().parent
torch.set_num_threads(1)


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parents[1]), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "kill_script.py"), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 45
        while not (tmp_path / "SAVING").exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the trainer never reached its 2nd save"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    root = ck.checkpoints_dir(tmp_path)
    staging = Path((tmp_path / "SAVING").read_text())
    assert staging.parent == root and staging.name == f".staging-step-000004-{proc.pid}"
    assert (staging / "big.bin").exists() and not (staging / "COMPLETE").exists()
    latest = ck.latest_complete(tmp_path)
    assert latest == root / "step-000002" and [p.name for p in ck.list_complete(tmp_path)] == ["step-000002"]
    # the trusted checkpoint is intact: every file loads
    state = ck.load_training_state(latest)
    assert state.step == 2 and len(state.trainer["losses"]) == 2
    assert state.extras["ranks"][0]["exposure"]["batches"] == 2
    model = Toy()
    ck.load_model_files(model, latest)

    # the next run cleans the leftover up and resumes from step 2
    hook = ExposureHook()
    cfg = TrainerConfig(max_steps=4, lr=1e-2, save_every=2, keep_last=None, progress=False)
    r = Trainer(Toy(), loss_fn, cfg, out_dir=tmp_path, hooks=hook).fit(factory())
    assert not staging.exists()
    assert r.start_step == 2 and r.step == 4 and hook.batches == 4
    assert [p.name for p in ck.list_complete(tmp_path)] == ["step-000002", "step-000004"]
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
