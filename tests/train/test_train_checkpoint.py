from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from train_toy import ExposureHook, Toy, checksum, factory, noisy_loss_fn

from lab import checkpoint as ck
from lab.train.trainer import Trainer, TrainerConfig

torch.set_num_threads(1)


def cfg(**kw) -> TrainerConfig:
    base = dict(
        max_steps=10,
        lr=5e-3,
        warmup_steps=2,
        schedule="cosine",
        save_every=4,
        keep_last=None,
        log_every=3,
        progress=False,
        grad_clip=0.5,
        grad_accum=2,
        seed=7,
    )
    base.update(kw)
    return TrainerConfig(**base)


def _run(out_dir, stop_after=None, model_seed=0, **kw):
    hook = ExposureHook()
    t = Trainer(Toy(seed=model_seed), noisy_loss_fn, cfg(**kw), out_dir=out_dir, hooks=hook)
    return t, hook, t.fit(factory(bs=6, grad_accum=2, stop_after=stop_after))


def test_resume_reproduces_uninterrupted_run_bitwise(tmp_path):
    _, hook_u, full = _run(tmp_path / "full")
    assert [p.name for p in ck.list_complete(tmp_path / "full")] == ["step-000004", "step-000008", "step-000010"]

    # same run, "crashing" when asked for step 9's batches (after the step-8 checkpoint)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path / "part", stop_after=8)
    assert ck.latest_complete(tmp_path / "part").name == "step-000008"

    # scramble every global RNG and start from a different random model: all must come from the checkpoint
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    t, hook_r, resumed = _run(tmp_path / "part", model_seed=99)
    assert resumed.start_step == 8 and resumed.resumed_from.name == "step-000008"
    assert resumed.losses[8:] == full.losses[8:]  # steps 9-10, exactly
    assert resumed.losses == full.losses
    full_model = Toy()
    ck.load_model_files(full_model, tmp_path / "full" / "checkpoints" / "step-000010")
    assert checksum(t.module) == checksum(full_model)
    assert hook_r.seconds == hook_u.seconds and hook_r.batches == hook_u.batches == 20
    # same optimizer and scheduler state
    a = ck.load_training_state(tmp_path / "full" / "checkpoints" / "step-000010")
    b = ck.load_training_state(resumed.last_checkpoint)
    assert a.scheduler == b.scheduler and a.trainer["losses"] == b.trainer["losses"]
    for sa, sb in zip(a.optimizer["state"].values(), b.optimizer["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_when_already_done_and_plain_iterables(tmp_path):
    _run(tmp_path, max_steps=4)
    t = Trainer(Toy(), noisy_loss_fn, cfg(max_steps=4), out_dir=tmp_path)
    r = t.fit(factory(bs=6, grad_accum=2))
    assert r.start_step == r.step == 4 and len(r.losses) == 4 and r.last_checkpoint.name == "step-000004"
    t = Trainer(Toy(), noisy_loss_fn, cfg(max_steps=6), out_dir=tmp_path)
    with pytest.raises(ValueError, match="batches_factory"):
        t.fit(iter([]))
    # resume=False starts over (and the fresh run still writes its own checkpoints)
    t = Trainer(Toy(), noisy_loss_fn, cfg(max_steps=2, save_every=0), out_dir=tmp_path / "fresh")
    assert t.fit(factory(bs=6, grad_accum=2), resume=False).start_step == 0


def _state(step=1):
    return ck.TrainingState(
        optimizer={"state": {}},
        scheduler={"last_epoch": step},
        rng={"world_size": 1, "ranks": []},
        extras={"world_size": 1, "ranks": [{}]},
        trainer={"step": step, "losses": []},
    )


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_latest_complete_ignores_staging_incomplete_and_corrupt(tmp_path):
    root = ck.checkpoints_dir(tmp_path)
    assert ck.latest_complete(tmp_path) is None
    ck.write_checkpoint(tmp_path, 4, _state(4), lambda d: (d / "w.bin").write_bytes(b"x" * 100))
    # a folder without COMPLETE, a truncated one, a leftover staging folder of a dead writer
    shutil.copytree(root / "step-000004", root / "step-000008")
    (root / "step-000008" / "COMPLETE").unlink()
    ck.write_checkpoint(tmp_path, 6, _state(6), lambda d: (d / "w.bin").write_bytes(b"x" * 100))
    (root / "step-000006" / "w.bin").write_bytes(b"x" * 10)
    staging = root / f".staging-step-000012-{_dead_pid()}"
    shutil.copytree(root / "step-000004", staging)
    live = root / f".staging-step-000014-{os.getpid()}"
    live.mkdir()
    # a marker for a different step does not count either
    shutil.copytree(root / "step-000004", root / "step-000010")
    assert not ck.is_complete(root / "step-000010")

    assert ck.latest_complete(tmp_path) == root / "step-000004"
    assert ck.clean_stale(tmp_path) == [staging]
    assert live.exists()  # its writer (this process) is alive


def test_write_failure_leaves_nothing_and_republish_replaces(tmp_path):
    def boom(d):
        (d / "partial").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ck.write_checkpoint(tmp_path, 2, _state(2), boom)
    assert list(ck.checkpoints_dir(tmp_path).iterdir()) == []
    ck.write_checkpoint(tmp_path, 2, _state(2), lambda d: (d / "a").write_text("1"))
    ck.write_checkpoint(tmp_path, 2, _state(2), lambda d: (d / "b").write_text("2"))
    path = ck.latest_complete(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["COMPLETE", "b", "training_state"]
    marker = json.loads((path / "COMPLETE").read_text())
    assert marker["step"] == 2 and set(marker["files"]) == {"b"} | {
        f"training_state/{n}" for n in ("optimizer.pt", "scheduler.pt", "rng.pt", "extras.pt", "trainer.json")
    }


def test_prune_keeps_newest_and_publish_backup_is_restored(tmp_path):
    for s in (2, 4, 6, 8):
        ck.write_checkpoint(tmp_path, s, _state(s))
    removed = ck.prune(tmp_path, keep_last=2)
    assert [p.name for p in removed] == ["step-000002", "step-000004"]
    assert [p.name for p in ck.list_complete(tmp_path)] == ["step-000006", "step-000008"]
    assert ck.prune(tmp_path, None) == []
    # a crash inside publish_dir's swap leaves only `.step-N.old`: it is put back
    root = ck.checkpoints_dir(tmp_path)
    os.replace(root / "step-000008", root / ".step-000008.old")
    assert ck.latest_complete(tmp_path).name == "step-000006"
    ck.clean_stale(tmp_path)
    assert ck.latest_complete(tmp_path).name == "step-000008"


def test_rng_round_trip():
    state = ck.capture_rng_state()
    a = (random.random(), float(np.random.rand()), torch.rand(3))
    ck.restore_rng_state(state)
    b = (random.random(), float(np.random.rand()), torch.rand(3))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])


def test_trainer_keeps_last_n(tmp_path):
    _run(tmp_path, max_steps=8, save_every=2, keep_last=2)
    assert [p.name for p in ck.list_complete(tmp_path)] == ["step-000006", "step-000008"]
    assert not [p for p in ck.checkpoints_dir(tmp_path).iterdir() if p.name.startswith(".")]
