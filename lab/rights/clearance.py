"""Clearance: catalogue × ledger × policy at a moment → per-item decision with one reason.

Columnar on purpose (pyarrow joins + numpy): a lab catalogue reaches millions of
recordings, and per-row Python with pydantic would take minutes where this takes seconds.
Fail closed throughout: an item is cleared only if some grant positively covers it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..util.timestamps import to_ts
from .licences import LicenceClass, explain
from .policy import Policy
from .records import WORLDWIDE

# Exclusion vocabulary, in reporting priority: when several grants cover an item and none
# clears it, the first reason here names the exclusion (the others go into `detail`).
INGEST_REASONS = ("path_outside_catalogue", "missing_audio", "decode_error", "duplicate_audio")
GRANT_REASONS = (
    "opted_out",
    "revoked",
    "expired",
    "not_yet_valid",
    "licence_unknown",
    "licence_not_accepted",
    "purpose_not_granted",
    "territory_not_granted",
)
REASONS = INGEST_REASONS + ("no_grant",) + GRANT_REASONS + ("superseded",)
OK = 0  # grant verdict code; reason codes are 1 + index in GRANT_REASONS
_CODE = {r: i + 1 for i, r in enumerate(GRANT_REASONS)}

# The ledger columns clearance reads (`Ledger.frame(columns=CLEARANCE_COLUMNS)` reads no others).
CLEARANCE_COLUMNS = (
    "seq",
    "kind",
    "grant_id",
    "supersedes",
    "status",
    "subject_recording_id",
    "subject_isrc",
    "subject_sha256",
    "subject_catalog",
    "purposes",
    "territories",
    "licence",
    "valid_from",
    "valid_until",
    "effective_at",
    "recorded_at",
)
SUBJECT_KEYS = {
    "recording_id": "subject_recording_id",
    "isrc": "subject_isrc",
    "audio_sha256": "subject_sha256",
    "catalog": "subject_catalog",
}


class Clearance:
    """Decision per catalogue row, held column-wise (a million rows of Python objects would cost
    seconds and a gigabyte); the list views `reason`, `detail`, `grant_ids` are built on first use.

    Columns: `cleared` (bool per row); `reasons` (string, null where cleared); `details` (string);
    the grant ids of row i are `grant_flat[grant_offsets[i]:grant_offsets[i + 1]]` (the clearing
    grants for a cleared row, every covering grant otherwise, in ledger order); the effective
    version of every clearing grant is `clearing_ids[k]` @ ledger seq `clearing_seqs[k]`.
    """

    def __init__(
        self,
        *,
        at: datetime,
        policy: Policy,
        cleared: np.ndarray,
        reasons: pa.Array,
        details: pa.Array,
        grant_offsets: np.ndarray,
        grant_flat: pa.Array,
        clearing_ids: pa.Array,
        clearing_seqs: np.ndarray,
    ):
        self.at = at
        self.policy = policy
        self.cleared = cleared
        self.reasons = reasons
        self.details = details
        self.grant_offsets = grant_offsets
        self.grant_flat = grant_flat
        self.clearing_ids = clearing_ids
        self.clearing_seqs = clearing_seqs

    def __len__(self) -> int:
        return len(self.cleared)

    @cached_property
    def reason(self) -> list[str | None]:
        return self.reasons.to_pylist()

    @cached_property
    def detail(self) -> list[str]:
        return self.details.to_pylist()

    @cached_property
    def grant_ids(self) -> list[list[str]]:
        flat = self.grant_flat.to_pylist()
        off = self.grant_offsets.tolist()
        return [flat[a:b] for a, b in zip(off, off[1:])]

    @cached_property
    def grant_seq(self) -> dict[str, int]:
        """grant_id → ledger seq of the effective version, for every clearing grant."""
        return dict(zip(self.clearing_ids.to_pylist(), self.clearing_seqs.tolist()))

    def counts(self) -> dict[str, int]:
        vc = pc.value_counts(self.reasons.drop_null()) if len(self.reasons) else []
        return dict(sorted((d["values"].as_py(), d["counts"].as_py()) for d in vc))


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic GC while building millions of small objects that all stay alive: it would
    rescan them over and over (measured at 1M recordings: 40% of clearance + snapshot time).
    Nothing built under it forms cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _licence_verdicts(licences: list[str], policy: Policy) -> dict[str, tuple[int, str]]:
    """Verdict code and the failing term, per distinct licence expression (a handful per ledger)."""
    accepted = {LicenceClass[c] for c in policy.accept_licence_classes}
    out = {}
    for expr in licences:
        if not expr:
            out[expr] = (_CODE["licence_unknown"], "no licence on the grant")
            continue
        why = explain(expr, policy.licence_classes)
        if why.klass not in accepted and why.klass is not LicenceClass.unknown:
            out[expr] = (
                _CODE["licence_not_accepted"],
                f"licence {why.expression}: {_symbols(why)}, not accepted "
                f"under policy '{policy.name}' (accepts {', '.join(policy.accept_licence_classes)})",
            )
        elif why.klass is LicenceClass.unknown:
            out[expr] = (_CODE["licence_unknown"], f"licence {why.expression}: " + (why.error or _symbols(why)))
        else:
            out[expr] = (OK, "")
    return out


def _symbols(why) -> str:
    """'CC-BY-NC-4.0 is non_commercial (Creative Commons rule: NonCommercial (-NC))' for the deciding symbols."""
    return "; ".join(f"{s.symbol} is {s.licence_class} ({s.rule})" for s in why.deciding())


def _listed(codes: list[str], most: int = 8) -> str:
    return ", ".join(codes[:most]) + (f" and {len(codes) - most} more" if len(codes) > most else "")


def _text_unique(values: pa.Array, fn) -> pa.Array:
    """fn(value) once per distinct value (nulls included), as a string array aligned with `values`."""
    enc = pc.dictionary_encode(values)
    dictionary = enc.dictionary.to_pylist()
    table = pa.array([fn(v) for v in dictionary] + [fn(None)], pa.string())
    return table.take(enc.indices.fill_null(len(dictionary)))


def _array(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _np(values, dtype=None) -> np.ndarray:
    """A pyarrow array (no nulls where it matters) as numpy; booleans with nulls read as False."""
    values = _array(values)
    if pa.types.is_boolean(values.type):
        return np.asarray(values.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=dtype)


def _map_unique(values: pa.ChunkedArray | pa.Array, fn) -> np.ndarray:
    """Apply fn once per distinct value (grants share a handful of purpose/territory/licence strings)."""
    enc = pc.dictionary_encode(_array(values))
    dictionary = enc.dictionary.to_pylist()
    table = np.array([fn(v) for v in dictionary] + [fn(None)], dtype=np.int64)
    idx = enc.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False)
    return table[idx]


def _latest_per_code(code: np.ndarray) -> np.ndarray:
    """Positions (ascending) of the last occurrence of every distinct value of `code`."""
    if len(code) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(code, kind="stable")
    grouped = code[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = grouped[1:] != grouped[:-1]
    return np.sort(order[last])


def _in_seq_order(frame: pa.Table) -> pa.Table:
    seq = _np(frame["seq"], np.int64)
    if len(seq) > 1 and not (seq[1:] > seq[:-1]).all():
        frame = frame.take(pa.array(np.argsort(seq, kind="stable"), pa.int64()))
    return frame


def effective_grants(frame: pa.Table, at: datetime, policy: Policy) -> pa.Table:
    """Latest version of every grant known at `at`, with a verdict code under `policy`.

    Grant ids are dictionary-encoded once; revocations, expiries and supersessions become
    boolean tables over those codes, so no string set is hashed twice.
    """
    t = to_ts(at)
    known = frame.select(list(CLEARANCE_COLUMNS))
    if known.num_rows and pc.max(known["recorded_at"]).as_py() > t:
        known = known.filter(pc.less_equal(known["recorded_at"], t))
    known = _in_seq_order(known)
    kind = _array(known["kind"])
    gid_enc = pc.dictionary_encode(_array(known["grant_id"]))
    gids = gid_enc.dictionary
    gcode = _np(gid_enc.indices, np.int64)
    n_ids = len(gids)

    is_version = _np(pc.is_in(kind, pa.array(["grant", "amend"])))
    ended = _np(pc.less_equal(known["effective_at"], t))
    revoked = np.zeros(n_ids, dtype=bool)
    is_revoke = _np(pc.equal(kind, "revoke")) & ended
    revoked[gcode[is_revoke]] = True
    revoked_seq = np.zeros(n_ids, dtype=np.int64)  # seq of the revocation (0: none in force)
    revoked_seq[gcode[is_revoke]] = _np(known["seq"], np.int64)[is_revoke]
    # Row of the revocation / expire event in force per grant id (-1: none), for the verdict's text.
    revoke_row = np.full(n_ids, -1, dtype=np.int64)
    revoke_row[gcode[is_revoke]] = np.flatnonzero(is_revoke)
    expired = np.zeros(n_ids, dtype=bool)
    is_expire = _np(pc.equal(kind, "expire")) & ended
    expired[gcode[is_expire]] = True
    expire_row = np.full(n_ids, -1, dtype=np.int64)
    expire_row[gcode[is_expire]] = np.flatnonzero(is_expire)
    # Grant ids another grant replaces (an amend under a new id names the old one in `supersedes`).
    replaces = _np(pc.and_(pc.equal(kind, "amend"), pc.not_equal(known["supersedes"], known["grant_id"])))
    superseded = np.zeros(n_ids, dtype=bool)
    if replaces.any():
        old = pc.index_in(_array(known["supersedes"]).filter(pa.array(replaces)), value_set=gids).drop_null()
        superseded[_np(old, np.int64)] = True

    vpos = np.flatnonzero(is_version)
    latest = vpos[_latest_per_code(gcode[vpos])]
    lcode = gcode[latest]
    at_latest = pa.array(latest, pa.int64())

    def col(name: str) -> pa.Array:
        return _array(known[name]).take(at_latest)

    code = np.zeros(len(latest), dtype=np.int64)

    def mark(mask: np.ndarray, reason: str) -> None:
        np.copyto(code, _CODE[reason], where=(code == OK) & mask)

    # Later checks only apply where no earlier one fired: order = reporting priority.
    mark(revoked[lcode], "revoked")
    mark(expired[lcode] | _np(pc.less_equal(col("valid_until"), t)), "expired")
    mark(_np(pc.greater(col("valid_from"), t).fill_null(True)), "not_yet_valid")
    licence = col("licence").fill_null("")
    lic = _licence_verdicts(pc.unique(licence).to_pylist(), policy)
    lic_code = _map_unique(licence, lambda s: lic.get(s or "", (_CODE["licence_unknown"], ""))[0])
    np.copyto(code, lic_code, where=(code == OK) & (lic_code != OK))
    need = set(policy.purposes)
    mark(
        _map_unique(col("purposes"), lambda s: int(not s or not need <= set(s.split()))).astype(bool),
        "purpose_not_granted",
    )
    terr = policy.territory
    mark(
        _map_unique(col("territories"), lambda s: int(not s or not ({terr, WORLDWIDE} & set(s.split())))).astype(bool),
        "territory_not_granted",
    )

    # An opt-out is a standing "no": it outranks every grant for the same subject, unless it
    # was itself revoked, superseded, or is outside its own window.
    opted_out = _np(pc.equal(col("status"), "opted_out"))
    window_ok = np.isin(
        code,
        [
            OK,
            _CODE["purpose_not_granted"],
            _CODE["territory_not_granted"],
            _CODE["licence_unknown"],
            _CODE["licence_not_accepted"],
        ],
    )
    code = np.where(opted_out, np.where(opted_out & window_ok, _CODE["opted_out"], -1), code)
    # Superseded versions drop out of the picture entirely.
    code = np.where(superseded[lcode], -1, code)

    keep = code >= 0
    rows = pa.array(latest[keep], pa.int64())
    out = known.select(["seq", "grant_id", "status", *SUBJECT_KEYS.values()]).take(rows)
    out = out.append_column("code", pa.array(code[keep]))
    out = out.append_column("revoked_seq", pa.array(revoked_seq[lcode][keep]))
    why = _why(known, latest[keep], code[keep], revoke_row[lcode][keep], expire_row[lcode][keep], t, policy, lic)
    out = out.append_column("verdict", why)
    return out.append_column("g", pa.array(np.arange(out.num_rows, dtype=np.int64)))


def _why(
    known: pa.Table,
    rows: np.ndarray,
    code: np.ndarray,
    revoke_row: np.ndarray,
    expire_row: np.ndarray,
    t: str,
    policy: Policy,
    lic: dict[str, tuple[int, str]],
) -> pa.Array:
    """Per effective grant, 'reason (the failing term)': built column-wise for the failing grants only,
    each distinct licence / purposes / territories string formatted once."""
    pool: list[pa.Array] = [pa.array(list(_VERDICTS), pa.string())]
    pick = code.copy()
    base = len(_VERDICTS)

    def col(name: str, idx: np.ndarray) -> pa.Array:
        return _array(known[name]).take(pa.array(idx, pa.int64()))

    def event(prefix: str, at_rows: np.ndarray) -> pa.Array:
        seq = pc.cast(col("seq", at_rows), pa.string())
        return pc.binary_join_element_wise(prefix, seq, ", effective ", col("effective_at", at_rows), "")

    need = set(policy.purposes)
    terr = policy.territory
    for reason in (
        "revoked",
        "expired",
        "not_yet_valid",
        "licence_unknown",
        "licence_not_accepted",
        "purpose_not_granted",
        "territory_not_granted",
    ):
        idx = np.flatnonzero(code == _CODE[reason])
        if len(idx) == 0:
            continue
        at = rows[idx]
        if reason == "revoked":
            text = event("revoked by ledger seq ", revoke_row[idx])
        elif reason == "expired":
            until = col("valid_until", at)
            by_date = pc.less_equal(until, t).fill_null(False)
            ended = pc.binary_join_element_wise("valid_until ", until.fill_null(""), " has passed", "")
            text = (
                ended
                if len(np.flatnonzero(expire_row[idx] < 0)) == len(idx)
                else pc.if_else(by_date, ended, event("expired by ledger seq ", np.maximum(expire_row[idx], 0)))
            )
        elif reason == "not_yet_valid":
            text = pc.binary_join_element_wise(
                "valid from ", col("valid_from", at).fill_null("(none)"), ", cleared at " + t, ""
            )
        elif reason.startswith("licence"):
            text = _text_unique(col("licence", at).fill_null(""), lambda s: lic.get(s or "", (0, "no licence"))[1])
        elif reason == "purpose_not_granted":
            text = _text_unique(
                col("purposes", at),
                lambda s: (
                    f"purposes missing: {', '.join(sorted(need - set((s or '').split())))}; "
                    f"granted: {', '.join((s or '').split()) or 'none'}"
                ),
            )
        else:
            text = _text_unique(
                col("territories", at),
                lambda s: f"territory {terr} asked; granted: {_listed((s or '').split()) or 'none'}",
            )
        pool.append(pc.binary_join_element_wise(f"{reason} (", text, ")", "").cast(pa.string()))
        pick[idx] = base + np.arange(len(idx))
        base += len(idx)
    return pa.concat_arrays(pool).take(pa.array(np.maximum(pick, 0), pa.int64()))


def _join_codes(
    item_codes: np.ndarray, item_rows: np.ndarray, grant_codes: np.ndarray, grant_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inner equi-join of (item row, code) with (grant row, code) on integer codes: all pairs."""
    order = np.argsort(grant_codes, kind="stable")
    sorted_codes = grant_codes[order]
    lo = np.searchsorted(sorted_codes, item_codes, "left")
    hi = np.searchsorted(sorted_codes, item_codes, "right")
    count = hi - lo
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    items = np.repeat(item_rows, count)
    first = np.repeat(lo - (np.cumsum(count) - count), count)  # start of each run, minus its offset
    return items, grant_rows[order[first + np.arange(total)]]


