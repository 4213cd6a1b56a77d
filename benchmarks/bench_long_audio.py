"""Long files in bounded memory: base-model setup and code-cache encoding over one long recording.

    .venv/bin/python benchmarks/bench_long_audio.py                    # 60-min and 4-min 44.1 kHz stereo FLAC
    .venv/bin/python benchmarks/bench_long_audio.py --minutes 4 --format wav

For each length a synthetic 44.1 kHz stereo file (tones + noise, written block by block with soundfile
into a temp dir; nothing downloaded) becomes the one cleared item of a real snapshot. Each phase runs
in its own subprocess, as `lab train` runs it (`quiet_libraries()` first, one torch thread), so its
peak RSS is its own: `setup` is `TinyFromConfig.build` (stream + hash the file, sample windows, fit the
tokenizer and the codebooks, save and reload the base), `codes` is `build_code_cache` with that base's
codec (stream, hash, resample, encode every segment). The bound is the issue's: 2 GiB for an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BOUND_MIB = 2048
SR = 44_100
REPO = Path(__file__).resolve().parents[1]


def synthesise(path: Path, minutes: float, fmt: str, seed: int = 0) -> None:
    """Write `minutes` of stereo audio a minute at a time (the writer never holds the whole file)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * SR)
    block = 60 * SR
    subtype = "PCM_16"
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=2, format=fmt.upper(), subtype=subtype) as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / SR
            f0 = 110.0 * 2 ** ((start // block) % 12 / 12)  # a new pitch every minute
            left = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal(n)
            right = 0.3 * np.sin(2 * np.pi * 1.5 * f0 * t) + 0.05 * rng.standard_normal(n)
            f.write(np.stack([left, right], axis=1).astype(np.float32))


def make_snapshot(folder: Path, minutes: float, fmt: str) -> Path:
    import soundfile as sf

    from lab.rights.policy import Policy
    from lab.snapshot import write_rows
    from lab.util.canonical import sha256_file

    root = folder / "catalog"
    root.mkdir(parents=True)
    rel = f"long.{fmt}"
    synthesise(root / rel, minutes, fmt)
    info = sf.info(str(root / rel))
    item = {
        "recording_id": "long-1",
        "isrc": None,
        "title": "long",
        "artists": ["A"],
        "description": "a long synthetic recording",
        "audio_path": rel,
        "audio_sha256": sha256_file(root / rel),
        "duration_s": float(info.duration),
        "sample_rate": SR,
        "channels": 2,
        "grant_ids": ["G-1"],
    }
    grant = {
        "grant_id": "G-1",
        "version": 1,
        "seq": 1,
        "licence": "CC-BY-4.0",
        "parties": [],
        "purposes": ["ai_training"],
        "territories": ["WW"],
        "valid_until": None,
        "on_termination": "retain",
        "attribution": "",
        "compensation": {"model": "none"},
    }
    policy = Policy(name="bench", purposes=["ai_training"], territory="GB", accept_licence_classes=["permissive"])
    snap, _ = write_rows(
        folder / "snapshots",
        items=[item],
        grants=[grant],
        excluded=[],
        catalog_info={"name": "bench", "root": str(root)},
        policy=policy,
        ledger_head=(1, "0" * 64),
        cleared_at=datetime.now(timezone.utc),
    )
    return snap


def child(phase: str, snapshot: Path, work: Path) -> None:
    """One phase in this process; prints a JSON line with its wall time and peak RSS."""
    import torch

    torch.set_num_threads(1)
    from lab.recipes.train import quiet_libraries

    quiet_libraries()
    from lab.data.codes import build_code_cache
    from lab.models.musicgen import load_local_pretrained
    from lab.recipes.base_model import TinyFromConfig
    from lab.snapshot import load_snapshot
    from lab.train.distributed import DistInfo

    snap = load_snapshot(snapshot)
    t0 = time.perf_counter()
    if phase == "setup":
        spec = TinyFromConfig(id="tiny", licence="Apache-2.0", declared_training_data="none")
        spec.build(snap, work, DistInfo(), seed=0, public_key=work / "none.pem")
    else:
        model, _ = load_local_pretrained(work / "base")
        t0 = time.perf_counter()
        ds = build_code_cache(snap, model.audio_encoder, work / "codes", segment_seconds=2.0, progress=False)
        assert len(ds) > 0
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"phase": phase, "wall_s": wall, "peak_mib": peak}))


def run_phase(phase: str, snapshot: Path, work: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, __file__, "--child", phase, str(snapshot), str(work)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        sys.exit(f"{phase} failed:\n{out.stderr[-3000:]}")
    warnings = [ln for ln in out.stderr.splitlines() if "warn" in ln.lower()]
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"warnings": warnings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[60.0, 4.0])
    ap.add_argument("--format", choices=["flac", "wav"], default="flac")
    ap.add_argument("--child", nargs=3, metavar=("PHASE", "SNAPSHOT", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        phase, snapshot, work = args.child
        return child(phase, Path(snapshot), Path(work))

    sys.path.insert(0, str(REPO))
    rows = []
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
            tmp = Path(tmp)
            t = time.perf_counter()
            snap = make_snapshot(tmp, minutes, args.format)
            size = sum(p.stat().st_size for p in (tmp / "catalog").iterdir()) / 2**20
            print(
                f"{minutes:g} min {args.format}: {size:.0f} MiB written in {time.perf_counter() - t:.1f} s", flush=True
            )
            work = tmp / "run"
            work.mkdir()
            for phase in ("setup", "codes"):
                r = run_phase(phase, snap, work)
                rows.append((minutes, phase, r))
                print(f"  {phase}: {r['wall_s']:.1f} s, peak RSS {r['peak_mib']:.0f} MiB", flush=True)
                for w in r["warnings"]:
                    print(f"    library warning: {w}")

    print(f"\n| input (44.1 kHz stereo {args.format}) | phase | wall s | peak RSS MiB | ≤ {BOUND_MIB} MiB |")
    print("|---|---|---:|---:|---|")
    for minutes, phase, r in rows:
        ok = "yes" if r["peak_mib"] <= BOUND_MIB else "NO"
        print(f"| {minutes:g} min | {phase} | {r['wall_s']:.1f} | {r['peak_mib']:.0f} | {ok} |")


if __name__ == "__main__":
    main()
