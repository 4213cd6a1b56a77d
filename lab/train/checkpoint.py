"""Atomic, resumable checkpoint folders.

Layout (see DESIGN.md, "The checkpoint folder is a contract")::

    <out_dir>/checkpoints/
      step-000200/
        training_state/
          optimizer.pt  scheduler.pt  rng.pt  extras.pt  trainer.json
        ...whatever `write_extras` wrote (weights, README.md, data_card.json, model.sig)
        COMPLETE        written last, lists every other file with its size
      .staging-step-000400-<pid>/   a save in progress (or one killed mid-way)

How a folder is written, in this order, all by rank 0 only:

1. `training_state/` into `.staging-step-NNNNNN-<pid>`;
2. `write_extras(staging)`: model weights, card, signature. The signature can cover
   `training_state/` because it is already there;
3. `COMPLETE` (a small JSON: step, time, size of every other file);
4. `lab.util.atomic.publish_dir` fsyncs everything and renames the folder into place.

A reader trusts a `step-*` folder only when `COMPLETE` is there and every file it lists
has the listed size (`is_complete`). A process killed anywhere in 1–3 leaves only a
dot-named staging folder, which `latest_complete` never looks at and `clean_stale`
removes once its writer's pid is gone.

RNG state of every rank: the trainer *gathers* each rank's state to rank 0
(`torch.distributed.gather_object`; a few KB per rank) and rank 0 writes one `rng.pt`
holding a list indexed by rank; hook state (`extras.pt`) likewise. We chose this over
per-rank files because it keeps a single writer and a single staging folder, which is
what makes the one-rename publish atomic; per-rank files would need every rank to
see rank 0's staging path on a shared filesystem and a barrier before the rename.
Reading back (resume) does assume every rank can read the published folder.

All `.pt` files load with `torch.load(weights_only=True)`: no pickled code in
something an auditor may open.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from lab.util.atomic import publish_dir

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINTS_DIR",
    "COMPLETE_MARKER",
    "TRAINING_STATE_DIR",
    "TrainingState",
    "checkpoint_name",
    "checkpoints_dir",
    "step_of",
    "is_complete",
    "list_complete",
    "latest_complete",
    "prune",
    "clean_stale",
    "write_checkpoint",
    "load_training_state",
    "capture_rng_state",
    "restore_rng_state",
    "save_model_files",
    "load_model_files",
]

CHECKPOINTS_DIR = "checkpoints"
COMPLETE_MARKER = "COMPLETE"
TRAINING_STATE_DIR = "training_state"
_STEP_RE = re.compile(r"^step-(\d+)$")
_STAGING_RE = re.compile(r"^\.staging-(step-\d+)-(\d+)$")
_TRASH_RE = re.compile(r"^\.trash-(step-\d+)-(\d+)$")
_OLD_RE = re.compile(r"^\.(step-\d+)\.old$")  # publish_dir's backup while it swaps a folder


def checkpoint_name(step: int) -> str:
    return f"step-{int(step):06d}"


def checkpoints_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINTS_DIR


def step_of(path: str | os.PathLike) -> int:
    """The step number in a `step-NNNNNN` folder name."""
    m = _STEP_RE.match(Path(path).name)
    if not m:
        raise ValueError(f"not a checkpoint folder name: {Path(path).name!r}")
    return int(m.group(1))


# ---------------------------------------------------------------------------- reading


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` is a published checkpoint whose `COMPLETE` marker checks out."""
    path = Path(path)
    m = _STEP_RE.match(path.name)
    if not m or not path.is_dir():
        return False
    try:
        marker = json.loads((path / COMPLETE_MARKER).read_text("utf-8"))
        if int(marker["step"]) != int(m.group(1)):
            return False
        for rel, size in marker["files"].items():
            if (path / rel).stat().st_size != int(size):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def list_complete(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `out_dir/checkpoints`, oldest step first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found) if is_complete(p)]


def latest_complete(out_dir: str | os.PathLike) -> Path | None:
    """The highest-step complete checkpoint, ignoring staging and incomplete folders."""
    done = list_complete(out_dir)
    return done[-1] if done else None


@dataclass
class TrainingState:
    """The contents of `training_state/`. `rng` and `extras` are `{"world_size", "ranks": [...]}`."""

    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    extras: dict[str, Any]
    trainer: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.trainer["step"])


def load_training_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainingState:
    ts = Path(path) / TRAINING_STATE_DIR

    def load(name: str) -> Any:
        return torch.load(ts / name, map_location=map_location, weights_only=True)

    return TrainingState(
        optimizer=load("optimizer.pt"),
        scheduler=load("scheduler.pt"),
        rng=load("rng.pt"),
        extras=load("extras.pt"),
        trainer=json.loads((ts / "trainer.json").read_text("utf-8")),
    )


