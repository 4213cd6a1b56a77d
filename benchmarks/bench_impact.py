"""Impact of one revocation over a registry of 10,000 checkpoints holding 1,000,000 source rows.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_impact.py [--checkpoints 10000] [--rows 1000000]

A synthetic registry in SQLite (built in bulk from Arrow columns, timed): lineages of 10 checkpoints
(each a fine-tune of the one before, so lineage walks run 9 levels deep), each checkpoint with
rows/checkpoints source rows drawn from a catalogue of 20,000 recordings, one grant each. A small
ledger holds the grants queried. Times `lab.audit.impact.impact` (fresh registry connection, median
of 5 after one cold run) for: a typical grant (~50 checkpoints), a hot grant in ~10% of checkpoints,
and a recording id. Prints a markdown table; target ≤ 1 s per query; exit status 1 if missed.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from lab.audit.impact import impact  # noqa: E402
from lab.registry import Registry  # noqa: E402
from lab.registry.schema import CHECKPOINT_COLUMNS  # noqa: E402
from lab.rights.ledger import Ledger  # noqa: E402

CHAIN = 10
RECORDINGS = 20_000
HOT = 7  # recording index planted in ~10% of checkpoints
TARGET_S = 1.0
SHA = "ab" * 32


def synthetic(n_ckpt: int, n_rows: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    ids = pa.array([f"run{i // CHAIN:05d}-step-{i % CHAIN + 1:06d}" for i in range(n_ckpt)])
    parent = [None if i % CHAIN == 0 else ids[i - 1].as_py() for i in range(n_ckpt)]
    per = n_rows // n_ckpt
    ck = pa.table(
        {
            "checkpoint_id": ids,
            "folder": pa.array([f"/runs/{c}" for c in ids.to_pylist()]),
            "step": pa.array([i % CHAIN + 1 for i in range(n_ckpt)]),
            "created_at": pa.array([f"2026-01-01T00:00:00.{i:06d}Z" for i in range(n_ckpt)]),
            "data_card_sha256": pa.array([SHA] * n_ckpt),
            "sources_sha256": pa.array([SHA] * n_ckpt),
            "weights_sha256": pa.array([SHA] * n_ckpt),
            "parent_id": pa.array(parent, pa.string()),
            "relation": pa.array(["pretrain" if p is None else "finetune" for p in parent]),
            "base_model_id": pa.array(["lab/musicgen-tiny" if p is None else p for p in parent]),
            "base_model_kind": pa.array(["tiny_from_config" if p is None else "lab_checkpoint" for p in parent]),
            "base_model_path": pa.array([None] * n_ckpt, pa.string()),
            "snapshot_id": pa.array(["snap-1"] * n_ckpt),
            "catalog": pa.array(["demo"] * n_ckpt),
            "ledger_head_seq": pa.array([10] * n_ckpt),
            "ledger_head_hash": pa.array([SHA] * n_ckpt),
            "policy_name": pa.array(["commercial"] * n_ckpt),
            "sources_rows": pa.array([per] * n_ckpt),
            "total_seconds": pa.array([per * 2.0] * n_ckpt),
            "on_termination": pa.array(["retrain"] * n_ckpt),
            "registered_at": pa.array(["2026-01-01T00:00:00Z"] * n_ckpt),
        }
    ).select(list(CHECKPOINT_COLUMNS))
    owner = np.repeat(np.arange(n_ckpt), per)
    rec = rng.integers(0, RECORDINGS, size=owner.size)
    rec[:: per * 10] = HOT  # the hot recording: first row of every 10th checkpoint
    recs = pa.array([f"rec-{i:05d}" for i in range(RECORDINGS)])
    grants = pa.array([f"G-{i:05d}" for i in range(RECORDINGS)])
    shas = pa.array([f"{i:064x}" for i in range(RECORDINGS)])
    rules = pa.array(["retain", "retrain", "retire"]).take(pa.array(np.arange(RECORDINGS) % 3)).take(pa.array(rec))
    src = pa.table(
        {
            "checkpoint_id": ids.take(pa.array(owner)),
            "recording_id": recs.take(pa.array(rec)),
            "catalog": pa.array(["demo"] * owner.size),
            "isrc": pa.nulls(owner.size, pa.string()),
            "audio_sha256": shas.take(pa.array(rec)),
            "grant_id": grants.take(pa.array(rec)),
            "seconds_seen": pa.array(rng.uniform(0.5, 4.0, owner.size)),
            "on_termination": rules,
            "seen_by": ids.take(pa.array(owner)),
        }
    )
    return ck, src


def timed(fn, repeat: int = 5):
    t = time.perf_counter()
    first = fn()
    cold = time.perf_counter() - t
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, cold, statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ck, src = synthetic(args.checkpoints, args.rows)
        t_gen = time.perf_counter() - t
        url = f"sqlite:///{Path(tmp) / 'registry.sqlite'}"
        t = time.perf_counter()
        with Registry(url) as reg:
            reg.bulk_load(ck, src)
        t_build = time.perf_counter() - t
        ledger = Ledger(f"sqlite:///{Path(tmp) / 'ledger.sqlite'}")
        ledger.append_many(
            [
                {
                    "kind": "grant",
                    "grant": {
                        "grant_id": g,
                        "issued_at": "2025-01-01T00:00:00Z",
                        "issuer": "bench",
                        "subject": {"recording_id": r, "catalog": "demo"},
                        "parties": [{"name": "A", "role": "master_owner", "right": "master", "share": 100}],
                        "purposes": ["ai_training"],
                        "territories": ["WW"],
                        "valid_from": "2025-01-01",
                        "licence": "CC-BY-4.0",
                        "on_termination": rule,
                    },
                }
                for g, r, rule in (("G-00042", "rec-00042", "retire"), (f"G-{HOT:05d}", f"rec-{HOT:05d}", "retrain"))
            ]
        )
        rows = [
            ["generate synthetic Arrow tables", "", "", f"{t_gen:.2f}", ""],
            [f"build registry ({args.checkpoints:,} checkpoints, {src.num_rows:,} rows)", "", "", f"{t_build:.2f}", ""],
        ]
        ok = True
        for label, query in (
            ("revoke typical grant G-00042", "G-00042"),
            (f"revoke hot grant G-{HOT:05d}", f"G-{HOT:05d}"),
            ("recording rec-00042", "rec-00042"),
        ):

            def run(q=query):
                with Registry(url) as reg:
                    return impact(reg, ledger, q)

            report, cold, warm = timed(run)
            direct = sum(c.direct for c in report.checkpoints)
            ok &= max(cold, warm) <= TARGET_S
            rows.append(
                [f"impact: {label}", f"{len(report.checkpoints):,}", f"{direct:,}", f"{warm:.3f}", f"{cold:.3f}"]
            )
        ledger.close()
    print("| step | checkpoints touched | direct | seconds (median) | cold |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\ntarget: each impact query ≤ {TARGET_S} s: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
