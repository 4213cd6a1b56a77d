"""Pre-encode a cleared snapshot's audio to EnCodec codes once, and cache them with `datasets`.

Only the snapshot's items are read, in bounded memory whatever their length: each file is opened once,
its bytes hashed (streaming) and checked against the sha256 recorded at clearance (a mismatch means the
audio changed since it was cleared, and the build stops), then the same open file is decoded with
`soundfile` block by block (never `datasets.Audio`, which needs torchcodec + FFmpeg), each block downmixed
to mono and resampled to the codec's rate (:class:`StreamResampler` gives the samples a whole-file
resample would), cut into fixed segments and encoded a batch of segments at a time. An hour of 44.1 kHz
stereo never sits in memory; see benchmarks/bench_long_audio.py.

The cache lives in ``cache_root / <key>`` with ``<key> = <snapshot_id>-<codec digest[:16]>-<seg>s-<bw>kbps``
and is written atomically (a tmp sibling folder, then ``lab.util.atomic.publish_new_dir``), so a half-written cache is
never seen and concurrent builders (e.g. every DDP rank) are harmless.

A cache is verified, not trusted: ``cache.json`` carries its own digest (``info_sha256``), the codec digest
and a digest over the snapshot items' leaf digests (``items_sha256``), and every row carries ``digest``
(sha256 over its fields and its codes bytes), chained in ``rows_sha256``. A second call with the same key
re-checks all of that (hashing only, no audio read); a cache that fails is refused, moved aside and
rebuilt from the audio, and the one-line reason goes to ``notify`` (the train recipe prints it). The
digests are plain sha256: they catch a rewritten row or file, not someone who recomputes every digest.

Rows: ``recording_id``, ``segment`` (index within the recording), ``start_s``, ``seconds`` (true audio
seconds in the segment; the last kept segment may be zero-padded), ``frames`` (codec frames that carry
that audio; the rest are padding and are kept out of the loss by the collator), ``description``,
``codes`` (int16, shape (num_codebooks, frames_per_segment)), ``audio_sha256``, ``digest``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import datasets
import numpy as np
import orjson
import pyarrow as pa
import soundfile as sf
import torch
from tqdm import tqdm

from ..models.codec import encode_batch, hop_length, resolve_bandwidth
from ..models.digest import config_for_digest, model_digest
from ..snapshot import Snapshot, load_snapshot
from ..util.atomic import publish_new_dir, set_aside
from ..util.audio import _sinc_kernel, to_mono
from ..util.audio import resample as _resample
from ..util.canonical import canonical_json
from ..util.canonical import digest as json_digest
from ..util.timestamps import utcnow

log = logging.getLogger(__name__)

CACHE_SCHEMA = "lab.codes/1"
# Bumped whenever the audio → codes pipeline changes in a way that changes the codes or the rows.
PIPELINE_VERSION = 3  # 2: segments zero-padded to whole hops; 3: block-wise decoding, row digests
RESAMPLER = "torch-sinc-hann/width=6/rolloff=0.99"
BLOCK_SECONDS = 10.0  # audio decoded per read: bounds memory whatever the file's length
_HASH_CHUNK = 1 << 22

__all__ = [
    "CodeCacheError",
    "AudioChangedError",
    "TamperedCacheError",
    "StreamResampler",
    "cache_key",
    "build_code_cache",
    "load_code_cache",
    "verify_code_cache",
    "read_cache_json",
    "row_digest",
    "items_sha256",
    "resample",
    "segment_audio",
    "iter_item_audio",
    "load_item_audio",
    "sample_item_windows",
    "CACHE_SCHEMA",
]


class CodeCacheError(RuntimeError):
    pass


class AudioChangedError(CodeCacheError):
    """The audio file of a cleared recording no longer has the sha256 recorded at clearance."""


class TamperedCacheError(CodeCacheError):
    """A cache folder does not match its own digests, its snapshot or its codec."""


# --------------------------------------------------------------------------- codec identity


def _resolve_bandwidth(codec, bandwidth: float | None) -> float:
    try:
        return resolve_bandwidth(codec, bandwidth)
    except ValueError as exc:
        raise CodeCacheError(str(exc)) from None


def _fmt(x: float) -> str:
    return f"{float(x):g}"


def cache_key(
    snapshot: Snapshot, codec, *, segment_seconds: float, bandwidth: float | None = None, digest: str | None = None
) -> str:
    """``<snapshot_id>-<codec digest[:16]>-<segment_seconds>s-<bandwidth>kbps``. The bandwidth is part of
    the key because it sets how many codebooks are stored; ``None`` resolves to the codec's default."""
    d = digest or model_digest(codec)
    bw = _resolve_bandwidth(codec, bandwidth)
    return f"{snapshot.snapshot_id}-{d[:16]}-{_fmt(segment_seconds)}s-{_fmt(bw)}kbps"


