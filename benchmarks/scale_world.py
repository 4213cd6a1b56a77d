"""A catalogue of N recordings and a ledger in which a given fraction clears, built fast for scale benchmarks.

    from scale_world import POLICY, AT, build_world
    catalog, home, ledger_url = build_world(folder, 1_000_000, cleared_fraction=1.0)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_world.py /tmp/world --n 1000000   # prints the timing

`benchmarks/bench_clearance.py` builds a *varied* ledger (revocations, amendments, opt-outs ...)
through validated appends: 3 minutes a million. This builds a plain one in seconds: the first
`round(n * cleared_fraction)` recordings each get one grant that clears under `POLICY` at `AT`,
the rest none (`no_grant`). The grants are one validated `GrantEvent` template whose id and subject
vary, so every row is exactly what `Ledger.append_many` would store (payload = canonical JSON of
the event, flat columns derived from it, hash chain); they are inserted in one SQLite transaction
behind the ledger's API. `Ledger.verify(deep=True)` accepts the result. The catalogue is columns
built with pyarrow, written as `lab.catalog.store` writes it (parquet + manifest).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CATALOG = "scale"
AT = datetime(2026, 6, 1, tzinfo=timezone.utc)  # the clearance moment the grants are valid at
POLICY = {
    "name": "scale-commercial",
    "purposes": ["ai_generative_training", "commercial_output"],
    "territory": "GB",
    "accept_licence_classes": ["permissive", "contract"],
    "contracts": {},
    "at": AT.isoformat(),
}
RECORDED = AT - timedelta(days=365)


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(n)]


def build_catalog(home: Path, n: int) -> None:
    """catalogs/<CATALOG>/{catalog.parquet, manifest.json}: n ok recordings, sha256 of a name each."""
    import numpy as np
    import orjson
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from lab.catalog import store
    from lab.util.canonical import sha256_file

    rid = pa.array(_ids("rec-", n))
    sha = pa.array([hashlib.sha256(r.encode()).hexdigest() for r in rid.to_pylist()])
    i = np.arange(n)
    artist = pc.binary_join_element_wise("artist ", pc.cast(pa.array(i % 5000), pa.string()), "")
    cols = {
        "recording_id": rid,
        "isrc": pa.array(_ids("GBLAB", n)),
        "title": pc.binary_join_element_wise("study ", rid, ""),
        "artists": pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), artist),
        "description": pc.binary_join_element_wise("synthetic piece ", pc.cast(pa.array(i % 97), pa.string()), ""),
        "rights_holders": pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), artist),
        "licence": pa.array(np.full(n, "CC-BY-4.0", dtype=object), pa.string()),
        "audio_path": pc.binary_join_element_wise("audio/", rid, ".flac", ""),
        "extra": pa.array(np.full(n, "{}", dtype=object), pa.string()),
        "catalog": pa.array(np.full(n, CATALOG, dtype=object), pa.string()),
        "status": pa.array(np.full(n, "ok", dtype=object), pa.string()),
        "reject_reason": pa.nulls(n, pa.string()),
        "reject_detail": pa.array(np.full(n, "", dtype=object), pa.string()),
        "audio_sha256": sha,
        "duration_s": pa.array(30.0 + (i % 200), pa.float64()),
        "sample_rate": pa.array(np.full(n, 44100)),
        "channels": pa.array(np.full(n, 2)),
        "frames": pa.array(44100 * (30 + i % 200)),
        "format": pa.array(np.full(n, "FLAC", dtype=object), pa.string()),
        "size_bytes": pa.array(5_000_000 + i % 100_000),
    }
    table = pa.table(cols, schema=store.SCHEMA)
    folder = store.catalog_dir(CATALOG, home)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / store.PARQUET_NAME, compression="zstd")
    manifest = {
        "format": store.FORMAT,
        "name": CATALOG,
        "root": str(home / "audio"),
        "counts": {"total": n, "ok": n, "rejected": 0},
        "parquet": {"file": store.PARQUET_NAME, "sha256": sha256_file(folder / store.PARQUET_NAME), "rows": n},
    }
    pretty = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    (folder / store.MANIFEST_NAME).write_bytes(orjson.dumps(manifest, option=pretty))


TEMPLATE_GRANT, TEMPLATE_RECORDING = "G-0000000", "rec-0000000"


def _template() -> dict:
    from lab.rights.records import parse_event

    return parse_event(
        {
            "kind": "grant",
            "grant": {
                "grant_id": "G-0000000",
                "version": 1,
                "issued_at": "2025-01-01T00:00:00Z",
                "issuer": "scale rights desk",
                "subject": {"recording_id": "rec-0000000", "catalog": CATALOG},
                "status": "opted_in",
                "parties": [
                    {"name": "Label", "role": "master_owner", "right": "master", "share": 70},
                    {"name": "Artist", "role": "performer", "right": "master", "share": 30},
                ],
                "purposes": ["ai_generative_training", "commercial_output"],
                "territories": ["WW"],
                "valid_from": "2025-01-01T00:00:00Z",
                "valid_until": "2029-01-01T00:00:00Z",
                "licence": "CC-BY-4.0",
                "attribution": "scale",
                "compensation": [
                    {"right": "master", "model": "per_second_trained", "rate": "0.001", "currency": "EUR"}
                ],
            },
        }
    ).model_dump(mode="json")


def build_ledger(url: str, n_grants: int, batch: int = 100_000) -> None:
    """One grant per recording 0..n_grants-1, stored as `append_many` stores it, in one transaction.

    Bulk-load tricks, none visible in the result: the secondary indexes are dropped and rebuilt
    after the insert (one sort instead of a million B-tree inserts each), event ids ascend (a
    random base + j: appends to their unique index), and the file is in rollback-journal mode while
    loading (WAL would write every page twice), back to WAL after."""
    import random
    from hashlib import sha256

    from sqlalchemy.schema import CreateIndex

    from lab.rights.ledger import _INDEXES, COLUMNS, DERIVED, GENESIS, TABLE, Ledger, _derive, _row_hash
    from lab.util.canonical import canonical_json
    from lab.util.timestamps import to_ts

    ledger = Ledger(url)
    if ledger.head()[0]:  # creates the table, its indexes and guards on an empty ledger
        raise SystemExit(f"{url} is not empty")
    index_sql = [str(CreateIndex(ix).compile(ledger.engine)) for ix in _INDEXES]
    ledger.close()
    template = _template()
    # Only the grant id and the subject's recording id vary (fixed width, each once in the payload):
    # the payload, the derived columns and the canonical JSON the row hash covers are the template's
    # with those strings (and the seq, event id and previous hash: sentinels here) replaced.
    payload = canonical_json(template).decode()
    derived = _derive(template)
    gi, ri = DERIVED.index("grant_id"), DERIVED.index("subject_recording_id")
    assert payload.count(TEMPLATE_GRANT) == payload.count(TEMPLATE_RECORDING) == 1
    rec = to_ts(RECORDED)
    seq_s, eid_s, prev_s = 987654321987654, "e" * 32, "f" * 64
    hashed = canonical_json(dict(zip(COLUMNS, (seq_s, eid_s, *derived, rec, payload, prev_s)))).decode()
    assert all(
        hashed.count(x) == k
        for x, k in ((str(seq_s), 1), (eid_s, 1), (prev_s, 1), (TEMPLATE_GRANT, 2), (TEMPLATE_RECORDING, 2))
    )
    prev = GENESIS
    base = random.getrandbits(126)
    con = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    con.execute("PRAGMA journal_mode = DELETE")
    con.execute("PRAGMA cache_size = -524288")
    con.execute("BEGIN IMMEDIATE")
    for ix in _INDEXES:
        con.execute(f"DROP INDEX {ix.name}")
    sql = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    for start in range(0, n_grants, batch):
        rows = []
        for j in range(start, min(start + batch, n_grants)):
            gid, rid, eid = f"G-{j:07d}", f"rec-{j:07d}", f"{base + j:032x}"
            cols = list(derived)
            cols[gi], cols[ri] = gid, rid
            row = (j + 1, eid, *cols, rec, payload.replace(TEMPLATE_GRANT, gid).replace(TEMPLATE_RECORDING, rid), prev)
            text = (
                hashed.replace(TEMPLATE_GRANT, gid)
                .replace(TEMPLATE_RECORDING, rid)
                .replace(eid_s, eid)
                .replace(prev_s, prev)
                .replace(str(seq_s), str(j + 1))
            )
            prev = sha256(text.encode()).hexdigest()
            if j == 0:
                assert prev == _row_hash(row), "templated row hash differs from the ledger's"
            rows.append(row + (prev,))
        con.executemany(sql, rows)
    for ddl in index_sql:
        con.execute(ddl)
    con.execute("COMMIT")
    con.execute("PRAGMA journal_mode = WAL")
    con.close()


def build_world(folder: str | Path, n: int, cleared_fraction: float = 1.0) -> tuple[str, Path, str]:
    """Build (or reuse, when built with the same arguments) a catalogue of `n` recordings and a
    ledger where `round(n * cleared_fraction)` of them clear under `POLICY` at `AT`.
    Returns (catalogue name, home folder, ledger url)."""
    import json
    import shutil

    folder = Path(folder)
    home, db = folder / "home", folder / "ledger.sqlite"
    url = f"sqlite:///{db}"
    want = {"n": n, "cleared_fraction": cleared_fraction, "kind": "scale_world/1"}
    marker = folder / "world.json"
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return CATALOG, home, url
    shutil.rmtree(home, ignore_errors=True)
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), marker):
        p.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # the catalogue's Arrow work runs while SQLite inserts (no GIL held)
        catalog = pool.submit(build_catalog, home, n)
        build_ledger(url, round(n * cleared_fraction))
        catalog.result()
    marker.write_text(json.dumps(want))
    return CATALOG, home, url


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--cleared-fraction", type=float, default=1.0)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    name, home, url = build_world(args.folder, args.n, args.cleared_fraction)
    print(f"{name}: {args.n:,} recordings under {home}, ledger {url}: built in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
