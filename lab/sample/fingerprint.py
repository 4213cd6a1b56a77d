"""Chromaprint fingerprints of audio, and the best bit error rate of one fingerprint against many.

Why Debian's ``fpcalc`` (libchromaprint-tools) on a temp WAV rather than pyacoustid: pyacoustid's
``fingerprint_file`` shells out to the same ``fpcalc`` (or ctypes-loads libchromaprint, which needs its
own package here), and adds a dependency for one subprocess call. ``fpcalc -raw`` prints the
uncompressed fingerprint: one 32-bit item per 4096/3 samples at 11,025 Hz (about 0.124 s), each
summarising the chroma of the ~2.5 s around it, so a fingerprint of an excerpt is (nearly) a slice of
the fingerprint of the whole.

Debian's ``fpcalc`` prints a good fingerprint and may still exit 3 ("Error decoding audio frame (End
of file)"): the exit status is not trusted, the printed ``FINGERPRINT=`` line is. Exit 2 with "Empty
fingerprint" means the audio is too short (under ~3 s); that is an empty fingerprint, not an error.
Anything else (no ``fpcalc``, a crash, unparsable output) raises :class:`FingerprintUnavailable`, and
the replication gate withholds: an output is never released unchecked.

Matching: items are compared by popcount of their XOR (``np.bitwise_count``); for every window of
``window`` consecutive output items and every alignment inside one training recording, the bit error
rate (BER) is the fraction of differing bits. Unrelated audio sits near 0.5 at any single alignment;
the best over thousands of alignments is lower, which is why the gate normalises by a calibrated
"unrelated" BER (benchmarks/bench_replication.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ..data.codes import resample

RATE = 11_025  # Chromaprint's internal rate: resampling here (one resampler for training audio and outputs)
ITEM_SECONDS = 4096 / 3 / RATE  # one raw fingerprint item per hop of 4096/3 samples
LEAD_SECONDS = 21 * ITEM_SECONDS  # audio consumed before the first item (chroma filter + classifier window)
ENV_FPCALC = "LAB_FPCALC"
_TIMEOUT_S = 120


class FingerprintUnavailable(RuntimeError):
    """The fingerprinter could not run or said nothing usable; the caller must fail closed."""


def fpcalc_path() -> str:
    """``$LAB_FPCALC`` or ``fpcalc`` on PATH; raises :class:`FingerprintUnavailable` naming the fix."""
    named = os.environ.get(ENV_FPCALC) or "fpcalc"
    found = shutil.which(named)
    if not found:
        raise FingerprintUnavailable(
            f"fingerprinter {named!r} not found: install Debian's libchromaprint-tools (or set {ENV_FPCALC})"
        )
    return found


def fpcalc_version(fpcalc: str | None = None) -> str:
    """``fpcalc -version``'s line: part of the cache key, since another Chromaprint may print other items."""
    exe = fpcalc or fpcalc_path()
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise FingerprintUnavailable(f"fingerprinter {exe} cannot run: {exc}") from None
    return out.stdout.strip() or out.stderr.strip()


def parse_raw(stdout: str) -> np.ndarray | None:
    """The items of ``fpcalc -raw``'s ``FINGERPRINT=`` line (unsigned, or signed with ``-signed``), or None."""
    for line in stdout.splitlines():
        if line.startswith("FINGERPRINT="):
            body = line.split("=", 1)[1].strip()
            if not body:
                return np.zeros(0, np.uint32)
            try:
                return np.array([int(x) for x in body.split(",")], dtype=np.int64).astype(np.uint32)
            except ValueError:
                return None
    return None


