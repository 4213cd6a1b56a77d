"""A small, model-agnostic training engine: AdamW, LR schedule, accumulation, clipping,
bf16 autocast on CUDA, DDP, atomic resumable checkpoints, hooks.

It trains any `nn.Module` given `loss_fn(model, batch) -> scalar Tensor` and batches
(dicts: tensors go to the device, everything else passes through untouched)::

    trainer = Trainer(model, loss_fn, TrainerConfig(max_steps=1000), out_dir=run_dir, hooks=my_hooks)
    result = trainer.fit(lambda start_step: loader.iter_from(start_step))

`fit` resumes from the newest complete checkpoint in `out_dir` by default, restoring
weights, optimizer, scheduler, every rank's RNG, step, loss history and hook state, then
asks the factory for batches from `start_step` (optimizer steps already done; each step
consumes `grad_accum` batches per rank). A resumed run reproduces the uninterrupted
run's losses exactly (CPU, fp32, one process) when the factory is deterministic in
`start_step`.

Under DDP every rank must yield the same number of batches; `loss_fn` must call the
model it is given (the DDP wrapper), not the inner module, for gradients to sync.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lab import checkpoint as ckpt
from lab.train.distributed import (
    DistInfo,
    all_reduce_mean,
    broadcast_object,
    gather_object,
    init_distributed,
    unwrap_model,
    wrap_ddp,
)
from lab.train.logging import METRICS_FILE, MetricsLog

log = logging.getLogger(__name__)

__all__ = [
    "TrainerConfig",
    "TrainerHooks",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "seed_everything",
    "to_device",
]

SCHEDULES = ("cosine", "constant", "linear")
PRECISIONS = ("fp32", "bf16")
LossFn = Callable[[nn.Module, Any], torch.Tensor]
BatchesFactory = Callable[[int], Iterable[Any]]


@dataclass
class TrainerConfig:
    """Everything that shapes the optimisation trajectory, plus logging/saving cadence."""

    max_steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "cosine"  # "cosine" | "constant" | "linear" (after linear warmup)
    min_lr_ratio: float = 0.0  # floor of cosine/linear decay, as a fraction of lr
    grad_clip: float | None = 1.0  # max global grad norm; None or 0 disables
    grad_accum: int = 1  # micro-batches per optimizer step
    precision: str = "fp32"  # "fp32" | "bf16" (autocast on CUDA only; fp32 on CPU)
    log_every: int = 10  # optimizer steps between metric rows (0: only the last step)
    save_every: int = 200  # optimizer steps between checkpoints (0: none periodic)
    keep_last: int | None = 3  # complete checkpoints to keep (None/0: all)
    save_final: bool = True  # checkpoint the last step when fit ends
    seed: int = 0  # each rank seeds with seed + rank on a fresh start
    progress: bool = True  # tqdm bar on rank 0
    frozen_eval: bool = True  # fit() puts the model in train mode, fully frozen submodules in eval

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2:
            raise ValueError("betas must have two values")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        for name in ("max_steps", "grad_accum"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("warmup_steps", "log_every", "save_every"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError("grad_clip must be >= 0 (or None)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainerConfig:
        """Build from a plain mapping (e.g. a Hydra group); unknown keys raise instead of vanishing."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown trainer config keys: {unknown}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