def items_sha256(snapshot: Snapshot) -> str:
    """sha256 over the cleared items' (recording_id, leaf digest) pairs: what the cache encodes, by content."""
    pairs = snapshot.items.select(["recording_id", "digest"]).to_pydict()
    return json_digest([list(p) for p in zip(pairs["recording_id"], pairs["digest"])])


# --------------------------------------------------------------------------- audio


def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling (lab.util.audio): pure torch, so the codes do not depend on whether
    scipy/torchaudio happen to be installed. Returns float32 numpy."""
    wave = np.asarray(wave, dtype=np.float32)
    if orig_sr == new_sr or wave.size == 0:
        return wave
    return _resample(wave, orig_sr, new_sr).numpy().astype(np.float32, copy=False)


class StreamResampler:
    """``resample`` fed block by block: the same Hann-windowed sinc, so the concatenated output equals
    resampling the whole signal at once (each output sample needs only the kernel's width of input on
    either side), while only one block and that margin are held."""

    def __init__(self, orig_sr: int, new_sr: int):
        if orig_sr <= 0 or new_sr <= 0:
            raise ValueError("sample rates must be positive")
        g = math.gcd(int(orig_sr), int(new_sr))
        self.orig, self.new = int(orig_sr) // g, int(new_sr) // g
        self.identity = self.orig == self.new
        self.seen = self.emitted = 0
        if not self.identity:
            self.kernel, self.width = _sinc_kernel(self.orig, self.new)
            self.buf = torch.zeros(self.width)  # the left zero padding of the whole-signal version

    def _run(self) -> np.ndarray:
        span = 2 * self.width + self.orig  # input samples behind one group of `new` outputs
        if len(self.buf) < span:
            return np.zeros(0, np.float32)
        groups = (len(self.buf) - span) // self.orig + 1
        x = self.buf[: (groups - 1) * self.orig + span]
        y = torch.nn.functional.conv1d(x[None, None], self.kernel, stride=self.orig)[0].t().reshape(-1)
        self.buf = self.buf[groups * self.orig :]
        return y.numpy()

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        self.seen += len(block)
        if self.identity:
            return block
        self.buf = torch.cat([self.buf, torch.from_numpy(np.ascontiguousarray(block))])
        out = self._run()
        self.emitted += len(out)
        return out

    def flush(self) -> np.ndarray:
        """The last samples (the right zero padding applied); output length ``ceil(seen * new / orig)``."""
        if self.identity:
            return np.zeros(0, np.float32)
        self.buf = torch.cat([self.buf, torch.zeros(self.width + self.orig)])
        out = self._run()[: max(0, math.ceil(self.new * self.seen / self.orig) - self.emitted)]
        self.emitted += len(out)
        return out


def _audio_path(root: Path, item: Mapping[str, Any]) -> Path:
    rel = PurePosixPath(item["audio_path"])
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise CodeCacheError(
            f"{item['recording_id']}: audio_path {item['audio_path']!r} must be relative to the catalogue root"
        )
    return root.joinpath(*rel.parts)


def _open_audio(path: Path) -> BinaryIO:
    return path.open("rb")


def _check_sha256(f: BinaryIO, item: Mapping[str, Any], path: Path) -> None:
    h = hashlib.sha256()
    while chunk := f.read(_HASH_CHUNK):
        h.update(chunk)
    got = h.hexdigest()
    if got != item["audio_sha256"]:
        raise AudioChangedError(
            f"recording {item['recording_id']}: audio at {path} has sha256 {got}, but the snapshot cleared "
            f"{item['audio_sha256']}; the audio changed since clearance - re-run clearance, it will not be encoded"
        )
    f.seek(0)


def iter_item_audio(
    item: Mapping[str, Any], root: Path, target_sr: int, *, verify: bool = True, block_seconds: float = BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """Stream one cleared item (a `Snapshot.item` / items row: recording_id, audio_path, audio_sha256) as
    float32 mono blocks at ``target_sr``: the file's sha256 is checked before a sample is decoded (refusing
    audio that changed since clearance), then the same open file is decoded ``block_seconds`` at a time,
    downmixed and resampled; a file rewritten while it is read is refused too."""
    path = _audio_path(Path(root), item)
    rid = item["recording_id"]
    try:
        f = _open_audio(path)
    except OSError as exc:
        raise CodeCacheError(f"{rid}: cannot read {path}: {exc}") from None
    with f:
        if verify:
            _check_sha256(f, item, path)
        before = os.fstat(f.fileno())
        try:
            snd = sf.SoundFile(f)
        except Exception as exc:  # noqa: BLE001 - libsndfile errors are untyped
            raise CodeCacheError(f"{rid}: cannot decode {path}: {exc}") from None
        with snd:
            rs = StreamResampler(int(snd.samplerate), int(target_sr))
            frames = max(1, int(block_seconds * snd.samplerate))
            while True:
                try:
                    data = snd.read(frames, dtype="float32", always_2d=True)
                except Exception as exc:  # noqa: BLE001
                    raise CodeCacheError(f"{rid}: cannot decode {path}: {exc}") from None
                if not len(data):
                    break
                out = rs.push(to_mono(data, channel_axis=1).numpy())
                if len(out):
                    yield out
            tail = rs.flush()
            if len(tail):
                yield tail
        after = os.fstat(f.fileno())
        if verify and (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise AudioChangedError(f"recording {rid}: {path} was rewritten while it was read; it will not be encoded")


def load_item_audio(item: Mapping[str, Any], root: Path, target_sr: int, *, verify: bool = True) -> np.ndarray:
    """The whole of :func:`iter_item_audio` in one float32 array (samples,): for short clips only."""
    blocks = list(iter_item_audio(item, root, target_sr, verify=verify))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def _window_seed(seed: int, recording_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{recording_id}".encode()).digest()[:8], "little")


def _reservoir_windows(blocks: Iterable[np.ndarray], window: int, keep: int, rng: np.random.Generator) -> list:
    """Up to ``keep`` consecutive ``window``-sample windows, drawn uniformly (reservoir sampling) from a
    stream; a tail of at least half a window counts as one, and a clip shorter than a window is kept whole."""
    picked: list[np.ndarray] = []
    seen = 0
    buf = np.zeros(0, np.float32)

    def offer(w: np.ndarray) -> None:
        nonlocal seen
        if len(picked) < keep:
            picked.append(w)
        else:
            j = int(rng.integers(0, seen + 1))
            if j < keep:
                picked[j] = w
        seen += 1

    for block in blocks:
        buf = np.concatenate([buf, block])
        while len(buf) >= window:
            offer(buf[:window].copy())
            buf = buf[window:]
    if len(buf) and (seen == 0 or 2 * len(buf) >= window):
        offer(buf.copy())
    return picked


def sample_item_windows(
    items: Iterable[Mapping[str, Any]],
    root: Path,
    target_sr: int,
    *,
    window_seconds: float,
    per_item: int,
    seed: int,
    progress: bool | None = None,
    total_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """A bounded sample of every item's audio for fitting codebooks: per item (streamed, sha256-checked)
    up to ``per_item`` windows of ``window_seconds``, drawn with a seed of (``seed``, recording id), so a
    long file costs no more memory than a short one. ``progress`` shows a bar (None: on a terminal)."""
    window = max(1, int(round(window_seconds * target_sr)))
    with tqdm(
        total=total_seconds,
        unit="s",
        unit_scale=True,
        desc="base model: sampling audio",
        disable=_bar_off(progress),
        mininterval=1.0,
        leave=False,
    ) as bar:
        for item in items:
            rng = np.random.default_rng(_window_seed(seed, item["recording_id"]))
            yield from _reservoir_windows(
                _counted(iter_item_audio(item, root, target_sr), bar, target_sr), window, per_item, rng
            )


def _bar_off(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: False → off, True → on, None → on only when stderr is a terminal."""
    return None if progress is None else not progress


