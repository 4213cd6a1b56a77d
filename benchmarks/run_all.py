"""Run every benchmark in this folder, one after another, each printing its own ratio table.

Each script measures its contestants side by side in one process run (never against a
number remembered from elsewhere), so the ratios hold on whatever machine runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [
    "bench_ingest_hash.py",
    "bench_clearance.py",
    "bench_provenance_scale.py",
    "bench_signing.py",
    "bench_code_cache.py",
    "bench_long_audio.py",
    "bench_trainer_overhead.py",
    "bench_consent_polling.py",
    "bench_impact.py",
    "bench_royalties.py",
    "bench_sample.py",
    "bench_gpu_step.py",  # prints a note and exits 0 without a GPU
]


def main(argv: list[str]) -> int:
    chosen = [a for a in argv if not a.startswith("-")] or ORDER
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    failed = []
    for name in chosen:
        script = HERE / (name if name.endswith(".py") else f"bench_{name}.py")
        print(f"\n## {script.name}\n", flush=True)
        if subprocess.run([sys.executable, str(script)], env=env).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nbelow target or failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
