"""`lab impact GRANT_ID|RECORDING_ID`: which checkpoints (and fine-tunes of them) a grant or recording touches,
and what happens to their released outputs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .output import console, emit_json, fail, table

_STYLE = {"retain": "green", "retrain": "yellow", "retire": "bold red"}
_OUTPUT_STYLE = {"keep": "green", "withdraw": "bold red"}


def print_impact(report, *, heading: str | None = None) -> None:
    """The human view of an ImpactReport (also used by `lab rights revoke` / `import`)."""
    title = heading or f"impact of {report.query}"
    if not report.checkpoints:
        typer.echo(f"{title}: no registered checkpoint is touched")
        return
    counts = ", ".join(f"{n} {rule}" for rule, n in report.counts().items() if n)
    table(
        f"{title} ({report.kind}; {counts})",
        ["checkpoint", "rule", "how", "grants", "recordings", "seconds"],
        [
            [
                c.checkpoint_id,
                c.rule,
                "direct" if c.direct and not c.via else f"lineage (from {c.via})",
                ",".join(c.grants) or "-",
                ",".join(c.recordings[:3]) + (" …" if len(c.recordings) > 3 else "") or "-",
                f"{c.seconds:.1f}",
            ]
            for c in report.checkpoints
        ],
    )
    shown = set()
    for c in report.checkpoints:
        if c.rule not in shown:
            console.print(f"[{_STYLE[c.rule]}]{c.rule}[/]: {c.meaning}", highlight=False)
            shown.add(c.rule)
    for c in report.checkpoints:
        if c.commands:
            console.print(f"retrain {c.checkpoint_id}:", highlight=False)
            for cmd in c.commands:
                console.print(f"  {cmd}", markup=False, highlight=False, soft_wrap=True)
    print_outputs(report)


def print_outputs(report) -> None:
    """The released outputs of the touched checkpoints: keep or withdraw each."""
    if not report.outputs:
        return
    counts = ", ".join(f"{n} {action}" for action, n in report.output_counts().items() if n)
    table(
        f"released outputs of these checkpoints ({counts})",
        ["output", "checkpoint", "action", "created", "prompt", "file"],
        [
            [o.record_id[:12], o.checkpoint_id, o.action, o.created_at[:19], o.prompt, o.path or "-"]
            for o in report.outputs
        ],
    )
    for action in dict.fromkeys(o.action for o in report.outputs):
        meaning = next(o.meaning for o in report.outputs if o.action == action)
        console.print(f"[{_OUTPUT_STYLE[action]}]{action}[/]: {meaning}", highlight=False)


@app.command("impact")
def impact_cmd(
    subject: Annotated[str, typer.Argument(help="a grant id, or a recording id (also an ISRC or audio sha256)")],
    catalog: Annotated[Optional[str], typer.Option(help="the recording's catalogue (default: any)")] = None,
    ledger: Annotated[Optional[str], typer.Option("--ledger", help="ledger URL (default: this lab's)")] = None,
    registry: Annotated[Optional[str], typer.Option("--registry", help="registry URL (default: this lab's)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
) -> None:
    """Every registered checkpoint the subject touches, directly or through lineage, the rule that applies,
    and whether each of their released outputs is kept or withdrawn."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..audit.impact import impact
    from ..rights.ledger import Ledger, LedgerError
    from .registry import open_registry

    try:
        with open_registry(registry, json_) as reg, Ledger(ledger) as led:
            report = impact(reg, led, subject, catalog=catalog)
    except (LedgerError, SQLAlchemyError) as exc:
        fail(f"impact of {subject}: {getattr(exc, 'orig', None) or exc}", as_json=json_)
    if json_:
        emit_json({"ok": True, **report.to_dict()})
    else:
        print_impact(report)
