"""Checkpoint signing and verification throughput vs `sha256sum`, on the same folder, in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_signing.py --gb 1.0

Writes a fake checkpoint folder into a temp dir (a --gb `model.safetensors` of random bytes,
config/generation/data-card JSON, a README and a small training_state/), warms the page cache,
then times (median of --repeat runs, interleaved so drift hits every method alike):
  * `sha256sum` over every file (one subprocess, wall time), and `openssl dgst -sha256` as a
    second reference (coreutils' sha256sum may not use the CPU's SHA extensions; OpenSSL does,
    and so does Python's hashlib);
  * lab sign (`lab.cards.signing.sign_folder`: hash every file + EC P-256 signature + atomic write);
  * lab verify (`verify_folder`: read bundle, check signature, re-hash, compare);
  * for information, the same signing with model-signing's shard serialization (256 MiB shards,
    not what lab uses: it leaves empty files out of the manifest).
Prints a markdown table: step | seconds | MB/s | ratio vs sha256sum (>1 = faster). Target: sign
and verify at ≥ 0.8× sha256sum throughput; exit status 1 if missed. The temp dir is removed.
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

from lab.cards.signing import ensure_keypair, sign_folder, verify_folder  # noqa: E402

TARGET = 0.8


def make_checkpoint(root: Path, weight_bytes: int) -> list[Path]:
    ck = root / "step-000200"
    (ck / "training_state").mkdir(parents=True)
    chunk = 64 << 20
    with open(ck / "model.safetensors", "wb") as f:
        left = weight_bytes
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n
    (ck / "config.json").write_text(json.dumps({"model_type": "musicgen", "hidden_size": 1024}, indent=2))
    (ck / "generation_config.json").write_text(json.dumps({"max_new_tokens": 256}))
    (ck / "data_card.json").write_text(json.dumps({"schema": "lab.data_card/1", "sources": [0] * 2000}))
    (ck / "README.md").write_text("---\nlicense: other\n---\n# bench\n" + "x" * 20000)
    (ck / "training_state" / "optimizer.pt").write_bytes(os.urandom(4 << 20))
    (ck / "training_state" / "exposure.json").write_text("{}")
    return sorted(p for p in ck.rglob("*") if p.is_file())


def sign_sharded(folder: Path, private_key: Path, sig: Path) -> None:
    from model_signing import hashing, signing

    cfg = (
        hashing.Config()
        .use_shard_serialization(shard_size=256 << 20)
        .set_ignored_paths(paths=["model.sig", sig.name], ignore_git_paths=False)
    )
    signing.Config().use_elliptic_key_signer(private_key=private_key).set_hashing_config(cfg).sign(folder, sig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size of model.safetensors (GB, 1e9 bytes)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="parent of the temp folder (default: system temp)")
    args = ap.parse_args(argv)
    if shutil.which("sha256sum") is None:
        print("sha256sum not found", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="lab-bench-signing-", dir=args.dir))
    try:
        files = make_checkpoint(tmp, int(args.gb * 1e9))
        folder = tmp / "step-000200"
        total = sum(p.stat().st_size for p in files)
        keys = ensure_keypair(tmp / "keys")
        sharded_sig = tmp / "sharded.sig"
        paths = [str(p) for p in files]

        def run_sha256sum():
            subprocess.run(["sha256sum", *paths], check=True, stdout=subprocess.DEVNULL)

        def run_openssl():
            subprocess.run(["openssl", "dgst", "-sha256", *paths], check=True, stdout=subprocess.DEVNULL)

        def run_sign():
            sign_folder(folder, keys.private_path)

        def run_verify():
            res = verify_folder(folder, keys.public_path)
            if not res.ok:
                raise SystemExit(f"verification failed: {res.reason}")

        def run_sharded():
            sign_sharded(folder, keys.private_path, sharded_sig)

        methods = {"sha256sum": run_sha256sum}
        if shutil.which("openssl"):
            methods["openssl dgst -sha256"] = run_openssl
        methods["lab sign"] = run_sign
        methods["lab verify"] = run_verify
        methods["(info) sign, 256 MiB shards"] = run_sharded

        run_sha256sum()  # warm the page cache
        run_sign()  # warm imports; leaves a signature for verify
        times: dict[str, list[float]] = {k: [] for k in methods}
        for _ in range(args.repeat):
            for name, fn in methods.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)

        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["sha256sum"]
        print(
            f"\nSigning a {total / 1e9:.2f} GB checkpoint folder ({len(files)} files), "
            f"{os.cpu_count()} CPU(s), median of {args.repeat}\n"
        )
        print("| step | seconds | MB/s | ratio vs sha256sum |")
        print("|---|---:|---:|---:|")
        for name, t in med.items():
            print(f"| {name} | {t:.3f} | {total / 1e6 / t:,.0f} | {base / t:.2f}x |")
        worst = min(base / med["lab sign"], base / med["lab verify"])
        ok = worst >= TARGET
        print(f"\ntarget: sign and verify >= {TARGET}x sha256sum: {'PASS' if ok else 'FAIL'} (worst {worst:.2f}x)")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