# ---------------------------------------------------------------------------- writing


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(path: Path) -> None:
    """Rename out of the `step-*` namespace first, so a half-deleted folder is never a candidate."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_stale(out_dir: str | os.PathLike) -> list[Path]:
    """Remove leftovers of interrupted saves; returns what it removed.

    Staging folders whose writer pid is no longer alive on this host, trash from an
    interrupted prune, and `publish_dir` backups (`.step-N.old`): a backup is put back
    when its checkpoint is missing and the backup is complete, else removed.
    """
    root = checkpoints_dir(out_dir)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for p in sorted(root.iterdir()):
        if m := _STAGING_RE.match(p.name):
            if not _pid_alive(int(m.group(2))):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        elif _TRASH_RE.match(p.name):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        elif m := _OLD_RE.match(p.name):
            final = root / m.group(1)
            if not final.exists() and _is_complete_contents(p, step_of(final)):
                os.replace(p, final)
                log.warning("restored %s from its publish backup", final)
            else:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def _is_complete_contents(path: Path, step: int) -> bool:
    """`is_complete` for a folder whose name is not (yet) `step-NNNNNN`."""
    try:
        marker = json.loads((path / COMPLETE_MARKER).read_text("utf-8"))
        return int(marker["step"]) == step and all(
            (path / rel).stat().st_size == int(size) for rel, size in marker["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def prune(out_dir: str | os.PathLike, keep_last: int | None) -> list[Path]:
    """Delete all but the `keep_last` newest complete checkpoints (None or 0: keep all).

    Incomplete `step-*` folders are never produced by `write_checkpoint`; they are left
    alone (not ours to judge) and never returned by `latest_complete`.
    """
    if not keep_last or keep_last <= 0:
        return []
    done = list_complete(out_dir)
    doomed = done[: max(0, len(done) - keep_last)]
    for p in doomed:
        _remove_tree(p)
    return doomed


def _write_marker(staging: Path, step: int) -> None:
    files = {
        p.relative_to(staging).as_posix(): p.stat().st_size
        for p in sorted(staging.rglob("*"))
        if p.is_file() and p.name != COMPLETE_MARKER
    }
    marker = {"step": step, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": files}
    (staging / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n", "utf-8")


def write_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    state: TrainingState,
    write_extras: Callable[[Path], None] | None = None,
) -> Path:
    """Write and atomically publish `out_dir/checkpoints/step-NNNNNN` (call on rank 0 only).

    `write_extras(staging_dir)` adds model weights, cards, signature. On any exception
    the staging folder is removed and the exception re-raised; an existing folder for
    the same step is replaced atomically (`publish_dir`).
    """
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    staging = root / f".staging-{name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        ts = staging / TRAINING_STATE_DIR
        ts.mkdir(parents=True)
        torch.save(state.optimizer, ts / "optimizer.pt")
        torch.save(state.scheduler, ts / "scheduler.pt")
        torch.save(state.rng, ts / "rng.pt")
        torch.save(state.extras, ts / "extras.pt")
        (ts / "trainer.json").write_text(json.dumps(state.trainer, indent=1, sort_keys=True) + "\n", "utf-8")
        if write_extras is not None:
            write_extras(staging)
        _write_marker(staging, step)
        final = publish_dir(staging, root / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


# ---------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy (legacy global), torch CPU and current-CUDA-device generator states.

    Stored as plain tuples, ints and tensors so the file loads with `weights_only=True`.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_python_state(s: Any) -> tuple:
    # random.setstate wants (version, tuple_of_ints, gauss_next); lists come back from some serialisers
    version, internal, gauss = s
    return (int(version), tuple(int(x) for x in internal), gauss)


# ---------------------------------------------------------------------------- model files


def save_model_files(model: nn.Module, directory: str | os.PathLike) -> None:
    """Default weights writer: `save_pretrained` when the model has it, else `model.pt`."""
    directory = Path(directory)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
    else:
        torch.save(model.state_dict(), directory / "model.pt")


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / "model.pt").exists():
        return torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    from safetensors.torch import load_file

    if (directory / "model.safetensors").exists():
        return load_file(directory / "model.safetensors")
    index = directory / "model.safetensors.index.json"
    if index.exists():
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(json.loads(index.read_text("utf-8"))["weight_map"].values())):
            state.update(load_file(directory / shard))
        return state
    if (directory / "pytorch_model.bin").exists():
        return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model weights (model.pt, model.safetensors[.index.json], pytorch_model.bin) in {directory}")


def load_model_files(model: nn.Module, directory: str | os.PathLike) -> None:
    """Load what `save_model_files` (or `save_pretrained`) wrote back into `model`, in place.

    Keys `save_pretrained` dropped because they are tied to a saved tensor are fine;
    any other missing or unexpected key raises.
    """
    state = _read_weights(Path(directory))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"unexpected keys in checkpoint weights: {result.unexpected_keys[:10]}")
    if result.missing_keys:
        current = model.state_dict()
        loaded_ptrs = {current[k].data_ptr() for k in state if k in current}
        untied = [k for k in result.missing_keys if current[k].data_ptr() not in loaded_ptrs]
        if untied:
            raise RuntimeError(f"checkpoint weights are missing keys: {untied[:10]}")
