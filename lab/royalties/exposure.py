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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import select

from lab.registry.schema import sources

_RUN = re.compile(r"^(?P<run>.+)-step-(?P<step>\d+)$")
_CHUNK = 500
EXPOSURE_SCHEMA = pa.schema(
    [
        ("checkpoint_id", pa.string()),
        ("recording_id", pa.string()),
        ("catalog", pa.string()),
        ("isrc", pa.string()),
        ("grant_id", pa.string()),
        ("exposure_ms", pa.int64()),
    ]
)
_READ = ("checkpoint_id", "recording_id", "catalog", "isrc", "grant_id", "seconds_seen")


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


def own_rows(registry, checkpoint_ids: Iterable[str], *, own: bool = True) -> pa.Table:
    """Registry source rows of these checkpoints (only `seen_by` = itself when `own`), seconds as ms."""
    ids = sorted(set(checkpoint_ids))
    s = sources.c
    cols: list[list] = [[] for _ in _READ]
    if ids and registry.exists():
        with registry.engine.connect() as conn:
            if registry._sqlite:  # the DBAPI cursor: tuples without SQLAlchemy's per-row objects
                cur = conn.connection.driver_connection.cursor()
                for i in range(0, len(ids), _CHUNK):
                    chunk = ids[i : i + _CHUNK]
                    sql = (
                        f"SELECT {', '.join(_READ)} FROM {sources.name} WHERE checkpoint_id IN "
                        f"({', '.join('?' * len(chunk))})" + (" AND seen_by = checkpoint_id" if own else "")
                    )
                    rows = cur.execute(sql, chunk).fetchall()
                    for j, col in enumerate(zip(*rows) if rows else ()):
                        cols[j].extend(col)
                cur.close()
            else:
                for i in range(0, len(ids), _CHUNK):
                    q = select(*(s[c] for c in _READ)).where(s.checkpoint_id.in_(ids[i : i + _CHUNK]))
                    if own:
                        q = q.where(s.seen_by == s.checkpoint_id)
                    for r in conn.execute(q):
                        for j, v in enumerate(r):
                            cols[j].append(v)
    t = {c: pa.array(v, pa.float64() if c == "seconds_seen" else pa.string()) for c, v in zip(_READ, cols)}
    table = pa.table(t)
    return table.append_column("exposure_ms", to_ms(table["seconds_seen"])).drop_columns(["seconds_seen"])


def difference(rows: pa.Table, previous: dict[str, str | None]) -> pa.Table:
    """Payable rows: each checkpoint's per-recording ms minus its previous checkpoint's, exploded back to
    the current checkpoint's grants. `rows` holds own rows of the checkpoints and of their previous ones."""
    per_rec = rows.group_by(["checkpoint_id", "recording_id"]).aggregate([("exposure_ms", "max")])
    per_rec = per_rec.rename_columns(["checkpoint_id", "recording_id", "ms"])
    nxt = {p: c for c, p in previous.items() if p is not None}
    prev_rows = per_rec.filter(pc.is_in(per_rec["checkpoint_id"], pa.array(list(nxt), pa.string())))
    prev_rows = pa.table(
        {
            "checkpoint_id": pa.array([nxt[c] for c in prev_rows["checkpoint_id"].to_pylist()], pa.string()),
            "recording_id": prev_rows["recording_id"],
            "prev_ms": prev_rows["ms"],
        }
    )
    targets = pa.array(sorted(previous), pa.string())
    cur = per_rec.filter(pc.is_in(per_rec["checkpoint_id"], targets))
    both = cur.join(prev_rows, ["checkpoint_id", "recording_id"], join_type="left outer")
    pay = pc.max_element_wise(pc.subtract(both["ms"], pc.fill_null(both["prev_ms"], 0)), 0)
    both = (
        both.append_column("payable_ms", pay)
        .filter(pc.greater(pay, 0))
        .select(["checkpoint_id", "recording_id", "payable_ms"])
    )
    grants = rows.filter(pc.is_in(rows["checkpoint_id"], targets)).drop_columns(["exposure_ms"])
    out = grants.join(both, ["checkpoint_id", "recording_id"], join_type="inner")
    out = out.rename_columns([("exposure_ms" if c == "payable_ms" else c) for c in out.column_names])
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
