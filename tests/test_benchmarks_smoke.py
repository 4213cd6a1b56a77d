"""The GPU benchmark cannot run here; its --smoke path keeps the script itself from rotting."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # it trains the tiny model through the recipe for a few steps
def test_gpu_step_benchmark_smoke():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu_step.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert out.returncode == 0, out.stderr
    row = [line for line in out.stdout.splitlines() if line.startswith("| musicgen decoder")]
    assert row and "tokens/s" in out.stdout
    assert float(row[0].split("|")[5].replace(",", "")) > 0  # tokens/s measured
