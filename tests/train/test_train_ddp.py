"""DDP on CPU (gloo) with torchrun: 2 ranks, frozen encoder, accumulation, checkpoints, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lab import checkpoint as ck

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_ddp_two_ranks(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parents[1]), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(HERE / "ddp_script.py"),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))

    # the recorded loss is the mean over micro-batches and then over ranks, identical on both ranks
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == 6
    for step in range(6):
        per_rank = [sum(r["local_micro_losses"][2 * step : 2 * step + 2]) / 2 for r in (r0, r1)]
        assert r0["losses"][step] == pytest.approx(sum(per_rank) / 2, rel=1e-6)
    assert r0["local_micro_losses"] != r1["local_micro_losses"]  # the ranks did see different data

    # weights identical across ranks (DDP broadcast rank 0's init; grads all-reduced); frozen part untouched
    assert r0["checksum"] == r1["checksum"]
    assert r0["frozen_checksum"] == r1["frozen_checksum"] == r0["frozen_init_checksum"]

    # only rank 0 wrote checkpoints; every rank's RNG and hook state is inside
    assert r0["extras_calls"] == [2, 4, 6] and r1["extras_calls"] == []
    full = tmp_path / "full"
    assert [p.name for p in ck.list_complete(full)] == ["step-000002", "step-000004", "step-000006"]
    assert not [p for p in ck.checkpoints_dir(full).iterdir() if p.name.startswith(".")]
    state = ck.load_training_state(ck.latest_complete(full))
    assert state.rng["world_size"] == 2 and len(state.rng["ranks"]) == 2
    assert not torch.equal(state.rng["ranks"][0]["torch"], state.rng["ranks"][1]["torch"])
    assert [s["exposure"] for s in state.extras["ranks"]] == [r0["full_exposure"], r1["full_exposure"]]
    assert r0["exposure_batches"] == r1["exposure_batches"] == 12

    # crash after step 4 on both ranks, resume at 4: same losses, same weights as the uninterrupted run
    assert r0["crashed"] and r1["crashed"]
    assert r0["resumed_start"] == r1["resumed_start"] == 4
    assert r0["resumed_losses"] == r0["losses"] and r1["resumed_losses"] == r1["losses"]
    assert r0["resumed_checksum"] == r1["resumed_checksum"] == r0["checksum"]
    assert r0["resumed_exposure"] == r0["full_exposure"] and r1["resumed_exposure"] == r1["full_exposure"]
