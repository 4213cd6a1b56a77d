"""Pre-encode a cleared snapshot's audio to EnCodec codes once, and cache them with `datasets`.

Only the snapshot's items are read: each file is read once, its bytes are hashed and checked against
the sha256 recorded at clearance (a mismatch means the audio changed since it was cleared, and the
build stops), and the same bytes are decoded with `soundfile` (never `datasets.Audio`, which needs
torchcodec + FFmpeg). Audio is downmixed to mono, resampled to the codec's rate, cut into fixed
segments and encoded in batches.

The cache lives in ``cache_root / <key>`` with ``<key> = <snapshot_id>-<codec digest[:16]>-<seg>s-<bw>kbps``
and is written atomically (a tmp sibling folder, then ``lab.util.atomic.publish_new_dir``), so a half-written cache is
never seen and concurrent builders (e.g. every DDP rank) are harmless. A second call with the same key loads
from disk without encoding anything.

Rows: ``recording_id``, ``segment`` (index within the recording), ``start_s``, ``seconds`` (true audio
seconds in the segment; the last kept segment may be zero-padded), ``frames`` (codec frames that carry
that audio; the rest are padding and are kept out of the loss by the collator), ``description``,
``codes`` (int16, shape (num_codebooks, frames_per_segment)), ``audio_sha256``.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import datasets
import numpy as np
import orjson
import soundfile as sf

from ..models.codec import encode_batch, hop_length, resolve_bandwidth
from ..models.digest import config_for_digest, model_digest
from ..snapshot import Snapshot, load_snapshot
from ..util.atomic import publish_new_dir
from ..util.audio import resample as _resample
from ..util.audio import to_mono
from ..util.canonical import sha256_hex
from ..util.timestamps import utcnow

log = logging.getLogger(__name__)

CACHE_SCHEMA = "lab.codes/1"
# Bumped whenever the audio → codes pipeline changes in a way that changes the codes.
PIPELINE_VERSION = 2  # 2: segments zero-padded to whole hops by lab.models.codec.encode_batch
RESAMPLER = "torch-sinc-hann/width=6/rolloff=0.99"

__all__ = [
    "CodeCacheError",
    "AudioChangedError",
    "cache_key",
    "build_code_cache",
    "load_code_cache",
    "read_cache_json",
    "resample",
    "segment_audio",
    "load_item_audio",
    "CACHE_SCHEMA",
]


class CodeCacheError(RuntimeError):
    pass


class AudioChangedError(CodeCacheError):
    """The audio file of a cleared recording no longer has the sha256 recorded at clearance."""


# --------------------------------------------------------------------------- codec identity


def _resolve_bandwidth(codec, bandwidth: float | None) -> float:
    try:
        return resolve_bandwidth(codec, bandwidth)
    except ValueError as exc:
        raise CodeCacheError(str(exc)) from None


def _fmt(x: float) -> str:
    return f"{float(x):g}"


def cache_key(snapshot: Snapshot, codec, *, segment_seconds: float, bandwidth: float | None = None,
              digest: str | None = None) -> str:
    """``<snapshot_id>-<codec digest[:16]>-<segment_seconds>s-<bandwidth>kbps``. The bandwidth is part of
    the key because it sets how many codebooks are stored; ``None`` resolves to the codec's default."""
    d = digest or model_digest(codec)
    bw = _resolve_bandwidth(codec, bandwidth)
    return f"{snapshot.snapshot_id}-{d[:16]}-{_fmt(segment_seconds)}s-{_fmt(bw)}kbps"


# --------------------------------------------------------------------------- audio