def _counted(blocks: Iterable[np.ndarray], bar, sr: int) -> Iterator[np.ndarray]:
    for b in blocks:
        bar.update(len(b) / sr)
        yield b


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


class _Segmenter:
    """Blocks → (Segment, zero-padded chunk) as they fill, by :func:`segment_audio`'s rule; ``total`` counts
    the samples seen."""

    def __init__(self, segment_samples: int):
        self.n, self.total = int(segment_samples), 0

    def __call__(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[Segment, np.ndarray]]:
        buf, index = np.zeros(0, np.float32), 0
        for block in blocks:
            self.total += len(block)
            buf = np.concatenate([buf, block])
            while len(buf) >= self.n:
                yield Segment(index, index * self.n, self.n), np.ascontiguousarray(buf[: self.n])
                buf, index = buf[self.n :], index + 1
        if len(buf) and 2 * len(buf) >= self.n:
            yield Segment(index, index * self.n, len(buf)), np.pad(buf, (0, self.n - len(buf)))


# --------------------------------------------------------------------------- cache


_COLUMNS = ("recording_id", "segment", "start_s", "seconds", "frames", "description", "codes", "audio_sha256")


def _features(num_codebooks: int, frames: int, codebook_size: int) -> datasets.Features:
    if codebook_size > np.iinfo(np.int16).max:
        raise CodeCacheError(f"codebook_size {codebook_size} does not fit int16 codes")
    return datasets.Features(
        {
            "recording_id": datasets.Value("string"),
            "segment": datasets.Value("int32"),
            "start_s": datasets.Value("float64"),
            "seconds": datasets.Value("float64"),
            "frames": datasets.Value("int32"),
            "description": datasets.Value("string"),
            "codes": datasets.Array2D(shape=(num_codebooks, frames), dtype="int16"),
            "audio_sha256": datasets.Value("string"),
            "digest": datasets.Value("string"),
        }
    )


