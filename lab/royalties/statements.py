"""Royalty statements: pools from exposure × grant terms, split exactly into one line per holder ×
recording × right × checkpoint, written as a signed folder and recorded so nothing is paid twice.

Pools (each rounded to the currency's minor unit once, half-even):
  per_second_trained  grant × right × checkpoint: rate × payable seconds of the grant's recordings
  flat_fee            grant × right × period: the monthly pool (of the grant's latest version among the
                      period's checkpoints), shared by payable exposure among its recordings
  revenue_share       grant × right × checkpoint × currency: share% of the revenue reported for the
                      checkpoint (or its outputs) × the grant's part of the checkpoint's whole card exposure
  none                no pool and no line (its exposure is still recorded as accounted for)
A pool is split over its recordings by exposure, then each recording's part over the right's parties
by share, both by largest remainder, so the lines add up to the pool exactly.

The lines follow DDEX DSR's single-record-block idea: every line carries everything needed to read it
alone (period, licensee, holder, party id, right, recording, ISRC, grant, model, rate, seconds, gross,
share, payable, currency); field names are DSR's where one fits (`isrc`, `rights_type`, `currency`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import delete, select

from lab.registry.royalty_schema import paid, statements
from lab.util import atomic
from lab.util.timestamps import to_ts, utcnow

from .exposure import Payable, own_rows, payable
from .money import minor_units, split_groups, to_minor
from .terms import grant_terms

SCHEMA_ID = "lab.royalty_statement/1"
LINES_FILE, POOLS_FILE, HEADER_FILE, SIGNATURE = "lines.csv", "pools.csv", "statement.json", "statement.sig"
_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_SHARE_SCALE = 10**6  # party shares (percent, decimal) become integer weights at this scale
HTML_LINES = 500  # lines listed per holder page (totals always cover all of them)

LINE_COLUMNS = (
    "period",
    "licensee",
    "rights_holder",
    "party_id",
    "role",
    "rights_type",
    "recording_id",
    "isrc",
    "grant_id",
    "grant_version",
    "checkpoint_id",
    "compensation_model",
    "rate",
    "exposure_basis",
    "exposure_ms",
    "seconds",
    "gross",
    "share",
    "payable",
    "currency",
    "pool_id",
)


TIMINGS: dict[str, float] = {}  # seconds per phase of the last statement built here (benchmarks print it)


@contextmanager
def _phase(name: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        TIMINGS[name] = TIMINGS.get(name, 0.0) + time.perf_counter() - t


class RoyaltyInputError(ValueError):
    """Bad input: a period, a revenue file, an amount (CLI exit 2)."""


class RoyaltyRefused(RuntimeError):
    """The statement cannot be issued as asked (CLI exit 1)."""


# --------------------------------------------------------------------------- period, revenue


def period_bounds(period: str) -> tuple[str, str]:
    """'2026-11' → [start, end) as registry timestamps (string order is time order)."""
    m = _PERIOD.match(period or "")
    if not m:
        raise RoyaltyInputError(f"period must be YYYY-MM (a UTC month), got {period!r}")
    y, mo = int(m[1]), int(m[2])
    start = datetime(y, mo, 1, tzinfo=timezone.utc)
    end = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=timezone.utc)
    return to_ts(start), to_ts(end)


@dataclass(frozen=True)
class Revenue:
    checkpoint_id: str
    currency: str
    amount: Decimal
    outputs: tuple[str, ...] = ()


def _amount(text: str, where: str) -> Decimal:
    try:
        d = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise RoyaltyInputError(f"{where}: amount {text!r} is not a decimal number") from None
    if not d.is_finite() or d < 0:
        raise RoyaltyInputError(f"{where}: amount {text!r} must be a finite, non-negative decimal")
    return d


def _currency(text: str, where: str) -> str:
    code = (text or "").strip().upper()
    try:
        minor_units(code)
        import pycountry

        if not re.fullmatch(r"[A-Z]{3}", code) or pycountry.currencies.get(alpha_3=code) is None:
            raise LookupError
    except (LookupError, ValueError):
        raise RoyaltyInputError(f"{where}: currency {text!r} is not an ISO 4217 code") from None
    return code


def _outputs_map(registry, output_ids: list[str]) -> dict[str, str]:
    """output id (the output record's id) → checkpoint id, for released outputs in the registry."""
    if not output_ids:
        return {}
    wanted = set(output_ids)
    out = {}
    for r in registry.outputs(with_record=False):
        if r["record_id"] in wanted:
            if r["kind"] != "released":
                raise RoyaltyInputError(f"output {r['record_id']} was {r['kind']}, not released: it earns no revenue")
            out[r["record_id"]] = r["checkpoint_id"]
    return out


def read_revenue(path: str | Path, registry, period: str) -> list[Revenue]:
    """A revenue CSV (`checkpoint_id` or `output_id`, `amount`, `currency`, optional `period`), amounts read
    as decimal text (never floats), summed per checkpoint × currency. Rows of another period are skipped."""
    path = Path(path)
    if not path.is_file():
        raise RoyaltyInputError(f"revenue file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or ())
        if not {"amount", "currency"} <= cols or not cols & {"checkpoint_id", "output_id"}:
            raise RoyaltyInputError(f"{path.name}: needs columns checkpoint_id or output_id, amount, currency")
        raw = [r for r in reader if not (r.get("period") or "").strip() or r["period"].strip() == period]
    outs = sorted({(r.get("output_id") or "").strip() for r in raw} - {""})
    out_map = _outputs_map(registry, outs)
    known = {c["checkpoint_id"] for c in registry.checkpoints()}
    sums: dict[tuple[str, str], list] = {}
    for i, r in enumerate(raw, start=2):
        where = f"{path.name} line {i}"
        cid, oid = (r.get("checkpoint_id") or "").strip(), (r.get("output_id") or "").strip()
        if not cid and not oid:
            raise RoyaltyInputError(f"{where}: names neither a checkpoint_id nor an output_id")
        if oid:
            if oid not in out_map:
                raise RoyaltyInputError(f"{where}: unknown output {oid!r} (not in the registry)")
            if cid and cid != out_map[oid]:
                raise RoyaltyInputError(f"{where}: output {oid!r} comes from {out_map[oid]}, not {cid}")
            cid = out_map[oid]
        if cid not in known:
            raise RoyaltyInputError(f"{where}: unknown checkpoint {cid!r} (not in the registry)")
        key = (cid, _currency(r["currency"], where))
        acc = sums.setdefault(key, [Decimal(0), set()])
        acc[0] += _amount(r["amount"], where)
        if oid:
            acc[1].add(oid)
    return [Revenue(c, cur, a, tuple(sorted(o))) for (c, cur), (a, o) in sorted(sums.items())]


# --------------------------------------------------------------------------- exact arithmetic


def _rdiv(num: int, den: int) -> int:
    """round(num / den) half to even, exactly, for Python ints (num ≥ 0)."""
    q, r = divmod(num, den)
    return q + (2 * r > den or (2 * r == den and q % 2 == 1))


def _round_div(num: np.ndarray, den: int) -> np.ndarray:
    """round(num / den) half to even, in integers (num ≥ 0); object arrays (Python ints) one by one."""
    if num.dtype == object:
        return np.array([_rdiv(int(x), den) for x in num], np.int64)
    q, r = np.divmod(num, den)
    up = (2 * r > den) | ((2 * r == den) & (q % 2 == 1))
    return q + up


def _times_rate(ms: np.ndarray, rate: Decimal, currency: str) -> np.ndarray:
    """Minor units of rate × ms / 1000, rounded once, exactly (integers, Python ints if int64 could overflow)."""
    sign, digits, exp = rate.as_tuple()
    mant = int("".join(map(str, digits)) or "0")
    num_scale, den = mant * 10 ** minor_units(currency), 1000
    if exp >= 0:
        num_scale *= 10**exp
    else:
        den *= 10**-exp
    big = ms.size and int(ms.max()) * num_scale >= 2**62
    num = ms.astype(object) * num_scale if big else ms * num_scale
    return _round_div(num, den).astype(np.int64)


# --------------------------------------------------------------------------- versions and terms


def versions_at(ledger, keys: pa.Table) -> pa.Table:
    """For (grant_id, head_seq) pairs: the grant's latest version (grant or amend) at that ledger head —
    the terms a checkpoint trained under. A later amendment or revocation does not change them."""
    frame = ledger.frame(columns=["seq", "kind", "grant_id", "version"])
    frame = frame.filter(pc.is_in(frame["kind"], pa.array(["grant", "amend"])))
    out = []
    for head in pc.unique(keys["head_seq"]).to_pylist():
        upto = frame.filter(pc.less_equal(frame["seq"], head))
        latest = upto.group_by("grant_id").aggregate([("version", "max")]).rename_columns(["grant_id", "version"])
        mine = keys.filter(pc.equal(keys["head_seq"], head)).select(["grant_id", "head_seq"])
        out.append(mine.join(latest, "grant_id", join_type="inner").select(["grant_id", "head_seq", "version"]))
    schema = pa.schema([("grant_id", pa.string()), ("head_seq", pa.int64()), ("version", pa.int64())])
    return pa.concat_tables([t.cast(schema) for t in out]) if out else schema.empty_table()


# --------------------------------------------------------------------------- building


@dataclass
class Built:
    lines: pa.Table
    pools: pa.Table
    accounted: pa.Table  # the payable exposure rows recorded as paid (checkpoint, recording, grant, ms)
    checkpoints: list[dict]
    revenue: list[Revenue] = field(default_factory=list)
    ledger_head: dict | None = None  # the verified ledger head the terms were read at


_REC = ("pool_id", "model", "grant_id", "version", "right", "checkpoint_id", "recording_id", "isrc")


def _heads(checkpoint_ids: pa.ChunkedArray | pa.Array, head_of: dict[str, int]) -> pa.Array:
    """Each row's checkpoint's ledger head (via the few distinct checkpoints, not a Python loop per row)."""
    enc = pc.dictionary_encode(checkpoint_ids)
    enc = enc.combine_chunks() if isinstance(enc, pa.ChunkedArray) else enc
    heads = np.array([head_of[c] for c in enc.dictionary.to_pylist()], np.int64)
    return pa.array(heads[enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)] if len(enc) else [], pa.int64())


def _with_version(rows: pa.Table, head_of: dict[str, int], versions: pa.Table) -> pa.Table:
    rows = rows.append_column("head_seq", _heads(rows["checkpoint_id"], head_of))
    return rows.join(versions, ["grant_id", "head_seq"], join_type="inner", use_threads=False)


def _first_of(table: pa.Table, keys: list[str]) -> pa.Table:
    """The first row of each distinct key (hash-encoded, not a multi-column group-by over millions)."""
    if not table.num_rows:
        return table
    key = _key(*(table[k] for k in keys)) if len(keys) > 1 else table[keys[0]]
    enc = pc.dictionary_encode(key)
    enc = enc.combine_chunks() if isinstance(enc, pa.ChunkedArray) else enc
    _, first = np.unique(enc.indices.to_numpy(zero_copy_only=False), return_index=True)
    return table.take(pa.array(np.sort(first)))


def _rights(terms: pa.Table) -> pa.Table:
    """One row per (grant, version, right): the right's model, amount and currency (the same on every party row)."""
    keys = ["grant_id", "version", "right", "model", "rate", "pool", "share", "currency"]
    return _first_of(terms.select(keys), ["grant_id", "version", "right"])


def _codes(values: pa.ChunkedArray | pa.Array, of) -> np.ndarray:
    """of(value) for every row, computed once per distinct value."""
    enc = pc.dictionary_encode(values)
    enc = enc.combine_chunks() if isinstance(enc, pa.ChunkedArray) else enc
    table = np.array([of(v) for v in enc.dictionary.to_pylist()] or [0], dtype=np.int64)
    return table[enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)] if len(enc) else np.zeros(0, np.int64)


