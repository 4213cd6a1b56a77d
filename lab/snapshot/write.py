"""Write a snapshot folder from a clearance decision: column-wise, atomically, content-addressed.

`lab clear` at a million recordings cannot afford a Python object per entry, so every table is
cut out of the catalogue and the `Clearance` columns with pyarrow, and every leaf digest computed
column-wise (`format`). The clearing grants' terms are the one per-grant Python step: they come
as stored ledger payloads, read ahead on a thread of their own (`GrantTerms`) while clearance
and the excluded entries are built. Files go into a temp folder beside the destination, are
fsync'd and renamed into place in one step (`lab.util.atomic.publish_dir`).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ..catalog.licence import LICENCE_MISMATCH, licence_mismatch
from ..rights.clearance import Clearance, no_gc
from ..rights.policy import Policy
from ..util.atomic import publish_dir
from ..util.canonical import canonical_json, sha256_file
from ..util.timestamps import utcnow
from . import format as fmt
from . import jsoncols as jc
from .jsoncols import hex_column, plain

TERMS_FIELDS = (
    "attribution",
    "compensation",
    "grant_id",
    "licence",
    "on_termination",
    "parties",
    "purposes",
    "territories",
    "valid_until",
    "version",
)  # what grants.parquet copies from a grant (+ seq)

# payloads(seqs) → batches of (seq, stored event payload: JSON text or dict), in the order asked.
Payloads = Callable[[list[int]], Iterable[Sequence[tuple[int, Any]]]]


class _Prefetch:
    """Runs an iterator on a thread of its own, up to `max_bytes` of batches ahead of its consumer."""

    def __init__(self, make: Callable[[], Iterable[Any]], max_bytes: int = 1 << 28):
        self.max_bytes, self.items, self.ahead = max_bytes, deque(), 0
        self.cond = threading.Condition()
        self.done = self.stopped = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(make,), name="lab-snapshot-terms", daemon=True)
        self.thread.start()

    def _run(self, make) -> None:
        try:
            for item in make():
                size = getattr(item, "nbytes", None) or sum(len(p) for _, p in item if isinstance(p, (str, bytes)))
                with self.cond:
                    while not self.stopped and self.items and self.ahead + size > self.max_bytes:
                        self.cond.wait()
                    if self.stopped:
                        return
                    self.items.append((item, size))
                    self.ahead += size
                    self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self.error = exc
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def __iter__(self) -> Iterator[Any]:
        while True:
            with self.cond:
                while not self.items and not self.done:
                    self.cond.wait()
                if not self.items:
                    if self.error is not None:
                        raise self.error
                    return
                item, size = self.items.popleft()
                self.ahead -= size
                self.cond.notify_all()
            yield item

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.items.clear()
            self.cond.notify_all()
        self.thread.join()


class GrantTerms:
    """Terms of grant versions in grant-id order, read by `payloads(seqs)` (e.g.
    `Ledger.payload_batches(seqs)`) and parsed into grants.parquet rows on a thread of its own. Start it
    as soon as the candidates are known (`candidates`: every grant with an ok verdict, a superset
    of the clearing ones) and the ledger reads overlap the rest of clearance."""

    def __init__(self, payloads: Payloads, ids: pa.Array, seqs: np.ndarray):
        ids = plain(ids)
        order = pc.sort_indices(ids).to_numpy() if len(ids) else np.zeros(0, np.int64)
        self.ids = ids.take(pa.array(order, pa.int64()))
        self.seqs = np.asarray(seqs, dtype=np.int64)[order]
        seq_list = self.seqs.tolist()
        self._prefetch = _Prefetch(lambda: _parsed(payloads(seq_list)))

    @classmethod
    def candidates(cls, payloads: Payloads, grants: pa.Table) -> GrantTerms:
        """From `effective_grants(...)`: the grants with an ok verdict."""
        ok = pc.equal(grants["code"], 0)
        return cls(payloads, grants["grant_id"].filter(ok), np.asarray(grants["seq"].filter(ok), dtype=np.int64))

    def batches(self) -> Iterator[pa.Table]:
        return iter(self._prefetch)

    def close(self) -> None:
        self._prefetch.close()


# How a stored payload holds the terms (lab.rights.records: Party, Compensation; strict, no other keys):
# shares and amounts are decimal strings. Payloads stored before that (one compensation object, float
# rate and shares) do not fit this schema: Arrow refuses the batch and `_python_terms` copies it as stored.
_PARTY_JSON = pa.struct([f.with_type(pa.string()) if f.name == "share" else f for f in fmt.PARTY])
_COMPENSATION_ENTRY = pa.struct(
    [(k, pa.string()) for k in ("currency", "model", "notes", "pool", "rate", "right", "share")]
)
_ENTRY_REQUIRED = ("model", "notes", "right")
_PARTIES_TYPE = fmt.GRANTS_SCHEMA.field("parties").type
_TERMS = [f for f in fmt.GRANTS_SCHEMA if f.name not in ("seq", "compensation", "valid_until", "parties")] + [
    pa.field("parties", pa.list_(_PARTY_JSON)),
    pa.field("compensation", pa.list_(_COMPENSATION_ENTRY)),
    pa.field("valid_until", pa.string()),
]
_PAYLOAD_JSON = pa.schema([("grant", pa.struct([f.with_nullable(True) for f in _TERMS]))])
_REQUIRED = [f.name for f in _TERMS if not f.nullable] + ["parties", "compensation"]


def _compensation_text(comp: pa.Array) -> pa.Array | None:
    """Canonical JSON of each row's list of terms (== canonical_json of the stored list), or None when an
    entry lacks a key every entry has."""
    entries, offsets, _ = jc.list_offsets(comp)
    if entries.null_count or any(entries.field(k).null_count for k in _ENTRY_REQUIRED):
        return None
    text = jc.json_object({k: jc.json_str(entries.field(k)) for k in _COMPENSATION_ENTRY.names})
    return jc.json_list(text, offsets)


def _arrow_terms(batch: Sequence[tuple[int, Any]]) -> pa.Table | None:
    """Terms from a batch of whole stored payloads (JSON lines, e.g. a `Ledger.PayloadBatch`) parsed
    by Arrow's JSON reader: no Python object per grant. None when the batch is anything else."""
    blob = getattr(batch, "blob", None)
    if blob is None and batch and all(isinstance(p, (str, bytes)) for _, p in batch):
        blob = b"\n".join(p.encode() if isinstance(p, str) else p for _, p in batch)
    if not blob:
        return None
    try:
        t = pajson.read_json(
            pa.BufferReader(blob),
            read_options=_JSON_READ,
            parse_options=pajson.ParseOptions(explicit_schema=_PAYLOAD_JSON, unexpected_field_behavior="ignore"),
        )
    except pa.ArrowInvalid:
        return None
    seqs = batch.seqs if hasattr(batch, "seqs") else [s for s, _ in batch]
    g = plain(t["grant"])
    if t.num_rows != len(seqs) or g.null_count or any(g.field(f).null_count for f in _REQUIRED):
        return None  # not whole payloads of grant versions: the per-grant path says what is wrong
    text = _compensation_text(g.field("compensation"))
    if text is None:
        return None
    # A decimal share as the snapshot's float64: at most 9 significant digits (records.Share), so
    # the float's shortest text is the decimal itself.
    cols = {f.name: g.field(f.name) for f in _TERMS} | {
        "seq": pa.array(seqs, pa.int64()),
        "parties": g.field("parties").cast(_PARTIES_TYPE),
        "compensation": text,
        "valid_until": g.field("valid_until").cast(fmt.GRANTS_SCHEMA.field("valid_until").type),
    }
    return pa.Table.from_arrays([cols[f] for f in fmt.GRANTS_SCHEMA.names], schema=fmt.GRANTS_SCHEMA)


