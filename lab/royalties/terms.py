"""The compensation terms of grant versions, read from the ledger column-wise for statements.

A statement over a million recordings needs the terms of up to a million grant versions: one
pydantic object per grant would take minutes, so the stored payloads are read whole, in seq order
(`Ledger.payload_batches(seqs)`: one newline-joined blob per batch, no JSON work in the database),
and parsed by Arrow's JSON reader against an explicit schema of just the terms, two batches at a time
while the next is read; then joined on (grant, right) with numpy. Having the database cut the fields
out instead (`grant_fields=`) parses every payload once per field (SQLite 3.40 keeps no parse):
measured at 1M grant versions, 21.7 s for the terms that way, 11.0 s this way (8.8 s with seqs
given). Amounts and shares stay the decimal strings the ledger holds (`Decimal(text)` is exact); a
batch holding events stored before terms were per right (one compensation object, float rate and
shares) is read in Python the way `lab.rights.records` reads it (`legacy_compensation`, `Decimal(str(x))`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from ..rights.records import AMOUNT_FIELD, legacy_compensation

__all__ = ["TERMS_COLUMNS", "TERMS_SCHEMA", "TermsError", "grant_terms"]

_S = pa.string()
TERMS_SCHEMA = pa.schema(
    [
        pa.field("grant_id", _S, False),
        pa.field("version", pa.int64(), False),
        pa.field("right", _S, False),
        pa.field("model", _S, False),
        ("rate", _S),  # decimal string: currency per second of audio seen (per_second_trained)
        ("pool", _S),  # decimal string: flat fee per calendar month (flat_fee)
        ("share", _S),  # decimal string: percent of reported revenue (revenue_share)
        ("currency", _S),  # ISO 4217; null for model none
        pa.field("party_name", _S, False),
        ("party_id", _S),
        pa.field("role", _S, False),
        pa.field("party_share", _S, False),  # decimal string: percent of this right the party holds
    ]
)
TERMS_COLUMNS = tuple(TERMS_SCHEMA.names)

_RIGHTS = pa.array(["master", "composition", "performance"])
_PARTY = pa.struct([(k, _S) for k in ("name", "role", "right", "share", "party_id")])
_ENTRY = pa.struct([(k, _S) for k in ("right", "model", "rate", "pool", "share", "currency")])
_FIELDS = ("grant_id", "version", "parties", "compensation")
_GRANTS = pa.schema(
    [("grant_id", _S), ("version", pa.int64()), ("parties", pa.list_(_PARTY)), ("compensation", pa.list_(_ENTRY))]
)
_PAYLOAD = pa.schema([("grant", pa.struct(list(_GRANTS)))])
# One thread per batch, `_PARSERS` batches side by side (Arrow's JSON reader releases the GIL, and so
# does SQLite while it reads the next batch); 1 MiB blocks as the snapshot measured best.
_JSON_READ = pajson.ReadOptions(use_threads=False, block_size=1 << 20)
_JSON_PARSE = pajson.ParseOptions(explicit_schema=_PAYLOAD, unexpected_field_behavior="ignore")
_BATCH = 16384
_PARSERS = 2


class TermsError(LookupError):
    """A grant version asked for is not in the ledger, or its stored terms cannot be read."""


def grant_terms(ledger: Any, keys: pa.Table) -> pa.Table:
    """One row per (grant_id, version, right, party) for the grant versions in `keys` (columns
    grant_id, version; repeats are fine), sorted by grant_id, version, then the grant's party order:
    the right's compensation model, its one amount (rate, pool or share; decimal strings), currency,
    and the party's name, id, role and share of that right (TERMS_SCHEMA). A party whose right has no
    compensation entry gets no row (nothing is payable for it). Raises TermsError naming the first
    grant version that is not in the ledger.

    `keys` may carry each version's ledger `seq` (a caller that already read `Ledger.frame` has it):
    then the ledger's index is not read again, and each payload read is checked to be the grant
    version its key names."""
    want = _wanted(keys)
    given = "seq" in want.column_names
    seqs = want["seq"].to_numpy() if given else _seqs(ledger, want)
    if not len(seqs):
        return TERMS_SCHEMA.empty_table()
    ascending = bool(np.all(seqs[1:] > seqs[:-1]))
    order = None if ascending else np.argsort(seqs, kind="stable")
    # Read in seq order (the ledger file's order), then put the grants back in (grant_id, version) order.
    parts = list(_parsed(ledger.payload_batches((seqs if order is None else seqs[order]).tolist(), _BATCH)))
    grants = pa.concat_tables(parts) if parts else _GRANTS.empty_table()
    if grants.num_rows != len(seqs):
        lost = len(seqs) - grants.num_rows
        raise TermsError(f"{lost} of the ledger seqs given for grant versions are not in the ledger")
    if order is not None:
        grants = grants.take(pa.array(np.argsort(order), pa.int64()))
    if given:
        _check_given(want, grants)
    return _explode(grants.combine_chunks())


def _wanted(keys: pa.Table) -> pa.Table:
    missing = {"grant_id", "version"} - set(keys.column_names)
    if missing:
        raise TermsError(f"keys need columns grant_id and version (missing: {', '.join(sorted(missing))})")
    cols = {"grant_id": keys["grant_id"].cast(_S), "version": keys["version"].cast(pa.int64())}
    if "seq" not in keys.column_names:
        return pa.table(cols).group_by(["grant_id", "version"], use_threads=False).aggregate([])
    t = pa.table(cols | {"seq": keys["seq"].cast(pa.int64())})
    t = t.group_by(["grant_id", "version", "seq"], use_threads=False).aggregate([])
    t = t.sort_by([("grant_id", "ascending"), ("version", "ascending")])
    if pc.any(pc.is_null(t["seq"])).as_py():
        raise TermsError("keys carry a seq column with nulls")
    gid, ver = t["grant_id"].combine_chunks(), t["version"].combine_chunks()
    twice = pc.and_(pc.equal(gid[1:], gid[:-1]), pc.equal(ver[1:], ver[:-1]))
    if pc.any(twice).as_py():
        k = pc.index(twice, True).as_py()
        raise TermsError(f"keys give grant {gid[k]} version {ver[k]} two ledger seqs")
    return t


def _check_given(want: pa.Table, grants: pa.Table) -> None:
    """The payloads read for seqs a caller gave are the grant versions its keys name."""
    n = min(want.num_rows, grants.num_rows)
    same = pc.and_(
        pc.equal(want["grant_id"].slice(0, n), grants["grant_id"].slice(0, n)),
        pc.equal(want["version"].slice(0, n), grants["version"].slice(0, n)),
    )
    bad = pc.invert(same.combine_chunks())
    k = pc.index(bad, True).as_py() if pc.any(bad).as_py() else (n if want.num_rows != grants.num_rows else -1)
    if k >= 0:
        k = min(k, want.num_rows - 1)
        gid, ver, seq = (want[c][k].as_py() for c in ("grant_id", "version", "seq"))
        raise TermsError(f"grant {gid} version {ver} is not at ledger seq {seq}")


def _seqs(ledger: Any, want: pa.Table) -> np.ndarray:
    """Ledger seqs of the wanted grant versions, in (grant_id, version) order."""
    frame = ledger.frame(columns=["seq", "kind", "grant_id", "version"])
    frame = frame.filter(pc.is_in(frame["kind"], pa.array(["grant", "amend"]))).drop_columns(["kind"])
    found = want.join(frame, ["grant_id", "version"], join_type="left outer", use_threads=False)
    lost = pc.is_null(found["seq"])
    if pc.any(lost).as_py():
        first = found.filter(lost).sort_by([("grant_id", "ascending"), ("version", "ascending")]).slice(0, 1)
        gid, ver = first["grant_id"][0].as_py(), first["version"][0].as_py()
        n = pc.sum(lost.cast(pa.int64())).as_py()
        raise TermsError(f"grant {gid} version {ver} is not in the ledger ({n} grant version(s) asked for are not)")
    found = found.sort_by([("grant_id", "ascending"), ("version", "ascending")])
    return found["seq"].to_numpy()


def _parsed(batches: Iterable[Sequence[tuple[int, Any]]]) -> Iterator[pa.Table]:
    """`_grants` of each batch, in order, `_PARSERS` at a time while the next batch is read."""
    with ThreadPoolExecutor(_PARSERS, thread_name_prefix="lab-terms-parse") as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(_grants, batch))
            if len(pending) > _PARSERS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _grants(batch: Sequence[tuple[int, Any]]) -> pa.Table:
    """(grant_id, version, parties, compensation) of each stored payload in a batch, in its order:
    Arrow's JSON reader on the batch's blob when every payload has today's shape, else Python."""
    blob = getattr(batch, "blob", None)
    if blob:
        try:
            t = pajson.read_json(pa.BufferReader(blob), read_options=_JSON_READ, parse_options=_JSON_PARSE)
        except pa.ArrowInvalid:  # stored before terms were per right: read in Python below
            t = None
        if t is not None and t.num_rows == len(batch):
            g = t["grant"].combine_chunks()
            if not g.null_count and not any(g.field(f).null_count for f in _FIELDS):
                return pa.Table.from_arrays([g.field(f) for f in _FIELDS], schema=_GRANTS)
    return _python_batch(batch)


