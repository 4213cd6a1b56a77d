"""Shared toy pieces for tests/train (imported by the tests and by their subprocess scripts)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from lab.train.trainer import TrainerHooks

torch.set_num_threads(1)

IN, HID = 8, 32


class Toy(nn.Module):
    """A frozen 'encoder' (requires_grad False, like MusicGen's text/audio encoders) and a trainable head."""

    def __init__(self, dropout: float = 0.1, seed: int = 0):
        super().__init__()
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed)
            self.encoder = nn.Sequential(nn.Linear(IN, 16), nn.Dropout(0.5))
            self.head = nn.Sequential(nn.Linear(16, HID), nn.ReLU(), nn.Dropout(dropout), nn.Linear(HID, 1))
        self.encoder.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def loss_fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch["x"]), batch["y"])


def noisy_loss_fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Also draws from Python's and NumPy's global RNGs, so a resume must restore them too."""
    jitter = 1e-3 * random.random() * float(np.random.rand())
    return loss_fn(model, batch) + jitter


def make_batch(index: int, bs: int = 8, *, rank: int = 0, seed: int = 0) -> dict[str, Any]:
    """The `index`-th micro-batch of a rank: a pure function of (seed, rank, index)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + rank * 10_007 + index)
    x = torch.randn(bs, IN, generator=g)
    y = (x[:, :4].sum(1, keepdim=True) - x[:, 4:].prod(1, keepdim=True)).tanh()
    ids = [f"rec-{(index * bs + i) % 5}" for i in range(bs)]
    return {"x": x, "y": y, "recording_ids": ids, "seconds": [2.5] * bs}


def factory(bs: int = 8, grad_accum: int = 1, *, rank: int = 0, seed: int = 0, stop_after: int | None = None):
    """batches_factory(start_step): micro-batches from start_step * grad_accum on.

    `stop_after`: raise RuntimeError when asked for the first batch of step stop_after+1
    (a simulated crash).
    """

    def batches(start_step: int) -> Iterator[dict[str, Any]]:
        index = start_step * grad_accum
        while True:
            if stop_after is not None and index >= stop_after * grad_accum:
                raise RuntimeError("simulated crash")
            yield make_batch(index, bs, rank=rank, seed=seed)
            index += 1

    return batches


class ExposureHook(TrainerHooks):
    """Counts seconds seen per recording id: a dict update per sample (the exposure meter)."""

    state_key = "exposure"

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.batches = 0
        self.steps_seen: list[int] = []

    def on_batch(self, step: int, batch: dict[str, Any]) -> None:
        for rid, sec in zip(batch["recording_ids"], batch["seconds"]):
            self.seconds[rid] = self.seconds.get(rid, 0.0) + sec
        self.batches += 1
        self.steps_seen.append(step)

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds = dict(state["seconds"])
        self.batches = int(state["batches"])


def checksum(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
