"""`training_state/`: what a run needs to continue exactly where it stopped.

Optimizer, scheduler, RNG of every rank, hook state (exposure so far) and the trainer's
counters. RNG state is gathered to rank 0 and written as one list indexed by rank (one
writer, one staging folder: what keeps the publish a single rename). Every `.pt` file loads
with `torch.load(weights_only=True)`: no pickled code in something an auditor may open.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRAINING_STATE_DIR = "training_state"
_FILES = ("optimizer", "scheduler", "rng", "extras")


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
        **{name: load(f"{name}.pt") for name in _FILES}, trainer=json.loads((ts / "trainer.json").read_text("utf-8"))
    )


def save_training_state(folder: str | os.PathLike, state: TrainingState) -> None:
    ts = Path(folder) / TRAINING_STATE_DIR
    ts.mkdir(parents=True, exist_ok=True)
    for name in _FILES:
        torch.save(getattr(state, name), ts / f"{name}.pt")
    (ts / "trainer.json").write_text(json.dumps(state.trainer, indent=1, sort_keys=True) + "\n", "utf-8")


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
