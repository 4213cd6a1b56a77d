"""Clearance: catalogue × ledger × policy at a moment → per-item decision with one reason.

Columnar on purpose (pyarrow joins + numpy): a lab catalogue reaches millions of
recordings, and per-row Python with pydantic would take minutes where this takes seconds.
Fail closed throughout: an item is cleared only if some grant positively covers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..util.timestamps import to_ts
from .licences import LicenceClass, classify, classify_symbol, parse, LicenceError
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

LEDGER_COLUMNS = (
    "seq", "kind", "grant_id", "version", "supersedes", "status", "subject_recording_id",
    "subject_isrc", "subject_sha256", "subject_catalog", "purposes", "territories", "licence",
    "valid_from", "valid_until", "effective_at", "recorded_at",
)


@dataclass
class Clearance:
    """Decision per catalogue row (arrays aligned with the catalogue table)."""

    at: datetime
    policy: Policy
    cleared: np.ndarray  # bool
    reason: list[str | None]
    detail: list[str]
    grant_ids: list[list[str]]
    grant_seq: dict[str, int] = field(default_factory=dict)  # effective version of every clearing grant

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.reason:
            if r is not None:
                out[r] = out.get(r, 0) + 1
        return dict(sorted(out.items()))


def _licence_verdicts(licences: list[str], policy: Policy) -> dict[str, int]:
    accepted = {LicenceClass[c] for c in policy.accept_licence_classes}
    out = {}
    for expr in licences:
        klass = _classify_with_contracts(expr, policy.contracts) if expr else LicenceClass.unknown
        if klass is LicenceClass.unknown:
            out[expr] = _CODE["licence_unknown"]
        elif klass not in accepted:
            out[expr] = _CODE["licence_not_accepted"]
        else:
            out[expr] = OK
    return out


def _classify_with_contracts(expr: str, contracts: dict[str, str]) -> LicenceClass:
    if not contracts:
        return classify(expr)
    try:
        node = parse(expr)
    except LicenceError:
        return LicenceClass.unknown

    def walk(n) -> LicenceClass:
        if not hasattr(n, "args") or not n.args:
            return classify_symbol(getattr(n, "key", str(n)), contracts)
        parts = [walk(a) for a in n.args]
        return min(parts) if "OR" in type(n).__name__.upper() else max(parts)

    return walk(node)


def _map_unique(values: pa.ChunkedArray | pa.Array, fn) -> np.ndarray:
    """Apply fn once per distinct value (grants share a handful of purpose/territory/licence strings)."""
    enc = pc.dictionary_encode(values)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    dictionary = enc.dictionary.to_pylist()
    table = np.array([fn(v) for v in dictionary] + [fn(None)], dtype=np.int64)
    idx = enc.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False)
    return table[idx]


def effective_grants(frame: pa.Table, at: datetime, policy: Policy) -> pa.Table:
    """Latest version of every grant known at `at`, with a verdict code under `policy`."""
    t = to_ts(at)
    known = frame.filter(pc.less_equal(frame["recorded_at"], t))
    versions = known.filter(pc.is_in(known["kind"], pa.array(["grant", "amend"])))
    latest = versions.group_by("grant_id").aggregate([("seq", "max")])
    grants = versions.filter(pc.is_in(versions["seq"], latest["seq_max"]))

    amends = known.filter(pc.equal(known["kind"], "amend"))
    superseded = pc.filter(amends["supersedes"], pc.not_equal(amends["supersedes"], amends["grant_id"]))
    ends = known.filter(
        pc.and_(pc.is_in(known["kind"], pa.array(["revoke", "expire"])), pc.less_equal(known["effective_at"], t))
    )
    revoked = pc.filter(ends["grant_id"], pc.equal(ends["kind"], "revoke"))
    expired_ev = pc.filter(ends["grant_id"], pc.equal(ends["kind"], "expire"))

    n = grants.num_rows
    code = np.zeros(n, dtype=np.int64)

    def mark(mask, reason):
        mask = np.asarray(mask.to_numpy(zero_copy_only=False) if hasattr(mask, "to_numpy") else mask, dtype=bool)
        np.copyto(code, _CODE[reason], where=(code == OK) & mask)

    status = grants["status"]
    is_superseded = pc.is_in(grants["grant_id"], superseded).fill_null(False)
    # Later checks only apply where no earlier one fired: order = reporting priority.
    mark(pc.is_in(grants["grant_id"], revoked).fill_null(False), "revoked")
    mark(pc.or_(pc.is_in(grants["grant_id"], expired_ev).fill_null(False),
                pc.less_equal(grants["valid_until"], t).fill_null(False)), "expired")
    mark(pc.greater(grants["valid_from"], t).fill_null(True), "not_yet_valid")
    lic = _licence_verdicts(pc.unique(grants["licence"].fill_null("")).to_pylist(), policy)
    lic_code = _map_unique(grants["licence"].fill_null(""), lambda s: lic.get(s or "", _CODE["licence_unknown"]))
    np.copyto(code, lic_code, where=(code == OK) & (lic_code != OK))
    need = set(policy.purposes)
    mark(_map_unique(grants["purposes"], lambda s: int(not s or not need <= set(s.split()))), "purpose_not_granted")
    terr = policy.territory
    mark(_map_unique(grants["territories"],
                     lambda s: int(not s or not ({terr, WORLDWIDE} & set(s.split())))), "territory_not_granted")

    # An opt-out is a standing "no": it outranks every grant for the same subject, unless it
    # was itself revoked, superseded, or is outside its own window.
    opted_out = pc.equal(status, "opted_out").fill_null(False).to_numpy(zero_copy_only=False)
    window_ok = np.isin(code, [OK, _CODE["purpose_not_granted"], _CODE["territory_not_granted"],
                               _CODE["licence_unknown"], _CODE["licence_not_accepted"]])
    active_optout = opted_out & window_ok
    code = np.where(opted_out, np.where(active_optout, _CODE["opted_out"], -1), code)
    # Superseded versions drop out of the picture entirely.
    code = np.where(is_superseded.to_numpy(zero_copy_only=False), -1, code)

    out = grants.select(["seq", "grant_id", "status", "subject_recording_id", "subject_isrc",
                         "subject_sha256", "subject_catalog", "valid_until", "effective_at"])
    out = out.append_column("code", pa.array(code))
    out = out.filter(pc.greater_equal(out["code"], 0))
    return out.append_column("g", pa.array(np.arange(out.num_rows, dtype=np.int64)))


def _pairs(items: pa.Table, grants: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(item row, grant row) for every grant whose subject names this item.

    A grant matches when every identifier it names equals the item's; the first named
    identifier drives a hash join and the others are checked on the joined pairs.
    """
    item_idx, grant_idx = [], []
    cols = {"recording_id": "subject_recording_id", "isrc": "subject_isrc",
            "audio_sha256": "subject_sha256", "catalog": "subject_catalog"}
    remaining = grants
    for key in ("recording_id", "isrc", "audio_sha256", "catalog"):
        gcol = cols[key]
        has = pc.is_valid(remaining[gcol])
        driven, remaining = remaining.filter(has), remaining.filter(pc.invert(has))
        if driven.num_rows == 0:
            continue
        joined = items.select(["i", "recording_id", "isrc", "audio_sha256", "catalog"]).join(
            driven.select(["g", *cols.values()]), keys=key, right_keys=gcol, join_type="inner"
        )
        ok = np.ones(joined.num_rows, dtype=bool)
        for other, ocol in cols.items():
            if other == key or ocol not in joined.column_names:
                continue
            # Named on the grant → must equal the item's (a null on the item never matches).
            same = pc.equal(joined[other], joined[ocol]).fill_null(False)
            ok &= pc.or_(pc.is_null(joined[ocol]), same).to_numpy(zero_copy_only=False)
        joined = joined.filter(pa.array(ok))
        item_idx.append(joined["i"].to_numpy())
        grant_idx.append(joined["g"].to_numpy())
    if not item_idx:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(item_idx), np.concatenate(grant_idx)