def _key(*cols: pa.Array) -> pa.Array:
    """Columns joined into one text key; a null (a party without an id) stays distinct from any text."""
    opts = pc.JoinOptions(null_handling="replace", null_replacement="\x1e")
    return pc.binary_join_element_wise(*[pc.cast(c, pa.string()) for c in cols], ":", options=opts)


def _exposure_pools(rows: pa.Table, rights: pa.Table, period: str) -> list[tuple[pa.Table, dict | None]]:
    """Recording rows with their pool id, for per_second_trained and flat_fee (amounts: computed per pool in
    `_split`, from the pool's first row and its exposure)."""
    out: list[tuple[pa.Table, dict | None]] = []
    joined = rows.join(rights, ["grant_id", "version"], join_type="inner", use_threads=False)
    ps = joined.filter(pc.equal(joined["model"], "per_second_trained"))
    if ps.num_rows:
        out.append(
            (ps.append_column("pool_id", _key(ps["model"], ps["grant_id"], ps["right"], ps["checkpoint_id"])), None)
        )
    # flat fee: one pool per grant × right × period, on the latest version the period's checkpoints used
    enc = pc.dictionary_encode(rows["grant_id"]).combine_chunks() if rows.num_rows else None
    if enc is not None:
        g, v = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), rows["version"].to_numpy()
        lo, hi = np.full(len(enc.dictionary), np.iinfo(np.int64).max), np.zeros(len(enc.dictionary), np.int64)
        np.minimum.at(lo, g, v)
        np.maximum.at(hi, g, v)
        if (lo == hi).all():  # one version per grant in the period (the usual case): the join above serves
            ff = joined
        else:
            latest = rows.group_by("grant_id").aggregate([("version", "max")]).rename_columns(["grant_id", "latest"])
            ff = rows.join(latest, "grant_id").drop_columns(["version"]).rename_columns({"latest": "version"})
            ff = ff.join(rights, ["grant_id", "version"], join_type="inner", use_threads=False)
        ff = ff.filter(pc.equal(ff["model"], "flat_fee"))
        if ff.num_rows:
            pid = _key(ff["model"], ff["grant_id"], ff["right"], pa.repeat(period, ff.num_rows))
            out.append((ff.append_column("pool_id", pid), None))
    return out