def _dec(x: Any) -> str | None:
    """A stored amount or share as decimal text (floats, stored before decimals, via their shortest text)."""
    if x is None:
        return None
    d = Decimal(str(x)) if isinstance(x, float) else Decimal(x)
    return format(d, "f")


def _python_batch(batch: Sequence[tuple[int, Any]]) -> pa.Table:
    rows = []
    for seq, payload in batch:
        g = orjson.loads(payload) if isinstance(payload, (str, bytes)) else payload
        g = g.get("grant", g)
        parties = g.get("parties") or []
        comp = g.get("compensation") or []
        if isinstance(comp, dict):
            comp = legacy_compensation(comp, parties)
        if g.get("grant_id") is None:
            raise TermsError(f"ledger seq {seq}: not a grant version")
        rows.append(
            {
                "grant_id": g["grant_id"],
                "version": int(g.get("version", 1)),
                "parties": [{k: (_dec(p.get(k)) if k == "share" else p.get(k)) for k in _PARTY.names} for p in parties],
                "compensation": [
                    {k: (_dec(c.get(k)) if k in ("rate", "pool", "share") else c.get(k)) for k in _ENTRY.names}
                    for c in comp
                ],
            }
        )
    return pa.Table.from_pylist(rows, schema=_GRANTS)