def row_digest(row: Mapping[str, Any], codes: np.ndarray) -> str:
    """sha256 over a row's fields (canonical JSON) and its codes (int16 little-endian, C order, shape first)."""
    c = np.ascontiguousarray(codes, dtype="<i2")
    fields = {k: row[k] for k in _COLUMNS if k != "codes"} | {"shape": list(c.shape)}
    h = hashlib.sha256(canonical_json(fields))
    h.update(c.tobytes())
    return h.hexdigest()


def read_cache_json(path: str | Path) -> dict[str, Any]:
    """The ``cache.json`` of a cache folder (key parts, codec geometry, per-recording segment counts, digests)."""
    return orjson.loads((Path(path) / "cache.json").read_bytes())


def _info_sha256(info: Mapping[str, Any]) -> str:
    return json_digest({k: v for k, v in info.items() if k != "info_sha256"})


def _codes_values(col: pa.ChunkedArray, shape: tuple[int, int]) -> Iterator[np.ndarray]:
    """The codes column, a chunk at a time, as int16 (rows, K, F) arrays (no copy per row)."""
    for chunk in col.chunks:
        storage = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
        flat = storage.flatten().flatten().to_numpy(zero_copy_only=False)
        yield flat.reshape(len(chunk), *shape)


def verify_code_cache(
    path: str | Path, snapshot: Snapshot | None = None, *, codec_digest: str | None = None
) -> dict[str, Any]:
    """Check a cache folder against its own digests (cache.json, every row, the chain of rows) and, when
    given, against ``snapshot`` (its id, its items' leaf digests, each row's recording, audio and
    description) and ``codec_digest``. Returns cache.json; raises :class:`TamperedCacheError` naming the
    first thing that does not match."""
    path = Path(path)
    try:
        info = read_cache_json(path)
    except (OSError, orjson.JSONDecodeError) as exc:
        raise TamperedCacheError(f"cache.json unreadable ({exc})") from None
    if info.get("schema") != CACHE_SCHEMA:
        raise TamperedCacheError(f"not a {CACHE_SCHEMA} cache")
    if info.get("info_sha256") != _info_sha256(info):
        raise TamperedCacheError("cache.json does not match its digest (edited)")
    if codec_digest is not None and info.get("codec_digest") != codec_digest:
        raise TamperedCacheError(f"built with codec {str(info.get('codec_digest'))[:16]}, not {codec_digest[:16]}")
    by_id: dict[str, tuple[str, str]] = {}
    if snapshot is not None:
        if info.get("snapshot_id") != snapshot.snapshot_id:
            raise TamperedCacheError(f"built for snapshot {info.get('snapshot_id')}, not {snapshot.snapshot_id}")
        if info.get("items_sha256") != items_sha256(snapshot):
            raise TamperedCacheError("built from other items than the snapshot's (leaf digests differ)")
        cols = snapshot.items.select(["recording_id", "audio_sha256", "description"]).to_pydict()
        by_id = {r: (a, d) for r, a, d in zip(cols["recording_id"], cols["audio_sha256"], cols["description"])}
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a damaged folder
        raise TamperedCacheError(f"dataset unreadable ({exc})") from None
    shape = (int(info["num_codebooks"]), int(info["frames_per_segment"]))
    table = ds.data.table
    if table.num_rows != info.get("rows"):
        raise TamperedCacheError(f"{table.num_rows} rows, cache.json says {info.get('rows')}")
    chain = hashlib.sha256()
    scalars = [c for c in _COLUMNS if c != "codes"] + ["digest"]
    i = 0
    try:
        batches = zip(table.select(scalars).to_batches(), _codes_values(table.column("codes"), shape), strict=True)
        for batch, codes in batches:
            for row, c in zip(batch.to_pylist(), codes):
                if row["digest"] != row_digest(row, c):
                    raise TamperedCacheError(
                        f"row {i} ({row['recording_id']} segment {row['segment']}) does not "
                        "match its digest (rewritten codes or fields)"
                    )
                if snapshot is not None and by_id.get(row["recording_id"]) != (row["audio_sha256"], row["description"]):
                    raise TamperedCacheError(
                        f"row {i}: recording {row['recording_id']} is not in the snapshot as "
                        "encoded (audio or description differ)"
                    )
                chain.update(row["digest"].encode())
                i += 1
    except (ValueError, pa.ArrowException) as exc:  # a reshaped codes column, a batch-count mismatch
        raise TamperedCacheError(f"codes column malformed ({exc})") from None
    if chain.hexdigest() != info.get("rows_sha256"):
        raise TamperedCacheError("rows do not match the cache.json row chain (rows added, removed or reordered)")
    return info