def _revenue_pools(registry, revenue: list[Revenue], head_of: dict[str, int], ledger, rights_of) -> tuple:
    """Recording rows and pools for revenue_share: share% × revenue × grant exposure / checkpoint exposure."""
    if not revenue:
        return None
    ids = sorted({r.checkpoint_id for r in revenue})
    rows = own_rows(registry, ids, own=False)
    rows = rows.group_by(["checkpoint_id", "recording_id", "isrc", "grant_id"], use_threads=False)
    rows = rows.aggregate([("exposure_ms", "sum")]).rename_columns({"exposure_ms_sum": "exposure_ms"})
    versions = versions_at(
        ledger,
        pa.table({"grant_id": rows["grant_id"], "head_seq": [head_of[c] for c in rows["checkpoint_id"].to_pylist()]})
        .group_by(["grant_id", "head_seq"])
        .aggregate([]),
    )
    rows = _with_version(rows, head_of, versions)
    rights = rights_of(rows)
    per_rec = rows.group_by(["checkpoint_id", "recording_id"]).aggregate([("exposure_ms", "max")])
    total = dict(zip(*per_rec.group_by("checkpoint_id").aggregate([("exposure_ms_max", "sum")]).to_pydict().values()))
    rs = rows.join(rights, ["grant_id", "version"], join_type="inner")
    rs = rs.filter(pc.equal(rs["model"], "revenue_share"))
    parts, amounts = [], {}
    for rev in revenue:
        mine = rs.filter(pc.equal(rs["checkpoint_id"], rev.checkpoint_id))
        if not mine.num_rows or not total.get(rev.checkpoint_id):
            continue
        mine = mine.drop_columns(["currency"]).append_column("currency", pa.repeat(rev.currency, mine.num_rows))
        mine = mine.append_column(
            "pool_id", _key(mine["model"], mine["grant_id"], mine["right"], mine["checkpoint_id"], mine["currency"])
        )
        w = mine.group_by(["pool_id", "share"], use_threads=False).aggregate([("exposure_ms", "sum")])
        scale = 10 ** minor_units(rev.currency)
        for pid, share, ms in zip(*w.to_pydict().values()):
            exact = Fraction(Decimal(share)) / 100 * Fraction(rev.amount) * ms / total[rev.checkpoint_id] * scale
            amounts[pid] = _rdiv(exact.numerator, exact.denominator)
        parts.append(mine)
    return (pa.concat_tables(parts, promote_options="default"), amounts) if parts else None


