"""Prove a statement: its signature, its arithmetic, and its exposure against the signed cards.

`verify_statement` checks the lab key's signature over the whole folder (lines.csv, pools.csv,
statement.json, holders/). `reconcile` adds, in order, stopping at the first mismatch it names:
  1. the files' digests in statement.json, and the statement id (= sha256 of lines.csv);
  2. every pool's amount equals the sum of its lines' payable amounts (in minor units), and a
     recording's gross part equals the sum over its parties;
  3. the exposure the lines pay equals what the checkpoints' signed cards give: payable lines against
     the card's own rows minus the previous checkpoint's (the same rule as `exposure.difference`),
     revenue lines against the card's whole exposure; each card folder's signature is checked first;
  4. when a registry is given, its record of the period names the same statement and paid exactly the
     payable exposure the cards give.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .exposure import card_rows, difference
from .statements import HEADER_FILE, LINE_COLUMNS, LINES_FILE, POOLS_FILE, SIGNATURE, recorded


@dataclass
class Reconciliation:
    folder: Path
    period: str | None
    statement_id: str | None
    ok: bool = True
    problem: str | None = None  # the first mismatch, one line
    checks: list[str] = field(default_factory=list)  # what passed, in order

    def to_dict(self) -> dict:
        return {
            "folder": str(self.folder),
            "period": self.period,
            "statement_id": self.statement_id,
            "ok": self.ok,
            "problem": self.problem,
            "checks": self.checks,
        }


class _Mismatch(Exception):
    pass


def verify_statement(folder: str | Path, public_key: Path):
    """The signature over the statement folder (lab.cards.signing.VerifyResult)."""
    from lab.cards.signing import verify_folder

    return verify_folder(Path(folder), Path(public_key), SIGNATURE)


def _read_csv(path: Path, ints: tuple[str, ...]) -> pa.Table:
    head = path.open(encoding="utf-8").readline()
    cols = [c.strip('"') for c in head.strip().split(",")]
    types = {c: (pa.int64() if c in ints else pa.string()) for c in cols}
    return pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )


def _minor(text: pa.ChunkedArray) -> pa.Array:
    """'12.34' → 1234 (the statement writes exactly the currency's digits)."""
    return pc.cast(pc.replace_substring(text, ".", ""), pa.int64())


def _key(t: pa.Table) -> dict[tuple, int]:
    return {
        (c, r, g): int(ms)
        for c, r, g, ms in zip(
            t["checkpoint_id"].to_pylist(),
            t["recording_id"].to_pylist(),
            t["grant_id"].to_pylist(),
            t["exposure_ms"].to_pylist(),
        )
    }


def _first_diff(expected: dict, found: dict, what: str) -> None:
    for k in sorted(set(expected) | set(found)):
        if expected.get(k) != found.get(k):
            c, r, g = k
            raise _Mismatch(
                f"{what}: checkpoint {c} recording {r} grant {g}: statement {found.get(k)} ms, "
                f"signed cards {expected.get(k)} ms"
            )


def _cards_payable(checkpoints: list[dict], public_key: Path, verify_cards: bool) -> pa.Table:
    from lab.cards.signing import verify_folder

    parts, previous = [], {}
    for c in checkpoints:
        cid, prev = c["checkpoint_id"], c.get("previous")
        previous[cid] = prev
        for ident, folder in ((cid, c["folder"]), (prev, c.get("previous_folder"))):
            if ident is None:
                continue
            folder = Path(folder) if folder else None
            if folder is None or not folder.is_dir():
                raise _Mismatch(f"checkpoint {ident}: its folder {folder} is not here to check the card against")
            if verify_cards:
                res = verify_folder(folder, public_key)
                if not res.ok:
                    raise _Mismatch(f"checkpoint {ident}: card signature {res.kind}: {res.reason}")
            parts.append(card_rows(folder, ident))
    rows = pa.concat_tables(parts) if parts else None
    if rows is None:
        from .exposure import EXPOSURE_SCHEMA

        return EXPOSURE_SCHEMA.empty_table()
    return difference(rows, previous)


def reconcile(
    folder: str | Path,
    *,
    public_key: Path,
    registry=None,
    verify_cards: bool = True,
) -> Reconciliation:
    """Check a statement folder; `ok` False with `problem` naming the first mismatch."""
    folder = Path(folder)
    out = Reconciliation(folder, None, None)
    try:
        res = verify_statement(folder, public_key)
        if not res.ok:
            raise _Mismatch(f"signature {res.kind}: {res.reason}")
        out.checks.append(f"signature ({res.files} files)")
        header = json.loads((folder / HEADER_FILE).read_text(encoding="utf-8"))
        out.period, out.statement_id = header.get("period"), header.get("statement_id")
        for name, digest in header.get("files", {}).items():
            if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest:
                raise _Mismatch(f"{name}: sha256 differs from statement.json")
        if hashlib.sha256((folder / LINES_FILE).read_bytes()).hexdigest() != out.statement_id:
            raise _Mismatch(f"{LINES_FILE}: sha256 is not the statement id {out.statement_id}")
        out.checks.append("file digests and statement id")

        lines = _read_csv(folder / LINES_FILE, ("grant_version", "exposure_ms"))
        pools = _read_csv(folder / POOLS_FILE, ("grant_version", "exposure_ms", "recordings", "amount_minor"))
        if tuple(lines.column_names) != LINE_COLUMNS:
            raise _Mismatch(f"{LINES_FILE}: columns are not a statement's")
        _pools_add_up(lines, pools)
        out.checks.append(f"{pools.num_rows} pools equal the sum of their {lines.num_rows} lines")

        checkpoints = _with_previous_folders(header.get("checkpoints", []), registry)
        card_pay = _cards_payable(checkpoints, public_key, verify_cards)
        pay = lines.filter(pc.equal(lines["exposure_basis"], "payable"))
        pay = pay.group_by(["checkpoint_id", "recording_id", "grant_id", "exposure_ms"]).aggregate([])
        expected = _key(card_pay)
        paid_lines = _key(pay)
        _first_diff({k: expected.get(k) for k in paid_lines}, paid_lines, "payable exposure")
        _revenue_exposure(lines, header, registry, public_key, verify_cards)
        out.checks.append(f"exposure of {len(paid_lines)} payable rows equals the signed cards")

        if registry is not None and out.period:
            rec = recorded(registry, out.period)
            if rec is None:
                raise _Mismatch(f"the registry holds no statement for {out.period}")
            if rec["statement_id"] != out.statement_id:
                raise _Mismatch(f"the registry records statement {rec['statement_id'][:12]} for {out.period}")
            _first_diff(expected, _paid_rows(registry, out.period), "paid exposure in the registry")
            out.checks.append("the registry's record of the period")
    except _Mismatch as exc:
        out.ok, out.problem = False, str(exc)
    except (OSError, ValueError, KeyError, pa.ArrowInvalid) as exc:
        out.ok, out.problem = False, f"unreadable statement: {exc}"
    return out


def _pools_add_up(lines: pa.Table, pools: pa.Table) -> None:
    lines = lines.append_column("payable_minor", _minor(lines["payable"]))
    sums = dict(
        zip(
            *lines.group_by("pool_id")
            .aggregate([("payable_minor", "sum")])
            .select(["pool_id", "payable_minor_sum"])
            .to_pydict()
            .values()
        )
    )
    for pid, amount, minor in zip(
        pools["pool_id"].to_pylist(), pools["amount"].to_pylist(), pools["amount_minor"].to_pylist()
    ):
        if int(Decimal(amount).scaleb(len(amount.partition(".")[2]))) != minor:
            raise _Mismatch(f"pool {pid}: amount {amount} is not {minor} minor units")
        got = sums.pop(pid, 0)
        if got != minor:
            raise _Mismatch(f"pool {pid}: lines add up to {got} minor units, the pool is {minor}")
    if sums:
        raise _Mismatch(f"lines name pool {sorted(sums)[0]}, which pools.csv does not list")
    lines = lines.append_column("gross_minor", _minor(lines["gross"]))
    g = lines.group_by(["pool_id", "checkpoint_id", "recording_id"]).aggregate(
        [("payable_minor", "sum"), ("gross_minor", "min"), ("gross_minor", "max")]
    )
    bad = g.filter(
        pc.or_(
            pc.not_equal(g["gross_minor_min"], g["gross_minor_max"]),
            pc.not_equal(g["gross_minor_min"], g["payable_minor_sum"]),
        )
    )
    if bad.num_rows:
        r = bad.slice(0, 1).to_pylist()[0]
        raise _Mismatch(
            f"pool {r['pool_id']} recording {r['recording_id']}: parties' lines add up to {r['payable_minor_sum']}, "
            f"gross is {r['gross_minor_max']} minor units"
        )


def _with_previous_folders(checkpoints: list[dict], registry) -> list[dict]:
    """The statement names each checkpoint's previous one; its folder comes from the registry (or a
    checkpoint of the same statement)."""
    here = {c["checkpoint_id"]: c.get("folder") for c in checkpoints}
    prevs = [c["previous"] for c in checkpoints if c.get("previous") and c["previous"] not in here]
    if prevs and registry is not None:
        here |= {r["checkpoint_id"]: r["folder"] for r in registry.checkpoints(prevs)}
    return [dict(c, previous_folder=here.get(c.get("previous"))) for c in checkpoints]


def _revenue_exposure(lines: pa.Table, header: dict, registry, public_key: Path, verify_cards: bool) -> None:
    rev = lines.filter(pc.equal(lines["exposure_basis"], "card"))
    if not rev.num_rows:
        return
    from lab.cards.signing import verify_folder

    folders = {c["checkpoint_id"]: c.get("folder") for c in header.get("checkpoints", [])}
    ids = sorted(set(rev["checkpoint_id"].to_pylist()))
    if registry is not None:
        folders |= {r["checkpoint_id"]: r["folder"] for r in registry.checkpoints(ids)}
    expected = {}
    for cid in ids:
        folder = Path(folders.get(cid) or "")
        if not folder.is_dir():
            raise _Mismatch(f"checkpoint {cid}: its folder is not here to check revenue exposure against")
        if verify_cards:
            res = verify_folder(folder, public_key)
            if not res.ok:
                raise _Mismatch(f"checkpoint {cid}: card signature {res.kind}: {res.reason}")
        from lab.cards.files import load_card
        from lab.registry.entry import explode_grants

        from .exposure import to_ms

        rows = explode_grants(load_card(folder).sources, cid)
        rows = rows.append_column("exposure_ms", to_ms(rows["seconds_seen"]))
        rows = rows.group_by(["checkpoint_id", "recording_id", "grant_id"]).aggregate([("exposure_ms", "sum")])
        expected |= _key(rows.rename_columns(["checkpoint_id", "recording_id", "grant_id", "exposure_ms"]))
    found = _key(rev.group_by(["checkpoint_id", "recording_id", "grant_id", "exposure_ms"]).aggregate([]))
    _first_diff({k: expected.get(k) for k in found}, found, "revenue exposure")


def _paid_rows(registry, period: str) -> dict[tuple, int]:
    from sqlalchemy import select

    from lab.registry.royalty_schema import paid

    c = paid.c
    with registry.engine.connect() as conn:
        q = select(c.checkpoint_id, c.recording_id, c.grant_id, c.exposure_ms).where(c.period == period)
        return {(a, b, g): int(ms) for a, b, g, ms in conn.execute(q)}
