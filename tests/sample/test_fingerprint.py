"""Chromaprint through fpcalc (its exit-3 trap, a missing binary) and the sliding-window BER matcher."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from lab.catalog.synth import ClipSpec, render
from lab.sample import fingerprint as fp

HAVE_FPCALC = shutil.which("fpcalc") is not None


def fake_fpcalc(tmp_path: Path, stdout: str, stderr: str, rc: int) -> str:
    """A stand-in fpcalc that prints `stdout`/`stderr` and exits `rc`, whatever it is asked."""
    exe = tmp_path / "fpcalc"
    (tmp_path / "out.txt").write_text(stdout)
    (tmp_path / "err.txt").write_text(stderr)
    exe.write_text(f"#!/bin/sh\ncat '{tmp_path}/out.txt'\ncat '{tmp_path}/err.txt' >&2\nexit {rc}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_exit_3_after_a_printed_fingerprint_still_yields_it(tmp_path):
    exe = fake_fpcalc(
        tmp_path,
        "DURATION=4\nFINGERPRINT=692455791,4294967295,0,17\n",
        "ERROR: Error decoding audio frame (End of file)\n",
        3,
    )
    got = fp.fingerprint(np.zeros(16000, np.float32), 16000, fpcalc=exe)
    assert got.dtype == np.uint32
    assert got.tolist() == [692455791, 4294967295, 0, 17]


def test_signed_items_read_as_the_same_bits():
    assert fp.parse_raw("FINGERPRINT=-1,5\n").tolist() == [4294967295, 5]


def test_empty_fingerprint_is_too_short_not_an_error(tmp_path):
    exe = fake_fpcalc(tmp_path, "", "ERROR: Empty fingerprint\n", 2)
    assert len(fp.fingerprint(np.zeros(1600, np.float32), 16000, fpcalc=exe)) == 0


def test_a_crashing_fpcalc_fails_with_one_line(tmp_path):
    exe = fake_fpcalc(tmp_path, "", "ERROR: Could not open the input file\nsegfault\n", 1)
    with pytest.raises(fp.FingerprintUnavailable) as err:
        fp.fingerprint(np.zeros(16000, np.float32), 16000, fpcalc=exe)
    assert "exit 1" in str(err.value) and "\n" not in str(err.value)


def test_missing_fpcalc_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv(fp.ENV_FPCALC, str(tmp_path / "no-such-fpcalc"))
    with pytest.raises(fp.FingerprintUnavailable, match="libchromaprint-tools") as err:
        fp.fingerprint(np.zeros(16000, np.float32), 16000)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not HAVE_FPCALC, reason="Debian libchromaprint-tools not installed")
def test_real_fpcalc_on_synth_audio_is_deterministic_and_local():
    clip = render(ClipSpec("organ", "D", "minor", 96, "arpeggio", False, 3), seconds=12.0, sr=16000)
    whole = fp.fingerprint(clip, 16000)
    again = fp.fingerprint(clip, 16000)
    assert len(whole) > 60 and np.array_equal(whole, again)
    # an excerpt's fingerprint is (nearly) a slice of the whole one: that is what the gate relies on
    part = fp.fingerprint(clip[4 * 16000 : 10 * 16000], 16000)
    ber = fp.best_ber(part, whole, np.zeros(len(whole), np.int32), 1, window=len(part))[0]
    assert ber < 0.1


def brute_force(query, refs_by_rec, window):
    """Every window of `query` against every in-recording alignment, one at a time."""
    best = []
    for ref in refs_by_rec:
        b = 1.0
        for a in range(len(query) - window + 1):
            for p in range(len(ref) - window + 1):
                x = np.bitwise_xor(query[a : a + window], ref[p : p + window])
                b = min(b, sum(bin(int(v)).count("1") for v in x) / (32 * window))
        best.append(b)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_ber_matches_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    refs = [rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32) for n in (9, 14, 6)]
    query = rng.integers(0, 2**32, 11, dtype=np.uint64).astype(np.uint32)
    query[3:8] = refs[1][4:9] ^ np.uint32(1)  # a near-copy of part of recording 1
    owners = np.concatenate([np.full(len(r), i, np.int32) for i, r in enumerate(refs)])
    got = fp.best_ber(query, np.concatenate(refs), owners, len(refs), window=5, chunk=7)
    np.testing.assert_allclose(got, brute_force(query, refs, 5))
    assert np.argmin(got) == 1 and got[1] == pytest.approx(1 / 32)


def test_windows_never_straddle_two_recordings():
    rng = np.random.default_rng(5)
    a, b = (rng.integers(0, 2**32, 10, dtype=np.uint64).astype(np.uint32) for _ in range(2))
    owners = np.repeat(np.arange(2, dtype=np.int32), 10)
    query = np.concatenate([a[6:], b[:4]])  # the end of one and the start of the next
    got = fp.best_ber(query, np.concatenate([a, b]), owners, 2, window=8)
    assert got.min() > 0.2  # exact only if the window were allowed across the boundary
    assert fp.best_ber(query, np.concatenate([a, b]), owners, 2, window=4).min() == 0.0
