"""Two-rank gloo run for test_train_ddp.py. Usage:

    python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_script.py OUT_DIR

1. "full": 6 steps, grad_accum 2, checkpoint every 2, each rank on its own batches;
2. "part": the same run crashing (on both ranks) after step 4, then resumed in fresh
   Trainers to step 6 (must match "full" exactly).
Each rank writes OUT_DIR/rank<r>.json with what it saw.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from train_toy import ExposureHook, Toy, checksum, factory, loss_fn  # noqa: E402

from lab.train.distributed import cleanup, init_distributed  # noqa: E402
from lab.train.trainer import Trainer, TrainerConfig  # noqa: E402

GRAD_ACCUM = 2


class Recorder(ExposureHook):
    def __init__(self):
        super().__init__()
        self.extras_calls: list[int] = []

    def write_checkpoint_extras(self, step, staging_dir):
        self.extras_calls.append(step)
        super().write_checkpoint_extras(step, staging_dir)


def run(info, out: Path, stop_after=None):
    local: list[float] = []

    def recording_loss(model, batch):
        loss = loss_fn(model, batch)
        local.append(loss.item())
        return loss

    hook = Recorder()
    cfg = TrainerConfig(
        max_steps=6, lr=1e-2, save_every=2, keep_last=None, log_every=2, grad_accum=GRAD_ACCUM, progress=False, seed=3
    )
    trainer = Trainer(Toy(seed=info.rank), recording_loss, cfg, out_dir=out, dist=info, hooks=hook)
    crashed = False
    try:
        result = trainer.fit(factory(bs=4, grad_accum=GRAD_ACCUM, rank=info.rank, stop_after=stop_after))
    except RuntimeError as e:
        assert "simulated crash" in str(e)
        crashed, result = True, None
    return trainer, hook, local, result, crashed


def main():
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    info = init_distributed(device="cpu")
    assert info.world_size == 2 and info.backend == "gloo"
    t, hook, local, full, _ = run(info, out / "full")
    frozen_before = checksum(Toy(seed=0).encoder)
    _, _, _, _, crashed = run(info, out / "part", stop_after=4)
    t2, hook2, _, resumed, _ = run(info, out / "part")
    report = {
        "rank": info.rank,
        "losses": full.losses,
        "local_micro_losses": local,
        "checksum": checksum(t.module),
        "frozen_checksum": checksum(t.module.encoder),
        "frozen_init_checksum": frozen_before,
        "extras_calls": hook.extras_calls,
        "exposure_batches": hook.batches,
        "crashed": crashed,
        "resumed_start": resumed.start_step,
        "resumed_losses": resumed.losses,
        "resumed_checksum": checksum(t2.module),
        "resumed_exposure": hook2.state_dict(),
        "full_exposure": hook.state_dict(),
    }
    (out / f"rank{info.rank}.json").write_text(json.dumps(report))
    cleanup()


if __name__ == "__main__":
    main()
