"""`lab verify-output FILE`: is this audio file's content credential intact and signed under the lab root?

Exit 0 trusted; exit 1 tampered, untrusted or missing (the first word says which); exit 2 bad input.
`lab verify-output --root` prints where the root certificate is (the one file reviewers need).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import app
from .output import emit_json, fail, table


@app.command("verify-output")
def verify_output_cmd(
    file: Annotated[Optional[Path], typer.Argument(help="a WAV or FLAC written by `lab sample`")] = None,
    root_cert: Annotated[
        Optional[Path], typer.Option("--root-cert", help="the root certificate to trust (default: this lab's)")
    ] = None,
    root: Annotated[
        bool, typer.Option("--root", help="print this lab's root certificate path and sha256, then exit")
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
) -> None:
    """Check FILE's C2PA credential with the lab root as the only trust anchor; print what it claims."""
    from ..sample.ca import ensure_ca, root_fingerprint
    from ..sample.credentials import CLAIMS_SCHEMA, CredentialError, verify_output
    from ..settings import lab_home

    if root:
        ca = ensure_ca(lab_home())
        digest = root_fingerprint(ca.root_cert)
        if json_:
            emit_json({"ok": True, "root_cert": str(ca.root_cert), "sha256": digest})
        else:
            typer.echo(f"{ca.root_cert}\nsha256 {digest}")
        return
    if file is None:
        fail("give an audio FILE to check (or --root for the root certificate)", 2, as_json=json_, kind="usage")
    try:
        check = verify_output(file, root_cert=root_cert)
    except CredentialError as exc:
        fail(str(exc), 2, as_json=json_, kind="bad_input")
    if json_:
        emit_json({"ok": check.state == "trusted", "file": str(file), **check.model_dump(mode="json")})
    else:
        typer.echo(f"{check.state}: {check.detail}")
        if check.claims and check.claims.get("schema") == CLAIMS_SCHEMA:
            _print_claims(check.claims, trusted=check.state == "trusted")
        elif check.claims:
            typer.echo("its lab claims are in a shape this lab does not know (--json shows them)")
    raise typer.Exit(0 if check.state == "trusted" else 1)


def _print_claims(claims: dict, *, trusted: bool) -> None:
    head = claims.get("ledger_head") or {}
    rep = claims.get("replication") or {}
    decision = claims.get("decision") or {}
    rows = [
        ["checkpoint", f"{claims.get('checkpoint_id')} (card sha256 {str(claims.get('data_card_sha256'))[:16]}…)"],
        ["uses", f"{', '.join(claims.get('uses') or [])} in {claims.get('territory')}"],
        ["gate", f"{'allowed' if decision.get('allowed') else 'refused'} at {decision.get('at')}"],
        ["ledger head", f"#{head.get('seq')} {str(head.get('hash'))[:16]}…"],
        ["prompt", str(claims.get("prompt"))],
        [
            "replication",
            f"tokens {rep.get('token_score', 0):.3f}, audio {rep.get('audio_score', 0):.3f}" if rep else "not checked",
        ],
        ["credits", "; ".join(claims.get("credits") or []) or "-"],
    ]
    table("what the credential claims" + ("" if trusted else " (NOT trusted)"), ["", ""], rows)
