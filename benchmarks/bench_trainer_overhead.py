"""Overhead of `lab.train.Trainer` over a bare PyTorch loop doing the same work.

    OMP_NUM_THREADS=1 python benchmarks/bench_trainer_overhead.py [--steps 40] [--repeats 5]

Same model (copied from one initialisation), same pre-built batches, same AdamW
(`build_optimizer`), clipping and LR schedule (`build_scheduler`). The Trainer runs with
checkpointing off, progress bar off, metrics.jsonl on, and a hook doing the exposure
meter's work (a dict update per sample). After a warm-up, three measurements:

1. whole runs, alternating: `--repeats` adjacent (bare, Trainer.fit) pairs, medians of
   steps/s, ratio = median of the per-pair ratios ("best": fastest run of each);
2. step-interleaved: one Trainer.fit whose batch iterator runs one bare step (on its own
   model copy) before handing over each batch, so both loops alternate step by step and
   see the same machine load; per-step times, medians;
3. the engine's fixed cost per step, on a model with ~no compute (CPU time).

On shared cores (1) swings by +-15 %; (2) and (3) are the numbers to trust.
Target: ratio >= 0.97.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
import time
from typing import Any

import torch
from torch import nn

from lab.train.trainer import Trainer, TrainerConfig, TrainerHooks, build_optimizer, build_scheduler


class Exposure(TrainerHooks):
    """What the exposure meter does per micro-batch: one dict update per sample."""

    state_key = "exposure"

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def on_batch(self, step: int, batch: dict[str, Any]) -> None:
        seconds = self.seconds
        for rid, sec in zip(batch["recording_ids"], batch["seconds"]):
            seconds[rid] = seconds.get(rid, 0.0) + sec

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds = dict(state["seconds"])


def make_model(width: int, depth: int, dim: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(dim, width), nn.GELU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.GELU()]
    layers.append(nn.Linear(width, dim))
    return nn.Sequential(*layers)


def loss_fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch["x"]), batch["y"])


def make_batches(n: int, bs: int, dim: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = torch.randn(bs, dim, generator=g)
        out.append({"x": x, "y": x.roll(1, dims=1).tanh(),
                    "recording_ids": [f"rec-{(i * bs + j) % 97}" for j in range(bs)], "seconds": [10.0] * bs})
    return out


class Clock:
    """Wall and process-CPU time; CPU time is the steadier one on shared cores."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def bare_loop(model: nn.Module, cfg: TrainerConfig, batches: list[dict[str, Any]]) -> tuple[Clock, list[float]]:
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    params = [p for g in opt.param_groups for p in g["params"]]
    losses = []
    with Clock() as clock:
        for batch in batches:
            loss = loss_fn(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return clock, losses


def trainer_loop(model: nn.Module, cfg: TrainerConfig, batches: list[dict[str, Any]]) -> tuple[Clock, list[float]]:
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, loss_fn, cfg, out_dir=out, hooks=Exposure())
        with Clock() as clock:
            result = trainer.fit(batches, resume=False)
        return clock, result.losses


