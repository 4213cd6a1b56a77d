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


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x)


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
    (non-decreasing). Cost is O(len(query) x len(refs)) popcounts: the sheared matrix
    ``G[i, d] = popcount(query[i] ^ refs[i + d])`` is summed along its columns with a cumulative sum,
    so every (output window, alignment) pair costs O(1) more. Columns go in chunks to bound memory.
    """
    q = np.asarray(query, dtype=np.uint32)
    m, n = len(q), len(refs)
    best = np.ones(n_refs, dtype=np.float64)
    if window <= 0 or m < window or n < window:
        return best
    starts = m - window + 1  # output windows
    bits = 32.0 * window
    pad = np.zeros(m, np.uint32)
    rpad = np.concatenate([np.asarray(refs, np.uint32), pad])
    opad = np.concatenate([np.asarray(owner, np.int64), np.full(m, -1, np.int64)])
    rows = np.arange(m)[:, None]
    # d = alignment of query item 0 with reference item d; only d in [-(m - window), n - window] can fit.
    for lo in range(-(m - window), n - window + 1, chunk):
        d = np.arange(lo, min(lo + chunk, n - window + 1))
        idx = rows + d[None, :]  # (m, len(d)) reference index of each query item
        inside = (idx >= 0) & (idx < n)
        g = _popcount(q[:, None] ^ rpad[np.where(inside, idx, n)]).astype(np.int32)
        c = np.concatenate([np.zeros((1, len(d)), np.int32), np.cumsum(g, axis=0)])
        cost = c[window:] - c[:starts]  # (starts, len(d)) bits differing in each window
        first = idx[:starts]  # reference index of each window's first item
        last = first + window - 1
        ok = (first >= 0) & (last < n)
        ok &= opad[np.clip(first, 0, n)] == opad[np.clip(last, 0, n)]  # one recording, not across two
        cost = np.where(ok, cost, np.iinfo(np.int32).max)
        a = np.argmin(cost, axis=0)
        col = np.arange(len(d))
        cmin = cost[a, col]
        valid = cmin < np.iinfo(np.int32).max
        if not valid.any():
            continue
        rec = opad[first[a, col][valid]]
        np.minimum.at(best, rec, cmin[valid] / bits)
    return best
