"""The exposure meter: seconds of audio, segments (samples) and target tokens the model was trained
on, per recording.

The trainer calls ``add(batch["recording_ids"], batch["seconds"], batch["tokens"])`` for every
micro-batch it actually trained on (after its backward; never for what the loader prefetched), so
the totals are what the model saw.

Under DDP each rank meters its own batches. The meter keeps two layers:

* ``base``: totals already merged across ranks (identical on every rank), and
* ``local``: what this rank added since the last merge.

``merged()`` / ``all_reduce()`` are collectives (every rank must call them) that sum the ``local``
layers across ranks with ``all_gather_object`` and add ``base`` once; without an initialised process
group they are local. Merging twice never double-counts. ``state_dict()`` keeps both layers, so either
checkpoint style is exact:

* per rank (each rank saves and gets back its own state; the global totals are
  ``ExposureMeter.combine(states_of_all_ranks)``), or
* merged (``all_reduce()`` on every rank, save rank 0's state, load it on every rank).

Loading one rank's *un-merged* state on several ranks would count its local part several times:
combine first (``ExposureMeter.combine(states).state_dict()`` is safe to load everywhere, also when
the world size changes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch.distributed as dist

__all__ = ["ExposureMeter", "ExposureError", "EXPOSURE_SCHEMA"]

EXPOSURE_SCHEMA = "lab.exposure/1"
_FIELDS = ("seconds", "samples", "tokens")


class ExposureError(RuntimeError):
    pass


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _empty() -> dict[str, dict[str, Any]]:
    return {f: {} for f in _FIELDS}


def _add_layer(dst: dict[str, dict[str, Any]], src: Mapping[str, Mapping[str, Any]]) -> None:
    for f in _FIELDS:
        d = dst[f]
        for k, v in src.get(f, {}).items():
            d[k] = d.get(k, 0) + v


def _sorted(layer: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f: dict(sorted(layer[f].items())) for f in _FIELDS}


def _check_layer(layer: Mapping[str, Any], what: str) -> dict[str, dict[str, Any]]:
    try:
        out = {
            "seconds": {str(k): float(v) for k, v in layer["seconds"].items()},
            "samples": {str(k): int(v) for k, v in layer["samples"].items()},
            "tokens": {str(k): int(v) for k, v in layer.get("tokens", {}).items()},
        }
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise ExposureError(f"exposure state: bad {what} layer: {exc}") from None
    if set(out["seconds"]) != set(out["samples"]):
        raise ExposureError(f"exposure state: {what} seconds and samples name different recordings")
    if (
        any(not math.isfinite(v) or v < 0 for v in out["seconds"].values())
        or any(v < 0 for v in out["samples"].values())
        or any(v < 0 for v in out["tokens"].values())
    ):
        raise ExposureError(f"exposure state: negative or non-finite counts in the {what} layer")
    return out


class ExposureMeter:
    def __init__(self) -> None:
        self._base = _empty()
        self._local = _empty()

    # ---------------------------------------------------------------- counting
    def add(self, recording_ids: Sequence[str], seconds: Sequence[float], tokens: Sequence[int] | None = None) -> None:
        """Count one trained-on batch: for each row, one sample, ``seconds[i]`` of audio and (optionally)
        ``tokens[i]`` target tokens for ``recording_ids[i]``."""
        n = len(recording_ids)
        if len(seconds) != n or (tokens is not None and len(tokens) != n):
            raise ValueError(
                f"{n} recording ids but {len(seconds)} durations"
                + ("" if tokens is None else f" and {len(tokens)} token counts")
            )
        secs = [float(s) for s in seconds]
        toks = [0] * n if tokens is None else [int(t) for t in tokens]
        for rid, s, t in zip(recording_ids, secs, toks):
            if not math.isfinite(s) or s < 0:
                raise ValueError(f"bad duration {s!r} for {rid!r}")
            if t < 0:
                raise ValueError(f"bad token count {t!r} for {rid!r}")
        sec, cnt, tok = self._local["seconds"], self._local["samples"], self._local["tokens"]
        for rid, s, t in zip(recording_ids, secs, toks):
            rid = str(rid)
            sec[rid] = sec.get(rid, 0.0) + s
            cnt[rid] = cnt.get(rid, 0) + 1
            if tokens is not None:
                tok[rid] = tok.get(rid, 0) + t

    def _view(self, field: str) -> dict[str, Any]:
        out = dict(self._base[field])
        for k, v in self._local[field].items():
            out[k] = out.get(k, 0) + v
        return dict(sorted(out.items()))

    def totals(self) -> dict[str, float]:
        """Seconds per recording as known on this process (base + local), sorted by id. Under DDP,
        call ``merged()`` (or ``all_reduce()``) first for the totals over all ranks."""
        return self._view("seconds")

    def samples(self) -> dict[str, int]:
        """Segments per recording as known on this process, sorted by id."""
        return self._view("samples")

    def tokens(self) -> dict[str, int]:
        """Target tokens per recording as known on this process (only counted when ``add`` got them)."""
        return self._view("tokens")

    def total_seconds(self) -> float:
        return math.fsum(self.totals().values())

    def total_samples(self) -> int:
        return sum(self.samples().values())

    def total_tokens(self) -> int:
        return sum(self.tokens().values())

    def __len__(self) -> int:
        return len(self.totals())

    # ---------------------------------------------------------------- combining
    @classmethod
    def combine(cls, states: Iterable[Mapping[str, Any]]) -> ExposureMeter:
        """One meter from the per-rank states of one run (in rank order): their common ``base`` once plus
        every rank's ``local``. The result has only a ``base`` layer, so its state may be loaded on any
        number of ranks."""
        states = list(states)
        if not states:
            raise ExposureError("no exposure states to combine")
        checked = [cls._check_state(s) for s in states]
        base = checked[0]["base"]
        if any(c["base"] != base for c in checked[1:]):
            raise ExposureError("exposure states disagree on their merged base: not from the same run and step")
        total = _empty()
        _add_layer(total, base)
        for c in checked:
            _add_layer(total, c["local"])
        out = cls()
        out._base = _sorted(total)
        return out

    def merged(self) -> ExposureMeter:
        """A new meter with the totals over all ranks (a collective under DDP; local otherwise)."""
        if _distributed():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.state_dict())
            return ExposureMeter.combine(gathered)  # rank order: the same float sums on every rank
        return ExposureMeter.combine([self.state_dict()])

    def all_reduce(self) -> ExposureMeter:
        """Replace this meter's contents by the totals over all ranks (in place; returns self)."""
        m = self.merged()
        self._base, self._local = m._base, _empty()
        return self

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {"schema": EXPOSURE_SCHEMA, "base": _sorted(self._base), "local": _sorted(self._local)}

    @staticmethod
    def _check_state(state: Mapping[str, Any]) -> dict[str, Any]:
        if state.get("schema") != EXPOSURE_SCHEMA:
            raise ExposureError(f"not a {EXPOSURE_SCHEMA} state: {state.get('schema')!r}")
        return {
            "base": _check_layer(state.get("base", {}), "base"),
            "local": _check_layer(state.get("local", {}), "local"),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        c = self._check_state(state)
        self._base, self._local = _sorted(c["base"]), _sorted(c["local"])

    def summary(self) -> dict[str, Any]:
        """Totals as known on this process, in the data card's shape."""
        return {"total_seconds": self.total_seconds(), "samples": self.total_samples(), "tokens": self.total_tokens()}

    def __repr__(self) -> str:
        return f"ExposureMeter({len(self)} recordings, {self.total_seconds():.1f} s)"
