"""Ingest: a folder of audio + its metadata file → a Catalog with one item per row.

Per row (in a thread pool; hashlib and libsndfile release the GIL):
  1. resolve `audio_path` under the source root and refuse anything that leaves it
     (absolute paths, `..` components, symlinks whose real path is outside), without
     opening it → `path_outside_catalogue`;
  2. open it once (no following of a swapped-in symlink, regular files only), then
     from that one descriptor stream its sha256 and decode it to the end with soundfile,
     checking the frames read against the header and the container for truncation
     → `missing_audio` / `decode_error`;
  3. across rows: one audio sha256 under several recording ids → every one of them is
     `duplicate_audio` (who owns it is ambiguous, so none is used).

Nothing is dropped: rejected rows stay in the catalogue with their reason and detail.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np
import soundfile as sf

from lab.util.timestamps import to_ts, utcnow

from .importers import CatalogError, find_metadata, load_metadata
from .items import CatalogItem, RecordingMeta
from .store import Catalog, check_name, item_counts

# Containers we accept (soundfile's format names). Anything else libsndfile happens to
# recognise is refused: fail closed on formats nobody has looked at.
ACCEPTED_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG", "MP3", "AIFF", "CAF"})
HASH_CHUNK = 1 << 20
DECODE_BLOCK = 1 << 16  # frames per read
# libsndfile writes these into its log when a header disagrees with the file.
_LOG_TRUNCATION_MARKERS = ("should be", "ended unexpectedly")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

T = TypeVar("T")
R = TypeVar("R")


class AudioRejected(Exception):
    """Why one row's audio is refused; `sha256`/`size` only when the file was read."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.sha256: str | None = None
        self.size: int | None = None


# --------------------------------------------------------------------------- paths


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _resolve_inside(root: str, rel: str) -> str:
    """Real path of `rel` under `root` (itself a real path), or raise AudioRejected. Opens nothing."""
    if "\x00" in rel:
        raise AudioRejected("path_outside_catalogue", "audio_path contains a NUL byte")
    p = PurePosixPath(rel)
    if p.is_absolute():
        raise AudioRejected(
            "path_outside_catalogue", f"absolute path {rel!r}; audio paths are relative to the catalogue root"
        )
    if ".." in p.parts:
        raise AudioRejected("path_outside_catalogue", f"{rel!r} has a '..' component")
    real = os.path.realpath(os.path.join(root, *p.parts))
    if not _is_within(real, root):
        raise AudioRejected("path_outside_catalogue", f"{rel!r} resolves outside the catalogue root (symlink)")
    return real


