"""A royalty statement for 1,000,000 recordings × 1,000 checkpoints.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_royalties.py [--recordings 1000000] [--runs 100]
        [--per-run 10] [--work DIR] [--smoke]

The shape (printed): `runs` training runs of `per-run` checkpoints each, all created in 2026-11; each
run trains on its own recordings/runs recordings, one grant each (1,000,000 grants in the ledger,
built by scale_world's bulk path with a richer template: master per_second_trained 0.0020 EUR split
70/30 between label and performer, composition a 90.00 EUR monthly flat fee to one publisher).
Checkpoint k of a run has seen the first k/per-run of its recordings (the registry holds what a
card holds: exposure so far, cumulative), so the registry has runs × per-run × (per-run + 1) / 2
blocks of rows and every recording's exposure is payable exactly once, at the checkpoint that first
saw it. Registry rows go in with `Registry.bulk_load` (not timed). Times `lab.royalties.statements.issue`
alone: payable exposure, terms lookup, pools, exact splits, lines.csv + pools.csv + statement.json +
HTML per holder, signing the folder, recording what was paid. Target ≤ 30 s; exit 1 if missed.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_world  # noqa: E402
from sqlalchemy import delete  # noqa: E402

from lab.registry import Registry  # noqa: E402
from lab.registry.royalty_schema import paid, statements  # noqa: E402
from lab.registry.schema import CHECKPOINT_COLUMNS  # noqa: E402
from lab.rights.ledger import Ledger  # noqa: E402

TARGET_S = 30.0
SHA = "ab" * 32
PERIOD = "2026-11"


def _template() -> dict:
    """scale_world's grant with terms on both rights (the demo's common mix)."""
    from lab.rights.records import parse_event

    return parse_event(
        {
            "kind": "grant",
            "grant": {
                "grant_id": scale_world.TEMPLATE_GRANT,
                "version": 1,
                "issued_at": "2025-01-01T00:00:00Z",
                "issuer": "scale rights desk",
                "subject": {"recording_id": scale_world.TEMPLATE_RECORDING, "catalog": scale_world.CATALOG},
                "status": "opted_in",
                "parties": [
                    {"name": "Label", "role": "master_owner", "right": "master", "share": "70"},
                    {"name": "Artist", "role": "performer", "right": "master", "share": "30"},
                    {"name": "Publisher", "role": "publisher", "right": "composition", "share": "100"},
                ],
                "purposes": ["ai_generative_training", "commercial_output"],
                "territories": ["WW"],
                "valid_from": "2025-01-01T00:00:00Z",
                "valid_until": "2029-01-01T00:00:00Z",
                "licence": "CC-BY-4.0",
                "attribution": "scale",
                "compensation": [
                    {"right": "master", "model": "per_second_trained", "rate": "0.0020", "currency": "EUR"},
                    {"right": "composition", "model": "flat_fee", "pool": "90.00", "currency": "EUR"},
                ],
            },
        }
    ).model_dump(mode="json")


def build_registry(url: str, n_rec: int, runs: int, per_run: int, head: int) -> tuple[int, int]:
    """Checkpoint rows and cumulative own source rows, in bulk. Returns (checkpoints, source rows)."""
    per = n_rec // runs
    block = per // per_run
    ck, parts = [], []
    for r in range(runs):
        for k in range(1, per_run + 1):
            cid = f"run{r:04d}-step-{k * 100:06d}"
            ck.append(
                {c: None for c in CHECKPOINT_COLUMNS}
                | {
                    "checkpoint_id": cid,
                    "folder": f"/runs/run{r:04d}/step-{k * 100:06d}",
                    "step": k * 100,
                    "created_at": f"2026-11-{1 + (r % 28):02d}T{k:02d}:00:00.000000Z",
                    "data_card_sha256": SHA,
                    "sources_sha256": SHA,
                    "relation": "pretrain",
                    "base_model_id": "musicgen-tiny",
                    "base_model_kind": "tiny_from_config",
                    "snapshot_id": "scale",
                    "catalog": scale_world.CATALOG,
                    "ledger_head_seq": head,
                    "ledger_head_hash": SHA,
                    "policy_name": "scale",
                    "sources_rows": k * block,
                    "total_seconds": 30.0 * k * block,
                    "registered_at": "2026-11-30T00:00:00.000000Z",
                }
            )
            idx = np.arange(r * per, r * per + k * block)
            n = idx.size
            rid = pa.array(np.char.add("rec-", np.char.zfill(idx.astype(str), 7)))
            gid = pa.array(np.char.add("G-", np.char.zfill(idx.astype(str), 7)))
            parts.append(
                pa.table(
                    {
                        "checkpoint_id": pa.repeat(cid, n),
                        "recording_id": rid,
                        "catalog": pa.repeat(scale_world.CATALOG, n),
                        "isrc": pa.nulls(n, pa.string()),
                        "audio_sha256": pa.repeat(SHA, n),
                        "grant_id": gid,
                        "seconds_seen": pa.array(np.full(n, 30.0) + (idx % 7) * 0.125),
                        "on_termination": pa.repeat("retain", n),
                        "seen_by": pa.repeat(cid, n),
                    }
                )
            )
    table = pa.concat_tables(parts)
    with Registry(url) as reg:
        reg.bulk_load(ck, table)
    return len(ck), table.num_rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--per-run", type=int, default=10)
    ap.add_argument("--work", type=Path, default=None, help="keep the world here (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="10,000 recordings × 20 checkpoints (seconds)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.recordings, args.runs, args.per_run = 10_000, 4, 5
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-royalties-"))
    work.mkdir(parents=True, exist_ok=True)
    ledger_url, registry_url = f"sqlite:///{work / 'ledger.sqlite'}", f"sqlite:///{work / 'registry.sqlite'}"
    shape = json.dumps({"recordings": args.recordings, "runs": args.runs, "per_run": args.per_run, "v": 1})
    marker = work / "world.json"
    t = time.perf_counter()
    if marker.is_file() and marker.read_text() == shape:  # --work kept a world of this shape: reuse it
        with Registry(registry_url) as reg:
            n_ck, n_rows = reg.counts()
            with reg.engine.begin() as conn:  # forget earlier statements: the timed one starts fresh
                conn.execute(delete(paid))
                conn.execute(delete(statements))
    else:
        marker.unlink(missing_ok=True)
        for name in ("ledger.sqlite", "registry.sqlite"):
            for suffix in ("", "-wal", "-shm"):
                (work / f"{name}{suffix}").unlink(missing_ok=True)
        scale_world._template = _template  # the same bulk path, with terms on both rights
        scale_world.build_ledger(ledger_url, args.recordings)
        with Ledger(ledger_url) as led:
            head = led.head()[0]
        n_ck, n_rows = build_registry(registry_url, args.recordings, args.runs, args.per_run, head)
        marker.write_text(shape)
    setup_s = time.perf_counter() - t
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from lab.rights.consent import verify_chain
    from lab.rights.heads import open_ledger
    from lab.royalties.statements import issue

    with Registry(registry_url) as reg, open_ledger(ledger_url, home=work, key_dir=work / "keys") as led:
        t = time.perf_counter()
        verify_chain(led, incremental=True)  # once per ledger head, as `lab rights verify` would have done
        chain_s = time.perf_counter() - t
        t = time.perf_counter()
        done = issue(reg, led, PERIOD, out=work / "statements", key_dir=work / "keys", licensee="bench")
        elapsed = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(p.stat().st_size for p in done.folder.rglob("*") if p.is_file()) / 2**20

    print(
        f"shape: {args.runs} runs × {args.per_run} checkpoints = {n_ck} checkpoints; {args.recordings:,} recordings "
        f"(one grant each, {args.recordings // args.runs:,} per run); {n_rows:,} registry source rows "
        f"(cumulative per checkpoint); setup {setup_s:.1f} s (not timed)\n"
    )
    print("| statement | checkpoints | payable rows | pools | lines | folder MiB | seconds | peak RSS MiB | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    ok = elapsed <= TARGET_S
    print(
        f"| {PERIOD} | {done.checkpoints:,} | {done.exposure_rows:,} | {done.pools:,} | {done.lines:,} | {size:,.0f} "
        f"| {elapsed:.1f} | {rss:,.0f} (before: {rss_before:,.0f}) | ≤ {TARGET_S:.0f} s {'ok' if ok else 'MISSED'} |"
    )
    from lab.royalties.statements import TIMINGS

    print("\n" + "; ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))
    print(f"chain verified before the statement (not timed; the statement re-checks only new events): {chain_s:.1f} s")
    print(f"totals: {done.totals_by_currency}; statement {done.statement_id[:16]}; folder {done.folder}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok or args.smoke else 1


if __name__ == "__main__":
    raise SystemExit(main())
