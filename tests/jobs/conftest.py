"""Fixtures for the job-level tests of `lab train`.

One demo catalogue + ledger + commercial snapshot per session (`demo`), and one shared tiny
training run on it (`shared_run`: 20 steps, checkpoints at 10 and 20) that the read-only tests
inspect. Tests that change the ledger build their own demo (`make_demo`).

Every path goes into the composed config explicitly (`paths.home`, `paths.experiments`,
`ledger_url`, `run_dir`), so nothing depends on the environment or the working directory; the
autouse fixture also points LAB_HOME / LAB_EXPERIMENTS at empty per-test folders, so code that
reads the environment instead of the config would show up as a failure, not as a silent write
into ./.lab.
"""

from __future__ import annotations

import pytest
import torch
from jobs_helpers import (
    SHARED_BATCH,
    SHARED_SAVE_EVERY,
    SHARED_STEPS,
    DemoEnv,
    SharedRun,
    make_demo,
    reset_hydra,
    stray_env,
    train,
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory):
    torch.set_num_threads(1)
    reset_hydra()
    with stray_env(tmp_path_factory.mktemp("env-unused")):
        yield


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> DemoEnv:
    torch.set_num_threads(1)
    with stray_env(tmp_path_factory.mktemp("env-unused")):
        return make_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def shared_run(demo, tmp_path_factory) -> SharedRun:
    """The one tiny run the read-only tests share (base built from config, commercial snapshot)."""
    from lab import checkpoint as ck

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("runs") / "shared"
    cfg = demo.train_cfg(
        run_dir,
        f"trainer.max_steps={SHARED_STEPS}",
        f"trainer.save_every={SHARED_SAVE_EVERY}",
        f"trainer.batch_size={SHARED_BATCH}",
    )
    with stray_env(tmp_path_factory.mktemp("env-unused")):
        summary = train(cfg)
    ckpts = {ck.step_of(p): p for p in ck.list_complete(run_dir)}
    return SharedRun(run_dir, summary, cfg, ckpts)