def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling (lab.util.audio): pure torch, so the codes do not depend on whether
    scipy/torchaudio happen to be installed. Returns float32 numpy."""
    wave = np.asarray(wave, dtype=np.float32)
    if orig_sr == new_sr or wave.size == 0:
        return wave
    return _resample(wave, orig_sr, new_sr).numpy().astype(np.float32, copy=False)


def _audio_path(root: Path, item: Mapping[str, Any]) -> Path:
    rel = PurePosixPath(item["audio_path"])
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise CodeCacheError(f"{item['recording_id']}: audio_path {item['audio_path']!r} must be relative to the "
                             "catalogue root")
    return root.joinpath(*rel.parts)


def load_item_audio(item: Mapping[str, Any], root: Path, target_sr: int, *, verify: bool = True) -> np.ndarray:
    """Read one cleared item (a `Snapshot.item` / items row: recording_id, audio_path, audio_sha256): hash
    the bytes (refusing audio that changed since clearance), decode the same bytes with soundfile,
    downmix to mono, resample to ``target_sr``. Returns float32 (samples,)."""
    path = _audio_path(Path(root), item)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CodeCacheError(f"{item['recording_id']}: cannot read {path}: {exc}") from None
    if verify:
        got = sha256_hex(data)
        if got != item["audio_sha256"]:
            raise AudioChangedError(
                f"recording {item['recording_id']}: audio at {path} has sha256 {got}, but the snapshot cleared "
                f"{item['audio_sha256']}; the audio changed since clearance - re-run clearance, it will not be encoded"
            )
    try:
        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile errors are untyped
        raise CodeCacheError(f"{item['recording_id']}: cannot decode {path}: {exc}") from None
    return resample(to_mono(wave, channel_axis=1).numpy(), int(sr), int(target_sr))


@dataclass(frozen=True)
class Segment:
    index: int
    start: int  # sample offset
    samples: int  # true samples (<= segment length)


def segment_audio(num_samples: int, segment_samples: int) -> list[Segment]:
    """Fixed segments; a tail shorter than half a segment is dropped, a longer one is kept (to be padded)."""
    out = []
    full, tail = divmod(int(num_samples), int(segment_samples))
    for i in range(full):
        out.append(Segment(i, i * segment_samples, segment_samples))
    if tail and tail * 2 >= segment_samples:
        out.append(Segment(full, full * segment_samples, tail))
    return out


# --------------------------------------------------------------------------- cache


def _features(num_codebooks: int, frames: int, codebook_size: int) -> datasets.Features:
    if codebook_size > np.iinfo(np.int16).max:
        raise CodeCacheError(f"codebook_size {codebook_size} does not fit int16 codes")
    return datasets.Features({
        "recording_id": datasets.Value("string"),
        "segment": datasets.Value("int32"),
        "start_s": datasets.Value("float64"),
        "seconds": datasets.Value("float64"),
        "frames": datasets.Value("int32"),
        "description": datasets.Value("string"),
        "codes": datasets.Array2D(shape=(num_codebooks, frames), dtype="int16"),
        "audio_sha256": datasets.Value("string"),
    })


def read_cache_json(path: str | Path) -> dict[str, Any]:
    """The ``cache.json`` of a cache folder (key parts, codec geometry, per-recording segment counts)."""
    return orjson.loads((Path(path) / "cache.json").read_bytes())


def load_code_cache(path: str | Path) -> datasets.Dataset:
    """Open an existing cache folder (memory-mapped)."""
    path = Path(path)
    info = read_cache_json(path)
    if info.get("schema") != CACHE_SCHEMA:
        raise CodeCacheError(f"{path}: not a {CACHE_SCHEMA} cache")
    return datasets.load_from_disk(str(path))


class _Encoder:
    """Equal-length segments at the codec rate → int16 codes (B, K, frames), via the one encoder path."""

    def __init__(self, codec, bandwidth: float, num_codebooks: int, frames: int):
        self.codec, self.bw, self.k, self.frames = codec, bandwidth, num_codebooks, frames
        self.sr = int(codec.config.sampling_rate)

    def __call__(self, batch: list[np.ndarray]) -> np.ndarray:
        try:
            codes = np.stack(encode_batch(self.codec, batch, self.sr, bandwidth=self.bw, batch_size=len(batch)))
        except ValueError as exc:
            raise CodeCacheError(str(exc)) from None
        if tuple(codes.shape[1:]) != (self.k, self.frames):
            raise CodeCacheError(
                f"codec produced codes of shape {tuple(codes.shape[1:])}, expected {(self.k, self.frames)}")
        return codes.astype(np.int16)


def _rows(snapshot: Snapshot, root: Path, codec, *, sr: int, seg_samples: int, hop: int, enc: _Encoder,
          batch_size: int, stats: dict[str, Any]) -> Iterator[dict[str, list]]:
    """Yield column batches of encoded rows, encoding `batch_size` segments at a time."""
    pending: list[tuple[dict[str, Any], Segment, np.ndarray]] = []

    def flush():
        codes = enc([p[2] for p in pending])
        cols = {"recording_id": [], "segment": [], "start_s": [], "seconds": [], "frames": [],
                "description": [], "codes": [], "audio_sha256": []}
        for (item, seg, _), c in zip(pending, codes):
            cols["recording_id"].append(item["recording_id"])
            cols["segment"].append(seg.index)
            cols["start_s"].append(seg.start / sr)
            cols["seconds"].append(seg.samples / sr)
            cols["frames"].append(min(enc.frames, -(-seg.samples // hop)))
            cols["description"].append(item["description"])
            cols["codes"].append(c)
            cols["audio_sha256"].append(item["audio_sha256"])
        pending.clear()
        return cols

    for item in snapshot.items.select(["recording_id", "description", "audio_path", "audio_sha256"]).to_pylist():
        wave = load_item_audio(item, root, sr)
        segs = segment_audio(len(wave), seg_samples)
        if not segs:
            stats["skipped"].append({"recording_id": item["recording_id"], "reason": "shorter than half a segment",
                                     "seconds": len(wave) / sr})
            continue
        stats["recordings"][item["recording_id"]] = {
            "segments": len(segs), "seconds": sum(s.samples for s in segs) / sr, "audio_seconds": len(wave) / sr}
        for seg in segs:
            chunk = wave[seg.start: seg.start + seg.samples]
            if len(chunk) < seg_samples:
                chunk = np.pad(chunk, (0, seg_samples - len(chunk)))
            pending.append((item, seg, np.ascontiguousarray(chunk, dtype=np.float32)))
            if len(pending) >= batch_size:
                yield flush()
    if pending:
        yield flush()


def build_code_cache(
    snapshot: Snapshot | str | Path,
    codec,
    cache_root: str | Path,
    *,
    segment_seconds: float,
    bandwidth: float | None = None,
    batch_size: int = 8,
    audio_root: str | Path | None = None,
) -> datasets.Dataset:
    """Encode every cleared item of ``snapshot`` with ``codec`` (an HF ``EncodecModel``) and cache the codes.

    Returns the cached ``datasets.Dataset`` (memory-mapped from ``cache_root / key``). If that folder
    already exists it is loaded without reading any audio. ``audio_root`` overrides
    ``snapshot.catalog["root"]`` (a moved catalogue; the sha256 check still pins every file).
    """
    if not isinstance(snapshot, Snapshot):
        snapshot = load_snapshot(snapshot)
    if segment_seconds <= 0:
        raise ValueError("segment_seconds must be > 0")
    cache_root = Path(cache_root)
    digest = model_digest(codec)
    bw = _resolve_bandwidth(codec, bandwidth)
    key = cache_key(snapshot, codec, segment_seconds=segment_seconds, bandwidth=bw, digest=digest)
    final = cache_root / key
    if (final / "cache.json").is_file():
        info = read_cache_json(final)
        if info.get("pipeline_version") == PIPELINE_VERSION and info.get("codec_digest") == digest:
            log.info("code cache hit: %s", final)
            return load_code_cache(final)
        log.warning("code cache %s was built by another pipeline version; rebuilding", final)
        shutil.rmtree(final, ignore_errors=True)

    cfg = codec.config
    sr = int(cfg.sampling_rate)
    hop = hop_length(codec)
    if getattr(cfg, "audio_channels", 1) != 1:
        raise CodeCacheError("MusicGen mono training needs a mono codec (audio_channels=1)")
    seg_samples = int(round(segment_seconds * sr))
    frames = -(-seg_samples // hop)
    k = int(codec.quantizer.get_num_quantizers_for_bandwidth(bw))
    root = Path(audio_root) if audio_root is not None else Path(snapshot.catalog["root"])
    features = _features(k, frames, int(cfg.codebook_size))

    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = cache_root / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    was_training = codec.training
    codec.eval()
    try:
        stats: dict[str, Any] = {"recordings": {}, "skipped": []}
        rows_file = tmp / "_rows.arrow"
        n_rows = 0
        from datasets.arrow_writer import ArrowWriter

        with ArrowWriter(features=features, path=str(rows_file)) as writer:
            for cols in _rows(snapshot, root, codec, sr=sr, seg_samples=seg_samples, hop=hop,
                              enc=_Encoder(codec, bw, k, frames), batch_size=batch_size, stats=stats):
                writer.write_batch(cols)
                n_rows += len(cols["recording_id"])
            writer.finalize()
        if n_rows == 0:
            raise CodeCacheError(
                f"snapshot {snapshot.snapshot_id}: no audio to train on ({len(snapshot)} cleared item(s), "
                f"{len(stats['skipped'])} shorter than half a {segment_seconds:g} s segment)")
        out = tmp / "dataset"
        ds = datasets.Dataset.from_file(str(rows_file))
        bars = datasets.utils.are_progress_bars_disabled()
        datasets.disable_progress_bars()
        try:
            ds.save_to_disk(str(out))
        finally:
            if not bars:
                datasets.enable_progress_bars()
        del ds
        info = {
            "schema": CACHE_SCHEMA,
            "pipeline_version": PIPELINE_VERSION,
            "key": key,
            "snapshot_id": snapshot.snapshot_id,
            "merkle_root": snapshot.merkle_root,
            "codec_digest": digest,
            "codec_config": config_for_digest(codec.config),
            "segment_seconds": float(segment_seconds),
            "bandwidth": bw,
            "sampling_rate": sr,
            "hop_length": hop,
            "frame_rate": sr / hop,
            "num_codebooks": k,
            "codebook_size": int(cfg.codebook_size),
            "frames_per_segment": frames,
            "samples_per_segment": seg_samples,
            "resampler": RESAMPLER,
            "tail_rule": "drop a tail shorter than half a segment; zero-pad a longer one",
            "rows": n_rows,
            "recordings": stats["recordings"],
            "skipped": stats["skipped"],
            "created_at": utcnow().isoformat().replace("+00:00", "Z"),
        }
        (out / "cache.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        if not publish_new_dir(out, final):
            if not (final / "cache.json").is_file():  # not a concurrent builder winning the race
                raise CodeCacheError(f"{final} exists and is not a code cache")
            log.info("code cache %s was written concurrently; using that one", final)
    finally:
        if was_training:
            codec.train()
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("code cache built: %s (%d segments)", final, n_rows)
    return load_code_cache(final)
