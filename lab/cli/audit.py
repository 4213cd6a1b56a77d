"""`lab audit CHECKPOINT`: is this checkpoint what it says, and does its consent still hold?"""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from .output import emit_json, table


@app.command("audit")
def audit_cmd(
    checkpoint: Path = typer.Argument(..., help="a checkpoint folder (…/checkpoints/step-000200)"),
    public_key: Path = typer.Option(None, help="PEM public key; default: this lab's key"),
    ledger: str = typer.Option(None, help="ledger URL for the consent-now check (default: this lab's)"),
    offline: bool = typer.Option(False, help="skip the ledger checks"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Signature, hashes, data card, model card, lineage, and consent now. Exit 0 only if all pass."""
    from ..audit.verify import audit_checkpoint
    from ..cards.signing import ensure_keypair
    from ..rights.ledger import Ledger
    from ..settings import keys_dir, ledger_url

    key = public_key or ensure_keypair(keys_dir()).public_path
    report = audit_checkpoint(checkpoint, public_key=key, ledger=None if offline else Ledger(ledger or ledger_url()))
    if as_json:
        emit_json(report.to_dict())
    else:
        table(f"audit of {checkpoint}", ["check", "result", "detail"],
              [[c.name, "pass" if c.ok else "FAIL", c.detail] for c in report.checks])
        typer.echo("PASS" if report.ok else "FAIL")
    raise typer.Exit(0 if report.ok else 1)
