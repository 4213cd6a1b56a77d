"""`sources.parquet`: one row per recording a checkpoint saw (own and inherited), checked column-wise.

The arrow schema below is the file's contract (`source_row.schema.json` documents the same row
as JSON). Everything here is O(rows) column kernels — no Python per row — so a card over a
million sources validates in about a second: types, non-null, patterns, shares per right,
unique (recording_id, seen_by), finite seconds, totals against the card, validity against the
derivation, and the file's sha256 against the card.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lab.rights.records import PURPOSES, WORLDWIDE

from .arrow import combine_lists, plain, positions
from .schema import (
    ID_PATTERN,
    ISRC_PATTERN,
    ROW_SCHEMA_ID,
    SHA256_PATTERN,
    TERMINATION_ORDER,
    TERRITORY_PATTERN,
    DataCard,
    Validity,
    seconds_close,
)

ROLES = ("master_owner", "label", "publisher", "composer", "songwriter", "performer", "producer")
RIGHTS = ("master", "composition", "performance")
TERMINATIONS = tuple(TERMINATION_ORDER)
EXAMPLES = 5  # recording ids named per problem

HOLDER = pa.struct(
    [
        ("name", pa.string()),
        ("role", pa.string()),
        ("right", pa.string()),
        ("share", pa.float64()),
        ("party_id", pa.string()),
        ("grant_id", pa.string()),
    ]
)
STRINGS = pa.list_(pa.string())

# name, type, nullable, description (Parquet schema metadata, Croissant fields, docs)
COLUMNS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("recording_id", pa.string(), False, "catalogue id of the recording"),
    ("seen_by", pa.string(), False, "checkpoint whose run saw it: this checkpoint's id, or an ancestor's"),
    ("catalog", pa.string(), False, "catalogue name"),
    ("isrc", pa.string(), True, "ISRC, normalised (CCXXXYYNNNNN); null when the recording has none"),
    ("title", pa.string(), False, "title"),
    ("artists", STRINGS, False, "performing artists"),
    ("audio_sha256", pa.string(), False, "sha256 of the audio file as ingested"),
    (
        "rights_holders",
        pa.list_(HOLDER),
        False,
        "parties of the most recent clearing grant: name, role, right, share (percent, per right summing to 100), "
        "party_id (IPI/ISNI/DDEX, nullable), grant_id",
    ),
    ("licence", pa.string(), False, "SPDX expression; several grants → distinct licences joined by ' AND '"),
    (
        "metadata_licence",
        pa.string(),
        True,
        "the licence the catalogue's metadata states, as written (null: none); the grants' licence is what applies",
    ),
    ("grant_ids", STRINGS, False, "the clearing grants in the rights ledger"),
    ("purposes", STRINGS, False, "purposes every clearing grant allows (sorted)"),
    ("territories", STRINGS, False, "territories every clearing grant allows (ISO 3166-1 alpha-2; WW = anywhere)"),
    ("valid_until", pa.timestamp("us", tz="UTC"), True, "earliest end of the clearing grants; null = open"),
    ("on_termination", pa.string(), False, "strictest rule of the clearing grants: retain < retrain < retire"),
    ("seconds_seen", pa.float64(), False, "seconds of this audio the seen_by checkpoint's run saw"),
    ("credit", pa.string(), False, "attribution the grants require ('' when none)"),
    ("extra", pa.string(), False, "the catalogue's extra facts (not interpreted), canonical JSON text; '{}' if none"),
)
SOURCE_SCHEMA = pa.schema(
    [pa.field(n, t, metadata={"description": d}) for n, t, _, d in COLUMNS],
    metadata={"lab.schema": ROW_SCHEMA_ID},
)
REQUIRED = tuple(n for n, _, nullable, _ in COLUMNS if not nullable)
NON_EMPTY_LISTS = ("artists", "rights_holders", "grant_ids", "purposes", "territories")


# --------------------------------------------------------------------------- file


# Columns added since the first cards: a parent's rows carded before them get these values.
ADDED = {"metadata_licence": None, "extra": "{}"}


def conform(table: pa.Table) -> pa.Table:
    """The table with exactly SOURCE_SCHEMA's columns, in order, cast to its types."""
    for name, value in ADDED.items():
        if name not in table.schema.names:
            n = table.num_rows
            table = table.append_column(name, pa.nulls(n, pa.string()) if value is None else pa.repeat(value, n))
    return table.select([n for n, *_ in COLUMNS]).cast(SOURCE_SCHEMA)


