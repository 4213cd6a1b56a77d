"""`lab card show CHECKPOINT`: a checkpoint's data card — identity, lineage, validity, exposure and its sources."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from . import app
from .errors import LabTyper
from .output import console, emit_json, fail, table

card_app = LabTyper(no_args_is_help=True, help=__doc__)
app.add_typer(card_app, name="card")


class SortBy(str, Enum):
    seconds = "seconds"
    id = "id"


def _holders(holders: list[dict[str, Any]]) -> str:
    return "; ".join(f"{h['name']} ({h['right']} {h['share']:g}%)" for h in holders)


@card_app.command("show")
def show_cmd(
    checkpoint: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="a checkpoint folder (…/checkpoints/step-000200)"
    ),
    limit: int = typer.Option(20, "--limit", min=0, help="source rows to print (all are in sources.parquet)"),
    sort: SortBy = typer.Option(SortBy.seconds, "--sort", help="seconds: longest seen first; id: by recording id"),
    as_json: bool = typer.Option(False, "--json", help="the card and the selected rows as JSON"),
) -> None:
    """Print the validated data card; exit 1 naming every problem if it does not validate."""
    from ..cards import CardError, load_card
    from ..cards.render import top_sources

    try:
        bundle = load_card(checkpoint)
    except CardError as exc:
        fail(f"{checkpoint}: the data card does not validate", 2, as_json=as_json, kind="bad_card", problems=exc.errors)
    card = bundle.card
    rows = top_sources(bundle.sources, limit, by=sort.value)
    if as_json:
        emit_json({"ok": True, "card": card.to_json(), "sources": rows, "sources_shown": len(rows)})
        return
    ident, lin, snap, v = card.identity, card.lineage, card.snapshot, card.validity
    exp, src = card.exposure, card.sources
    parent = lin.parent_checkpoint
    table(
        f"data card of {checkpoint}",
        ["", ""],
        [
            ["checkpoint", f"{ident.checkpoint_id} (step {ident.step}, seed {ident.seed})"],
            ["created", ident.created_at.isoformat()],
            ["code", f"{ident.code_commit}{' (dirty)' if ident.code_dirty else ''}, lab {ident.lab_version}"],
            ["base model", f"{lin.base_model.id} ({lin.base_model.kind}, licence {lin.base_model.licence})"],
            [
                "relation",
                lin.relation
                + (f" from {parent.checkpoint_id} (card {parent.data_card_sha256[:16]}…)" if parent else ""),
            ],
            [
                "snapshot",
                f"{snap.snapshot_id} ({snap.catalog}, policy {snap.policy.name}, ledger head "
                f"#{snap.ledger_head_seq}, cleared {snap.cleared_at.isoformat()})",
            ],
            ["purposes", ", ".join(v.purposes) or "none"],
            ["territories", "worldwide" if v.territories == ["WW"] else (", ".join(v.territories) or "none")],
            ["valid until", v.earliest_expiry.isoformat() if v.earliest_expiry else "no expiry"],
            ["on termination", v.on_termination or "n/a"],
            ["exposure", f"{exp.total_seconds:,.1f} s, {exp.samples} samples, {exp.tokens} tokens"],
            [
                "sources",
                f"{src.rows} rows ({src.own_rows} own, {src.inherited_rows} inherited), "
                f"{src.total_seconds:,.1f} s; {src.file} sha256 {src.sha256[:16]}…",
            ],
            ["exclusions", ", ".join(f"{k}: {n}" for k, n in sorted(card.exclusions.items())) or "none"],
        ],
    )
    table(
        f"sources ({len(rows)} of {src.rows}, by {sort.value})",
        ["recording", "seen by", "title", "rights holders", "licence", "territories", "valid until", "seconds"],
        [
            [
                r["recording_id"],
                r["seen_by"],
                r["title"],
                _holders(r["rights_holders"]),
                r["licence"],
                ", ".join(r["territories"]),
                r["valid_until"].date().isoformat() if r["valid_until"] else "open",
                f"{r['seconds_seen']:,.1f}",
            ]
            for r in rows
        ],
    )
    if len(rows) < src.rows:
        console.print(f"{src.rows - len(rows)} more in {checkpoint / src.file} (--limit N, or pandas.read_parquet)")