def _python_terms(batch: Sequence[tuple[int, Any]]) -> pa.Table:
    """Terms of a batch of stored payloads (dicts or JSON text, whole events or just the terms)."""
    cols: dict[str, list] = {f: [] for f in fmt.GRANTS_SCHEMA.names}
    for seq, payload in batch:
        g = payload if isinstance(payload, dict) else orjson.loads(payload)
        g = g.get("grant", g)
        for f in TERMS_FIELDS:
            cols[f].append(canonical_json(g[f]).decode() if f == "compensation" else g[f])
        cols["seq"].append(seq)
    return _grant_columns(cols)


# One thread per batch and 1 MiB blocks: batches are parsed two at a time by `_parsed` (measured at
# 200k payloads: 0.96 s vs 1.45 s for Arrow's default blocks, its own pool adding nothing).
_JSON_READ = pajson.ReadOptions(use_threads=False, block_size=1 << 20)
_PARSERS = 2  # Arrow's JSON reader releases the GIL: batches parse side by side on the cores


def _parsed(batches: Iterable[Sequence[tuple[int, Any]]]) -> Iterator[pa.Table]:
    """`_terms_table` of each batch, in order, `_PARSERS` batches at a time."""
    with ThreadPoolExecutor(_PARSERS, thread_name_prefix="lab-snapshot-parse") as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(_terms_table, batch))
            if len(pending) > 2 * _PARSERS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _terms_table(batch: Sequence[tuple[int, Any]]) -> pa.Table:
    """A batch of `(seq, stored payload)` as grants.parquet rows (on the prefetch thread)."""
    try:
        t = _arrow_terms(batch)
        return _python_terms(batch) if t is None else t
    except (KeyError, TypeError, ValueError, AttributeError, pa.ArrowInvalid, orjson.JSONDecodeError) as exc:
        raise fmt.SnapshotError(
            f"terms of clearing grants (ledger seqs {batch[0][0]}..) are malformed: {exc!r}"
        ) from None