def parquet_bytes(table: pa.Table) -> bytes:
    """The exact bytes of sources.parquet (zstd; deterministic for a given table and pyarrow)."""
    sink = pa.BufferOutputStream()
    pq.write_table(conform(table), sink, compression="zstd", write_statistics=False)
    return sink.getvalue().to_pybytes()


def read_parquet(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- derived


def derive_validity(table: pa.Table) -> Validity:
    """Intersect purposes and territories over rows ('WW' ∩ X = X), earliest expiry, strictest
    on_termination. No rows → nothing is allowed (empty lists): fail closed, not open."""
    n = table.num_rows
    if n == 0:
        return Validity(purposes=[], territories=[], earliest_expiry=None, on_termination=None)
    one = np.zeros(n, dtype=np.int64)
    purposes = set(combine_lists(one, table["purposes"], 1, how="intersect")[0].as_py())
    territories = combine_lists(one, table["territories"], 1, how="intersect", universal=WORLDWIDE)[0].as_py()
    ranks = positions(table["on_termination"], pa.array(TERMINATIONS))
    return Validity(
        purposes=[p for p in PURPOSES if p in purposes],
        territories=territories,
        earliest_expiry=pc.min(table["valid_until"]).as_py(),
        on_termination=TERMINATIONS[int(ranks.max())] if ranks.min() >= 0 else None,
    )


def summary(table: pa.Table) -> dict[str, Any]:
    """rows, total_seconds and the sorted distinct seen_by of a table of rows."""
    return {
        "rows": table.num_rows,
        "total_seconds": float(pc.sum(table["seconds_seen"]).as_py() or 0.0),
        "seen_by": sorted(pc.unique(table["seen_by"]).to_pylist()),
    }


# --------------------------------------------------------------------------- checks


def _ids(table: pa.Table, mask: Any) -> str:
    hit = table["recording_id"].filter(plain(mask).fill_null(True))
    shown = ", ".join(hit.slice(0, EXAMPLES).to_pylist())
    return f"{len(hit)} row(s), e.g. {shown}" if len(hit) else "0 rows"


def _flat_owner(col: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    lists = plain(col)
    return plain(pc.list_flatten(lists)), plain(pc.list_parent_indices(lists)).to_numpy().astype(np.int64)


def _row_mask(n: int, owner: np.ndarray, bad: pa.Array) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[owner[plain(bad).fill_null(True).to_numpy(zero_copy_only=False)]] = True
    return mask


def _schema_errors(table: pa.Table) -> list[str]:
    have = {f.name: f.type for f in table.schema}
    errors = [f"sources: missing column {n}" for n, *_ in COLUMNS if n not in have]
    errors += [f"sources: unexpected column {n}" for n in have if n not in SOURCE_SCHEMA.names]
    errors += [
        f"sources: column {n} is {have[n]}, expected {t}" for n, t, *_ in COLUMNS if n in have and not have[n].equals(t)
    ]
    return errors


def _value_errors(table: pa.Table) -> list[str]:
    n = table.num_rows
    errors: list[str] = []

    def check(what: str, bad_rows: Any) -> None:
        bad_rows = pa.array(bad_rows) if isinstance(bad_rows, np.ndarray) else bad_rows
        if pc.any(plain(bad_rows).fill_null(True)).as_py():
            errors.append(f"sources: {what}: {_ids(table, bad_rows)}")

    for name in REQUIRED:
        if table[name].null_count:
            errors.append(f"sources: {name} is null in {table[name].null_count} row(s)")
    for name in NON_EMPTY_LISTS:
        check(f"{name} is empty", pc.less(pc.list_value_length(table[name]), 1))
        values, owner = _flat_owner(table[name])
        if values.null_count:
            check(f"{name} holds a null", _row_mask(n, owner, pc.is_null(values)))

    def pattern(name: str, arr: Any, regex: str, owner: np.ndarray | None = None) -> None:
        ok = pc.match_substring_regex(arr, regex)
        bad = pc.invert(plain(ok).fill_null(True))  # nulls are reported above
        check(f"{name} does not match {regex}", bad if owner is None else _row_mask(n, owner, bad))

    for name in ("recording_id", "seen_by"):
        pattern(name, table[name], ID_PATTERN)
    pattern("audio_sha256", table["audio_sha256"], SHA256_PATTERN)
    pattern("isrc", table["isrc"], ISRC_PATTERN)
    pattern("extra", table["extra"], r"^\{.*\}$")
    for name in ("catalog", "title", "licence"):
        check(f"{name} is empty", pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(table[name])), 0))
    values, owner = _flat_owner(table["artists"])
    check("an artist is empty", _row_mask(n, owner, pc.equal(pc.utf8_length(values), 0)))
    values, owner = _flat_owner(table["grant_ids"])
    pattern("grant_ids", values, ID_PATTERN, owner)
    values, owner = _flat_owner(table["territories"])
    pattern("territories", values, TERRITORY_PATTERN, owner)
    values, owner = _flat_owner(table["purposes"])
    check("unknown purpose", _row_mask(n, owner, pc.invert(pc.is_in(values, pa.array(PURPOSES)))))
    check("unknown on_termination", pc.invert(pc.is_in(table["on_termination"], pa.array(TERMINATIONS))))
    seconds = table["seconds_seen"]
    check("seconds_seen is negative or not finite", pc.or_(pc.invert(pc.is_finite(seconds)), pc.less(seconds, 0.0)))
    _holder_errors(table, check)
    dupes = (
        table.select(["recording_id", "seen_by"])
        .group_by(["recording_id", "seen_by"], use_threads=False)
        .aggregate([([], "count_all")])
        .filter(pc.greater(pc.field("count_all"), 1))
    )
    if dupes.num_rows:
        shown = ", ".join(
            f"{r}@{s}"
            for r, s in zip(
                dupes["recording_id"].slice(0, EXAMPLES).to_pylist(), dupes["seen_by"].slice(0, EXAMPLES).to_pylist()
            )
        )
        errors.append(f"sources: duplicate (recording_id, seen_by): {dupes.num_rows}, e.g. {shown}")
    return errors