def build(registry, ledger, period: str, *, licensee: str, revenue: list[Revenue] = ()) -> Built:
    """Every pool and line of a period's statement (nothing written)."""
    TIMINGS.clear()
    start, end = period_bounds(period)
    with _phase("payable exposure"):
        everyone = registry.checkpoints()
        chosen = period_checkpoints(registry, period, everyone)
        pay: Payable = payable(registry, chosen)
    head_of = {c["checkpoint_id"]: int(c["ledger_head_seq"]) for c in everyone}
    rows = pay.rows
    with _phase("grant versions"):
        keys = pa.table({"grant_id": rows["grant_id"], "head_seq": _heads(rows["checkpoint_id"], head_of)})
        keys = keys.group_by(["grant_id", "head_seq"], use_threads=False).aggregate([])
        rows = _with_version(rows, head_of, versions_at(ledger, keys))
    terms_cache: dict = {}

    def rights_of(r: pa.Table) -> pa.Table:
        with _phase("terms"):
            keys = r.select(["grant_id", "version"]).group_by(["grant_id", "version"], use_threads=False).aggregate([])
            t = grant_terms(ledger, keys)
            terms_cache.setdefault("parties", []).append(t)
            return _rights(t)

    rights = rights_of(rows)
    with _phase("pools"):
        pieces = _exposure_pools(rows, rights, period)
        rev = _revenue_pools(registry, list(revenue), head_of, ledger, rights_of)
    if rev is not None:
        pieces.append(rev)
    terms = pa.concat_tables(terms_cache["parties"]) if terms_cache.get("parties") else None
    if terms is not None and len(terms_cache["parties"]) > 1:  # revenue asked for some terms again
        terms = _first_of(terms, ["grant_id", "version", "right", "party_name", "party_id", "role", "party_share"])
    with _phase("split into lines"):
        lines, pools = _split(pieces, terms, period, licensee)
    accounted = pay.rows.select(["checkpoint_id", "recording_id", "grant_id", "exposure_ms"])
    return Built(lines, pools, accounted, pay.checkpoints, list(revenue))


_PIECE = (*_REC, "exposure_ms", "rate", "currency", "exposure_basis")


def _normal(piece: pa.Table, model_field: str, basis: str) -> pa.Table:
    n = piece.num_rows
    cols = {c: piece[c] for c in _REC if c != "isrc"} | {"isrc": piece["isrc"], "exposure_ms": piece["exposure_ms"]}
    cols |= {"rate": piece[model_field], "currency": piece["currency"], "exposure_basis": pa.repeat(basis, n)}
    return pa.table({c: cols[c] for c in _PIECE}).cast(
        pa.schema([(c, pa.int64() if c in ("version", "exposure_ms") else pa.string()) for c in _PIECE])
    )


def _fmt_minor(minor: np.ndarray, digits: np.ndarray) -> pa.Array:
    """Minor units → decimal text ('12.34'), column-wise per distinct number of digits."""
    text = pc.cast(pa.array(minor), pa.string())
    out = text
    for d in sorted(set(digits.tolist())):
        if d == 0:
            continue
        padded = pc.utf8_lpad(text, d + 1, padding="0")
        dec = pc.binary_join_element_wise(
            pc.utf8_slice_codeunits(padded, 0, -d), pc.utf8_slice_codeunits(padded, -d), "."
        )
        out = pc.if_else(pa.array(digits == d), dec, out)
    return out


