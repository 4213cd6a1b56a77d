"""Content credentials per output: C2PA signing and verification of a 10 s, 32 kHz WAV, beside plain hashing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_credentials.py [--seconds 10] [--repeats 21] [--flac]

In a throwaway LAB_HOME: the CA is created once (timed, cold), then each repeat, interleaved so machine
load hits every step alike, times
  * write: `soundfile.write` of the raw WAV (what generation writes anyway; the reference);
  * sha256: hashing the signed file (what the registry row needs anyway);
  * sign: `lab.sample.credentials.sign_output` (manifest, ES256 signature, read-back check, sidecar, atomic writes);
  * verify: `verify_output` with the lab root as trust anchor (what `lab verify-output` runs).
Prints a markdown table of medians (ms) and ratios vs the raw write. Target: sign ≤ 100 ms per output
(exit status 1 if missed). `time_credentials` is the function `bench_sample.py` calls for its column.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from lab.sample.ca import ensure_ca  # noqa: E402
from lab.sample.credentials import sign_output, verify_output  # noqa: E402
from lab.sample.records import GateDecision, OutputRecord, ReplicationResult  # noqa: E402

TARGET_SIGN_S = 0.100


def bench_record(sample_rate: int, seconds: float, fmt: str = "wav", credits: int = 20) -> OutputRecord:
    """A released-output record shaped like `lab sample`'s (gate passed, replication checked, credits)."""
    at = dt.datetime.now(dt.UTC)
    decision = GateDecision(
        allowed=True,
        checkpoint_id="bench-checkpoint",
        checkpoint_folder="/bench/checkpoints/step-000200",
        data_card_sha256="0" * 64,
        uses=["ai_inference", "commercial_output"],
        territory="GB",
        at=at,
        ledger_head_seq=1000,
        ledger_head_hash="1" * 64,
        checks={k: "ok" for k in ("signature", "card", "registry", "consent", "licence")},
    )
    replication = ReplicationResult(
        token_score=0.01, audio_score=0.02, withheld=False, thresholds={"tokens": 0.5, "audio": 0.5}, detail="clear"
    )
    return OutputRecord(
        record_id="bench",
        kind="released",
        created_at=at,
        checkpoint_id=decision.checkpoint_id,
        checkpoint_folder=decision.checkpoint_folder,
        data_card_sha256=decision.data_card_sha256,
        prompt="a bench prompt",
        seed=0,
        duration_s=seconds,
        uses=decision.uses,
        territory="GB",
        decision=decision,
        replication=replication,
        sample_rate=sample_rate,
        format=fmt,
        credits=[f"Recording {i} — Artist {i} (CC-BY-4.0)" for i in range(credits)],
    )


def time_credentials(
    work: Path, *, seconds: float = 10.0, sample_rate: int = 32_000, repeats: int = 11, fmt: str = "wav"
) -> dict[str, float]:
    """Median seconds per output for write / sha256 / sign / verify (+ `ca_cold`: first CA creation).

    `work` is an empty folder; a LAB_HOME for the CA is made inside it. For `bench_sample.py`:
    `time_credentials(tmp)["sign"]` is the credential cost per output.
    """
    work = Path(work)
    home = work / "home"
    t0 = time.perf_counter()
    ensure_ca(home)
    ca_cold = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(seconds * sample_rate))).astype("float32")
    record = bench_record(sample_rate, seconds, fmt)
    raw, out = work / f"raw.{fmt}", work / f"out.{fmt}"
    sign_output(sf_write(raw, audio, sample_rate), out, record, home=home)  # warm: library load, caches
    times: dict[str, list[float]] = {"write": [], "sha256": [], "sign": [], "verify": []}
    for _ in range(repeats):
        t = time.perf_counter()
        sf_write(raw, audio, sample_rate)
        times["write"].append(time.perf_counter() - t)
        t = time.perf_counter()
        sign_output(raw, out, record, home=home)
        times["sign"].append(time.perf_counter() - t)
        t = time.perf_counter()
        hashlib.sha256(out.read_bytes()).hexdigest()
        times["sha256"].append(time.perf_counter() - t)
        t = time.perf_counter()
        state = verify_output(out, home=home).state
        times["verify"].append(time.perf_counter() - t)
        if state != "trusted":
            raise RuntimeError(f"bench output reads {state}")
    result = {k: statistics.median(v) for k, v in times.items()}
    result["ca_cold"] = ca_cold
    result["bytes"] = float(out.stat().st_size)
    return result


def sf_write(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    sf.write(path, audio, sample_rate, subtype="PCM_16")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sample-rate", type=int, default=32_000)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--flac", action="store_true", help="FLAC instead of WAV")
    args = ap.parse_args(argv)
    fmt = "flac" if args.flac else "wav"
    with tempfile.TemporaryDirectory(prefix="bench-credentials-") as tmp:
        r = time_credentials(
            Path(tmp), seconds=args.seconds, sample_rate=args.sample_rate, repeats=args.repeats, fmt=fmt
        )
    print(
        f"content credentials: {args.seconds:g} s {fmt.upper()} at {args.sample_rate} Hz "
        f"({r['bytes'] / 1e6:.2f} MB signed), median of {args.repeats}\n"
    )
    print("| step | ms per output | × raw write |")
    print("|---|---:|---:|")
    for key, label in (
        ("write", "write the raw audio (reference)"),
        ("sha256", "sha256 of the signed file"),
        ("sign", "sign (manifest + ES256 + read-back + sidecar)"),
        ("verify", "verify (lab root as trust anchor)"),
    ):
        print(f"| {label} | {r[key] * 1e3:.2f} | {r[key] / r['write']:.1f} |")
    print(f"| CA creation, once per LAB_HOME (cold) | {r['ca_cold'] * 1e3:.2f} | - |")
    ok = r["sign"] <= TARGET_SIGN_S
    print(f"\ntarget: sign ≤ {TARGET_SIGN_S * 1e3:.0f} ms per output: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
