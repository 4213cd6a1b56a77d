"""Batches for MusicGen teacher forcing, from the code cache, with a deterministic resumable sampler.

The delay pattern comes from `lab.models.delay` (the layout ``generate`` uses too); the model computes
the loss itself from the collated ``labels``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..models.delay import delay_pattern

__all__ = [
    "MusicgenCollator",
    "ResumableSampler",
    "make_loader",
    "iterate_batches",
    "steps_per_epoch",
    "model_inputs",
    "MODEL_KEYS",
]

MODEL_KEYS = ("input_ids", "attention_mask", "decoder_input_ids", "labels")


class MusicgenCollator:
    """Rows of the code cache → a MusicGen training batch.

    Returns ``input_ids``/``attention_mask`` (text, B × L), ``codes`` (B, K, T), ``decoder_input_ids``
    (B*K, T+K-1), ``labels`` (B, T+K-1, K; -100 where masked), and the plain lists ``recording_ids``,
    ``seconds``, ``segments`` and ``tokens`` (target tokens in the loss per row) for the exposure meter.
    Pass ``model_inputs(batch)`` to the model.
    """

    def __init__(self, tokenizer, num_codebooks: int, pad_token_id: int, max_text_len: int = 64,
                 decoder_start_token_id: int | None = None):
        self.tokenizer = tokenizer
        self.num_codebooks = int(num_codebooks)
        self.pad_token_id = int(pad_token_id)
        self.start_token_id = int(pad_token_id if decoder_start_token_id is None else decoder_start_token_id)
        self.max_text_len = int(max_text_len)

    def _codes(self, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        arrs = [np.asarray(r["codes"]) for r in rows]
        for a in arrs:
            if a.ndim != 2 or a.shape[0] != self.num_codebooks:
                raise ValueError(f"codes of shape {a.shape}; expected ({self.num_codebooks}, frames)")
        t = max(a.shape[1] for a in arrs)
        codes = torch.full((len(arrs), self.num_codebooks, t), self.pad_token_id, dtype=torch.long)
        frames = []
        for i, (a, r) in enumerate(zip(arrs, rows)):
            codes[i, :, : a.shape[1]] = torch.from_numpy(a.astype(np.int64, copy=False))
            f = r.get("frames")
            frames.append(a.shape[1] if f is None else min(int(f), a.shape[1]))
        return codes, torch.tensor(frames, dtype=torch.long)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not rows:
            raise ValueError("empty batch")
        codes, frames = self._codes(rows)
        delayed = delay_pattern(codes, self.pad_token_id, frames, start_token_id=self.start_token_id)
        text = self.tokenizer([str(r.get("description") or "") for r in rows], padding="longest",
                              truncation=True, max_length=self.max_text_len, return_tensors="pt")
        return {
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "codes": codes,
            "decoder_input_ids": delayed.decoder_input_ids,
            "labels": delayed.labels,
            "recording_ids": [str(r["recording_id"]) for r in rows],
            "seconds": [float(r["seconds"]) for r in rows],
            "segments": [int(r["segment"]) if r.get("segment") is not None else -1 for r in rows],
            "tokens": delayed.label_mask.sum(dim=(1, 2)).tolist(),
        }


def model_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors `MusicgenForConditionalGeneration.forward` takes from a collated batch."""
    return {k: batch[k] for k in MODEL_KEYS if k in batch}