def _split(pieces: list, terms: pa.Table | None, period: str, licensee: str) -> tuple[pa.Table, pa.Table]:
    empty_lines = pa.schema(
        [(c, pa.int64() if c in ("grant_version", "exposure_ms") else pa.string()) for c in LINE_COLUMNS]
    )
    basis = {
        "per_second_trained": ("rate", "payable"),
        "flat_fee": ("pool", "payable"),
        "revenue_share": ("share", "card"),
    }
    normal, amounts = [], {}
    for rows, amt in pieces:
        model = rows["model"][0].as_py()
        normal.append(_normal(rows, *basis[model]))
        amounts.update(amt or {})
    if not normal:
        return empty_lines.empty_table().append_column("payable_minor", pa.array([], pa.int64())), _pools_table(
            None, None, None, None
        )
    rec = pa.concat_tables(normal).sort_by(
        [("pool_id", "ascending"), ("checkpoint_id", "ascending"), ("recording_id", "ascending")]
    )
    rec = rec.combine_chunks()
    n = rec.num_rows
    pid = rec["pool_id"].chunk(0) if rec["pool_id"].num_chunks else pa.array([], pa.string())
    change = np.ones(n, bool)  # rows are sorted by pool: a pool starts where the id changes
    if n > 1:
        change[1:] = pc.not_equal(pid.slice(1), pid.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(change)
    group = np.cumsum(change) - 1
    ms = rec["exposure_ms"].to_numpy()
    pool_ms = np.add.reduceat(ms, starts)
    totals = _pool_amounts(rec.take(pa.array(starts)), pool_ms, amounts)
    gross = split_groups(totals, group, ms)
    rec = rec.append_column("rid", pa.array(np.arange(rec.num_rows, dtype=np.int64))).append_column(
        "gross_minor", pa.array(gross)
    )
    parties = terms.select(["grant_id", "version", "right", "party_name", "party_id", "role", "party_share"])
    lines, rid = _with_parties(rec, parties)

    def scaled(share: str) -> int:
        w = Decimal(share) * _SHARE_SCALE
        if w != w.to_integral_value():
            raise RoyaltyRefused(f"party share {share} has more than 6 decimals")
        return int(w)

    weights = _codes(lines["party_share"], scaled)
    payable_minor = split_groups(gross, rid, weights)
    digits = _codes(lines["currency"], minor_units)
    ms = lines["exposure_ms"].to_numpy()
    n = lines.num_rows
    cols = {
        "period": pa.repeat(period, n),
        "licensee": pa.repeat(licensee, n),
        "rights_holder": lines["party_name"],
        "party_id": lines["party_id"],
        "role": lines["role"],
        "rights_type": lines["right"],
        "recording_id": lines["recording_id"],
        "isrc": lines["isrc"],
        "grant_id": lines["grant_id"],
        "grant_version": lines["version"],
        "checkpoint_id": lines["checkpoint_id"],
        "compensation_model": lines["model"],
        "rate": lines["rate"],
        "exposure_basis": lines["exposure_basis"],
        "exposure_ms": lines["exposure_ms"],
        "seconds": _fmt_minor(ms, np.full(n, 3)),
        "gross": _fmt_minor(gross[rid], digits),
        "share": lines["party_share"],
        "payable": _fmt_minor(payable_minor, digits),
        "currency": lines["currency"],
        "pool_id": lines["pool_id"],
    }
    out = pa.table({c: cols[c] for c in LINE_COLUMNS}).cast(empty_lines)
    return out.append_column("payable_minor", pa.array(payable_minor)), _pools_table(rec, starts, totals, pool_ms)


POOL_COLUMNS = (
    "pool_id",
    "compensation_model",
    "grant_id",
    "grant_version",
    "rights_type",
    "checkpoint_id",
    "rate",
    "currency",
    "exposure_ms",
    "recordings",
    "amount",
    "amount_minor",
)


def _with_parties(rec: pa.Table, parties: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Each recording row repeated once per party of its (grant, version, right), parties in the grant's
    order: integer codes, np.repeat and take instead of a join and a sort (millions of lines)."""
    n = rec.num_rows
    codes = pc.dictionary_encode(
        pa.chunked_array(
            [
                _key(rec["grant_id"], rec["version"], rec["right"]),
                _key(parties["grant_id"], parties["version"], parties["right"]),
            ]
        )
    ).combine_chunks()
    code = codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    rc, pcode = code[:n], code[n:]
    order = np.argsort(pcode, kind="stable")  # parties grouped by key, each key's parties in the grant's order
    counts = np.bincount(pcode, minlength=len(codes.dictionary))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rep = counts[rc]
    if (rep == 0).any():
        row = int(np.flatnonzero(rep == 0)[0])
        g, r = rec["grant_id"][row].as_py(), rec["right"][row].as_py()
        raise RoyaltyRefused(f"grant {g} pays for the {r} right but names no party holding it")
    line_rec = np.repeat(np.arange(n, dtype=np.int64), rep)
    offset = np.arange(line_rec.size, dtype=np.int64) - np.repeat(np.cumsum(rep) - rep, rep)
    line_party = order[first[rc][line_rec] + offset]
    lines = rec.take(pa.array(line_rec))
    took = parties.select(["party_name", "party_id", "role", "party_share"]).take(pa.array(line_party))
    for c in took.column_names:
        lines = lines.append_column(c, took[c])
    return lines, line_rec


def _pool_amounts(first: pa.Table, pool_ms: np.ndarray, given: dict[str, int]) -> np.ndarray:
    """Each pool's amount in minor units, rounded once: rate × seconds, the monthly flat fee, or as given
    (revenue shares). `first`: each pool's first row."""
    totals = np.zeros(first.num_rows, np.int64)
    model = first["model"].to_numpy(zero_copy_only=False)
    ps = np.flatnonzero(model == "per_second_trained")
    if ps.size:
        sub = first.take(pa.array(ps))
        combo = pc.dictionary_encode(_key(sub["rate"], sub["currency"]))
        combo = combo.combine_chunks() if isinstance(combo, pa.ChunkedArray) else combo
        idx = combo.indices.to_numpy(zero_copy_only=False)
        for k, text in enumerate(combo.dictionary.to_pylist()):
            m = idx == k
            rate, cur = text.rsplit(":", 1)
            totals[ps[m]] = _times_rate(pool_ms[ps[m]], Decimal(rate), cur)
    ff = np.flatnonzero(model == "flat_fee")
    if ff.size:
        sub = first.take(pa.array(ff))
        totals[ff] = _codes(_key(sub["rate"], sub["currency"]), lambda k: to_minor(Decimal(k.split(":")[0]), k[-3:]))
    other = np.flatnonzero((model != "per_second_trained") & (model != "flat_fee"))
    if other.size:
        ids = first["pool_id"].take(pa.array(other)).to_pylist()
        totals[other] = [given[p] for p in ids]
    return totals


def _pools_table(rec: pa.Table | None, starts, totals, pool_ms) -> pa.Table:
    if rec is None or not rec.num_rows:
        return pa.table(
            {
                c: pa.array(
                    [],
                    pa.int64() if c in ("grant_version", "exposure_ms", "recordings", "amount_minor") else pa.string(),
                )
                for c in POOL_COLUMNS
            }
        )
    first = rec.take(pa.array(starts))
    recordings = np.diff(np.append(starts, rec.num_rows))
    flat = pc.equal(first["model"], "flat_fee")  # a period's pool: no single checkpoint
    return pa.table(
        {
            "pool_id": first["pool_id"],
            "compensation_model": first["model"],
            "grant_id": first["grant_id"],
            "grant_version": first["version"],
            "rights_type": first["right"],
            "checkpoint_id": pc.if_else(flat, pa.scalar("", pa.string()), first["checkpoint_id"]),
            "rate": first["rate"],
            "currency": first["currency"],
            "exposure_ms": pa.array(pool_ms),
            "recordings": pa.array(recordings.astype(np.int64)),
            "amount": _fmt_minor(totals, _codes(first["currency"], minor_units)),
            "amount_minor": pa.array(totals),
        }
    )


# --------------------------------------------------------------------------- the registry's record


def period_checkpoints(registry, period: str, everyone: list[dict] | None = None) -> list[dict]:
    """The checkpoints a period's statement pays. Issued: exactly the ones it paid (a re-run reproduces
    it). Not yet issued: every checkpoint created before the period's end that no statement has paid —
    one registered after its own month's statement was issued is carried into the next statement,
    never lost and never paid twice."""
    _, end = period_bounds(period)
    everyone = registry.checkpoints() if everyone is None else everyone
    before = recorded(registry, period)
    if before is not None:
        ids = {cid for cid, _previous in before["checkpoints"]}
        return [c for c in everyone if c["checkpoint_id"] in ids]
    already = _paid_elsewhere(registry, period)
    return [c for c in everyone if c["created_at"] < end and c["checkpoint_id"] not in already]


def waiting(registry, period: str) -> int:
    """Checkpoints created before the period's end that no statement pays yet (carried to the next one)."""
    _, end = period_bounds(period)
    paid_ids = _paid_elsewhere(registry, "")
    return sum(c["created_at"] < end and c["checkpoint_id"] not in paid_ids for c in registry.checkpoints())


def _paid_elsewhere(registry, period: str) -> set[str]:
    """Checkpoints whose exposure a statement of another period already paid."""
    if not registry.exists():
        return set()
    registry._ensure()
    with registry.engine.connect() as conn:
        q = select(paid.c.checkpoint_id).where(paid.c.period != period).distinct()
        return {r[0] for r in conn.execute(q)}


def recorded(registry, period: str) -> dict | None:
    """The registry's record of a period's statement (period, statement_id, folder, issued_at, lines, checkpoints)."""
    if not registry.exists():
        return None
    registry._ensure()
    with registry.engine.connect() as conn:
        row = conn.execute(select(statements).where(statements.c.period == period)).first()
    if row is None:
        return None
    out = dict(row._mapping)
    out["checkpoints"] = json.loads(out["checkpoints"])
    return out


def _record(registry, period: str, statement_id: str, folder: Path, built: Built, issued_at: str) -> None:
    acc = built.accounted
    with registry.engine.begin() as conn:
        conn.execute(delete(paid).where(paid.c.period == period))
        conn.execute(delete(statements).where(statements.c.period == period))
        conn.execute(
            statements.insert(),
            [
                {
                    "period": period,
                    "statement_id": statement_id,
                    "folder": str(folder),
                    "issued_at": issued_at,
                    "lines": built.lines.num_rows,
                    "checkpoints": json.dumps([[c["checkpoint_id"], c["previous"]] for c in built.checkpoints]),
                }
            ],
        )
        cols = ("checkpoint_id", "recording_id", "grant_id", "exposure_ms")
        values = zip(*([acc[c].to_pylist() for c in cols] + [[period] * acc.num_rows, [statement_id] * acc.num_rows]))
        names = ", ".join((*cols, "period", "statement_id"))
        if registry._sqlite:  # the DBAPI cursor: a million tuples without per-row SQLAlchemy objects
            cur = conn.connection.driver_connection.cursor()
            cur.executemany(f"INSERT INTO {paid.name} ({names}) VALUES (?, ?, ?, ?, ?, ?)", values)
            cur.close()
        else:
            keys = (*cols, "period", "statement_id")
            batch = [dict(zip(keys, v)) for v in values]
            if batch:
                conn.execute(paid.insert(), batch)


# --------------------------------------------------------------------------- files


def _csv_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes()


def holder_slug(holder: str, party_id: str | None) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "-", party_id or holder).strip("-")[:60] or "holder"
    return f"{base}-{hashlib.sha256(f'{holder}|{party_id}'.encode()).hexdigest()[:8]}"


def _totals(lines: pa.Table) -> list[dict]:
    if not lines.num_rows:
        return []
    t = lines.group_by(["rights_holder", "party_id", "currency"], use_threads=False).aggregate(
        [("payable_minor", "sum"), ("payable_minor", "count")]
    )
    t = t.sort_by([("rights_holder", "ascending"), ("party_id", "ascending"), ("currency", "ascending")])
    minor = t["payable_minor_sum"].to_numpy()
    digits = np.array([minor_units(c) for c in t["currency"].to_pylist()], np.int64)
    amounts = _fmt_minor(minor, digits).to_pylist()
    return [
        {"rights_holder": h, "party_id": p, "currency": c, "payable": a, "lines": n}
        for h, p, c, a, n in zip(
            t["rights_holder"].to_pylist(),
            t["party_id"].to_pylist(),
            t["currency"].to_pylist(),
            amounts,
            t["payable_minor_count"].to_pylist(),
        )
    ]


def _holder_pages(folder: Path, lines: pa.Table, totals: list[dict], header: dict) -> dict[str, str]:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        keep_trailing_newline=True,
    )
    page = env.get_template("holder.html.j2")
    (folder / "holders").mkdir()
    holders: dict[tuple, list[dict]] = {}
    for t in totals:
        holders.setdefault((t["rights_holder"], t["party_id"]), []).append(t)
    names = {}
    for (holder, pid), tots in holders.items():
        mask = pc.equal(lines["rights_holder"], holder)
        mask = pc.and_(mask, pc.is_null(lines["party_id"]) if pid is None else pc.equal(lines["party_id"], pid))
        mine = lines.filter(mask)
        slug = holder_slug(holder, pid)
        names[slug] = holder
        html = page.render(
            header=header,
            holder=holder,
            party_id=pid,
            totals=tots,
            lines=mine.slice(0, HTML_LINES).drop_columns(["payable_minor"]).to_pylist(),
            shown=min(HTML_LINES, mine.num_rows),
            total_lines=mine.num_rows,
        )
        (folder / "holders" / f"{slug}.html").write_text(html, encoding="utf-8")
    return names