class TrainerHooks:
    """Extension points. Subclass and override what you need (or pass any object with
    some of these methods; missing ones are skipped).

    - `on_batch(step, batch)`: every micro-batch actually trained on, on every rank,
      called once optimizer step `step` (1-based) that used it has been applied; the
      batch as the iterator yielded it (before the move to the device, so reading
      counts from it never syncs a GPU). A partial step dropped because the batches ran
      out is never reported.
    - `on_log(step, metrics)`: rank 0, every `log_every` steps and at the end.
    - `state_dict()` / `load_state_dict(state)`: extra per-rank state for
      `training_state/extras.pt` (exposure so far, sampler position). Gathered from
      every rank at each save; on resume each rank gets back its own.
      Inside `write_checkpoint_extras`, `trainer.gathered_state(self)` is the list of
      this hook's states from every rank (e.g. to sum exposure across ranks).
    - `write_checkpoint_extras(step, staging_dir)`: rank 0, before the folder is
      published, after `training_state/` is written. Overriding it takes over writing
      the model files; the default (also `super()`) is `save_pretrained` / `model.pt`.
    - `seal_checkpoint(step, staging_dir)`: rank 0, after `COMPLETE` is written and
      before the folder is published (e.g. a signature over every file).
    - `load_model_weights(model, checkpoint_dir)`: how to read them back on resume;
      default reads `model.pt` / safetensors written by the default writer.
    """

    trainer: Trainer | None = None
    state_key: str | None = None  # key in extras.pt; default: the class name

    def on_batch(self, step: int, batch: Any) -> None:
        pass

    def on_log(self, step: int, metrics: Mapping[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def write_checkpoint_extras(self, step: int, staging_dir: Path) -> None:
        if self.trainer is None:
            raise RuntimeError("hook is not bound to a Trainer")
        ckpt.save_model_files(self.trainer.module, staging_dir)

    def seal_checkpoint(self, step: int, staging_dir: Path) -> None:
        pass

    def load_model_weights(self, model: nn.Module, checkpoint_dir: Path) -> None:
        ckpt.load_model_files(model, checkpoint_dir)


def _overrides(hook: Any, name: str) -> bool:
    """Does `hook` provide its own `name`, rather than TrainerHooks' default (or nothing)?"""
    impl = getattr(type(hook), name, None)
    if impl is None:
        return callable(getattr(hook, name, None))  # set on the instance
    return impl is not getattr(TrainerHooks, name)


class _HookSet:
    """Fans calls out to the hooks given to a Trainer; precomputes who overrides what."""

    def __init__(self, hooks: Any, trainer: Trainer):
        if hooks is None:
            hooks = []
        elif not isinstance(hooks, (list, tuple)):
            hooks = [hooks]
        self.hooks = list(hooks)
        for h in self.hooks:
            if isinstance(h, TrainerHooks):
                h.trainer = trainer
        self._on_batch = [h.on_batch for h in self.hooks if _overrides(h, "on_batch")]
        self._on_log = [h.on_log for h in self.hooks if _overrides(h, "on_log")]
        self._writers = [h.write_checkpoint_extras for h in self.hooks if _overrides(h, "write_checkpoint_extras")]
        self._sealers = [h.seal_checkpoint for h in self.hooks if _overrides(h, "seal_checkpoint")]
        self._loaders = [h.load_model_weights for h in self.hooks if _overrides(h, "load_model_weights")]
        self.keys: dict[int, str] = {}
        taken: set[str] = set()
        for i, h in enumerate(self.hooks):
            if _overrides(h, "state_dict"):
                key = getattr(h, "state_key", None) or type(h).__name__
                if key in taken:
                    key = f"{key}#{i}"
                taken.add(key)
                self.keys[i] = key
        self.trainer = trainer

    def key_of(self, hook: Any) -> str | None:
        for i, h in enumerate(self.hooks):
            if h is hook:
                return self.keys.get(i)
        return None

    def on_batch(self, step: int, batch: Any) -> None:
        for f in self._on_batch:
            f(step, batch)

    def on_log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for f in self._on_log:
            f(step, metrics)

    def state_dict(self) -> dict[str, Any]:
        return {key: self.hooks[i].state_dict() for i, key in self.keys.items()}

    def load_state_dict(self, states: Mapping[str, Any]) -> None:
        for i, key in self.keys.items():
            if key in states:
                load = getattr(self.hooks[i], "load_state_dict", None)
                if load is not None:
                    load(states[key])
            else:
                log.warning("checkpoint has no state for hook %r; it starts fresh", key)

    def write_checkpoint_extras(self, step: int, staging_dir: Path) -> None:
        if not self._writers:
            ckpt.save_model_files(self.trainer.module, staging_dir)
        for f in self._writers:
            f(step, staging_dir)

    def seal_checkpoint(self, step: int, staging_dir: Path) -> None:
        for f in self._sealers:
            f(step, staging_dir)

    def load_model_weights(self, model: nn.Module, checkpoint_dir: Path) -> None:
        if self._loaders:
            self._loaders[0](model, checkpoint_dir)
        else:
            ckpt.load_model_files(model, checkpoint_dir)


@dataclass
class TrainResult:
    losses: list[float]  # one per optimizer step from step 1 (restored ones included)
    last_checkpoint: Path | None
    steps_per_s: float  # optimizer steps run in this fit() call / their wall time
    start_step: int = 0
    step: int = 0
    resumed_from: Path | None = None


# ---------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors to `device` (dicts recursively; lists/tuples of tensors); the rest untouched.

    A list or tuple counts as "of tensors" when its first element is one (lists in a batch
    are homogeneous; scanning every `recording_ids` entry each step would cost more).
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        moved = [v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for v in batch]
        return type(batch)(moved) if isinstance(batch, tuple) and not hasattr(batch, "_fields") else moved
    return batch


def build_optimizer(model: nn.Module, cfg: TrainerConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters only; biases and norm weights (ndim < 2) get no decay."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("model has no trainable parameters")
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": cfg.weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def lr_factor(step: int, cfg: TrainerConfig) -> float:
    """Multiplier on `lr` for the optimizer step after `step` scheduler steps.

    Linear warmup reaching 1 at optimizer step `warmup_steps`, then cosine / linear decay
    towards `min_lr_ratio` at `max_steps` (or constant).
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, max(0.0, progress))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainerConfig) -> torch.optim.lr_scheduler.LambdaLR:
    # A closure, not a callable object: LambdaLR then saves no lambda state, so on resume
    # the schedule follows the config in hand (differences are warned about).
    def factor(step: int) -> float:
        return lr_factor(step, cfg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _set_train_modes(model: nn.Module) -> None:
    """Train mode, except submodules whose parameters are all frozen (no dropout in a frozen encoder)."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params) and module.training:
            module.eval()


_TRAJECTORY_KEYS = (
    "lr",
    "weight_decay",
    "betas",
    "eps",
    "warmup_steps",
    "schedule",
    "min_lr_ratio",
    "grad_clip",
    "grad_accum",
    "precision",
    "seed",
    "max_steps",
)


# ---------------------------------------------------------------------------- trainer


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        cfg: TrainerConfig,
        *,
        out_dir: str | Path,
        dist: DistInfo | None = None,
        hooks: Any = None,
    ):
        self.cfg = cfg
        self.dist = dist if dist is not None else init_distributed()
        self.out_dir = Path(out_dir)
        self.device = self.dist.device
        self.module = model.to(self.device)
        self.model = wrap_ddp(self.module, self.dist)
        self.loss_fn = loss_fn
        self.hooks = _HookSet(hooks, self)
        self.optimizer = build_optimizer(self.module, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self._trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.precision = cfg.precision
        if cfg.precision == "bf16" and self.device.type != "cuda":
            log.warning("precision bf16 requested on %s: autocast is CUDA-only here, training in fp32", self.device)
            self.precision = "fp32"
        self.step = 0
        self.losses: list[float] = []
        self.rank_hook_states: list[dict[str, Any]] | None = None
        self.last_grad_norm: float | None = None
        self._pending: list[torch.Tensor] = []
        self._grad_norm: torch.Tensor | None = None

    # -- public helpers -------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def unwrapped_model(self) -> nn.Module:
        return unwrap_model(self.model)

    def gathered_state(self, hook: Any) -> list[Any] | None:
        """During a save, on rank 0: `hook`'s `state_dict()` from every rank, in rank order."""
        key = self.hooks.key_of(hook)
        if key is None or self.rank_hook_states is None:
            return None
        return [s.get(key) for s in self.rank_hook_states]

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    # -- the loop ---------------------------------------------------------------------

    def fit(
        self,
        batches: BatchesFactory | Iterable[Any],
        *,
        resume: bool = True,
        resume_from: str | Path | None = None,
    ) -> TrainResult:
        """Train to `cfg.max_steps` optimizer steps (or until the batches run out).

        `batches`: preferably `factory(start_step) -> iterable`; a plain iterable is
        accepted only when there is nothing to resume. `resume_from` picks a checkpoint
        folder explicitly; otherwise, with `resume`, the newest complete one in
        `out_dir` (chosen by rank 0 and broadcast).
        """
        cfg, info = self.cfg, self.dist
        if info.is_main:
            removed = ckpt.clean_stale(self.out_dir)
            for p in removed:
                log.warning("removed leftover of an interrupted save: %s", p)
        path: Path | None = None
        if resume_from is not None:
            path = Path(resume_from)
        elif resume:
            latest = ckpt.latest_complete(self.out_dir) if info.is_main else None
            found = broadcast_object(str(latest) if latest else None)
            path = Path(found) if found else None
        if path is not None:
            self._restore(path)
        else:
            seed_everything(cfg.seed + info.rank)
        start = self.step

        if callable(batches):
            source = batches(start)
        elif start > 0:
            raise ValueError(
                f"resuming at step {start} needs fit(batches_factory) with factory(start_step) -> iterator, "
                "not a plain iterable"
            )
        else:
            source = batches
        it: Iterator[Any] = iter(source)

        if cfg.frozen_eval:
            _set_train_modes(self.module)
        metrics_log = MetricsLog(self.out_dir / METRICS_FILE, enabled=info.is_main)
        bar = tqdm(
            total=cfg.max_steps,
            initial=start,
            desc="train",
            dynamic_ncols=True,
            disable=not (cfg.progress and info.is_main),
        )
        last_ckpt: Path | None = path
        saved_at = start if path is not None else -1
        logged_at = start
        accum = cfg.grad_accum
        ddp = self.model is not self.module
        t_start = t_log = time.perf_counter()
        try:
            while self.step < cfg.max_steps:
                step = self.step + 1
                loss_sum: torch.Tensor | None = None
                exhausted = False
                consumed: list[Any] = []
                for micro in range(accum):
                    try:
                        raw = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    consumed.append(raw)
                    batch = to_device(raw, self.device)
                    skip_sync = ddp and micro < accum - 1  # DDP all-reduces on the last micro-batch only
                    with self.model.no_sync() if skip_sync else nullcontext():
                        with self._autocast():
                            loss = self.loss_fn(self.model, batch)
                        if accum > 1:
                            (loss / accum).backward()
                        else:
                            loss.backward()
                    detached = loss.detach().float()
                    loss_sum = detached if loss_sum is None else loss_sum + detached
                if exhausted:
                    self.optimizer.zero_grad(set_to_none=True)
                    if loss_sum is not None:
                        log.warning("batches ran out inside step %d: its partial gradients are discarded", step)
                    log.info("batches ran out after %d steps (max_steps %d)", self.step, cfg.max_steps)
                    break
                if cfg.grad_clip:
                    self._grad_norm = torch.nn.utils.clip_grad_norm_(self._trainable, cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step = step
                for raw in consumed:  # only batches whose gradients made it into an update
                    self.hooks.on_batch(step, raw)
                self._pending.append(loss_sum / accum if accum > 1 else loss_sum)
                bar.update(1)
                if cfg.log_every and step % cfg.log_every == 0:
                    now = time.perf_counter()
                    self._log(step, step - logged_at, now - t_log, metrics_log, bar)
                    logged_at, t_log = step, now
                if cfg.save_every and step % cfg.save_every == 0:
                    last_ckpt = self.save_checkpoint()
                    saved_at = step
            elapsed = time.perf_counter() - t_start
            if self.step > logged_at:
                now = time.perf_counter()
                self._log(self.step, self.step - logged_at, now - t_log, metrics_log, bar)
            self._flush_losses()
            if cfg.save_final and self.step > start and saved_at != self.step:
                last_ckpt = self.save_checkpoint()
        finally:
            bar.close()
            metrics_log.close()
        ran = self.step - start
        return TrainResult(
            losses=list(self.losses),
            last_checkpoint=last_ckpt,
            steps_per_s=ran / elapsed if elapsed > 0 and ran else 0.0,
            start_step=start,
            step=self.step,
            resumed_from=path,
        )

    def _flush_losses(self) -> None:
        """Move pending per-step losses (device tensors) into `self.losses`, rank-averaged."""
        if not self._pending:
            return
        values = torch.stack(self._pending)
        self._pending.clear()
        if self.dist.distributed:
            all_reduce_mean(values)
        self.losses.extend(values.tolist())

    def _log(self, step: int, n: int, seconds: float, metrics_log: MetricsLog, bar: tqdm) -> None:
        self._flush_losses()  # collective under DDP: every rank logs at the same steps
        if self._grad_norm is not None:
            self.last_grad_norm = float(self._grad_norm)
        if not self.is_main:
            return
        recent = self.losses[-n:] if n > 0 else self.losses[-1:]
        metrics: dict[str, Any] = {
            "loss": sum(recent) / len(recent),
            "lr": self.scheduler.get_last_lr()[0],
            "steps_per_s": n / seconds if seconds > 0 else None,
        }
        if self.last_grad_norm is not None:
            metrics["grad_norm"] = self.last_grad_norm
        metrics_log.log(step, metrics)
        self.hooks.on_log(step, metrics)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", refresh=False)

    # -- checkpoints ------------------------------------------------------------------

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "format": 1,
            "step": self.step,
            "losses": list(self.losses),
            "config": self.cfg.to_dict(),
            "precision": self.precision,
            "world_size": self.dist.world_size,
            "lr": self.scheduler.get_last_lr()[0],
            "torch": torch.__version__,
        }

    def save_checkpoint(self) -> Path:
        """Checkpoint the current step (call on every rank: RNG and hook state are gathered).

        Returns the published folder on every rank; raises on every rank if rank 0 failed.
        """
        self._flush_losses()
        gathered = gather_object((ckpt.capture_rng_state(), self.hooks.state_dict()))
        path: Path | None = None
        error: BaseException | None = None
        if self.is_main:
            assert gathered is not None
            world = self.dist.world_size
            self.rank_hook_states = [g[1] for g in gathered]
            state = ckpt.TrainingState(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                rng={"world_size": world, "ranks": [g[0] for g in gathered]},
                extras={"world_size": world, "ranks": self.rank_hook_states},
                trainer=self._trainer_state(),
            )
            step = self.step
            try:
                path = ckpt.write_checkpoint(
                    self.out_dir,
                    step,
                    state,
                    lambda staging: self.hooks.write_checkpoint_extras(step, staging),
                    seal=lambda staging: self.hooks.seal_checkpoint(step, staging),
                )
                removed = ckpt.prune(self.out_dir, self.cfg.keep_last)
                if removed:
                    log.info("pruned %s", ", ".join(p.name for p in removed))
            except Exception as e:  # noqa: BLE001 - re-raised below on every rank
                error = e
            finally:
                self.rank_hook_states = None
        outcome = broadcast_object((str(path) if path else None, repr(error) if error else None))
        if error is not None:
            raise error
        if outcome[1] is not None:
            raise RuntimeError(f"rank 0 failed to write checkpoint at step {self.step}: {outcome[1]}")
        return Path(outcome[0])

    def _restore(self, path: Path) -> None:
        if not ckpt.is_complete(path):
            raise ValueError(f"{path} is not a complete checkpoint")
        state = ckpt.load_training_state(path)
        saved_world = int(state.rng["world_size"])
        if saved_world != self.dist.world_size:
            raise RuntimeError(
                f"{path} was written by {saved_world} rank(s); resuming with {self.dist.world_size} "
                "would change per-rank RNG and data order"
            )
        self.hooks.load_model_weights(self.module, path)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.step = state.step
        self.losses = [float(x) for x in state.trainer.get("losses", [])]
        saved_cfg = state.trainer.get("config", {})
        now_cfg = self.cfg.to_dict()
        changed = [k for k in _TRAJECTORY_KEYS if k in saved_cfg and saved_cfg[k] != now_cfg[k]]
        if changed:
            log.warning(
                "resuming %s with changed config %s; optimizer/scheduler state comes from the checkpoint",
                path.name,
                {k: (saved_cfg[k], now_cfg[k]) for k in changed},
            )
        ckpt.restore_rng_state(state.rng["ranks"][self.dist.rank])
        self.hooks.load_state_dict(state.extras["ranks"][self.dist.rank])
        log.info("resumed from %s at step %d", path, self.step)