def _grants_table(ids: pa.Array, seqs: np.ndarray, batches: Iterable[pa.Table]) -> pa.Table:
    """grants.parquet rows for the clearing grants (`ids`/`seqs` sorted by id) from `batches`
    (in that order, possibly with other seqs between them, which are skipped)."""
    parts = list(batches)
    table = pa.concat_tables(parts) if parts else fmt.GRANTS_SCHEMA.empty_table()
    if table.num_rows != len(seqs):  # candidates that clear nothing: one membership test for all
        table = table.filter(pc.is_in(table["seq"], value_set=pa.array(seqs, pa.int64())))
    got = table["seq"].to_numpy()
    n = min(len(got), len(seqs))
    bad = np.flatnonzero(got[:n] != seqs[:n])
    k = int(bad[0]) if len(bad) else (n if len(got) != len(seqs) else -1)
    if k >= 0:
        k = min(k, len(seqs) - 1)
        raise fmt.SnapshotError(f"terms missing for clearing grant {ids[k].as_py()} (ledger seq {seqs[k]})")
    if not table["grant_id"].equals(pa.chunked_array([ids], pa.string())):
        raise fmt.SnapshotError("terms of a clearing grant name another grant id (ledger and clearance disagree)")
    return table.combine_chunks()


def _float_shares(parties: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parties with each share (a decimal string, or a number stored before decimals) as the float64
    grants.parquet holds: exact for a share of at most 9 significant digits (records.Share)."""
    if all(isinstance(p.get("share"), (int, float)) for p in parties):
        return parties
    return [p | {"share": float(p["share"])} if isinstance(p.get("share"), str) else p for p in parties]


def _grant_columns(cols: dict[str, list]) -> pa.Table:
    """grants.parquet from column lists (valid_until as RFC 3339 text or datetimes)."""
    arrays = []
    for field in fmt.GRANTS_SCHEMA:
        values = cols[field.name]
        if field.name == "parties":
            values = [_float_shares(ps) if ps else ps for ps in values]
        if field.name == "valid_until" and any(isinstance(v, str) for v in values):
            arrays.append(pa.array(values, pa.string()).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=fmt.GRANTS_SCHEMA)


def _runs(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in a flat array of the runs of `rows` (row r = flat[offsets[r]:offsets[r+1]]),
    and the offsets of those runs laid end to end."""
    starts, counts = offsets[rows], offsets[rows + 1] - offsets[rows]
    new = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=new[1:])
    pos = np.repeat(starts - new[:-1], counts) + np.arange(int(new[-1]), dtype=np.int64)
    return pos, new


def _list(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), plain(values))


