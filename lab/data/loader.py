"""Batches for MusicGen teacher forcing, from the code cache, with a deterministic resumable sampler.

The delay pattern comes from `lab.models.delay` (the layout ``generate`` uses too); the model computes
the loss itself from the collated ``labels``. An :class:`Admission` (consent known ahead: each
recording's grant deadline, and the recordings excluded since the run started) drops rows just
before they are fed; the sampler never learns about it, so its position stays a function of the
number of draws, and resume stays exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..models.delay import delay_pattern

__all__ = [
    "Admission",
    "NothingAdmitted",
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

    def __init__(
        self,
        tokenizer,
        num_codebooks: int,
        pad_token_id: int,
        max_text_len: int = 64,
        decoder_start_token_id: int | None = None,
    ):
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
        text = self.tokenizer(
            [str(r.get("description") or "") for r in rows],
            padding="longest",
            truncation=True,
            max_length=self.max_text_len,
            return_tensors="pt",
        )
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


class NothingAdmitted(RuntimeError):
    """Every recording the sampler can still draw has expired or been excluded: nothing left to train on."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The DataLoader's collate_fn under an Admission: rows stay rows until the main process admits them."""
    return rows


class Admission:
    """Which recordings may still be fed, asked just before each batch, in the main process.

    ``deadlines``: recording id → the instant its consent ends (the earliest valid_until of the grants
    that cleared it, or a revocation's effective time once it is known): from then on (clock time
    >= deadline) its rows are dropped. ``excluded``: recordings taken out since the run started (a
    revocation, an opt-out, an amendment that no longer clears). ``expired`` remembers when a
    deadline first dropped a recording; ``skipped`` counts draws left empty, on which no step was
    taken (resume adds it to the draw index, so the same batches follow).
    """

    def __init__(
        self,
        deadlines: Mapping[str, datetime] | None = None,
        excluded: Iterable[str] = (),
        clock: Callable[[], datetime] | None = None,
    ):
        self.clock = clock or _utcnow
        self.deadlines: dict[str, float] = {}
        self.tightened: dict[str, float] = {}  # deadlines set during the run (kept in the training state)
        self.excluded: set[str] = set(excluded)
        self.expired: dict[str, float] = {}
        self.skipped = 0
        self._next = math.inf
        for rid, when in (deadlines or {}).items():
            self._set(rid, when.timestamp())

    @classmethod
    def from_snapshot(cls, snapshot: Any, clock: Callable[[], datetime] | None = None) -> Admission:
        """Deadlines from a snapshot: each item's earliest valid_until over its grant_ids (none if all open)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        items, grants = snapshot.items, snapshot.grants
        gids = items["grant_ids"].combine_chunks()
        at = pc.index_in(pc.list_flatten(gids), value_set=grants["grant_id"].combine_chunks())
        ends = grants["valid_until"].combine_chunks().take(at)
        flat = pa.table({"row": pc.list_parent_indices(gids), "end": ends})
        per_row = flat.group_by("row").aggregate([("end", "min")]).filter(pc.is_valid(pc.field("end_min")))
        rids = items["recording_id"].combine_chunks().take(per_row["row"])
        ends_s = pc.divide(per_row["end_min"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()), 1e6)
        out = cls(clock=clock)
        for rid, end in zip(rids.to_pylist(), ends_s.to_pylist()):
            out._set(rid, end)
        return out

    def _set(self, rid: str, ts: float) -> bool:
        if ts >= self.deadlines.get(rid, math.inf):
            return False
        self.deadlines[rid] = ts
        self._next = min(self._next, ts)
        return True

    def tighten(self, rid: str, when: datetime) -> bool:
        """Bring a recording's deadline forward to ``when`` (never later); True if it moved."""
        moved = self._set(rid, when.timestamp())
        if moved:
            self.tightened[rid] = self.deadlines[rid]
        return moved

    def exclude(self, recording_ids: Iterable[str]) -> None:
        self.excluded.update(recording_ids)

    def keep(self, recording_ids: list[str]) -> list[bool] | None:
        """Per row: may it be fed now? None = all of them (the common case, one clock read)."""
        now = self.clock().timestamp()
        if now < self._next and not self.excluded:
            return None
        excluded, deadlines, inf = self.excluded, self.deadlines, math.inf
        mask = []
        for rid in recording_ids:
            late = deadlines.get(rid, inf) <= now
            if late and rid not in self.expired:
                self.expired[rid] = now
            mask.append(not late and rid not in excluded)
        return mask

    def admit(self, rows: list[dict[str, Any]], collator: Callable[[list[dict[str, Any]]], Any]) -> Any | None:
        """The collated batch of the rows that may be fed now; None when none may."""
        mask = self.keep([str(r["recording_id"]) for r in rows])
        if mask is not None:
            rows = [r for r, k in zip(rows, mask) if k]
        return collator(rows) if rows else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "excluded": sorted(self.excluded),
            "tightened": dict(sorted(self.tightened.items())),
            "expired": dict(sorted(self.expired.items())),
            "skipped": int(self.skipped),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.excluded = set(state.get("excluded", ()))
        for rid, ts in state.get("tightened", {}).items():
            if self._set(rid, float(ts)):
                self.tightened[rid] = float(ts)
        self.expired = {str(k): float(v) for k, v in state.get("expired", {}).items()}
        self.skipped = int(state.get("skipped", 0))


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

    def __init__(
        self,
        num_items: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = False,
    ):
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
        return self.epoch_order(epoch)[self.rank :: self.world_size]

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
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_items": self.num_items,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "world_size", "num_items", "shuffle", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]!r}, this sampler {getattr(self, key)!r}: "
                    "resuming would not replay the same batches"
                )
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


