"""`lab audit CHECKPOINT`: is this checkpoint what it says, and does its consent still hold?"""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from .output import emit_json, table


@app.command("audit")
def audit_cmd(
    checkpoint: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="a checkpoint folder (…/checkpoints/step-000200)"
    ),
    public_key: Path = typer.Option(None, help="PEM public key; default: this lab's key"),
    ledger: str = typer.Option(None, help="ledger URL for the consent-now check (default: this lab's)"),
    offline: bool = typer.Option(False, help="skip the ledger checks"),
    html: Path = typer.Option(None, "--html", help="also write a self-contained HTML report to this file"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Signature, hashes, data card, model card, lineage, and consent now, with the checkpoint's
    status under on_termination (ok | retained | retrain | retired). Exit 0 only if all pass."""
    from ..audit.verify import audit_checkpoint
    from ..cards.signing import ensure_keypair
    from ..registry.publish import remember_audit
    from ..rights.heads import open_ledger
    from ..settings import keys_dir, ledger_url

    key = public_key or ensure_keypair(keys_dir()).public_path
    books = None if offline else open_ledger(ledger or ledger_url())  # with its signed heads (lab.rights.heads)
    report = audit_checkpoint(checkpoint, public_key=key, ledger=books)
    remember_audit(checkpoint, report.to_dict())  # shown by `lab checkpoints list` when registered
    if html is not None:
        from ..audit.report import write_html

        write_html(report, html)
    if as_json:
        emit_json(report.to_dict() | ({"html": str(html)} if html is not None else {}))
    else:
        table(
            f"audit of {checkpoint}",
            ["check", "result", "detail"],
            [[c.name, "pass" if c.ok else "FAIL", c.detail] for c in report.checks],
        )
        typer.echo(f"status: {report.status}")
        if html is not None:
            typer.echo(f"report: {html}")
        typer.echo("PASS" if report.ok else "FAIL")
    raise typer.Exit(0 if report.ok else 1)