def _row_order(catalog: pa.Table) -> np.ndarray:
    """Catalogue rows by recording_id (no sort when already in order); duplicates refused."""
    ids = plain(catalog["recording_id"])
    n = len(ids)
    if n > 1 and not pc.all(pc.less(ids.slice(0, n - 1), ids.slice(1))).as_py():
        order = pc.sort_indices(ids).to_numpy()
        s = ids.take(pa.array(order))
        if not pc.all(pc.less(s.slice(0, n - 1), s.slice(1))).as_py():
            raise fmt.SnapshotError("the catalogue holds a recording_id twice")
        return order
    return np.arange(n, dtype=np.int64)


def _picker(rows: np.ndarray, n: int) -> Callable[[Any], pa.Array]:
    """`pick(column)` = the column's values at `rows`: a filter when they ascend (catalogue already
    in recording_id order), cheaper than a gather."""
    if len(rows) < 2 or (rows[1:] > rows[:-1]).all():
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        keep = pa.array(mask)
        return lambda col: plain(plain(col).filter(keep))
    take = pa.array(rows, pa.int64())
    return lambda col: plain(plain(col).take(take))


def _excluded_table(catalog: pa.Table, clearance: Clearance, rows: np.ndarray) -> tuple[pa.Table, bytes]:
    pick = _picker(rows, catalog.num_rows)
    pos, offs = _runs(clearance.grant_offsets, rows)
    t = pa.Table.from_arrays(
        [
            pick(catalog["recording_id"]),
            pick(catalog["audio_sha256"]),
            pick(clearance.reasons),
            pick(clearance.details),
            _list(offs, clearance.grant_flat.take(pa.array(pos, pa.int64()))),
            pa.nulls(len(rows), pa.string()),
        ],
        schema=fmt.EXCLUDED_SCHEMA,
    )
    leaves = fmt.excluded_leaves(t)
    return t.set_column(5, fmt.EXCLUDED_SCHEMA.field("digest"), hex_column(leaves)), leaves


def _items_table(
    catalog: pa.Table, clearance: Clearance, rows: np.ndarray, grants: pa.Table, refs: pa.Array
) -> tuple[pa.Table, bytes]:
    """items.parquet rows (each row's grant ids sorted) and their leaf digests."""
    pick = _picker(rows, catalog.num_rows)
    pos, offs = _runs(clearance.grant_offsets, rows)
    rank = pc.index_in(clearance.grant_flat.take(pa.array(pos, pa.int64())), value_set=grants["grant_id"])
    if rank.null_count:
        raise fmt.SnapshotError("a cleared item names a grant that is not among the clearing grants")
    rank = rank.to_numpy().astype(np.int64)  # grants are sorted by id: rank = row in grants
    if (np.diff(offs) > 1).any():  # sort each item's grants by id
        rank = rank[np.lexsort((rank, np.repeat(np.arange(len(rows)), np.diff(offs))))]
    at = pa.array(rank, pa.int64())
    stated = pick(catalog["licence"])  # the catalogue's own licence text, beside the grants'
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(offs))
    mismatch = licence_mismatch(stated, grants["licence"].take(at), owner)
    notes = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(mismatch, out=notes[1:])
    cols = [pick(catalog[f]) for f in fmt.ITEM_FIELDS] + [
        stated,
        _list(offs, grants["grant_id"].take(at)),
        _list(notes, pa.repeat(LICENCE_MISMATCH, int(notes[-1]))),
    ]
    t = pa.Table.from_arrays(cols + [pa.nulls(len(rows), pa.string())], schema=fmt.ITEMS_SCHEMA)
    leaves = fmt.item_leaves(t, refs.take(at))
    return t.set_column(t.num_columns - 1, fmt.ITEMS_SCHEMA.field("digest"), hex_column(leaves)), leaves


# Columns whose values repeat (worth a Parquet dictionary); the others (ids, paths, digests) are
# written plain, without statistics: trying a dictionary on them costs a second at a million rows.
_DICTIONARY = {
    fmt.ITEMS: ["artists", "description", "duration_s", "sample_rate", "channels"],
    fmt.EXCLUDED: ["reason", "detail"],
    fmt.GRANTS: ["licence", "purposes", "territories", "valid_until", "on_termination", "attribution", "compensation"],
}


def _write_table(table: pa.Table, path: Path) -> dict[str, Any]:
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=1,
        use_dictionary=_DICTIONARY[path.name],
        write_statistics=False,
    )
    return {"sha256": sha256_file(path), "rows": table.num_rows}