def _holder_errors(table: pa.Table, check) -> None:
    """Rights holders: non-null fields, known roles and rights, shares, cited grants, sums per right."""
    n = table.num_rows
    holders, owner = _flat_owner(table["rights_holders"])
    field = {name: plain(pc.struct_field(holders, name)) for name in HOLDER.names}
    for name in ("name", "role", "right", "share", "grant_id"):
        if field[name].null_count:
            check(f"a rights holder's {name} is null", _row_mask(n, owner, pc.is_null(field[name])))
    check("a rights holder's name is empty", _row_mask(n, owner, pc.equal(pc.utf8_length(field["name"]), 0)))
    check("unknown rights holder role", _row_mask(n, owner, pc.invert(pc.is_in(field["role"], pa.array(ROLES)))))
    share = field["share"]
    check(
        "a share is outside (0, 100]", _row_mask(n, owner, pc.or_(pc.less_equal(share, 0.0), pc.greater(share, 100.0)))
    )
    # holders cite one of the row's grants: usually its first; the others by (row, grant) integer keys
    gids, gowner = _flat_owner(table["grant_ids"])
    cited = field["grant_id"]
    if len(gids):
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(np.bincount(gowner, minlength=n)[:-1], out=starts[1:])
        first = gids.take(pa.array(np.minimum(starts, len(gids) - 1)[owner]))
        other = ~plain(pc.equal(cited, first)).fill_null(False).to_numpy(zero_copy_only=False)
    else:
        other = np.ones(len(cited), dtype=bool)
    if other.any():
        rows, wanted = owner[other], cited.filter(pa.array(other))
        involved = np.zeros(n, dtype=bool)
        involved[rows] = True
        mine = involved[gowner]
        gids, gowner = gids.filter(pa.array(mine)), gowner[mine]
        vocab = pc.unique(pa.concat_arrays([gids, wanted]).drop_null())
        width = max(len(vocab), 1)
        ok = pc.is_in(
            pa.array(rows * width + positions(wanted, vocab)),
            value_set=pa.array(gowner * width + positions(gids, vocab)),
        )
        check("a rights holder cites a grant not in grant_ids", _row_mask(n, rows, pc.invert(ok)))
    # shares per (row, right) sum to 100
    right = positions(field["right"], pa.array(RIGHTS))
    check("unknown right", _row_mask(n, owner, pa.array(right < 0)))
    ok = right >= 0
    key = owner[ok] * len(RIGHTS) + right[ok]
    values = share.fill_null(0.0).to_numpy(zero_copy_only=False)[ok]
    totals = np.bincount(key, weights=values, minlength=n * len(RIGHTS))
    present = np.bincount(key, minlength=n * len(RIGHTS)) > 0
    off = present & (np.abs(totals - 100.0) > 1e-6)
    check("shares per right must sum to 100", pa.array(off.reshape(n, len(RIGHTS)).any(axis=1)))