class ResumableSampler(Sampler[int]):
    """Deterministic, epoch-aware, sharded sampler (like `DistributedSampler`) that can resume mid-epoch.

    Epoch e's order is ``randperm(n, seed + e)`` (or ``range(n)`` without shuffle); it is padded by
    wrapping to a multiple of ``world_size`` (``drop_last=False``; the repeats are real exposure and are
    metered as such) or truncated (``drop_last=True``), and rank r takes every ``world_size``-th index
    from r, so the ranks' shards are disjoint. ``position`` counts indices of the current epoch already
    handed out; iteration starts there, and a complete pass moves to the next epoch at position 0.
    ``set_epoch(e)`` for a different epoch restarts at position 0; for the current one it keeps the
    position (so a resumed run may keep calling ``set_epoch`` as usual).

    With ``num_workers > 0`` the DataLoader prefetches, so ``position`` runs ahead of the batches the
    model consumed; resume from the step count instead (``iterate_batches(start_step=...)``).
    """

    def __init__(self, num_items: int, *, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 drop_last: bool = False):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank/world_size {rank}/{world_size}")
        if num_items < 1:
            raise ValueError("cannot sample from an empty dataset")
        if drop_last and num_items < world_size:
            raise ValueError(f"{num_items} items cannot fill {world_size} ranks with drop_last=True")
        self.num_items, self.seed, self.rank, self.world_size = int(num_items), int(seed), int(rank), int(world_size)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_items // self.world_size
        return math.ceil(self.num_items / self.world_size)

    def epoch_order(self, epoch: int) -> list[int]:
        """The global order of epoch ``epoch`` (before sharding, after padding/truncation)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + int(epoch))
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        total = len(self) * self.world_size
        if total <= len(order):
            return order[:total]
        reps = math.ceil(total / len(order))
        return (order * reps)[:total]

    def shard(self, epoch: int) -> list[int]:
        """This rank's indices for epoch ``epoch``."""
        return self.epoch_order(epoch)[self.rank::self.world_size]

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def __iter__(self) -> Iterator[int]:
        shard = self.shard(self.epoch)
        while self.position < len(shard):
            i = shard[self.position]
            self.position += 1
            yield i
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "num_items": self.num_items, "shuffle": self.shuffle,
                "drop_last": self.drop_last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "world_size", "num_items", "shuffle", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]!r}, this sampler {getattr(self, key)!r}: "
                                 "resuming would not replay the same batches")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def _formatted(dataset):
    """Code-cache rows with `codes` as numpy arrays (list-of-lists conversion is slow) and the rest as Python."""
    try:
        import datasets
    except ImportError:  # pragma: no cover
        return dataset
    if isinstance(dataset, datasets.Dataset) and "codes" in dataset.column_names:
        return dataset.with_format("numpy", columns=["codes"], output_all_columns=True)
    return dataset


def steps_per_epoch(num_items: int, batch_size: int, *, world_size: int = 1, drop_last: bool = False) -> int:
    per_rank = num_items // world_size if drop_last else math.ceil(num_items / world_size)
    return math.ceil(per_rank / batch_size)


def make_loader(dataset, collator, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                shuffle: bool = True, start_step: int = 0, epoch: int = 0, drop_last: bool = False,
                num_workers: int = 0) -> DataLoader:
    """A DataLoader over ``dataset`` with a :class:`ResumableSampler` (``loader.sampler``) positioned at
    step ``start_step`` of epoch ``epoch``; the batches from there on are the ones an uninterrupted run
    would have produced. The last batch of an epoch may be short (same size on every rank)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    sampler = ResumableSampler(len(dataset), seed=seed, rank=rank, world_size=world_size, shuffle=shuffle,
                               drop_last=drop_last)
    sampler.load_state_dict({"epoch": epoch, "position": min(int(start_step) * batch_size, len(sampler))})
    return DataLoader(_formatted(dataset), batch_size=batch_size, sampler=sampler, collate_fn=collator,
                      num_workers=num_workers, drop_last=False)


def iterate_batches(dataset, collator, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                    shuffle: bool = True, start_step: int = 0, drop_last: bool = False,
                    num_workers: int = 0) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield ``(epoch, step, batch)`` forever, ``step`` counting batches from 0 across epochs. Starting at
    ``start_step`` (a global step, e.g. from a checkpoint) yields exactly the batches an uninterrupted
    run yields from that step on: resume needs only the step, seed and world size."""
    spe = steps_per_epoch(len(dataset), batch_size, world_size=world_size, drop_last=drop_last)
    epoch, in_epoch = divmod(int(start_step), spe)
    loader = make_loader(dataset, collator, batch_size, seed=seed, rank=rank, world_size=world_size,
                         shuffle=shuffle, start_step=in_epoch, epoch=epoch, drop_last=drop_last,
                         num_workers=num_workers)
    step = int(start_step)
    while True:
        for batch in loader:
            yield epoch, step, batch
            step += 1
        epoch += 1
        loader.sampler.set_epoch(epoch)