def _notes(items: pa.Table) -> dict[str, Any]:
    """The header's `counts.notes`, left out when no item has a note."""
    counts = fmt.note_counts(items)
    return {"notes": counts} if counts else {}


def _iso(t) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _commit(
    snapshots_dir: str | Path, build: Callable[[Path], dict[str, Any]], step: Callable[[str], None]
) -> tuple[Path, dict[str, Any]]:
    """`build(staging)` writes the files into a temp folder beside the destination and returns the
    header; the folder is then fsync'd and renamed to `<snapshots_dir>/<snapshot_id>/` in one step."""
    snapshots_dir = Path(snapshots_dir)
    staging = snapshots_dir / f".tmp-{uuid.uuid4().hex}"
    try:
        staging.mkdir(parents=True)
        with no_gc():
            header = build(staging)
        folder = publish_dir(staging, snapshots_dir / header["snapshot_id"])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    step("snapshot: committed")
    return folder, header


def _finish(
    staging: Path,
    *,
    root: str,
    files: dict[str, Any],
    catalog_info: dict[str, Any],
    policy: dict[str, Any],
    ledger_head: tuple[int, str],
    cleared_at,
    counts: dict[str, Any],
) -> dict[str, Any]:
    """The id and the header (written as snapshot.json)."""
    head_seq, head_hash = ledger_head
    header = {
        "schema": fmt.SCHEMA,
        "snapshot_id": fmt.snapshot_id(root, policy["digest"], head_hash),
        "merkle_root": root,
        "created_at": _iso(utcnow()),
        "cleared_at": _iso(cleared_at),
        "catalog": catalog_info,
        "policy": policy,
        "ledger": {"head_seq": head_seq, "head_hash": head_hash},
        "counts": counts,
        "files": dict(sorted(files.items())),
    }
    (staging / fmt.HEADER).write_bytes(orjson.dumps(header, option=orjson.OPT_INDENT_2) + b"\n")
    return header


