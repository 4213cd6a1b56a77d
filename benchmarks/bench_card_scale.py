"""Data card at scale: build, write + sign, and validate (as `lab audit` does) at 10k / 100k / 1M sources.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_card_scale.py [--sizes 10000,100000,1000000]

A synthetic snapshot per size (built untimed, as lab.snapshot reads one: `items` and `grants` arrow
tables): one grant per recording, every 20th recording also cleared by a second grant, a tenth of
them under one catalogue deal; every recording seen. Each size runs in two fresh processes, so peak
RSS is per step: (1) `build_card` then `write_card_files` + `sign_folder` over the card files;
(2) `load_card` (JSON Schema + pydantic + column-wise checks of sources.parquet + its sha256).
Prints a markdown table: N | step | seconds | peak RSS | exponent (log time ratio / log N ratio vs
the previous size). Targets at 1M: build + write + sign ≤ 10 s, validate ≤ 10 s, exponents ≤ 1.1;
exit status 1 if missed.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

TARGET_S = 10.0
TARGET_EXP = 1.1


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ids(prefix: str, n: int) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(pa.array(np.arange(n)).cast(pa.string()), 7, "0"), "")


def _random_sha256(rng: np.random.Generator, n: int) -> pa.Array:
    """n random 64-char hex strings (incompressible, as real audio digests are)."""
    raw = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    hexchars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text = np.empty((n, 64), dtype=np.uint8)
    text[:, 0::2], text[:, 1::2] = hexchars[raw >> 4], hexchars[raw & 15]
    offsets = pa.py_buffer(np.arange(0, 64 * n + 1, 64, dtype=np.int32).tobytes())
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(text.tobytes())])


def synthetic_snapshot(n: int) -> SimpleNamespace:
    """n cleared items, ~n per-recording grants + one catalogue deal; 5% of items hold two grants."""
    rng = np.random.default_rng(0)
    rec = _ids("rec-", n)
    gid = _ids("G-", n)
    deal = rng.random(n) < 0.1
    first = pc.if_else(pa.array(deal), "G-deal", gid)
    second = np.arange(n) % 20 == 0
    counts = 1 + second.astype(np.int32)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    flat = np.empty(offsets[-1], dtype=object)
    flat[offsets[:-1]] = first.to_numpy(zero_copy_only=False)
    flat[offsets[:-1][second] + 1] = pc.binary_join_element_wise(gid.filter(pa.array(second)), "b", "").to_pylist()
    grant_ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.string()))
    sha = _random_sha256(rng, n)
    isrc = pc.binary_join_element_wise(
        "GBLAB26", pc.utf8_lpad(pa.array(np.arange(n) % 100000).cast(pa.string()), 5, "0"), ""
    )
    items = pa.table(
        {
            "recording_id": rec,
            "isrc": isrc,
            "title": pc.binary_join_element_wise("Song ", rec, ""),
            "artists": pa.ListArray.from_arrays(
                pa.array(np.arange(n + 1, dtype=np.int32)), pc.binary_join_element_wise("Artist ", rec, "")
            ),
            "description": pa.repeat("warm piano", n),
            "audio_path": rec,
            "audio_sha256": sha,
            "duration_s": pa.array(np.full(n, 30.0)),
            "sample_rate": pa.array(np.full(n, 32000)),
            "channels": pa.array(np.ones(n, np.int64)),
            "grant_ids": grant_ids,
            "digest": sha,
        }
    )
    extra = pc.binary_join_element_wise(gid.filter(pa.array(second)), "b", "")
    all_gids = pa.concat_arrays([gid, extra, pa.array(["G-deal"])])
    g = len(all_gids)
    party = pa.StructArray.from_arrays(
        [
            pa.array(np.tile(np.array(["Label", "Composer", "Publisher"], dtype=object), g), pa.string()),
            pa.array(np.tile(np.array(["master_owner", "composer", "publisher"], dtype=object), g), pa.string()),
            pa.array(np.tile(np.array(["master", "composition", "composition"], dtype=object), g), pa.string()),
            pa.array(np.tile([100.0, 60.0, 40.0], g)),
            pa.nulls(3 * g, pa.string()),
        ],
        names=["name", "role", "right", "share", "party_id"],
    )
    lists3 = pa.array(np.arange(0, 3 * g + 1, 3, dtype=np.int32))
    two = pa.array(np.arange(0, 2 * g + 1, 2, dtype=np.int32))
    grants = pa.table(
        {
            "grant_id": all_gids,
            "version": pa.array(np.ones(g, np.int64)),
            "seq": pa.array(np.arange(g) + 10),
            "licence": pc.if_else(pa.array(np.arange(g) % 7 == 0), "LicenseRef-lab-deal", "CC-BY-4.0"),
            "parties": pa.ListArray.from_arrays(lists3, party),
            "purposes": pa.ListArray.from_arrays(
                two,
                pa.array(np.tile(np.array(["ai_generative_training", "ai_training"], dtype=object), g), pa.string()),
            ),
            "territories": pa.ListArray.from_arrays(pa.array(np.arange(g + 1, dtype=np.int32)), pa.repeat("WW", g)),
            "valid_until": pa.array(np.full(g, 1830297600_000000), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "on_termination": pa.repeat("retain", g),
            "attribution": pc.binary_join_element_wise("Credit ", all_gids, ""),
            "compensation": pa.repeat("{}", g),
        }
    )
    return SimpleNamespace(
        snapshot_id="snap-0123456789abcdef",
        merkle_root="0" * 64,
        cleared_at=datetime.now(timezone.utc),
        catalog={"name": "bench", "root": "/x", "manifest_sha256": "1" * 64},
        policy={
            "name": "research",
            "purposes": ["ai_generative_training"],
            "territory": "GB",
            "accept_licence_classes": ["permissive", "contract"],
            "contracts": {},
            "digest": "2" * 64,
        },
        ledger={"head_seq": 1, "head_hash": "3" * 64},
        counts={"items": n, "cleared": n, "excluded": {"no_grant": 5}},
        items=items,
        grants=grants,
    )


def run_build(n: int, folder: Path) -> dict:
    from lab.cards import CARD_FILES, build_card, write_card_files
    from lab.cards.signing import ensure_keypair, sign_folder

    snap = synthetic_snapshot(n)
    seconds = dict(zip(snap.items["recording_id"].to_pylist(), (np.arange(n) % 97 + 1.0).tolist()))
    keys = ensure_keypair(folder.parent / "keys")
    base = _rss_mib()
    lineage = {
        "base_model": {
            "id": "musicgen-tiny",
            "licence": "none",
            "declared_training_data": "none",
            "kind": "tiny_from_config",
        },
        "relation": "pretrain",
    }
    t0 = time.perf_counter()
    bundle = build_card(
        snapshot=snap,
        seconds_seen=seconds,
        samples=n,
        tokens=n * 100,
        lineage=lineage,
        inherited=None,
        checkpoint_id="bench-step-000001",
        step=1,
        config={},
        seed=0,
    )
    t1 = time.perf_counter()
    rss_build = _rss_mib()
    folder.mkdir(parents=True, exist_ok=True)
    write_card_files(bundle, folder, base_model_hub_id=None)
    sign_folder(folder, keys.private_path)
    t2 = time.perf_counter()
    assert sorted(p.name for p in folder.iterdir()) == sorted([*CARD_FILES, "model.sig"])
    return {
        "build": t1 - t0,
        "write_sign": t2 - t1,
        "rss_build": rss_build,
        "rss_write": _rss_mib(),
        "rss_setup": base,
        "mib": (folder / "sources.parquet").stat().st_size / 2**20,
    }


def run_validate(folder: Path) -> dict:
    from lab.cards import load_card

    base = _rss_mib()
    t0 = time.perf_counter()
    bundle = load_card(folder)
    t1 = time.perf_counter()
    assert bundle.sources.num_rows == bundle.card.sources.rows
    return {"validate": t1 - t0, "rss_validate": _rss_mib(), "rss_setup": base}


def _child(step: str, n: int, folder: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", step, str(n), str(folder)], capture_output=True, text=True, check=False
    )
    if out.returncode:
        sys.exit(f"{step} at {n} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        step, n, folder = args.child
        result = run_build(int(n), Path(folder)) if step == "build" else run_validate(Path(folder))
        print(json.dumps(result))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, prev, ok = [], {}, True
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / f"n{n}" / "step-000001"
            b = _child("build", n, folder)
            v = _child("validate", n, folder)
            steps = {
                "build": (b["build"], b["rss_build"]),
                "write + sign": (b["write_sign"], b["rss_write"]),
                "build + write + sign": (b["build"] + b["write_sign"], b["rss_write"]),
                "validate (audit)": (v["validate"], v["rss_validate"]),
            }
            for name, (secs, rss) in steps.items():
                exp = ""
                if name in prev:
                    pn, ps = prev[name]
                    e = math.log(max(secs, 1e-9) / max(ps, 1e-9)) / math.log(n / pn)
                    exp = f"{e:.2f}"
                    ok &= e <= TARGET_EXP or secs < 1.0  # sub-second steps: fixed costs dominate
                prev[name] = (n, secs)
                rows.append(f"| {n:,} | {name} | {secs:.2f} | {rss:,.0f} MiB | {exp} |")
            rows.append(f"| {n:,} | sources.parquet | {b['mib']:.1f} MiB | (setup RSS {b['rss_setup']:,.0f} MiB) | |")
            if n >= 1_000_000:
                ok &= b["build"] + b["write_sign"] <= TARGET_S and v["validate"] <= TARGET_S
    print("| N | step | seconds | peak RSS | exponent |\n|---:|---|---:|---:|---:|")
    print("\n".join(rows))
    print(
        f"\ntargets at 1M: build + write + sign ≤ {TARGET_S:g} s, validate ≤ {TARGET_S:g} s, exponent ≤ "
        f"{TARGET_EXP}: {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
