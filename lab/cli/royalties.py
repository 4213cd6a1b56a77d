"""`lab royalties statement|reconcile|verify`: statements per rights holder from exposure, and their proof."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import app
from .errors import LabTyper
from .output import console, emit_json, fail, table

royalties_app = LabTyper(
    no_args_is_help=True, add_completion=False, help="Royalty statements: exposure × grant terms, exact to the cent."
)
app.add_typer(royalties_app, name="royalties")

PeriodOpt = Annotated[str, typer.Option("--period", help="The UTC month, YYYY-MM.")]
LedgerOpt = Annotated[Optional[str], typer.Option("--ledger", help="ledger URL (default: this lab's)")]
RegistryOpt = Annotated[Optional[str], typer.Option("--registry", help="registry URL (default: this lab's)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def _out_default() -> Path:
    from ..settings import lab_home

    return lab_home() / "royalties"


@royalties_app.command("statement")
def statement_cmd(
    period: PeriodOpt,
    revenue: Annotated[
        Optional[Path], typer.Option("--revenue", help="CSV: checkpoint_id or output_id, amount, currency[, period]")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="statements folder (default: $LAB_HOME/royalties)")
    ] = None,
    licensee: Annotated[str, typer.Option("--licensee", help="who pays (the lab's name on every line)")] = "lab",
    ledger: LedgerOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write the period's signed statement (lines.csv, pools.csv, statement.json, HTML per holder) and record
    what it paid; a re-run gives the same statement id and pays nothing twice."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..rights.consent import LedgerBroken
    from ..rights.heads import open_ledger
    from ..rights.ledger import LedgerError
    from ..royalties.statements import RoyaltyInputError, RoyaltyRefused, issue
    from ..royalties.terms import TermsError
    from ..settings import keys_dir, lab_home
    from .registry import open_registry

    try:
        with open_registry(registry, json_) as reg, open_ledger(ledger, home=lab_home()) as led:
            done = issue(
                reg, led, period, out=out or _out_default(), key_dir=keys_dir(), licensee=licensee, revenue_file=revenue
            )
    except RoyaltyInputError as exc:
        fail(str(exc), code=2, as_json=json_)
    except (RoyaltyRefused, TermsError, LedgerError, LedgerBroken, SQLAlchemyError) as exc:
        fail(f"statement {period}: {getattr(exc, 'orig', None) or exc}", as_json=json_)
    info = {
        "ok": True,
        "period": done.period,
        "statement_id": done.statement_id,
        "folder": str(done.folder),
        "checkpoints": done.checkpoints,
        "exposure_rows": done.exposure_rows,
        "pools": done.pools,
        "lines": done.lines,
        "totals": done.totals_by_currency,
        "written": done.reissued,
        "waiting": done.waiting,
    }
    if json_:
        emit_json(info)
        return
    table(
        f"royalty statement {done.period}" + ("" if done.reissued else " (already issued, unchanged)"),
        ["statement", "checkpoints", "pools", "lines", "totals", "folder"],
        [
            [
                done.statement_id[:16],
                done.checkpoints,
                done.pools,
                done.lines,
                ", ".join(f"{a} {c}" for c, a in done.totals_by_currency.items()) or "-",
                done.folder,
            ]
        ],
    )
    if done.waiting:
        console.print(
            f"{done.waiting} checkpoint(s) created by the end of {done.period} are not in this issued statement: "
            "the next period's statement pays them",
            highlight=False,
            markup=False,
        )


def _public_key() -> Path:
    from ..cards.signing import PUBLIC_KEY_NAME
    from ..settings import keys_dir

    return keys_dir() / PUBLIC_KEY_NAME


@royalties_app.command("reconcile")
def reconcile_cmd(
    period: PeriodOpt,
    folder: Annotated[
        Optional[Path], typer.Option("--dir", help="the statement folder (default: the registry's record)")
    ] = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Prove a period's statement: signature, each pool = the sum of its lines, exposure = the signed cards.
    Exit 1 naming the first mismatch."""
    from ..royalties.reconcile import reconcile
    from ..royalties.statements import RoyaltyInputError, period_bounds, recorded
    from .registry import open_registry

    try:
        period_bounds(period)
    except RoyaltyInputError as exc:
        fail(str(exc), code=2, as_json=json_)
    with open_registry(registry, json_) as reg:
        if folder is None:
            rec = recorded(reg, period)
            if rec is None:
                fail(
                    f"no statement recorded for {period} (run `lab royalties statement --period {period}`)",
                    code=2,
                    as_json=json_,
                )
            folder = Path(rec["folder"])
        if not folder.is_dir():
            fail(f"statement folder not found: {folder}", code=2, as_json=json_)
        result = reconcile(folder, public_key=_public_key(), registry=reg)
    if not result.ok:
        fail(f"reconcile {period}: {result.problem}", as_json=json_, folder=str(folder))
    if json_:
        emit_json({"ok": True, **result.to_dict()})
        return
    console.print(f"reconciled {period}: statement {result.statement_id}", highlight=False)
    for c in result.checks:
        console.print(f"  ok  {c}", highlight=False, markup=False)


@royalties_app.command("verify")
def verify_cmd(
    folder: Annotated[Path, typer.Argument(help="a statement folder (…/royalties/YYYY-MM)")],
    json_: JsonOpt = False,
) -> None:
    """Check the lab key's signature over a statement folder (exit 1 if anything changed)."""
    from ..royalties.reconcile import verify_statement

    if not folder.is_dir():
        fail(f"statement folder not found: {folder}", code=2, as_json=json_)
    res = verify_statement(folder, _public_key())
    if not res.ok:
        fail(f"statement {folder}: signature {res.kind}: {res.reason}", as_json=json_)
    if json_:
        emit_json({"ok": True, "folder": str(folder), "files": res.files})
    else:
        console.print(f"signature ok: {folder} ({res.files} files)", highlight=False, markup=False)
