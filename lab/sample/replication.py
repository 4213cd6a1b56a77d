"""The replication gate: is a generated output a copy of something the checkpoint trained on?

Two independent looks, either of which withholds:

* **tokens**: the output's EnCodec codes against the snapshot's code cache (what the model was fed).
  Each frame of the first ``codebooks`` codebooks is one symbol; runs of ``ngram`` symbols are hashed
  to uint64 (a polynomial hash, wrapping); the index holds the sorted unique (hash, recording) pairs.
  The token score is the largest fraction of the output's distinct n-grams found in one recording.
* **audio**: Chromaprint fingerprints (lab.sample.fingerprint) of every training recording, against
  the output's fingerprint over sliding windows and every alignment; the audio score is
  ``1 - best BER / unrelated BER`` clipped to [0, 1], so unrelated audio scores about 0 and an exact
  copy 1.

The index is built once per (snapshot, code cache, index settings, fpcalc version) and cached under
``LAB_HOME/cache/replication/`` (written to a tmp sibling, then renamed into place). Defaults and
thresholds live in ``configs/replication/default.yaml``; benchmarks/bench_replication.py calibrates
them (docs/replication.md). Anything that stops a check from running withholds the output: it is
never released unchecked.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..util.atomic import publish_new_dir, set_aside
from ..util.canonical import digest as json_digest
from ..util.canonical import sha256_file
from . import fingerprint as fp
from .records import ReplicationResult

INDEX_SCHEMA = "lab.replication/1"
CONFIG = Path(__file__).resolve().parents[1] / "resources" / "configs" / "replication" / "default.yaml"
_PRIME = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (golden ratio): spreads n-grams over uint64


class ReplicationUnavailable(RuntimeError):
    """The replication index cannot be built or loaded (no code cache, no snapshot, no fingerprinter)."""


class ReplicationSettings(BaseModel):
    """How the index is built and where the gate draws its lines (configs/replication/default.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ngram: int = Field(10, ge=2, description="codec frames per token n-gram")
    codebooks: int = Field(1, ge=1, description="first k codebooks joined into one symbol per frame")
    window: int = Field(32, ge=4, description="fingerprint items (~0.124 s each) per compared output window")
    min_items: int = Field(8, ge=4, description="a fingerprint shorter than this is not compared")
    unrelated_ber: dict[int, float] = Field(
        default_factory=lambda: {8: 0.252, 12: 0.279, 16: 0.302, 24: 0.333, 32: 0.349},
        description="window (items) -> median best BER of unrelated audio at that window (calibrated); "
        "interpolated, clamped at the ends: a shorter window finds closer chance matches",
    )
    token_threshold: float = Field(0.3, ge=0, le=1)
    audio_threshold: float = Field(0.3, ge=0, le=1)

    @property
    def thresholds(self) -> dict[str, float]:
        return {"tokens": self.token_threshold, "audio": self.audio_threshold}

    def unrelated_at(self, window: int) -> float:
        """The BER that scores 0 for a comparison over ``window`` items."""
        keys = sorted(self.unrelated_ber)
        return float(np.interp(window, keys, [self.unrelated_ber[k] for k in keys]))

    def index_params(self) -> dict[str, Any]:
        """What changes the cached index (thresholds and the BER normaliser do not)."""
        return {"ngram": self.ngram, "codebooks": self.codebooks, "window": self.window, "min_items": self.min_items}


def load_settings(path: str | os.PathLike | None = None, **overrides: Any) -> ReplicationSettings:
    """The defaults from ``configs/replication/default.yaml`` (or ``path``), with ``overrides`` on top."""
    data = yaml.safe_load(Path(path or CONFIG).read_text(encoding="utf-8")) or {}
    return ReplicationSettings(**(data | overrides))


# --------------------------------------------------------------------------- tokens


def _frames(tokens: Any, codebooks: int, codebook_size: int) -> np.ndarray:
    """(T,) int64 symbols of the first ``codebooks`` codebooks of codes [K, T] (or [1, K, T]); frames
    holding a pad / special token (outside [0, codebook_size)) are dropped."""
    if hasattr(tokens, "detach"):
        tokens = tokens.detach().cpu().numpy()
    codes = np.asarray(tokens)
    while codes.ndim > 2 and codes.shape[0] == 1:
        codes = codes[0]
    if codes.ndim != 2:
        raise ValueError(f"tokens must be codes of shape [codebooks, frames], got {tuple(codes.shape)}")
    codes = codes[:codebooks].astype(np.int64)
    if len(codes) < codebooks:
        raise ValueError(f"tokens have {len(codes)} codebook(s); the index joins the first {codebooks}")
    keep = ((codes >= 0) & (codes < codebook_size)).all(axis=0)
    codes = codes[:, keep]
    weights = codebook_size ** np.arange(codebooks, dtype=np.int64)
    return (codes * weights[:, None]).sum(axis=0)


def ngram_hashes(symbols: np.ndarray, n: int) -> np.ndarray:
    """uint64 hashes of every run of ``n`` symbols (wrapping polynomial hash; vectorised over positions)."""
    s = np.asarray(symbols, dtype=np.uint64)
    count = len(s) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    h = np.zeros(count, np.uint64)
    for j in range(n):  # n is small; each step is one vector op over all positions
        h = h * _PRIME + s[j : j + count] + np.uint64(1)
    return h


@dataclass
class NgramIndex:
    """Sorted unique (n-gram hash, recording) pairs over the training codes."""

    recording_ids: list[str]
    hashes: np.ndarray  # uint64, sorted
    owners: np.ndarray  # int32, recording index of each hash
    ngram: int
    codebooks: int
    codebook_size: int

    @classmethod
    def build(
        cls, codes_by_recording: Mapping[str, Any], *, ngram: int, codebooks: int, codebook_size: int
    ) -> NgramIndex:
        """``codes_by_recording``: recording id -> its codes [K, T] in time order (segments joined)."""
        ids = list(codes_by_recording)
        hs, os_ = [], []
        for i, rid in enumerate(ids):
            h = np.unique(ngram_hashes(_frames(codes_by_recording[rid], codebooks, codebook_size), ngram))
            hs.append(h)
            os_.append(np.full(len(h), i, np.int32))
        hashes = np.concatenate(hs) if hs else np.zeros(0, np.uint64)
        owners = np.concatenate(os_) if os_ else np.zeros(0, np.int32)
        order = np.lexsort((owners, hashes))
        return cls(ids, hashes[order], owners[order], ngram, codebooks, codebook_size)

    def containment(self, tokens: Any) -> tuple[float, str | None]:
        """(largest fraction of the output's distinct n-grams found in one recording, that recording)."""
        q = np.unique(ngram_hashes(_frames(tokens, self.codebooks, self.codebook_size), self.ngram))
        if not len(q) or not len(self.hashes):
            return 0.0, None
        lo = np.searchsorted(self.hashes, q, "left")
        hi = np.searchsorted(self.hashes, q, "right")
        counts = hi - lo
        total = int(counts.sum())
        if not total:
            return 0.0, None
        # every index in every [lo, hi) range, without a Python loop
        offsets = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(total)
        per_rec = np.bincount(self.owners[offsets], minlength=len(self.recording_ids))
        best = int(np.argmax(per_rec))
        return float(per_rec[best] / len(q)), self.recording_ids[best]


# --------------------------------------------------------------------------- audio


@dataclass
class FingerprintIndex:
    """Every training recording's Chromaprint items, concatenated; ``owners`` names the recording."""

    recording_ids: list[str]
    items: np.ndarray  # uint32
    owners: np.ndarray  # int32, non-decreasing
    window: int  # items per compared window; a recording shorter than that is compared over its own length
    skipped: list[str] = field(default_factory=list)  # recordings too short to fingerprint

    @classmethod
    def build(cls, prints_by_recording: Mapping[str, np.ndarray], *, window: int, min_items: int) -> FingerprintIndex:
        ids, items, owners, skipped = [], [], [], []
        for rid, p in prints_by_recording.items():
            p = np.asarray(p, np.uint32)
            if len(p) < min_items:
                skipped.append(rid)
                continue
            owners.append(np.full(len(p), len(ids), np.int32))
            ids.append(rid)
            items.append(p)
        return cls(
            ids,
            np.concatenate(items) if items else np.zeros(0, np.uint32),
            np.concatenate(owners) if owners else np.zeros(0, np.int32),
            window,
            skipped,
        )

    def matches(self, query: np.ndarray) -> list[tuple[float, str, int]]:
        """(lowest BER, its recording, window) per window size compared: recordings at least ``window``
        long are compared over ``window`` items (fewer when the output is shorter); a shorter recording
        over its own length, grouped with the recordings of that length, so one short jingle does not
        shorten the windows (and raise the chance matches) of the rest."""
        m = len(query)
        if not self.recording_ids or m == 0:
            return []
        lengths = np.bincount(self.owners, minlength=len(self.recording_ids))
        per_rec = np.minimum(np.minimum(lengths, self.window), m)  # the window each recording is compared over
        out = []
        for w in np.unique(per_rec):
            recs = np.flatnonzero(per_rec == w)
            if len(recs) == len(self.recording_ids):
                items, owners = self.items, self.owners
            else:
                keep = np.isin(self.owners, recs)
                items, owners = self.items[keep], np.searchsorted(recs, self.owners[keep]).astype(np.int32)
            ber = fp.best_ber(query, items, owners, len(recs), window=int(w))
            i = int(np.argmin(ber))
            out.append((float(ber[i]), self.recording_ids[int(recs[i])], int(w)))
        return out

    def best(self, query: np.ndarray, unrelated_at: Callable[[int], float]) -> tuple[float, float, str | None, int]:
        """(audio score, its BER, recording, window): the highest ``1 - BER / unrelated_at(window)``."""
        scored = [(float(np.clip(1.0 - b / unrelated_at(w), 0.0, 1.0)), b, r, w) for b, r, w in self.matches(query)]
        return max(scored, key=lambda x: (x[0], -x[1])) if scored else (0.0, 1.0, None, 0)


# --------------------------------------------------------------------------- the index and the check


@dataclass
class ReplicationIndex:
    settings: ReplicationSettings
    ngrams: NgramIndex
    prints: FingerprintIndex
    identity: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        codes_by_recording: Mapping[str, Any],
        prints_by_recording: Mapping[str, np.ndarray],
        *,
        codebook_size: int,
        settings: ReplicationSettings | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> ReplicationIndex:
        s = settings or load_settings()
        return cls(
            s,
            NgramIndex.build(codes_by_recording, ngram=s.ngram, codebooks=s.codebooks, codebook_size=codebook_size),
            FingerprintIndex.build(prints_by_recording, window=s.window, min_items=s.min_items),
            dict(identity or {}),
        )

    # ---- persistence

    def save(self, folder: str | os.PathLike) -> None:
        """``index.npz`` + ``index.json`` (identity, settings, recording lists and the npz's sha256)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = folder / "index.npz"
        with arrays.open("wb") as f:
            np.savez(
                f,
                ngram_hashes=self.ngrams.hashes,
                ngram_owners=self.ngrams.owners,
                fp_items=self.prints.items,
                fp_owners=self.prints.owners,
            )
        meta = {
            "schema": INDEX_SCHEMA,
            "identity": self.identity,
            "index_params": self.settings.index_params(),
            "codebook_size": self.ngrams.codebook_size,
            "ngram_recordings": self.ngrams.recording_ids,
            "fp_recordings": self.prints.recording_ids,
            "fp_window": self.prints.window,
            "fp_skipped": self.prints.skipped,
            "npz_sha256": sha256_file(arrays),
        }
        (folder / "index.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    @classmethod
    def load(cls, folder: str | os.PathLike, settings: ReplicationSettings | None = None) -> ReplicationIndex:
        """A saved index; raises ReplicationUnavailable when it is damaged or built with other parameters."""
        folder = Path(folder)
        s = settings or load_settings()
        try:
            meta = orjson.loads((folder / "index.json").read_bytes())
            if meta.get("schema") != INDEX_SCHEMA or meta.get("index_params") != s.index_params():
                raise ReplicationUnavailable(f"{folder.name}: built with other parameters")
            if sha256_file(folder / "index.npz") != meta.get("npz_sha256"):
                raise ReplicationUnavailable(f"{folder.name}: index.npz does not match its sha256")
            with np.load(folder / "index.npz") as z:
                a = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as exc:
            raise ReplicationUnavailable(f"{folder.name}: unreadable ({exc})") from None
        ngrams = NgramIndex(
            meta["ngram_recordings"], a["ngram_hashes"], a["ngram_owners"], s.ngram, s.codebooks, meta["codebook_size"]
        )
        prints = FingerprintIndex(meta["fp_recordings"], a["fp_items"], a["fp_owners"], meta["fp_window"])
        prints.skipped = list(meta.get("fp_skipped", []))
        return cls(s, ngrams, prints, meta.get("identity", {}))

    # ---- from a snapshot / a checkpoint

    @classmethod
    def for_snapshot(
        cls,
        snapshot: Any,
        *,
        home: str | os.PathLike,
        codec_digest: str | None = None,
        segment_seconds: float | None = None,
        settings: ReplicationSettings | None = None,
        audio_root: str | os.PathLike | None = None,
    ) -> ReplicationIndex:
        """The index over ``snapshot``'s code cache (under ``home/cache/codes``) and its audio, built
        once and cached under ``home/cache/replication``. The cache is picked by ``codec_digest`` and
        ``segment_seconds`` when given; several matching caches without a digest is an error."""
        from ..data.codes import CodeCacheError, load_code_cache, read_cache_json

        s = settings or load_settings()
        home = Path(home)
        cache = _pick_code_cache(snapshot, home / "cache" / "codes", codec_digest, segment_seconds)
        info = read_cache_json(cache)
        try:
            fpcalc = fp.fpcalc_path()
            version = fp.fpcalc_version(fpcalc)
        except fp.FingerprintUnavailable as exc:
            raise ReplicationUnavailable(str(exc)) from None
        identity = {
            "snapshot_id": snapshot.snapshot_id,
            "merkle_root": snapshot.merkle_root,
            "code_cache": cache.name,
            "code_cache_sha256": info["info_sha256"],
            "codec_digest": info["codec_digest"],
            "fpcalc": version,
        }
        key = f"{snapshot.snapshot_id}-{info['info_sha256'][:16]}-{json_digest(identity | s.index_params())[:12]}"
        final = home / "cache" / "replication" / key
        if (final / "index.json").is_file():
            try:
                return cls.load(final, s)
            except ReplicationUnavailable:
                set_aside(final)
        try:
            ds = load_code_cache(cache, snapshot, codec_digest=info["codec_digest"])
        except Exception as exc:  # noqa: BLE001 - a refused cache: the gate cannot compare tokens
            raise ReplicationUnavailable(f"code cache {cache.name}: {exc}") from None
        codes = codes_by_recording(ds, int(info["num_codebooks"]), int(info["frames_per_segment"]))
        root = Path(audio_root) if audio_root is not None else Path(snapshot.catalog["root"])
        try:
            prints = snapshot_fingerprints(snapshot, root, fpcalc=fpcalc)
        except (fp.FingerprintUnavailable, CodeCacheError) as exc:  # e.g. audio changed since clearance
            raise ReplicationUnavailable(f"training audio of snapshot {snapshot.snapshot_id}: {exc}") from None
        index = cls.build(codes, prints, codebook_size=int(info["codebook_size"]), settings=s, identity=identity)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            index.save(tmp)
            publish_new_dir(tmp, final)  # a concurrent builder that won wrote the same index
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return index

    @classmethod
    def for_checkpoint(
        cls,
        folder: str | os.PathLike,
        *,
        home: str | os.PathLike,
        codec_digest: str | None = None,
        snapshot: Any = None,
        settings: ReplicationSettings | None = None,
    ) -> ReplicationIndex:
        """The index for the snapshot a checkpoint trained on (its card's ``snapshot.snapshot_id``), found
        through the run's ``config.lab.json`` (``data.snapshot``, ``paths.snapshots``) unless given.
        Pass ``codec_digest`` (``lab.models.digest.model_digest(model.audio_encoder)``) to pin the cache."""
        from ..snapshot import load_snapshot

        folder = Path(folder)
        try:
            card = orjson.loads((folder / "data_card.json").read_bytes())
            snapshot_id = card["snapshot"]["snapshot_id"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReplicationUnavailable(f"{folder}: no data card naming its snapshot ({exc})") from None
        cfg = _run_config(folder)
        if snapshot is None:
            path = _find_snapshot(snapshot_id, cfg, Path(home))
            try:
                snapshot = load_snapshot(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable snapshot: the gate cannot compare
                raise ReplicationUnavailable(f"snapshot {snapshot_id} at {path}: {exc}") from None
        if snapshot.snapshot_id != snapshot_id:
            raise ReplicationUnavailable(f"{folder.name} trained on {snapshot_id}, not {snapshot.snapshot_id}")
        segment = (cfg.get("data") or {}).get("segment_seconds")
        return cls.for_snapshot(
            snapshot, home=home, codec_digest=codec_digest, segment_seconds=segment, settings=settings
        )


def check_replication(
    tokens: Any,
    audio: np.ndarray | None,
    sample_rate: int,
    *,
    index: ReplicationIndex,
    thresholds: Mapping[str, float] | None = None,
) -> ReplicationResult:
    """Score one output (codes [K, T] and its decoded mono audio) against the index; withheld when either
    score is over its threshold, or when a check could not run (fail closed)."""
    s = index.settings
    th = {**s.thresholds, **(thresholds or {})}
    token_score, token_rec = index.ngrams.containment(tokens)
    notes: list[str] = []
    audio_score, audio_rec, failed = 0.0, None, None
    try:
        query = fp.fingerprint(np.asarray(audio, np.float32).reshape(-1), sample_rate) if audio is not None else None
    except fp.FingerprintUnavailable as exc:
        query, failed = None, str(exc)
    if failed:
        notes.append(f"audio check could not run ({failed})")
    elif query is None:
        failed = "no audio given"
        notes.append("audio check could not run (no audio given)")
    elif len(query) < s.min_items:
        notes.append(f"audio too short to fingerprint ({len(query)} items < {s.min_items})")
    elif not index.prints.recording_ids:
        notes.append("no training recording long enough to fingerprint")
    else:
        audio_score, ber, audio_rec, w = index.prints.best(query, s.unrelated_at)
        notes.append(f"best BER {ber:.3f} over {w}-item windows")
    over_t = token_score > th["tokens"]
    over_a = audio_score > th["audio"]
    if over_t or over_a:
        by = "tokens" if (over_t and (not over_a or token_score >= audio_score)) else "audio"
    else:
        by = "tokens" if token_score >= audio_score else "audio"
    nearest = (token_rec if by == "tokens" else audio_rec) or token_rec or audio_rec
    if nearest is None:
        by = None
    withheld = bool(over_t or over_a or failed)
    verdict = (
        f"withheld: {'token containment' if by == 'tokens' else 'audio fingerprint'} over threshold, nearest {nearest}"
        if over_t or over_a
        else ("withheld: not checked" if failed else "released: under both thresholds")
    )
    detail = (
        f"{verdict}; tokens {token_score:.2f} (> {th['tokens']:.2f} withholds), "
        f"audio {audio_score:.2f} (> {th['audio']:.2f} withholds)" + "".join(f"; {n}" for n in notes)
    )
    return ReplicationResult(
        token_score=float(np.clip(token_score, 0, 1)),
        audio_score=audio_score,
        nearest_recording=nearest,
        nearest_by=by,
        withheld=withheld,
        thresholds={k: float(v) for k, v in th.items()},
        detail=detail,
    )


# --------------------------------------------------------------------------- helpers


def codes_by_recording(dataset: Any, num_codebooks: int, frames_per_segment: int) -> dict[str, np.ndarray]:
    """Recording id -> its codes [K, T]: the cache's segments in order, padding frames dropped."""
    from ..data.codes import _codes_values  # the cache's own reader of its fixed-shape codes column

    table = dataset.data.table
    cols = table.select(["recording_id", "segment", "frames"]).to_pydict()
    chunks = list(_codes_values(table.column("codes"), (num_codebooks, frames_per_segment)))
    codes = np.concatenate(chunks) if chunks else np.zeros((0, num_codebooks, frames_per_segment), np.int16)
    parts: dict[str, list[tuple[int, np.ndarray]]] = {}
    for i, (rid, seg, n) in enumerate(zip(cols["recording_id"], cols["segment"], cols["frames"])):
        parts.setdefault(rid, []).append((int(seg), codes[i, :, : int(n)]))
    return {rid: np.concatenate([c for _, c in sorted(p, key=lambda x: x[0])], axis=1) for rid, p in parts.items()}


def snapshot_fingerprints(
    snapshot: Any, root: Path, *, fpcalc: str | None = None, ids: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Recording id -> Chromaprint items of its cleared audio (sha256-checked, at the fingerprint rate)."""
    from ..data.codes import load_item_audio

    wanted = set(ids) if ids is not None else None
    out: dict[str, np.ndarray] = {}
    for item in snapshot.items.select(["recording_id", "audio_path", "audio_sha256"]).to_pylist():
        if wanted is not None and item["recording_id"] not in wanted:
            continue
        wave = load_item_audio(item, root, fp.RATE)
        out[item["recording_id"]] = fp.fingerprint(wave, fp.RATE, fpcalc=fpcalc)
    return out


def _pick_code_cache(snapshot: Any, root: Path, codec_digest: str | None, segment_seconds: float | None) -> Path:
    from ..data.codes import read_cache_json

    found = []
    for path in sorted(root.glob(f"{snapshot.snapshot_id}-*")):
        try:
            info = read_cache_json(path)
        except (OSError, ValueError):
            continue
        if codec_digest and info.get("codec_digest") != codec_digest:
            continue
        if segment_seconds is not None and float(info.get("segment_seconds", -1)) != float(segment_seconds):
            continue
        found.append(path)
    if not found:
        raise ReplicationUnavailable(
            f"no code cache for snapshot {snapshot.snapshot_id} under {root}"
            + (f" with codec {codec_digest[:16]}" if codec_digest else "")
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ReplicationUnavailable(
            f"several code caches for snapshot {snapshot.snapshot_id} ({names}); pass the codec digest"
        )
    return found[0]


def _run_config(folder: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((folder / "config.lab.json").read_text(encoding="utf-8"))
        return cfg if isinstance(cfg, dict) else {}
    except (OSError, ValueError):
        return {}


def _find_snapshot(snapshot_id: str, cfg: Mapping[str, Any], home: Path) -> Path:
    from ..settings import experiments_root

    named = (cfg.get("data") or {}).get("snapshot")
    candidates = [Path(str(named))] if named else []
    for base in ((cfg.get("paths") or {}).get("snapshots"), experiments_root() / "snapshots"):
        if base:
            candidates.append(Path(str(base)) / snapshot_id)
    for c in candidates:
        if (c / "snapshot.json").is_file() and c.name == snapshot_id:
            return c
    raise ReplicationUnavailable(f"snapshot {snapshot_id} not found (looked in {', '.join(map(str, candidates))})")