def _open_inside(root: str, rel: str) -> tuple[int, os.stat_result]:
    """Open `rel` read-only after `_resolve_inside`; returns (fd, fstat). Caller closes fd."""
    real = _resolve_inside(root, rel)
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except FileNotFoundError:
        raise AudioRejected("missing_audio", f"{rel!r} does not exist") from None
    except NotADirectoryError:
        raise AudioRejected("missing_audio", f"{rel!r}: a parent is not a folder") from None
    except OSError as exc:
        if exc.errno == getattr(os, "ELOOP", -1):  # replaced by a symlink since resolving
            raise AudioRejected("path_outside_catalogue", f"{rel!r} changed into a symlink while ingesting") from None
        raise AudioRejected("decode_error", f"cannot open {rel!r}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        opened = _fd_path(fd)
        if opened is not None and not _is_within(opened, root):
            raise AudioRejected("path_outside_catalogue", f"{rel!r} moved outside the catalogue root while ingesting")
        if not stat.S_ISREG(st.st_mode):
            raise AudioRejected("decode_error", f"{rel!r} is not a regular file")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


# --------------------------------------------------------------------------- hashing


def sha256_fd(fd: int, chunk_size: int = HASH_CHUNK) -> tuple[str, int]:
    """Streamed sha256 of an open file from offset 0; returns (hexdigest, bytes read)."""
    h = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    total = 0
    os.lseek(fd, 0, os.SEEK_SET)
    with open(fd, "rb", buffering=0, closefd=False) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            total += n
    return h.hexdigest(), total


def _hash_one(root: str, rel: str) -> str | None:
    try:
        fd, st = _open_inside(root, rel)
    except AudioRejected:
        return None
    try:
        return sha256_fd(fd)[0]
    finally:
        os.close(fd)


def pool_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """Order-preserving map over a thread pool of `workers` (1: in this thread)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lab-ingest") as pool:
        return list(pool.map(fn, items))


def hash_files(root: str | Path, audio_paths: Sequence[str], workers: int = 2) -> list[str | None]:
    """sha256 of each catalogue file, exactly as ingest opens and hashes it (None: refused/missing)."""
    real_root = os.path.realpath(root)
    return pool_map(lambda rel: _hash_one(real_root, rel), audio_paths, workers)


# --------------------------------------------------------------------------- decoding


@dataclass
class AudioFacts:
    sha256: str
    size_bytes: int
    format: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def _check_riff(fd: int, size: int) -> None:
    """A RIFF/WAVE data chunk must fit in the file (libsndfile silently shortens it)."""
    head = os.pread(fd, 12, 0)
    if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX"):
        return  # RF64/BW64 etc.: left to libsndfile's own checks
    fmt = "<I" if head[:4] == b"RIFF" else ">I"
    off = 12
    while off + 8 <= size:
        chunk = os.pread(fd, 8, off)
        cid, (clen,) = chunk[:4], struct.unpack(fmt, chunk[4:8])
        if cid == b"data":
            have = size - off - 8
            if clen > have:
                raise AudioRejected(
                    "decode_error", f"truncated: WAV data chunk declares {clen} bytes, file holds {have}"
                )
            return
        off += 8 + clen + (clen & 1)
    raise AudioRejected("decode_error", "WAV file has no complete data chunk")


_OGG_MAX_PAGE = 27 + 255 + 255 * 255


def _check_ogg(fd: int, size: int) -> None:
    """The last Ogg page must end exactly at end of file and carry the end-of-stream flag."""
    start = max(0, size - _OGG_MAX_PAGE)
    tail = os.pread(fd, size - start, start)
    pos = len(tail)
    while True:
        pos = tail.rfind(b"OggS", 0, pos)
        if pos < 0:
            raise AudioRejected("decode_error", "truncated: the last Ogg page is incomplete")
        if pos + 27 <= len(tail) and tail[pos + 4] == 0:
            nseg = tail[pos + 26]
            if pos + 27 + nseg <= len(tail):
                body = sum(tail[pos + 27 : pos + 27 + nseg])
                if pos + 27 + nseg + body == len(tail):
                    if not tail[pos + 5] & 0x04:
                        raise AudioRejected("decode_error", "truncated: Ogg stream has no end-of-stream page")
                    return


def _decode(fd: int, st: os.stat_result) -> tuple[str, int, int, int]:
    """Decode the whole file from `fd`; returns (format, sample_rate, channels, frames)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        with sf.SoundFile(fd, mode="r", closefd=False) as f:
            fmt, sr, ch, declared = f.format, f.samplerate, f.channels, f.frames
            log = f.extra_info  # libsndfile's notes from parsing the header (before decoding adds noise)
            if fmt not in ACCEPTED_FORMATS:
                accepted = ", ".join(sorted(ACCEPTED_FORMATS))
                raise AudioRejected("decode_error", f"unsupported container {fmt} (accepted: {accepted})")
            if sr <= 0 or ch <= 0:
                raise AudioRejected("decode_error", f"invalid header: sample rate {sr}, channels {ch}")
            buf = np.empty((DECODE_BLOCK, ch), dtype=np.float32)
            read = 0
            while True:
                n = len(f.read(DECODE_BLOCK, dtype="float32", always_2d=True, out=buf))
                if n == 0:
                    break
                read += n
    except sf.LibsndfileError as exc:
        raise AudioRejected("decode_error", f"libsndfile: {exc.error_string}") from None
    except (RuntimeError, ValueError, TypeError) as exc:
        raise AudioRejected("decode_error", f"{type(exc).__name__}: {exc}") from None
    if read != declared:
        raise AudioRejected("decode_error", f"truncated or corrupt: decoded {read} of {declared} frames")
    if read == 0:
        raise AudioRejected("decode_error", "no audio frames")
    if fmt in ("WAV", "WAVEX"):
        _check_riff(fd, st.st_size)
    elif fmt == "OGG":
        _check_ogg(fd, st.st_size)
    for line in log.splitlines():
        if any(m in line for m in _LOG_TRUNCATION_MARKERS):
            raise AudioRejected("decode_error", f"inconsistent header: {line.strip()}")
    return fmt, sr, ch, read


def probe_audio(root: str | Path, rel: str) -> AudioFacts:
    """Open, hash and fully decode one catalogue file. Raises AudioRejected(reason, detail) on refusal."""
    real_root = os.path.realpath(root)
    fd, st = _open_inside(real_root, rel)
    sha: str | None = None
    try:
        sha, nbytes = sha256_fd(fd)
        if nbytes != st.st_size:
            raise AudioRejected(
                "decode_error", f"file changed while reading ({nbytes} bytes read, {st.st_size} expected)"
            )
        fmt, sr, ch, frames = _decode(fd, st)
        if os.fstat(fd).st_mtime_ns != st.st_mtime_ns:
            raise AudioRejected("decode_error", "file changed while reading")
        return AudioFacts(sha256=sha, size_bytes=st.st_size, format=fmt, sample_rate=sr, channels=ch, frames=frames)
    except AudioRejected as exc:
        # keep the hash of a file we did read (helps find it); never for refused paths
        if exc.reason == "decode_error" and sha is not None:
            exc.sha256, exc.size = sha, st.st_size
        raise
    finally:
        os.close(fd)


def _item(real_root: str, catalog: str, meta: RecordingMeta) -> CatalogItem:
    base = meta.model_dump()
    try:
        a = probe_audio(real_root, meta.audio_path)
    except AudioRejected as exc:
        return CatalogItem(
            **base,
            catalog=catalog,
            status="rejected",
            reject_reason=exc.reason,
            reject_detail=exc.detail,
            audio_sha256=exc.sha256,
            size_bytes=exc.size,
        )
    except Exception as exc:  # a row never vanishes, even on a bug: it is rejected and says why
        return CatalogItem(
            **base,
            catalog=catalog,
            status="rejected",
            reject_reason="decode_error",
            reject_detail=f"unexpected {type(exc).__name__}: {exc}",
        )
    return CatalogItem(
        **base,
        catalog=catalog,
        audio_sha256=a.sha256,
        duration_s=a.duration_s,
        sample_rate=a.sample_rate,
        channels=a.channels,
        frames=a.frames,
        format=a.format,
        size_bytes=a.size_bytes,
    )


def flag_duplicates(items: list[CatalogItem]) -> list[CatalogItem]:
    """Every ok item whose audio sha256 is shared with another row becomes `duplicate_audio`."""
    by_sha: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        if it.status == "ok" and it.audio_sha256:
            by_sha[it.audio_sha256].append(i)
    out = list(items)
    for sha, idx in by_sha.items():
        if len(idx) < 2:
            continue
        ids = [items[i].recording_id for i in idx]
        for i in idx:
            others = [r for r in ids if r != items[i].recording_id]
            named = ", ".join(others[:20]) + (f" and {len(others) - 20} more" if len(others) > 20 else "")
            out[i] = items[i].model_copy(
                update={
                    "status": "rejected",
                    "reject_reason": "duplicate_audio",
                    "reject_detail": f"same audio (sha256 {sha[:16]}…) as {named}; ownership is ambiguous",
                }
            )
    return out


def ingest(source: str | Path, catalog: str, metadata: str | Path | None = None, workers: int = 2) -> Catalog:
    """Read SOURCE's metadata, verify every referenced audio file, return the Catalog (nothing written).

    Raises CatalogError for an invalid name, a missing source folder or malformed metadata.
    """
    check_name(catalog)
    if workers < 1:
        raise CatalogError(f"workers must be >= 1, got {workers}")
    src = Path(source)
    if not src.is_dir():
        raise CatalogError(f"catalogue source {src} is not a folder")
    real_root = os.path.realpath(src)
    meta_path = find_metadata(src, metadata)
    mf = load_metadata(meta_path)
    items = pool_map(lambda m: _item(real_root, catalog, m), mf.rows, workers)
    items = flag_duplicates(items)
    manifest = {
        "name": catalog,
        "root": real_root,
        "metadata": {"path": str(meta_path.resolve()), "format": mf.format, "sha256": mf.sha256, "rows": len(mf.rows)},
        "created_at": to_ts(utcnow()),
        "counts": item_counts(items),
        "decoder": {"soundfile": sf.__version__, "libsndfile": sf.__libsndfile_version__},
    }
    return Catalog(name=catalog, root=Path(real_root), items=items, manifest=manifest)