def _pairs(items: pa.Table, grants: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(item row, grant row) for every grant whose subject names this item.

    An opt-in grant matches when EVERY identifier it names equals the item's (a recording id on
    its own, which only a ledger older than that rule can hold, matches nothing: ambiguous across
    catalogues). An opt-out or a revoked grant matches every item that carries ANY identifier it
    names, in every catalogue: the recording id in its catalogue, the ISRC, the audio sha256 (the
    catalogue itself when it names nothing else). A revocation outranks the other grants of an item
    it matches that were recorded before it: consent given again is a grant recorded after it.
    """
    named = {key: _np(pc.is_valid(grants[gcol])) for key, gcol in SUBJECT_KEYS.items()}
    code = _np(grants["code"], np.int64) if grants.num_rows else np.zeros(0, np.int64)
    any_match = (code == _CODE["opted_out"]) | (code == _CODE["revoked"])
    bare = named["recording_id"] & ~(named["catalog"] | named["isrc"] | named["audio_sha256"])
    item_idx, grant_idx = [], []
    undriven = ~any_match & ~bare
    for key in SUBJECT_KEYS:  # every named identifier must match: the first drives the join (one pair each)
        driven = named[key] & undriven
        undriven &= ~driven
        if driven.any():
            i, g = _join_on(items, grants, np.flatnonzero(driven), key, [k for k in SUBJECT_KEYS if k != key], named)
            item_idx.append(i)
            grant_idx.append(g)
    item_level = named["recording_id"] | named["isrc"] | named["audio_sha256"]
    n_unique = len(item_idx)
    for key, rows in (
        ("recording_id", any_match & named["recording_id"]),
        ("isrc", any_match & named["isrc"]),
        ("audio_sha256", any_match & named["audio_sha256"]),
        ("catalog", any_match & ~item_level),
    ):
        if rows.any():  # any named identifier: one join per identifier (a recording id within its catalogue)
            checks = ["catalog"] if key == "recording_id" else []
            i, g = _join_on(items, grants, np.flatnonzero(rows), key, checks, named)
            item_idx.append(i)
            grant_idx.append(g)
    if not item_idx:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(item_idx) > n_unique:  # one pair per (item, any-match grant) though several identifiers matched
        width = max(grants.num_rows, 1)
        key = np.unique(np.concatenate(item_idx[n_unique:]) * width + np.concatenate(grant_idx[n_unique:]))
        item_idx, grant_idx = item_idx[:n_unique] + [key // width], grant_idx[:n_unique] + [key % width]
    i, g = np.concatenate(item_idx), np.concatenate(grant_idx)
    if any_match.any() and "revoked_seq" in grants.column_names:
        i, g = _after_revocations(i, g, code, _np(grants["revoked_seq"], np.int64), _np(grants["seq"], np.int64))
    return i, g


def _join_on(
    items: pa.Table, grants: pa.Table, g_rows: np.ndarray, key: str, checks: list[str], named: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of `g_rows` with the items whose `key` equals theirs, kept where every identifier of
    `checks` the grant names equals the item's too (a null on the item never matches). The join
    hashes the grants' distinct values once and probes them with the items' (integer codes after)."""
    enc = pc.dictionary_encode(_array(grants[SUBJECT_KEYS[key]]).take(pa.array(g_rows, pa.int64())))
    hit = pc.index_in(_array(items[key]), value_set=enc.dictionary)
    i_rows = np.flatnonzero(_np(pc.is_valid(hit)))
    if len(i_rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, g = _join_codes(_np(hit.drop_null(), np.int64), i_rows, _np(enc.indices, np.int64), g_rows)
    ok = np.ones(len(i), dtype=bool)
    for other in checks:
        check = np.flatnonzero(named[other][g])
        if len(check) == 0:
            continue
        want = _array(grants[SUBJECT_KEYS[other]]).take(pa.array(g[check], pa.int64()))
        have = _array(items[other]).take(pa.array(i[check], pa.int64()))
        ok[check] &= _np(pc.equal(have, want))
    return i[ok], g[ok]


def _after_revocations(
    i: np.ndarray, g: np.ndarray, code: np.ndarray, revoked_seq: np.ndarray, seq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Drop the pairs of grants recorded before the latest revocation that matches the same item
    (opt-outs stay: they outrank everything anyway)."""
    rev = code[g] == _CODE["revoked"]
    if not rev.any():
        return i, g
    latest = np.zeros(int(i.max()) + 1, dtype=np.int64)
    np.maximum.at(latest, i[rev], revoked_seq[g[rev]])
    keep = rev | (code[g] == _CODE["opted_out"]) | (seq[g] > latest[i])
    return i[keep], g[keep]


NO_GRANT_DETAIL = "no grant in the ledger names this recording, its ISRC, its audio or its catalogue"
_VERDICTS = ("ok",) + GRANT_REASONS  # by grant verdict code
_NO_GRANT = len(_VERDICTS)  # item code after the grant codes


def clear(
    catalog: pa.Table, frame: pa.Table, policy: Policy, at: datetime | None = None, *, grants: pa.Table | None = None
) -> Clearance:
    """Decide every catalogue row. `frame` is `Ledger.frame()` (one row per ledger event; only
    `CLEARANCE_COLUMNS` are read). `grants`: `effective_grants(frame, at, policy)` when the
    caller already has it (same frame, moment and policy)."""
    at = at or policy.moment()
    with no_gc():
        return _clear(catalog, frame, policy, at, grants)


def _list_join(values: pa.Array, counts: np.ndarray, sep: str) -> pa.Array:
    """Join consecutive runs of `values` (run lengths `counts`) into one string each."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), values), sep)


def _clear(catalog: pa.Table, frame: pa.Table, policy: Policy, at: datetime, grants: pa.Table | None) -> Clearance:
    n = catalog.num_rows
    if grants is None:
        grants = effective_grants(frame, at, policy)
    item_idx, grant_idx = _pairs(catalog, grants)
    # Pairs grouped by item; within an item, grants in ledger order.
    order = np.lexsort((grant_idx, item_idx))
    item_idx, grant_idx = item_idx[order], grant_idx[order]

    gcode = _np(grants["code"], np.int64)
    pair_code = gcode[grant_idx]
    is_opt = pair_code == _CODE["opted_out"]
    # Best verdict per item: OK (0) wins unless an active opt-out covers the item.
    big = np.iinfo(np.int64).max
    best = np.full(n, big, dtype=np.int64)
    if len(item_idx):
        starts = np.flatnonzero(np.r_[True, item_idx[1:] != item_idx[:-1]])
        best[item_idx[starts]] = np.minimum.reduceat(np.where(is_opt, big, pair_code), starts)
    opted = np.zeros(n, dtype=bool)
    opted[item_idx[is_opt]] = True
    covered = np.bincount(item_idx, minlength=n) > 0
    # A subject table (consent checks of sources already trained on) has no ingest columns: every row is a
    # recording that was ingested fine once; only consent is in question.
    status_ok = _np(pc.equal(catalog["status"], "ok")) if "status" in catalog.column_names else np.ones(n, bool)
    cleared = (best == OK) & ~opted & status_ok

    # Grant ids per item: the clearing ones for cleared items, all covering ones otherwise.
    keep = ~cleared[item_idx] | (pair_code == OK)
    k_item, k_grant = item_idx[keep], grant_idx[keep]
    counts = np.bincount(k_item, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    gid_col = _array(grants["grant_id"]) if grants.num_rows else pa.array([], pa.string())
    pair_gids = gid_col.take(pa.array(k_grant, pa.int64()))
    clears = np.zeros(grants.num_rows, dtype=bool)
    clears[k_grant[cleared[k_item]]] = True
    clearing = np.flatnonzero(clears)  # == np.unique, without hashing a pair per cleared item
    clearing_ids = gid_col.take(pa.array(clearing, pa.int64()))
    clearing_seqs = _np(grants["seq"], np.int64)[clearing] if len(clearing) else np.zeros(0, np.int64)

    # One reason per excluded item, in priority order: ingest reject, no grant, opt-out, best grant verdict.
    code = np.where(covered, np.where(opted, _CODE["opted_out"], best), _NO_GRANT)
    code = np.where(cleared, 0, code)
    names = [None, *GRANT_REASONS, "no_grant"]
    # Details come from a pool of strings, picked per row: "" | no-grant text | per-row texts.
    pool: list[pa.Array] = [pa.array(["", NO_GRANT_DETAIL])]
    pick = np.zeros(n, dtype=np.int64)
    pick[status_ok & ~covered] = 1
    base = 2

    # "G-1: expired; G-2: territory_not_granted" for items excluded on their grants' verdicts.
    by_grants = status_ok & ~cleared & covered & ~opted
    rows = np.flatnonzero(by_grants)
    if len(rows):
        in_rows = by_grants[k_item]
        verdict = _array(grants["verdict"]).take(pa.array(k_grant[in_rows], pa.int64()))
        text = pc.binary_join_element_wise(pair_gids.filter(pa.array(in_rows)), verdict, ": ")
        pool.append(_list_join(text, counts[rows], "; "))
        pick[rows] = base + np.arange(len(rows))
        base += len(rows)
    rows = np.flatnonzero(status_ok & ~cleared & opted)
    if len(rows):
        who = (pair_code[keep] == _CODE["opted_out"]) & opted[k_item] & status_ok[k_item]
        joined = _list_join(pair_gids.filter(pa.array(who)), np.bincount(k_item[who], minlength=n)[rows], ", ")
        pool.append(pc.binary_join_element_wise("opt-out on record: ", joined, ""))
        pick[rows] = base + np.arange(len(rows))
        base += len(rows)
    reason_pool = [pa.array(names, pa.string())]
    rpick = code
    rejected = np.flatnonzero(~status_ok)
    if len(rejected):
        take = pa.array(rejected, pa.int64())
        rpick = code.copy()
        reason_pool.append(_array(catalog["reject_reason"]).take(take).fill_null("decode_error"))
        reason_pool[-1] = pc.if_else(pc.equal(reason_pool[-1], ""), "decode_error", reason_pool[-1])
        rpick[rejected] = len(names) + np.arange(len(rejected))
        pool.append(_array(catalog["reject_detail"]).take(take).fill_null(""))
        pick[rejected] = base + np.arange(len(rejected))
    reasons = pa.concat_arrays(reason_pool).take(pa.array(rpick, pa.int64()))
    details = pa.concat_arrays([_array(p).cast(pa.string()) for p in pool]).take(pa.array(pick, pa.int64()))
    return Clearance(
        at=at,
        policy=policy,
        cleared=cleared,
        reasons=reasons,
        details=details,
        grant_offsets=offsets,
        grant_flat=pair_gids,
        clearing_ids=clearing_ids,
        clearing_seqs=clearing_seqs,
    )


def recheck(
    catalog: pa.Table, frame: pa.Table, policy: Policy, expected: dict[str, str], at: datetime | None = None
) -> dict[str, tuple[str, str]]:
    """Which of `expected` (recording_id → audio sha256) no longer clear now, and why.

    Training calls this at start: a snapshot is only as good as the consent behind it
    today, so a revocation or expiry since clearance stops the run. `at` defaults to now,
    not to the policy's moment: a policy pinned to a past date must not hide a revocation
    recorded since.
    """
    ids = pa.array(sorted(expected))
    subset = catalog.filter(pc.is_in(catalog["recording_id"], ids))
    decision = clear(subset, frame, policy, at or datetime.now(timezone.utc))
    problems: dict[str, tuple[str, str]] = {}
    seen = set()
    for i, rid in enumerate(subset["recording_id"].to_pylist()):
        seen.add(rid)
        sha = subset["audio_sha256"][i].as_py()
        if sha != expected[rid]:
            problems[rid] = ("audio_changed", f"catalogue audio sha256 is now {sha}, snapshot has {expected[rid]}")
        elif not decision.cleared[i]:
            problems[rid] = (decision.reason[i] or "not_cleared", decision.detail[i])
    for rid in set(expected) - seen:
        problems[rid] = ("not_in_catalogue", "the recording is no longer in the catalogue")
    return problems
