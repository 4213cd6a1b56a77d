"""Trains the toy model; on its 2nd checkpoint save it starts a big file, signals, and hangs.

Usage: python kill_script.py OUT_DIR   (the test SIGKILLs it while it hangs)
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_toy import ExposureHook, Toy, factory, loss_fn  # noqa: E402

from lab.train.trainer import Trainer, TrainerConfig  # noqa: E402


class SlowSecondSave(ExposureHook):
    def __init__(self, out_dir: Path):
        super().__init__()
        self.out_dir, self.saves = out_dir, 0

    def write_checkpoint_extras(self, step, staging_dir):
        super().write_checkpoint_extras(step, staging_dir)  # model.pt
        self.saves += 1
        if self.saves == 2:
            with open(staging_dir / "big.bin", "wb") as f:
                f.write(b"\0" * (1 << 20))
                f.flush()
                (self.out_dir / "SAVING").write_text(str(staging_dir))
                time.sleep(120)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    cfg = TrainerConfig(max_steps=6, lr=1e-2, save_every=2, keep_last=None, log_every=1, progress=False)
    Trainer(Toy(), loss_fn, cfg, out_dir=out, hooks=SlowSecondSave(out)).fit(factory())
