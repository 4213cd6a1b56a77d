"""Ingest hashing throughput vs `sha256sum`, on the same files, in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ingest_hash.py --gb 1.0

Writes ~GB of noise WAVs (16 files) into a temp folder, warms the page cache, then times
(median of --repeat runs, interleaved so drift hits every method alike):
  * `sha256sum` over the files (one subprocess, wall time), and `openssl dgst -sha256` as a
    second reference (coreutils' sha256sum may not use the CPU's SHA extensions; OpenSSL does,
    and so does Python's hashlib);
  * lab's hashing (`lab.catalog.ingest.hash_files`: the open + streamed sha256 that ingest
    does per row) with 1 worker and with --workers;
  * full ingest (hash + decode check + duplicate scan) with --workers, for information.
Prints a markdown table: method | seconds | MB/s | ratio vs sha256sum. Target: lab hashing
at ≥ 0.8× sha256sum throughput. The temp folder is removed at the end.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from lab.catalog.ingest import hash_files, ingest  # noqa: E402

if "torch" in sys.modules:  # ingest does not import torch; if something did, pin it too
    sys.modules["torch"].set_num_threads(1)


def make_files(root: Path, total_bytes: int, n_files: int, sr: int = 48000, channels: int = 2) -> list[str]:
    rng = np.random.default_rng(0)
    frames = max(1, total_bytes // n_files // (2 * channels))  # PCM_16
    names, rows = [], []
    for i in range(n_files):
        name = f"noise_{i:03d}.wav"
        data = rng.integers(-20000, 20000, size=(frames, channels), dtype=np.int16)
        sf.write(root / name, data, sr, subtype="PCM_16")
        names.append(name)
        rows.append(
            {
                "recording_id": f"bench-{i:03d}",
                "title": name,
                "artists": ["bench"],
                "description": "white noise",
                "audio_path": name,
            }
        )
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return names


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="total size of the audio files (GB, 1e9 bytes)")
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="ingest's thread pool (its default is 2)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="parent of the temp folder (default: system temp)")
    args = ap.parse_args(argv)
    if shutil.which("sha256sum") is None:
        print("sha256sum not found", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="lab-bench-ingest-", dir=args.dir))
    try:
        names = make_files(tmp, int(args.gb * 1e9), args.files)
        paths = [str(tmp / n) for n in names]
        total = sum(os.path.getsize(p) for p in paths)
        subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)  # warm the page cache

        ref: list[str] = []

        def run_sha256sum() -> None:
            out = subprocess.run(["sha256sum", *paths], capture_output=True, text=True, check=True).stdout
            ref[:] = [line.split()[0] for line in out.splitlines()]

        ossl: list[str] = []

        def run_openssl() -> None:
            out = subprocess.run(
                ["openssl", "dgst", "-sha256", "-r", *paths], capture_output=True, text=True, check=True
            ).stdout
            ossl[:] = [line.split()[0] for line in out.splitlines()]

        got: dict[int, list] = {}

        def run_lab(workers: int):
            def f() -> None:
                got[workers] = hash_files(tmp, names, workers=workers)

            return f

        cat_box: list = []

        def run_ingest() -> None:
            cat_box[:] = [ingest(tmp, "bench", workers=args.workers)]

        methods = [
            ("sha256sum (coreutils, 1 process)", run_sha256sum),
            ("lab hash_files, 1 worker", run_lab(1)),
            (f"lab hash_files, {args.workers} workers (as ingest)", run_lab(args.workers)),
            (f"lab ingest (hash + full decode), {args.workers} workers", run_ingest),
        ]
        if shutil.which("openssl"):  # a SHA-NI reference; coreutils sha256sum may lack it
            methods.insert(1, ("openssl dgst -sha256 (1 process, for reference)", run_openssl))
        times: dict[str, list[float]] = {m: [] for m, _ in methods}
        for _ in range(args.repeat):
            for m, fn in methods:
                times[m].append(timed(fn))

        assert got[1] == ref and got[args.workers] == ref, "lab sha256 differs from sha256sum"
        assert not ossl or ossl == ref
        cat = cat_box[0]
        assert all(i.status == "ok" for i in cat.items), [i.reject_detail for i in cat.items if i.status != "ok"]
        assert [i.audio_sha256 for i in cat.items] == ref

        mb = total / 1e6
        base = statistics.median(times[methods[0][0]])
        print(
            f"\n{len(paths)} WAV files, {mb:,.0f} MB total, page cache warm; median of {args.repeat} runs; "
            f"{os.cpu_count()} CPUs visible\n"
        )
        print("| method | seconds | MB/s | ratio vs sha256sum |")
        print("|---|---:|---:|---:|")
        for m, _ in methods:
            s = statistics.median(times[m])
            print(f"| {m} | {s:.3f} | {mb / s:,.0f} | {base / s:.2f}× |")
        print()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
