"""The GPU benchmark cannot run here; its --smoke path keeps the script itself from rotting."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def smoke(script: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`benchmarks/<script> --smoke` on one thread, as `make bench` would run it (small sizes)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


@pytest.mark.slow  # it trains the tiny model through the recipe for a few steps
def test_gpu_step_benchmark_smoke():
    out = smoke("bench_gpu_step.py")
    assert out.returncode == 0, out.stderr
    row = [line for line in out.stdout.splitlines() if line.startswith("| musicgen decoder")]
    assert row and "tokens/s" in out.stdout
    assert float(row[0].split("|")[5].replace(",", "")) > 0  # tokens/s measured


@pytest.mark.slow  # synthesizes audio, fits a tiny codec and fingerprints every case (~30 s)
def test_replication_benchmark_smoke():
    out = smoke("bench_replication.py")
    assert out.returncode == 0, out.stderr
    copy = [line for line in out.stdout.splitlines() if line.startswith("| copy |")]
    assert copy and copy[0].split("|")[5].strip() == "4/4"  # every planted copy withheld
    assert "chosen thresholds" in out.stdout and "per-output check" in out.stdout


@pytest.mark.slow  # trains the tiny model 2 steps, generates 2 s, builds the replication index (~1 min)
def test_sample_benchmark_smoke():
    out = smoke("bench_sample.py", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.stdout.splitlines() if "|" in line}
    for step in ("gate, warm", "generate 2 s, tiny model", "replication check per output"):
        assert float(rows[step]) > 0, out.stdout
    assert "content credential: sign per output" in rows and "target: warm gate" in out.stdout


@pytest.mark.slow  # builds a 10,000-grant ledger and registry, then one statement (~20 s)
def test_royalties_benchmark_smoke():
    out = smoke("bench_royalties.py")
    assert out.returncode == 0, out.stderr
    row = [line for line in out.stdout.splitlines() if line.startswith("| 2026-11 |")]
    assert row, out.stdout
    cells = [c.strip().replace(",", "") for c in row[0].split("|")[1:-1]]
    assert cells[1] == "20" and cells[2] == "10000" and cells[4] == "30000"  # checkpoints, payable rows, lines