def make_loader(
    dataset,
    collator,
    batch_size: int,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    start_step: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over ``dataset`` with a :class:`ResumableSampler` (``loader.sampler``) positioned at
    step ``start_step`` of epoch ``epoch``; the batches from there on are the ones an uninterrupted run
    would have produced. The last batch of an epoch may be short (same size on every rank)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    sampler = ResumableSampler(
        len(dataset), seed=seed, rank=rank, world_size=world_size, shuffle=shuffle, drop_last=drop_last
    )
    sampler.load_state_dict({"epoch": epoch, "position": min(int(start_step) * batch_size, len(sampler))})
    return DataLoader(
        _formatted(dataset),
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collator,
        num_workers=num_workers,
        drop_last=False,
    )


def iterate_batches(
    dataset,
    collator,
    batch_size: int,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    start_step: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    admission: Admission | None = None,
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield ``(epoch, step, batch)`` forever, ``step`` counting batches from 0 across epochs. Starting at
    ``start_step`` (a global step, e.g. from a checkpoint) yields exactly the batches an uninterrupted
    run yields from that step on: resume needs only the step, seed and world size.

    With an ``admission``, ``start_step`` counts draws (batches yielded + ``admission.skipped``): rows
    it refuses are dropped before collation, a draw left empty is skipped (``admission.skipped`` + 1)
    and not yielded, and a whole epoch of empty draws raises NothingAdmitted."""
    spe = steps_per_epoch(len(dataset), batch_size, world_size=world_size, drop_last=drop_last)
    epoch, in_epoch = divmod(int(start_step), spe)
    loader = make_loader(
        dataset,
        collator if admission is None else _rows,
        batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        shuffle=shuffle,
        start_step=in_epoch,
        epoch=epoch,
        drop_last=drop_last,
        num_workers=num_workers,
    )
    step = int(start_step)
    empty = 0
    while True:
        for batch in loader:
            if admission is not None:
                batch = admission.admit(batch, collator)
                if batch is None:
                    admission.skipped += 1
                    empty += 1
                    if empty >= spe:
                        raise NothingAdmitted(
                            "every recording this rank can draw has expired or was excluded "
                            f"({len(admission.excluded)} excluded): nothing left to train on"
                        )
                    continue
                empty = 0
            yield epoch, step, batch
            step += 1
        epoch += 1
        loader.sampler.set_epoch(epoch)
