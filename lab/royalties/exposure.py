"""What is payable: the exposure each checkpoint added, counted once.

A checkpoint's own rows in the registry (`seen_by` = itself) are its run's exposure *so far*: the
trainer's meter is cumulative over the run and a resume restores it (`training_state/`), so the
checkpoints of one run differ only by what was trained between them. Payable exposure is therefore
the consecutive difference within a run (a checkpoint minus the previous registered checkpoint of the
same run, per recording, never below zero). Rows inherited from a fine-tune's base (`seen_by` = an
ancestor) were counted by the base's own card and are never paid again.

A run is what the trainer names its checkpoints after: `<run>-step-<NNNNNN>` (lab.recipes.train);
an id without that suffix is a run of its own.

Exposure is paid in integer milliseconds: seconds are float sums, and integers make the consecutive
difference exact (no 1e-13 s residue paid or lost) and give the largest-remainder split exact
integer weights; a millisecond is far below what any rate can price.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import select

from lab.registry.schema import sources

_RUN = re.compile(r"^(?P<run>.+)-step-(?P<step>\d+)$")
_CHUNK = 500
EXPOSURE_SCHEMA = pa.schema(
    [
        ("checkpoint_id", pa.string()),
        ("recording_id", pa.string()),
        ("isrc", pa.string()),
        ("grant_id", pa.string()),
        ("exposure_ms", pa.int64()),
    ]
)
_READ = ("checkpoint_id", "recording_id", "isrc", "grant_id", "seconds_seen")


def run_of(checkpoint_id: str) -> str:
    m = _RUN.match(checkpoint_id)
    return m["run"] if m else checkpoint_id


def to_ms(seconds: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Seconds → integer milliseconds (round half to even, numpy's rint)."""
    secs = np.asarray(pc.fill_null(seconds, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
    return pa.array(np.rint(secs * 1000.0).astype(np.int64))


def previous_in_run(checkpoints: Sequence[dict]) -> dict[str, str | None]:
    """checkpoint id → the registered checkpoint of the same run with the largest lower step (or None)."""
    runs: dict[str, list[tuple[int, str]]] = {}
    for c in checkpoints:
        runs.setdefault(run_of(c["checkpoint_id"]), []).append((int(c["step"]), c["checkpoint_id"]))
    out: dict[str, str | None] = {}
    for members in runs.values():
        members.sort()
        for i, (_, cid) in enumerate(members):
            out[cid] = members[i - 1][1] if i else None
    return out


def _read_sqlite(cur, ids: list[str], own: bool) -> list[pa.Table]:
    """Rows as delimited lines built by SQLite (printf + group_concat), one checkpoint per query, parsed by
    Arrow's CSV reader while SQLite builds the next (neither holds the GIL): a million Python tuples would
    take most of a statement's time (the ledger's frame reads the same way)."""
    cols = _READ[1:]  # the checkpoint id is the query's, not repeated per row
    fmt = "\x1f".join(["%s"] * (len(cols) - 1) + ["%.17g"])  # %.17g: the float's exact value back
    args = ", ".join(c if c != "isrc" else "coalesce(isrc, char(30))" for c in cols)
    parse = pacsv.ParseOptions(delimiter="\x1f", quote_char=False, double_quote=False, escape_char=False)
    types = {c: (pa.float64() if c == "seconds_seen" else pa.string()) for c in cols}
    convert = pacsv.ConvertOptions(column_types=types, null_values=["\x1e"], strings_can_be_null=True)
    read = pacsv.ReadOptions(column_names=list(cols))
    sql = (
        f"SELECT CAST(group_concat(printf(?, {args}), char(10)) AS BLOB), count(*) FROM {sources.name} "
        "WHERE checkpoint_id = ?" + (" AND seen_by = checkpoint_id" if own else "")
    )

    def fetch(cid: str):
        return cur.execute(sql, (fmt, cid)).fetchone()

    out = []
    with ThreadPoolExecutor(1, thread_name_prefix="lab-royalties-read") as pool:
        pending = pool.submit(fetch, ids[0]) if ids else None
        for k, cid in enumerate(ids):
            blob, count = pending.result()
            pending = pool.submit(fetch, ids[k + 1]) if k + 1 < len(ids) else None
            if not count:
                continue
            t = pacsv.read_csv(pa.BufferReader(blob), read_options=read, parse_options=parse, convert_options=convert)
            if t.num_rows != count:  # cannot happen with lab identifiers; refuse rather than misread
                raise ValueError("registry source rows hold a line break or a field delimiter")
            out.append(t.add_column(0, "checkpoint_id", pa.repeat(pa.scalar(cid, pa.string()), count)))
    return out


def own_rows(registry, checkpoint_ids: Iterable[str], *, own: bool = True) -> pa.Table:
    """Registry source rows of these checkpoints (only `seen_by` = itself when `own`), seconds as ms."""
    ids = sorted(set(checkpoint_ids))
    s = sources.c
    parts: list[pa.Table] = []
    if ids and registry.exists():
        with registry.engine.connect() as conn:
            if registry._sqlite:
                cur = conn.connection.driver_connection.cursor()
                try:
                    parts = _read_sqlite(cur, ids, own)
                finally:
                    cur.close()
            else:
                cols: list[list] = [[] for _ in _READ]
                for i in range(0, len(ids), _CHUNK):
                    q = select(*(s[c] for c in _READ)).where(s.checkpoint_id.in_(ids[i : i + _CHUNK]))
                    if own:
                        q = q.where(s.seen_by == s.checkpoint_id)
                    for r in conn.execute(q):
                        for j, v in enumerate(r):
                            cols[j].append(v)
                types = {c: (pa.float64() if c == "seconds_seen" else pa.string()) for c in _READ}
                parts = [pa.table({c: pa.array(v, types[c]) for c, v in zip(_READ, cols)})]
    schema = pa.schema([(c, pa.float64() if c == "seconds_seen" else pa.string()) for c in _READ])
    table = pa.concat_tables([p.cast(schema) for p in parts]) if parts else schema.empty_table()
    return table.append_column("exposure_ms", to_ms(table["seconds_seen"])).drop_columns(["seconds_seen"])


def difference(rows: pa.Table, previous: dict[str, str | None]) -> pa.Table:
    """Payable rows: each checkpoint's per-recording ms minus its previous checkpoint's (never below 0),
    on the current checkpoint's grant rows. `rows` holds own rows of the checkpoints and of their previous
    ones. Integer keys and numpy (sort + searchsorted), not string joins: millions of rows in seconds."""
    if not rows.num_rows:
        return EXPOSURE_SCHEMA.empty_table()
    ck = pc.dictionary_encode(rows["checkpoint_id"]).combine_chunks()
    rec = pc.dictionary_encode(rows["recording_id"]).combine_chunks()
    names = ck.dictionary.to_pylist()
    where = {n: i for i, n in enumerate(names)}
    prev_of = np.array([where.get(previous.get(n) or "", -1) for n in names], np.int64)
    target = np.array([n in previous for n in names])
    c, r = ck.indices.to_numpy().astype(np.int64), rec.indices.to_numpy().astype(np.int64)
    ms = rows["exposure_ms"].to_numpy()
    n_rec = max(len(rec.dictionary), 1)
    key = c * n_rec + r
    order = np.argsort(key, kind="stable")
    skey = key[order]
    have_prev = prev_of[c] >= 0
    pkey = np.where(have_prev, prev_of[c] * n_rec + r, -1)
    pos = np.searchsorted(skey, pkey)
    pos_ok = np.minimum(pos, len(skey) - 1)
    found = have_prev & (skey[pos_ok] == pkey)
    prev_ms = np.where(found, ms[order][pos_ok], 0)
    pay = np.maximum(ms - prev_ms, 0)
    keep = target[c] & (pay > 0)
    out = rows.filter(pa.array(keep)).drop_columns(["exposure_ms"])
    out = out.append_column("exposure_ms", pa.array(pay[keep]))
    return out.select(EXPOSURE_SCHEMA.names).cast(EXPOSURE_SCHEMA)


@dataclass(frozen=True)
class Payable:
    """The checkpoints a statement pays (with the previous checkpoint each is differenced against) and
    their payable exposure rows (EXPOSURE_SCHEMA)."""

    checkpoints: list[dict]  # registry rows, plus "previous"
    rows: pa.Table


def payable(registry, checkpoint_rows: Sequence[dict]) -> Payable:
    """Payable exposure of these registered checkpoints (consecutive difference within each run)."""
    everyone = registry.checkpoints()
    wanted = {c["checkpoint_id"] for c in checkpoint_rows}
    runs = {run_of(c) for c in wanted}
    prev_all = previous_in_run([c for c in everyone if run_of(c["checkpoint_id"]) in runs])
    previous = {c: prev_all.get(c) for c in wanted}
    rows = own_rows(registry, wanted | {p for p in previous.values() if p})
    out = [dict(c, previous=previous[c["checkpoint_id"]]) for c in checkpoint_rows]
    return Payable(out, difference(rows, previous))


def card_rows(folder: str | Path, checkpoint_id: str) -> pa.Table:
    """A signed card's own rows as exposure rows (one per grant), for reconciling against the registry."""
    from lab.cards.files import load_card
    from lab.registry.entry import explode_grants

    table = load_card(folder).sources
    table = table.filter(pc.equal(table["seen_by"], checkpoint_id))
    rows = explode_grants(table, checkpoint_id)
    rows = rows.append_column("exposure_ms", to_ms(rows["seconds_seen"]))
    return rows.select(list(_READ[:-1]) + ["exposure_ms"])
