"""`lab catalog …`: ingest a folder of consented audio, show and list stored catalogues and their cards."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from lab.catalog.card import read_dataset_card, write_dataset_card
from lab.catalog.importers import CatalogError
from lab.catalog.ingest import ingest as run_ingest
from lab.catalog.store import list_catalogs, load_catalog_table, load_manifest, save_catalog

from . import app
from .errors import LabTyper, classify
from .output import console, emit_json, fail, table

catalog_app = LabTyper(no_args_is_help=True, help=__doc__)
app.add_typer(catalog_app, name="catalog")

_MAX_HUMAN_ISSUES = 50


def _esc(rows: list[list[Any]]) -> list[list[str]]:
    """Cells as text; `output.table` escapes rich markup, so a title like "[/]" prints as itself."""
    return [[str(v) for v in r] for r in rows]


def _fail_catalog(exc: CatalogError, as_json: bool) -> None:
    issues = [i.to_dict() for i in exc.issues]
    kind, code = classify(exc)  # a malformed or unknown catalogue is bad input (2), a tampered store refused (1)
    if as_json:
        fail(exc.summary, code, as_json=True, kind=kind, errors=issues)
    shown = [str(i) for i in exc.issues[:_MAX_HUMAN_ISSUES]]
    if len(exc.issues) > _MAX_HUMAN_ISSUES:
        shown.append(f"… and {len(exc.issues) - _MAX_HUMAN_ISSUES} more (use --json for all)")
    fail("\n".join([exc.summary, *("  " + s for s in shown)]), code, kind=kind)


def _counts_rows(counts: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = [["ok", "", counts["ok"]]]
    for reason, n in counts.get("rejected_by_reason", {}).items():
        rows.append(["rejected", reason, n])
    rows.append(["total", "", counts["total"]])
    return rows


@catalog_app.command("ingest")
def ingest_cmd(
    source: Path = typer.Argument(..., help="folder holding the audio and metadata.jsonl / metadata.csv"),
    catalog: str = typer.Option(..., "--catalog", "-c", help="catalogue name"),
    metadata: Optional[Path] = typer.Option(None, "--metadata", help="metadata file (default: in SOURCE)"),
    workers: int = typer.Option(2, "--workers", "-w", min=1, help="threads hashing and decoding"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Verify every recording in SOURCE and store the catalogue (rejected rows are kept, with reasons)."""
    try:
        cat = run_ingest(source, catalog, metadata=metadata, workers=workers)
        path = save_catalog(cat)
        card = write_dataset_card(cat)
    except CatalogError as exc:
        _fail_catalog(exc, as_json)
    counts = cat.counts()
    rejected = [
        {
            "recording_id": i.recording_id,
            "reason": i.reject_reason,
            "detail": i.reject_detail,
            "audio_path": i.audio_path,
        }
        for i in cat.rejected_items
    ]
    if as_json:
        emit_json(
            {
                "ok": True,
                "catalog": cat.name,
                "path": str(path),
                "root": str(cat.root),
                "card": str(card),
                "counts": counts,
                "parquet_sha256": cat.manifest["parquet"]["sha256"],
                "rejected": rejected,
            }
        )
        return
    table(f"catalogue {cat.name}", ["status", "reason", "items"], _counts_rows(counts))
    if rejected:
        table(
            "rejected items (kept in the catalogue, never used)",
            ["recording_id", "reason", "audio_path", "detail"],
            _esc([[r["recording_id"], r["reason"], r["audio_path"], r["detail"]] for r in rejected]),
        )
    console.print(f"written to {escape(str(path))} (dataset card: lab catalog card {escape(cat.name)})")


@catalog_app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="catalogue name"),
    limit: int = typer.Option(100, "--limit", "-n", min=0, help="items to list (0: all)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """A stored catalogue: its manifest and items (integrity-checked)."""
    try:
        manifest = load_manifest(name)
        tbl = load_catalog_table(name)
    except CatalogError as exc:
        _fail_catalog(exc, as_json)
    total = tbl.num_rows
    shown = tbl if limit == 0 else tbl.slice(0, limit)
    items = shown.to_pylist()
    if as_json:
        emit_json({"ok": True, "manifest": manifest, "items_total": total, "items_shown": len(items), "items": items})
        return
    table(
        (f"catalogue {name} ({manifest['root']}, ingested {manifest.get('created_at', '?')})"),
        ["status", "reason", "items"],
        _counts_rows(manifest["counts"]),
    )
    rows = []
    for it in items:
        dur = f"{it['duration_s']:.2f}" if it["duration_s"] is not None else ""
        sr_ch = f"{it['sample_rate']}/{it['channels']}" if it["sample_rate"] else ""
        rows.append(
            [
                it["recording_id"],
                "ok" if it["status"] == "ok" else it["reject_reason"],
                dur,
                sr_ch,
                it["format"] or "",
                (it["audio_sha256"] or "")[:12],
                it["audio_path"],
            ]
        )
    table(
        f"items ({len(items)} of {total}; rejected ones show their reason)",
        ["recording_id", "status", "seconds", "Hz/ch", "format", "sha256", "audio_path"],
        _esc(rows),
    )


@catalog_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Stored catalogues."""
    manifests = list_catalogs()
    if as_json:
        emit_json({"ok": True, "catalogs": manifests})
        return
    rows = []
    for m in manifests:
        if "error" in m:
            rows.append([m["name"], "?", "?", "", f"unreadable: {m['error']}"])
            continue
        c = m.get("counts", {})
        rows.append([m["name"], c.get("ok", "?"), c.get("rejected", "?"), m.get("created_at", ""), m.get("root", "")])
    table("catalogues", ["name", "ok", "rejected", "created_at", "root"], _esc(rows))


@catalog_app.command("card")
def card_cmd(name: str = typer.Argument(..., help="catalogue name")) -> None:
    """A stored catalogue's dataset card (Hugging Face style markdown), as written at ingest."""
    text = read_dataset_card(name)  # an unknown catalogue: one line, exit 2 (lab.cli.errors)
    typer.echo(text, nl=False)