def load_code_cache(
    path: str | Path, snapshot: Snapshot | None = None, *, codec_digest: str | None = None, verify: bool = True
) -> datasets.Dataset:
    """Open an existing cache folder (memory-mapped), after :func:`verify_code_cache` unless ``verify`` is off."""
    path = Path(path)
    if verify:
        try:
            verify_code_cache(path, snapshot, codec_digest=codec_digest)
        except TamperedCacheError as exc:
            raise TamperedCacheError(f"code cache {path} refused: {exc}") from None
    elif read_cache_json(path).get("schema") != CACHE_SCHEMA:
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
                f"codec produced codes of shape {tuple(codes.shape[1:])}, expected {(self.k, self.frames)}"
            )
        return codes.astype(np.int16)


def _rows(
    snapshot: Snapshot,
    root: Path,
    *,
    sr: int,
    seg_samples: int,
    hop: int,
    enc: _Encoder,
    batch_size: int,
    stats: dict[str, Any],
    bar,
) -> Iterator[dict[str, list]]:
    """Yield column batches of encoded rows, streaming each recording and encoding `batch_size` segments at
    a time (so at most one decode block and one batch of segments are held)."""
    pending: list[tuple[dict[str, Any], Segment, np.ndarray]] = []

    def flush():
        codes = enc([p[2] for p in pending])
        cols: dict[str, list] = {k: [] for k in (*_COLUMNS, "digest")}
        for (item, seg, _), c in zip(pending, codes):
            row = {
                "recording_id": item["recording_id"],
                "segment": seg.index,
                "start_s": seg.start / sr,
                "seconds": seg.samples / sr,
                "frames": min(enc.frames, -(-seg.samples // hop)),
                "description": item["description"],
                "audio_sha256": item["audio_sha256"],
            }
            for k, v in row.items():
                cols[k].append(v)
            cols["codes"].append(c)
            cols["digest"].append(row_digest(row, c))
        pending.clear()
        return cols

    for item in snapshot.items.select(["recording_id", "description", "audio_path", "audio_sha256"]).to_pylist():
        cut = _Segmenter(seg_samples)
        n = 0
        for seg, chunk in cut(_counted(iter_item_audio(item, root, sr), bar, sr)):
            pending.append((item, seg, chunk))
            n += 1
            if len(pending) >= batch_size:
                yield flush()
        if not n:
            stats["skipped"].append(
                {
                    "recording_id": item["recording_id"],
                    "reason": "shorter than half a segment",
                    "seconds": cut.total / sr,
                }
            )
            continue
        kept = min(cut.total, n * seg_samples)
        stats["recordings"][item["recording_id"]] = {
            "segments": n,
            "seconds": kept / sr,
            "audio_seconds": cut.total / sr,
        }
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
    progress: bool | None = False,
    notify: Callable[[str], None] | None = None,
) -> datasets.Dataset:
    """Encode every cleared item of ``snapshot`` with ``codec`` (an HF ``EncodecModel``) and cache the codes.

    Returns the cached ``datasets.Dataset`` (memory-mapped from ``cache_root / key``). If that folder
    already exists and verifies (:func:`verify_code_cache`) it is loaded without reading any audio; if it
    does not, the one-line reason is logged and passed to ``notify``, and the cache is rebuilt.
    ``audio_root`` overrides ``snapshot.catalog["root"]`` (a moved catalogue; the sha256 check still pins
    every file). ``progress`` shows an encoding bar in audio seconds (None: only on a terminal).
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
        if info.get("pipeline_version") != PIPELINE_VERSION:
            reason = f"was built by pipeline version {info.get('pipeline_version')}, this is {PIPELINE_VERSION}"
        else:
            try:
                verify_code_cache(final, snapshot, codec_digest=digest)
                log.info("code cache hit (verified): %s", final)
                return datasets.load_from_disk(str(final))
            except TamperedCacheError as exc:
                reason = f"failed verification: {exc}"
        message = f"code cache {key} {reason}; refused, rebuilding it from the audio"
        log.warning(message)
        if notify is not None:
            notify(message)
        set_aside(final)

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
    total = float(sum(snapshot.items.column("duration_s").to_pylist())) or None
    try:
        stats: dict[str, Any] = {"recordings": {}, "skipped": []}
        rows_file = tmp / "_rows.arrow"
        n_rows = 0
        chain = hashlib.sha256()
        from datasets.arrow_writer import ArrowWriter

        with (
            ArrowWriter(features=features, path=str(rows_file)) as writer,
            tqdm(
                total=total,
                unit="s",
                unit_scale=True,
                desc="encoding codes",
                disable=_bar_off(progress),
                mininterval=1.0,
            ) as bar,
        ):
            for cols in _rows(
                snapshot,
                root,
                sr=sr,
                seg_samples=seg_samples,
                hop=hop,
                enc=_Encoder(codec, bw, k, frames),
                batch_size=batch_size,
                stats=stats,
                bar=bar,
            ):
                writer.write_batch(cols)
                n_rows += len(cols["recording_id"])
                for d in cols["digest"]:
                    chain.update(d.encode())
            writer.finalize()
        if n_rows == 0:
            raise CodeCacheError(
                f"snapshot {snapshot.snapshot_id}: no audio to train on ({len(snapshot)} cleared item(s), "
                f"{len(stats['skipped'])} shorter than half a {segment_seconds:g} s segment)"
            )
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
            "items_sha256": items_sha256(snapshot),
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
            "rows_sha256": chain.hexdigest(),
            "recordings": stats["recordings"],
            "skipped": stats["skipped"],
            "created_at": utcnow().isoformat().replace("+00:00", "Z"),
        }
        info["info_sha256"] = _info_sha256(info)
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
    return load_code_cache(final, snapshot, codec_digest=digest)