def fingerprint_file(path: str | os.PathLike, *, fpcalc: str | None = None) -> np.ndarray:
    """Raw Chromaprint items (uint32) of an audio file, the whole of it."""
    exe = fpcalc or fpcalc_path()
    try:
        out = subprocess.run(
            [exe, "-raw", "-length", "0", str(path)], capture_output=True, text=True, timeout=_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FingerprintUnavailable(f"fingerprinter {exe} failed on {Path(path).name}: {exc}") from None
    items = parse_raw(out.stdout)
    if items is not None and len(items):
        return items  # exit 0, or Debian's exit 3 after a complete fingerprint
    if "Empty fingerprint" in out.stderr:
        return np.zeros(0, np.uint32)  # too short to fingerprint
    last = (out.stderr.strip().splitlines() or [f"no fingerprint printed (exit {out.returncode})"])[-1]
    raise FingerprintUnavailable(f"fingerprinter {exe} failed on {Path(path).name} (exit {out.returncode}): {last}")


def fingerprint(audio: np.ndarray, sample_rate: int, *, fpcalc: str | None = None) -> np.ndarray:
    """Raw Chromaprint items of mono float audio: resampled to 11,025 Hz, written as a 16-bit temp WAV."""
    exe = fpcalc or fpcalc_path()
    wave = resample(np.asarray(audio, dtype=np.float32).reshape(-1), int(sample_rate), RATE)
    with tempfile.TemporaryDirectory(prefix="lab-fp-") as tmp:
        path = Path(tmp) / "clip.wav"
        sf.write(path, np.clip(wave, -1.0, 1.0), RATE, subtype="PCM_16")
        return fingerprint_file(path, fpcalc=exe)


def best_ber(
    query: np.ndarray,
    refs: np.ndarray,
    owner: np.ndarray,
    n_refs: int,
    *,
    window: int,
    chunk: int = 1 << 15,
) -> np.ndarray:
    """Per reference recording, the lowest BER of any ``window``-item slice of ``query`` at any alignment
    inside that recording (1.0 where none fits).

    ``refs`` is every recording's fingerprint concatenated; ``owner[i]`` the recording index of item i
    (non-decreasing). Cost is O(len(query) x len(refs)) popcounts: for each alignment d (query item 0 on
    reference item d) the row ``popcount(query ^ refs[d : d + m])`` is summed over every window at once
    with a cumulative sum. Rows are strided views (no index matrix) and go in chunks to bound memory.
    """
    q = np.asarray(query, dtype=np.uint32)
    m, n = len(q), len(refs)
    best = np.ones(n_refs, dtype=np.float64)
    if window <= 0 or m < window or n < window:
        return best
    starts = m - window + 1  # output windows
    # reference positions shifted by m, so alignments d in [-(m - window), n - window] index from 0
    ext = np.concatenate([np.zeros(m, np.uint32), np.asarray(refs, np.uint32), np.zeros(m, np.uint32)])
    own = np.concatenate([np.full(m, -1, np.int64), np.asarray(owner, np.int64), np.full(m, -1, np.int64)])
    pos = np.arange(len(ext)) - m  # reference index of each ext slot
    last = np.minimum(np.arange(len(ext)) + window - 1, len(ext) - 1)
    # a window may start at p when it lies inside one recording (owners non-decreasing: first == last)
    fits = (pos >= 0) & (pos + window <= n) & (own == own[last])
    rows = np.lib.stride_tricks.sliding_window_view(ext, m)  # rows[d + m] = ext[d + m : d + 2m]
    fit_rows = np.lib.stride_tricks.sliding_window_view(fits, starts)
    acc = np.int16 if 32 * m < np.iinfo(np.int16).max else np.int32  # differing bits per row: <= 32 * m
    worst = acc(32 * window + 1)
    for lo in range(m - (m - window), n - window + 1 + m, chunk):  # ext offsets of the alignments
        hi = min(lo + chunk, n - window + 1 + m)
        g = np.bitwise_count(rows[lo:hi] ^ q[None, :])  # (alignments, m) uint8
        c = np.zeros((hi - lo, m + 1), acc)
        np.cumsum(g, axis=1, dtype=acc, out=c[:, 1:])
        cost = c[:, window:] - c[:, :starts]  # (alignments, output windows)
        cost[~fit_rows[lo:hi]] = worst
        a = np.argmin(cost, axis=1)
        cmin = cost[np.arange(hi - lo), a]
        ok = cmin < worst
        if ok.any():
            rec = own[(np.arange(lo, hi) + a)[ok]]
            np.minimum.at(best, rec, cmin[ok] / (32.0 * window))
    return best
