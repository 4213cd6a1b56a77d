"""`lab licences explain EXPR`: the class a licence expression puts a recording in, and why."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .output import console, emit_json, fail, table

licences_app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Licence expressions (SPDX) and the classes a policy accepts."
)
app.add_typer(licences_app, name="licences")


@licences_app.command("explain")
def explain_cmd(
    expression: Annotated[str, typer.Argument(metavar="EXPR", help="SPDX expression, e.g. 'MIT OR GPL-3.0-only'.")],
    policy: Annotated[
        Optional[str],
        typer.Option(
            "--policy", help="Apply this policy's licence_classes overrides and say whether it accepts the class."
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
) -> None:
    """Each licence symbol, its class and the rule that decided it, then how AND / OR combined them."""
    from ..rights.licences import explain
    from .verdicts import load_policy

    pol = None
    if policy:
        try:
            pol = load_policy(policy)
        except Exception as exc:  # noqa: BLE001 - a missing or invalid policy file is bad input
            fail(f"policy {policy!r}: {str(exc).splitlines()[0]}", code=2, as_json=json_)
    why = explain(expression, pol.licence_classes if pol else None)
    if why.error:
        fail(why.error, code=2, as_json=json_, expression=expression)
    accepted = None if pol is None else why.licence_class in pol.accept_licence_classes
    if json_:
        emit_json({"ok": True, **why.to_dict(), **({"policy": pol.name, "accepted": accepted} if pol else {})})
        return
    table(
        f"{why.expression} → {why.licence_class}",
        ["symbol", "class", "decided by"],
        [[s.symbol + (f" WITH {s.exception}" if s.exception else ""), s.licence_class, s.rule] for s in why.symbols],
    )
    for step in why.steps:
        console.print(step, markup=False, highlight=False, soft_wrap=True)
    if pol is not None:
        verdict = "accepts" if accepted else "does not accept"
        console.print(
            f"policy '{pol.name}' {verdict} {why.licence_class} (accepts {', '.join(pol.accept_licence_classes)})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