def sources_errors(table: pa.Table, card: DataCard, data: bytes | None = None) -> list[str]:
    """Every problem with the rows, given the card that cites them (and the file's bytes, for sha256)."""
    errors = []
    ref = card.sources
    if data is not None:
        sha = sha256_bytes(data)
        if sha != ref.sha256:
            errors.append(f"sources: {ref.file} has sha256 {sha}, the card says {ref.sha256}")
        if len(data) != ref.bytes:
            errors.append(f"sources: {ref.file} has {len(data)} bytes, the card says {ref.bytes}")
    shape = _schema_errors(table)
    if shape:
        return errors + shape
    errors += _value_errors(table)
    me = card.identity.checkpoint_id
    own_mask = pc.equal(table["seen_by"], me)
    own, inherited = table.filter(own_mask), table.filter(pc.invert(own_mask))
    if table.num_rows != ref.rows or own.num_rows != ref.own_rows or inherited.num_rows != ref.inherited_rows:
        errors.append(
            f"sources: {table.num_rows} rows ({own.num_rows} seen_by {me}, {inherited.num_rows} inherited),"
            f" the card says {ref.rows} ({ref.own_rows} own, {ref.inherited_rows} inherited)"
        )
    wrong_catalog = pc.not_equal(own["catalog"], card.snapshot.catalog)
    if pc.any(wrong_catalog).as_py():
        errors.append(
            f"sources: own rows from another catalogue than {card.snapshot.catalog}: {_ids(own, wrong_catalog)}"
        )
    got = summary(own)["total_seconds"]
    if not seconds_close(got, card.exposure.total_seconds):
        errors.append(
            f"sources: own rows' seconds_seen add to {got}, exposure.total_seconds is {card.exposure.total_seconds}"
        )
    total = summary(table)["total_seconds"]
    if not seconds_close(total, ref.total_seconds):
        errors.append(f"sources: seconds_seen add to {total}, sources.total_seconds is {ref.total_seconds}")
    inh = card.lineage.inherited_sources
    if inherited.num_rows or inh is not None:
        got = summary(inherited)
        want = inh.model_dump() if inh else {"rows": 0, "total_seconds": 0.0, "seen_by": []}
        if got["seen_by"] != want["seen_by"] or not seconds_close(got["total_seconds"], want["total_seconds"]):
            errors.append(f"sources: inherited rows {got} do not match lineage.inherited_sources {want}")
    derived = derive_validity(table)
    if derived != card.validity:
        errors.append(
            f"validity does not match the sources: card says {card.validity.model_dump(mode='json')}, "
            f"sources give {derived.model_dump(mode='json')}"
        )
    return errors