def write_folder(
    built: Built,
    out: Path,
    period: str,
    *,
    licensee: str,
    issued_at: str,
    key_dir: Path,
    lines_bytes: bytes | None = None,
) -> tuple[str, Path]:
    """Write `out/<period>/` (lines.csv, pools.csv, statement.json, holders/*.html, statement.sig), signed
    over the whole folder and moved into place in one rename. Returns (statement id, folder)."""
    from lab.cards.signing import ensure_keypair, sign_folder

    if lines_bytes is None:
        lines_bytes = _csv_bytes(built.lines.drop_columns(["payable_minor"]))
    statement_id = hashlib.sha256(lines_bytes).hexdigest()
    pools_bytes = _csv_bytes(built.pools)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / period
    staging = Path(tempfile.mkdtemp(prefix=f".{period}.", dir=out))
    try:
        (staging / LINES_FILE).write_bytes(lines_bytes)
        (staging / POOLS_FILE).write_bytes(pools_bytes)
        totals = _totals(built.lines)
        header = {
            "schema": SCHEMA_ID,
            "period": period,
            "statement_id": statement_id,
            "licensee": licensee,
            "issued_at": issued_at,
            "ledger": built.ledger_head,
            "checkpoints": [
                {
                    "checkpoint_id": c["checkpoint_id"],
                    "previous": c["previous"],
                    "created_at": c["created_at"],
                    "folder": c["folder"],
                }
                for c in built.checkpoints
            ],
            "revenue": [
                {
                    "checkpoint_id": r.checkpoint_id,
                    "currency": r.currency,
                    "amount": str(r.amount),
                    "outputs": list(r.outputs),
                }
                for r in built.revenue
            ],
            "counts": {
                "lines": built.lines.num_rows,
                "pools": built.pools.num_rows,
                "exposure_rows": built.accounted.num_rows,
            },
            "files": {
                LINES_FILE: hashlib.sha256(lines_bytes).hexdigest(),
                POOLS_FILE: hashlib.sha256(pools_bytes).hexdigest(),
            },
            "totals": totals,
            "totals_by_currency": _currency_totals(built.pools),
        }
        header["holders"] = {k: v for k, v in sorted(_holder_pages(staging, built.lines, totals, header).items())}
        (staging / HEADER_FILE).write_text(json.dumps(header, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        sign_folder(staging, ensure_keypair(key_dir).private_path, SIGNATURE)
        atomic.publish_dir(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return statement_id, final


def _currency_totals(pools: pa.Table) -> dict[str, str]:
    if not pools.num_rows:
        return {}
    t = pools.group_by("currency").aggregate([("amount_minor", "sum")]).sort_by("currency")
    cur = t["currency"].to_pylist()
    amounts = _fmt_minor(t["amount_minor_sum"].to_numpy(), np.array([minor_units(c) for c in cur], np.int64))
    return dict(zip(cur, amounts.to_pylist()))


# --------------------------------------------------------------------------- issuing


@dataclass(frozen=True)
class Issued:
    period: str
    statement_id: str
    folder: Path
    lines: int
    pools: int
    checkpoints: int
    exposure_rows: int
    totals_by_currency: dict[str, str]
    reissued: bool  # False when the period's recorded statement was found identical and left as it was
    waiting: int = 0  # checkpoints created by the period's end that no statement pays yet (the next one will)


def issue(
    registry,
    ledger,
    period: str,
    *,
    out: Path,
    key_dir: Path,
    licensee: str = "lab",
    revenue_file: str | Path | None = None,
) -> Issued:
    """Build, write, sign and record a period's statement. Idempotent: a re-run that gives the same lines
    leaves the recorded statement as it is; one that would differ is refused (a statement once issued is
    not silently rewritten)."""
    period_bounds(period)
    # Terms are read from the ledger only once its chain verifies (the consent module's check, as for
    # clearance, training, audit and sampling); the head it verified is in the statement's header.
    from lab.rights.consent import verify_chain

    head_seq, head_hash = verify_chain(ledger, incremental=True)
    revenue = read_revenue(revenue_file, registry, period) if revenue_file else []
    built = build(registry, ledger, period, licensee=licensee, revenue=revenue)
    built.ledger_head = {"head_seq": head_seq, "head_hash": head_hash}
    with _phase("lines.csv"):
        lines_bytes = _csv_bytes(built.lines.drop_columns(["payable_minor"]))
        lines_id = hashlib.sha256(lines_bytes).hexdigest()
    before = recorded(registry, period)
    pools_totals = _currency_totals(built.pools)
    n_ck, n_exp = len(built.checkpoints), built.accounted.num_rows
    if before is not None:
        if before["statement_id"] != lines_id:
            raise RoyaltyRefused(
                f"period {period} was issued as statement {before['statement_id'][:12]}; the registry now gives "
                f"{lines_id[:12]} ({n_ck} checkpoints, {built.lines.num_rows} lines, not {before['lines']}): "
                "not rewritten"
            )
        folder = Path(before["folder"])
        if (folder / SIGNATURE).is_file():
            return Issued(
                period,
                lines_id,
                folder,
                built.lines.num_rows,
                built.pools.num_rows,
                n_ck,
                n_exp,
                pools_totals,
                False,
                waiting(registry, period),
            )
    issued_at = to_ts(utcnow())
    with _phase("write + sign folder"):
        statement_id, folder = write_folder(
            built, Path(out), period, licensee=licensee, issued_at=issued_at, key_dir=key_dir, lines_bytes=lines_bytes
        )
    with _phase("record in registry"):
        _record(registry, period, statement_id, folder, built, issued_at)
    return Issued(
        period, statement_id, folder, built.lines.num_rows, built.pools.num_rows, n_ck, n_exp, pools_totals, True
    )