def write_snapshot(
    snapshots_dir: str | Path,
    catalog_table: pa.Table,
    clearance: Clearance,
    *,
    catalog_info: dict[str, Any],
    ledger_head: tuple[int, str],
    terms: GrantTerms | None = None,
    payloads: Payloads | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write `<snapshots_dir>/<snapshot_id>/` and return (folder, header).

    The clearing grants' terms come from `terms` (already fetching; closed here) or else from
    `payloads(seqs)`: batches of `(seq, stored event payload)` (JSON text or dict) for the ledger
    seqs asked for, in that order. A rewrite of the same id replaces the folder."""
    if terms is None:
        if payloads is None:
            raise TypeError("write_snapshot needs terms or payloads")
        terms = GrantTerms(payloads, clearance.clearing_ids, clearance.clearing_seqs)
    step = progress or (lambda _: None)
    try:
        if len(clearance.cleared) != catalog_table.num_rows:
            raise fmt.SnapshotError(
                f"clearance has {len(clearance.cleared)} rows, the catalogue {catalog_table.num_rows}"
            )
        return _commit(
            snapshots_dir,
            lambda staging: _write(staging, catalog_table, clearance, catalog_info, ledger_head, terms, step),
            step,
        )
    finally:
        terms.close()


def _write(
    staging: Path,
    catalog: pa.Table,
    clearance: Clearance,
    catalog_info: dict[str, Any],
    ledger_head: tuple[int, str],
    terms: GrantTerms,
    step: Callable[[str], None],
) -> dict[str, Any]:
    order = _row_order(catalog)
    cleared = np.asarray(clearance.cleared, dtype=bool)[order]
    pos, neg = order[cleared], order[~cleared]
    # Parquet encoding and file hashing release the GIL: they run on a thread beside the next table.
    with ThreadPoolExecutor(1, thread_name_prefix="lab-snapshot-files") as pool:
        excluded, ex_leaves = _excluded_table(catalog, clearance, neg)
        files = {fmt.EXCLUDED: pool.submit(_write_table, excluded, staging / fmt.EXCLUDED)}
        del excluded
        step("snapshot: excluded entries")

        ids = plain(clearance.clearing_ids)
        by_id = pc.sort_indices(ids).to_numpy() if len(ids) else np.zeros(0, np.int64)
        grants = _grants_table(
            ids.take(pa.array(by_id, pa.int64())),
            np.asarray(clearance.clearing_seqs, dtype=np.int64)[by_id],
            terms.batches(),
        )
        files[fmt.GRANTS] = pool.submit(_write_table, grants, staging / fmt.GRANTS)
        refs = fmt.grant_refs(grants)
        step("snapshot: grant terms")

        items, it_leaves = _items_table(catalog, clearance, pos, grants, refs)
        files[fmt.ITEMS] = pool.submit(_write_table, items, staging / fmt.ITEMS)
        root = fmt.root_of(it_leaves, ex_leaves)
        step("snapshot: cleared items + Merkle root")
        written = {name: f.result() for name, f in files.items()}

    policy = clearance.policy.identity() | {"digest": clearance.policy.digest()}
    header = _finish(
        staging,
        root=root,
        files=written,
        catalog_info=catalog_info,
        policy=policy,
        ledger_head=ledger_head,
        cleared_at=clearance.at,
        counts={"items": len(order), "cleared": len(pos), "excluded": clearance.counts(), **_notes(items)},
    )
    step("snapshot: files + header")
    return header


def write_rows(
    snapshots_dir: str | Path,
    *,
    items: list[dict[str, Any]],
    grants: list[dict[str, Any]],
    excluded: list[dict[str, Any]] = (),
    catalog_info: dict[str, Any],
    policy: Policy,
    ledger_head: tuple[int, str],
    cleared_at: datetime,
) -> tuple[Path, dict[str, Any]]:
    """A snapshot from entries already decided (fixtures, benchmarks; `lab clear` uses
    `write_snapshot`): rows as in the Parquet files, without `digest` (computed here); a grant's
    `compensation` may be a dict. Same folder layout, digests and checks as any snapshot."""
    cols = {f: [g.get(f) for g in sorted(grants, key=lambda g: g["grant_id"])] for f in fmt.GRANTS_SCHEMA.names}
    cols["compensation"] = [c if isinstance(c, str) else canonical_json(c).decode() for c in cols["compensation"]]
    grant_t = _grant_columns(cols)

    def table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
        rows = sorted(rows, key=lambda r: r["recording_id"])
        defaults = {"extra": "{}", "notes": []} if schema is fmt.ITEMS_SCHEMA else {}
        return pa.Table.from_pylist([{**defaults, **r, "digest": ""} for r in rows], schema=schema)

    items_t, ex_t = table(items, fmt.ITEMS_SCHEMA), table(list(excluded), fmt.EXCLUDED_SCHEMA)
    at = pc.index_in(plain(items_t["grant_ids"]).flatten(), value_set=grant_t["grant_id"])
    if at.null_count:
        raise fmt.SnapshotError("an item names a grant that is not among `grants`")
    it_leaves = fmt.item_leaves(items_t, fmt.grant_refs(grant_t).take(at))
    ex_leaves = fmt.excluded_leaves(ex_t)
    items_t = items_t.set_column(items_t.num_columns - 1, fmt.ITEMS_SCHEMA.field("digest"), hex_column(it_leaves))
    ex_t = ex_t.set_column(ex_t.num_columns - 1, fmt.EXCLUDED_SCHEMA.field("digest"), hex_column(ex_leaves))
    reasons = dict(sorted(Counter(r["reason"] for r in excluded).items()))

    def build(staging: Path) -> dict[str, Any]:
        files = {
            name: _write_table(t, staging / name)
            for name, t in ((fmt.ITEMS, items_t), (fmt.EXCLUDED, ex_t), (fmt.GRANTS, grant_t))
        }
        return _finish(
            staging,
            root=fmt.root_of(it_leaves, ex_leaves),
            files=files,
            catalog_info=catalog_info,
            policy=policy.identity() | {"digest": policy.digest()},
            ledger_head=ledger_head,
            cleared_at=cleared_at,
            counts={"items": len(items) + len(excluded), "cleared": len(items), "excluded": reasons, **_notes(items_t)},
        )

    return _commit(snapshots_dir, build, lambda _: None)