def _explode(g: pa.Table) -> pa.Table:
    """Each party joined to its right's compensation entry (one per right at most), in party order."""
    parties, comp = g["parties"].combine_chunks(), g["compensation"].combine_chunks()
    p, c = pc.list_flatten(parties), pc.list_flatten(comp)
    p_owner = pc.list_parent_indices(parties).to_numpy().astype(np.int64)
    c_owner = pc.list_parent_indices(comp).to_numpy().astype(np.int64)
    width = len(_RIGHTS)
    pkey = p_owner * width + pc.index_in(pc.struct_field(p, "right"), value_set=_RIGHTS).fill_null(width).to_numpy()
    ckey = c_owner * width + pc.index_in(pc.struct_field(c, "right"), value_set=_RIGHTS).fill_null(width).to_numpy()
    order = np.argsort(ckey, kind="stable")
    sorted_keys = ckey[order]
    at = np.searchsorted(sorted_keys, pkey)
    hit = at < len(sorted_keys)
    hit[hit] = sorted_keys[at[hit]] == pkey[hit]
    entry = pa.array(order[at[hit]], pa.int64())
    mine = pa.array(hit)
    owner = pa.array(p_owner[hit], pa.int64())
    e = c.take(entry)
    pf = p.filter(mine)
    cols = {
        "grant_id": g["grant_id"].combine_chunks().take(owner),
        "version": g["version"].combine_chunks().take(owner),
        "right": pc.struct_field(pf, "right"),
        "model": pc.struct_field(e, "model"),
        **{k: pc.struct_field(e, k) for k in ("rate", "pool", "share", "currency")},
        "party_name": pc.struct_field(pf, "name"),
        "party_id": pc.struct_field(pf, "party_id"),
        "role": pc.struct_field(pf, "role"),
        "party_share": pc.struct_field(pf, "share"),
    }
    out = pa.Table.from_arrays([cols[f.name] for f in TERMS_SCHEMA], schema=TERMS_SCHEMA.with_metadata(None))
    return _only_model_amount(out)


def _only_model_amount(t: pa.Table) -> pa.Table:
    """The amount fields other than the model's own, null (they are, in any validated grant)."""
    for field in ("rate", "pool", "share"):
        models = [m for m, f in AMOUNT_FIELD.items() if f == field]
        keep = pc.is_in(t["model"], value_set=pa.array(models))
        if pc.any(pc.and_(pc.invert(keep), pc.is_valid(t[field]))).as_py():
            t = t.set_column(t.schema.get_field_index(field), field, pc.if_else(keep, t[field], pa.scalar(None, _S)))
    return t
