"""`lab outputs list`: every recorded sampling attempt (released, withheld, refused) from the registry."""

from __future__ import annotations

from typing import Annotated, Any, Optional, get_args

import typer

from ..sample.records import OutputKind
from . import app
from .errors import LabTyper
from .output import emit_json, fail, table
from .registry import JsonOpt, RegistryOpt, open_registry

outputs_app = LabTyper(
    no_args_is_help=True,
    add_completion=False,
    help="Sampling outputs recorded in the registry: released, withheld, refused.",
)
app.add_typer(outputs_app, name="outputs")

KINDS = get_args(OutputKind)


def replication_text(row: dict[str, Any]) -> str:
    if row["token_score"] is None and row["audio_score"] is None:
        return "-"
    return f"tokens {row['token_score']:.2f} / audio {row['audio_score']:.2f}"


def outcome_text(row: dict[str, Any]) -> str:
    """Where a released output is, why one was withheld (nearest recording), or why sampling was refused."""
    if row["kind"] == "released":
        return row["path"] or "-"
    if row["kind"] == "withheld":
        detail = (row["record"].get("replication") or {}).get("detail", "")
        return f"withheld, nearest {row['nearest_recording'] or '?'}" + (f": {detail}" if detail else "")
    reasons = [
        f"{r['reason']} ({'/'.join(x for x in (r.get('recording_id'), r.get('grant_id')) if x) or r['check']})"
        for r in row["refusals"]
    ]
    return "refused: " + ("; ".join(reasons) if reasons else "see the record")


@outputs_app.command("list")
def list_cmd(
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="only this checkpoint's outputs")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="released, withheld or refused")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="at most this many, newest first")] = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Recorded outputs, newest first: record id, kind, checkpoint, prompt, uses, territory, replication, outcome."""
    if kind is not None and kind not in KINDS:
        fail(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}", code=2, as_json=json_)
    with open_registry(registry, json_) as reg:
        rows = reg.outputs([checkpoint] if checkpoint else None, kind=kind, limit=limit)
    if json_:
        emit_json({"ok": True, "outputs": rows})
        return
    if not rows:
        which = " ".join(x for x in (kind, f"of {checkpoint}" if checkpoint else None) if x)
        typer.echo(f"no {which + ' ' if which else ''}outputs recorded (`lab sample` records every attempt)")
        return
    counts = ", ".join(f"{n} {k}" for k in KINDS if (n := sum(r["kind"] == k for r in rows)))
    table(
        f"{len(rows)} output(s) ({counts})",
        ["record", "kind", "checkpoint", "prompt", "uses", "territory", "replication", "file / reason"],
        [
            [
                r["record_id"][:12],
                r["kind"],
                r["checkpoint_id"],
                r["prompt"] if len(r["prompt"]) <= 40 else r["prompt"][:39] + "…",
                ",".join(r["uses"]),
                r["territory"],
                replication_text(r),
                outcome_text(r),
            ]
            for r in rows
        ],
    )