def clear(catalog: pa.Table, frame: pa.Table, policy: Policy, at: datetime | None = None) -> Clearance:
    """Decide every catalogue row. `frame` is `Ledger.frame()` (one row per ledger event)."""
    at = at or policy.moment()
    n = catalog.num_rows
    items = catalog.select(["recording_id", "isrc", "audio_sha256", "catalog"])
    items = items.append_column("i", pa.array(np.arange(n, dtype=np.int64)))
    grants = effective_grants(frame, at, policy)
    item_idx, grant_idx = _pairs(items, grants)

    gcode = grants["code"].to_numpy()
    pair_code = gcode[grant_idx]
    # Best verdict per item: OK (0) wins unless an active opt-out covers the item.
    best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, item_idx, np.where(pair_code == _CODE["opted_out"], np.iinfo(np.int64).max, pair_code))
    opted = np.zeros(n, dtype=bool)
    opted[item_idx[pair_code == _CODE["opted_out"]]] = True

    status = catalog["status"].to_numpy(zero_copy_only=False)
    ingest_reason = catalog["reject_reason"].to_pylist()
    cleared = (best == OK) & ~opted & (status == "ok")

    gids = grants["grant_id"].to_pylist()
    gseq = grants["seq"].to_numpy()
    # Grant ids per item: the clearing ones for cleared items, all covering ones otherwise.
    order = np.lexsort((grant_idx, item_idx))
    item_sorted, grant_sorted = item_idx[order], grant_idx[order]
    starts = np.searchsorted(item_sorted, np.arange(n + 1))
    reason: list[str | None] = [None] * n
    detail: list[str] = [""] * n
    grant_ids: list[list[str]] = [[] for _ in range(n)]
    grant_seq: dict[str, int] = {}
    reject_detail = catalog["reject_detail"].to_pylist()
    for i in range(n):
        mine = grant_sorted[starts[i]:starts[i + 1]]
        if cleared[i]:
            clearing = mine[gcode[mine] == OK]
            grant_ids[i] = [gids[g] for g in clearing]
            for g in clearing:
                grant_seq[gids[g]] = int(gseq[g])
            continue
        grant_ids[i] = [gids[g] for g in mine]
        if status[i] != "ok":
            reason[i] = ingest_reason[i] or "decode_error"
            detail[i] = reject_detail[i] or ""
        elif len(mine) == 0:
            reason[i] = "no_grant"
            detail[i] = "no grant in the ledger names this recording, its ISRC, its audio or its catalogue"
        elif opted[i]:
            reason[i] = "opted_out"
            who = [gids[g] for g in mine if gcode[g] == _CODE["opted_out"]]
            detail[i] = f"opt-out on record: {', '.join(who)}"
        else:
            reason[i] = GRANT_REASONS[int(best[i]) - 1]
            detail[i] = "; ".join(
                f"{gids[g]}: {GRANT_REASONS[int(gcode[g]) - 1] if gcode[g] else 'ok'}" for g in mine
            )
    return Clearance(at=at, policy=policy, cleared=cleared, reason=reason, detail=detail,
                     grant_ids=grant_ids, grant_seq=grant_seq)


def recheck(catalog: pa.Table, frame: pa.Table, policy: Policy, expected: dict[str, str],
            at: datetime | None = None) -> dict[str, tuple[str, str]]:
    """Which of `expected` (recording_id → audio sha256) no longer clear now, and why.

    Training calls this at start: a snapshot is only as good as the consent behind it
    today, so a revocation or expiry since clearance stops the run.
    """
    ids = pa.array(sorted(expected))
    subset = catalog.filter(pc.is_in(catalog["recording_id"], ids))
    decision = clear(subset, frame, policy, at)
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