def interleaved(init: nn.Module, cfg: TrainerConfig, batches: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Per-step seconds of the bare loop and of Trainer.fit, run step by step in turn."""
    bare_model = copy.deepcopy(init)
    opt = build_optimizer(bare_model, cfg)
    sched = build_scheduler(opt, cfg)
    params = [p for g in opt.param_groups for p in g["params"]]
    bare_times: list[float] = []
    trainer_times: list[float] = []

    def source():
        handed = None
        for batch in batches:
            if handed is not None:  # the Trainer's whole step happened since we handed a batch out
                trainer_times.append(time.perf_counter() - handed)
            t0 = time.perf_counter()
            loss = loss_fn(bare_model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss.item()
            bare_times.append(time.perf_counter() - t0)
            handed = time.perf_counter()
            yield batch
        trainer_times.append(time.perf_counter() - handed)

    with tempfile.TemporaryDirectory() as out:
        # one step more than there are batches: the Trainer asks again, which times its last step
        trainer = Trainer(copy.deepcopy(init), loss_fn, dataclasses.replace(cfg, max_steps=len(batches) + 1),
                          out_dir=out, hooks=Exposure())
        trainer.fit(source(), resume=False)
    return bare_times, trainer_times


def alternate(init: nn.Module, cfg: TrainerConfig, batches: list[dict[str, Any]], repeats: int) -> list[dict]:
    """`repeats` adjacent (bare, trainer) whole runs; which goes first alternates."""
    runs = []
    for i in range(repeats):
        order = ("bare", "trainer") if i % 2 == 0 else ("trainer", "bare")
        pair = {}
        for name in order:
            fn = bare_loop if name == "bare" else trainer_loop
            pair[name] = fn(copy.deepcopy(init), cfg, batches)
        runs.append(pair)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    init = make_model(args.width, args.depth, args.dim)
    n_params = sum(p.numel() for p in init.parameters())
    cfg = TrainerConfig(max_steps=args.steps, lr=1e-3, warmup_steps=5, schedule="cosine", grad_clip=1.0,
                        log_every=10, save_every=0, save_final=False, progress=False)
    batches = make_batches(args.steps, args.batch, args.dim)

    warm_cfg = dataclasses.replace(cfg, max_steps=args.warmup)
    bare_loop(copy.deepcopy(init), warm_cfg, batches[: args.warmup])
    trainer_loop(copy.deepcopy(init), warm_cfg, batches[: args.warmup])

    # 1. whole runs, alternating
    runs = alternate(init, cfg, batches, args.repeats)
    same = all(r["bare"][1] == r["trainer"][1] for r in runs)
    bare_rate = statistics.median(args.steps / r["bare"][0].wall for r in runs)
    trainer_rate = statistics.median(args.steps / r["trainer"][0].wall for r in runs)
    run_ratio = statistics.median(r["bare"][0].wall / r["trainer"][0].wall for r in runs)
    bare_best = max(args.steps / r["bare"][0].wall for r in runs)  # interference only ever slows a run down
    trainer_best = max(args.steps / r["trainer"][0].wall for r in runs)

    # 2. step-interleaved (batches reused for more samples)
    bare_times, trainer_times = interleaved(init, cfg, batches * args.repeats)
    bare_step, trainer_step = statistics.median(bare_times), statistics.median(trainer_times)

    # 3. fixed per-step cost where compute is ~0
    tiny = make_model(8, 1, 8)
    tiny_batches = make_batches(300, args.batch, 8)
    tiny_runs = alternate(tiny, dataclasses.replace(cfg, max_steps=len(tiny_batches)), tiny_batches, 3)
    overhead_us = statistics.median(
        (r["trainer"][0].cpu - r["bare"][0].cpu) / len(tiny_batches) * 1e6 for r in tiny_runs)

    print(f"toy MLP {n_params / 1e6:.2f}M params, batch {args.batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {bare_step * 1000:.1f} ms/step; losses identical: {'yes' if same else 'NO'}")
    print()
    print("| loop | steps/s | ratio | best steps/s | best ratio |")
    print("|---|---:|---:|---:|---:|")
    print(f"| bare PyTorch, whole runs ({args.repeats}x{args.steps} steps, alternating) | {bare_rate:.2f} | 1.000 "
          f"| {bare_best:.2f} | 1.000 |")
    print(f"| Trainer.fit, whole runs | {trainer_rate:.2f} | {run_ratio:.3f} | {trainer_best:.2f} "
          f"| {trainer_best / bare_best:.3f} |")
    print(f"| bare PyTorch, step-interleaved ({len(bare_times)} steps) | {1 / bare_step:.2f} | 1.000 "
          f"| {1 / min(bare_times):.2f} | 1.000 |")
    print(f"| Trainer.fit, step-interleaved | {1 / trainer_step:.2f} | {bare_step / trainer_step:.3f} "
          f"| {1 / min(trainer_times):.2f} | {min(bare_times) / min(trainer_times):.3f} |")
    print()
    print(f"Trainer fixed overhead: {overhead_us:.0f} us/step (CPU time; exposure hook over {args.batch} samples, "
          f"metrics.jsonl) = {overhead_us / (bare_step * 1e6) * 100:.2f}% of a {bare_step * 1000:.1f} ms step")


if __name__ == "__main__":
    main()
