"""Fine-tune step through lab's own training path on a musicgen-small-sized decoder: tokens/s, peak memory, MFU.

    python benchmarks/bench_gpu_step.py            # on a CUDA host: 24 × 1024 decoder, bf16 (trainer=gpu)
    python benchmarks/bench_gpu_step.py --smoke    # tiny model on CPU: keeps the script itself tested

Everything goes through `lab.recipes.train.TrainRecipe`, as `lab train` does: the demo catalogue is
built and cleared, the snapshot re-checked against the ledger, the base built from config with
musicgen-small's decoder sizes (24 layers, d=1024, 16 heads, ffn 4096, 4 codebooks of 2048), the
EnCodec code cache encoded, and the Trainer (AdamW, schedule, clipping, autocast) runs with the
provenance hook metering exposure. Only checkpoint writing is off (save_every=0, no final save),
so the figure is the training step. MFU counts the decoder's training FLOPs (6·N per token for its
weights + 12·L·d·T for attention scores) against the GPU's dense bf16 peak (`--peak-tflops`,
default H100/H200 SXM: 989). The demo's clips are 4 s (200 frames at 50 Hz): a large batch keeps
the GPU busy.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SMALL = {
    "hidden_size": 1024,
    "num_layers": 24,
    "num_heads": 16,
    "ffn_dim": 4096,
    "codebook_size": 2048,
    "max_position_embeddings": 2048,
}


class StepTimer:
    """Wall time of every optimizer step (synchronised on CUDA so the clock sees the kernels)."""

    def __init__(self, cuda: bool):
        self.cuda, self.times, self.last = cuda, [], None

    def on_batch(self, step: int, batch) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self.last is not None and step != self.last[0]:
            self.times.append(now - self.last[1])
        if self.last is None or step != self.last[0]:
            self.last = (step, now)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    args = ap.parse_args(argv)

    import torch

    from lab.cli.demo import build_demo, compose
    from lab.recipes.clear import main as clear_main
    from lab.recipes.train import TrainRecipe, quiet_libraries
    from lab.train.distributed import init_distributed

    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print("no CUDA device: run with --smoke for a CPU check, or on a GPU for the figures")
        return 0
    if args.smoke:
        args.batch, args.steps, args.warmup = 2, 3, 1
    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="lab-bench-gpu-") as tmp:
        work = Path(tmp)
        home = work / ".lab"
        paths = [
            f"paths.home={home}",
            f"paths.experiments={work / 'experiments'}",
            f"ledger_url=sqlite:///{home}/ledger.sqlite",
        ]
        build_demo(home, f"sqlite:///{home}/ledger.sqlite")
        snapshot = clear_main(compose("clear", [*paths, "policy=commercial"])).snapshot_path
        spec = [] if args.smoke else [f"+model.spec.{k}={v}" for k, v in SMALL.items()]
        cfg = compose(
            "train",
            [
                *paths,
                "experiment=demo",
                "policy=commercial",
                f"data.snapshot={snapshot}",
                "logger=none",
                f"run_dir={work / 'run'}",
                f"trainer={'cpu' if args.smoke else 'gpu'}",
                f"trainer.batch_size={args.batch}",
                "trainer.progress=false",
                *spec,
            ],
        )
        recipe = TrainRecipe(cfg, init_distributed(device="cuda" if cuda else "cpu"))
        recipe.setup_data()
        model = recipe.setup_model().model
        cache = recipe.setup_codes()
        recipe.trainer_cfg = dataclasses.replace(
            recipe.setup_optimizer(),
            max_steps=args.warmup + args.steps,
            save_every=0,
            save_final=False,
            log_every=args.warmup + args.steps,
        )
        timer = StepTimer(cuda)
        trainer = recipe.setup_trainer(extra_hooks=[timer])
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result = trainer.fit(recipe.batches, resume=False)
        if cuda:
            torch.cuda.synchronize()
    dec = model.decoder.config
    frames = int(cache[0]["frames"]) if len(cache) else 0
    n_params = sum(p.numel() for p in model.decoder.parameters())
    dt = statistics.median(timer.times[args.warmup - 1 :] or timer.times)
    tokens = args.batch * frames  # one token = one frame of K codebooks
    flops = 6 * n_params * tokens + 12 * dec.num_hidden_layers * dec.hidden_size * frames * tokens
    mfu = flops / dt / (args.peak_tflops * 1e12) if cuda else float("nan")
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    hw = torch.cuda.get_device_name() if cuda else "cpu (smoke)"
    precision = "bf16 autocast" if recipe.trainer.precision == "bf16" else "fp32"
    print("| model | method | hardware | peak memory | tokens/s | MFU |")
    print("|---|---|---|---:|---:|---:|")
    print(
        f"| musicgen decoder {dec.num_hidden_layers} × {dec.hidden_size} ({n_params / 1e6:.0f}M) | "
        f"lab train recipe: full fine-tune, {precision}, AdamW | {hw} | "
        f"{peak:.1f} GiB | {tokens / dt:,.0f} | {mfu:.1%} |"
    )
    print(
        f"(batch {args.batch} × {frames} frames × {dec.num_codebooks} codebooks, median {dt * 1e3:.1f} ms/step "
        f"over {len(timer.times)} steps, final loss {result.losses[-1]:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
