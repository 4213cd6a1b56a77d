"""`/` every registered checkpoint with its last audit and lineage; `/checkpoints/{id}` its card, audited
now; `/checkpoints/{id}/audit` the audit's HTML report (lab.audit.report, as `lab audit --html`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from lab.util.secrets import redact_text

from .common import open_ledger, open_registry, render, settings_of

router = APIRouter()

SORTS = {"seconds": "seconds_seen", "id": "recording_id", "title": "title", "licence": "licence", "seen_by": "seen_by"}
CHART_BARS = 20  # sources drawn in the exposure chart (largest first)
MAX_ROWS = 500  # source rows one page lists


# --------------------------------------------------------------------------- the list


def checkpoint_rows(registry) -> list[dict[str, Any]]:
    """The registry's checkpoints with their last audit, as `lab checkpoints list` shows them."""
    from lab.checkpoint.folder import is_complete
    from lab.sample.gate import audit_status  # the gate's reading of a recorded audit

    rows, audits = registry.checkpoints(), registry.audits()
    out = []
    for r in rows:
        audit = audits.get(r["checkpoint_id"])
        if audit and audit.get("data_card_sha256") not in (None, r["data_card_sha256"]):
            audit = None  # that audit was of another card under this id
        out.append({**r, "complete": is_complete(r["folder"]), "audit": audit, "status": audit_status(audit)})
    return out


def lineage_tree(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Roots (no registered parent) with their fine-tunes nested under `children`, oldest first."""
    nodes = {r["checkpoint_id"]: {"row": r, "children": []} for r in rows}
    roots = []
    for r in rows:
        parent = nodes.get(r["parent_id"]) if r["parent_id"] else None
        (parent["children"] if parent else roots).append(nodes[r["checkpoint_id"]])
    return roots


@router.get("/", response_class=HTMLResponse)
def checkpoints_page(request: Request):
    with open_registry(settings_of(request)) as registry:
        rows = checkpoint_rows(registry)
    return render(request, "checkpoints.html.j2", rows=rows, tree=lineage_tree(rows))


# --------------------------------------------------------------------------- one checkpoint


def _folder(request: Request, checkpoint_id: str) -> tuple[Path, dict[str, Any]]:
    with open_registry(settings_of(request)) as registry:
        row = registry.checkpoint(checkpoint_id)
    if row is None:
        raise HTTPException(404, f"no registered checkpoint {checkpoint_id}")
    return Path(row["folder"]), row


def _audit(request: Request, folder: Path):
    """`lab audit` of the folder now (consent now from the ledger); read-only: the result is not recorded."""
    from lab.audit.verify import audit_checkpoint

    settings = settings_of(request)
    if not folder.is_dir():
        raise HTTPException(404, f"checkpoint folder {folder} no longer exists")
    with open_ledger(settings) as ledger:
        return audit_checkpoint(folder, public_key=settings.public_key, ledger=ledger)


def select_sources(sources: pa.Table, q: str, sort: str, order: str, limit: int) -> tuple[list[dict], int]:
    """Rows whose id, title, artists, ISRC, licence, seen_by or credit hold `q` (any case), sorted: (page, matches)."""
    if q:
        text = [
            sources["recording_id"],
            sources["title"],
            pc.binary_join(sources["artists"], " "),
            sources["isrc"].fill_null(""),
            sources["licence"],
            sources["seen_by"],
            sources["credit"],
        ]
        hit = None
        for col in text:
            found = pc.match_substring(col, q, ignore_case=True)
            hit = found if hit is None else pc.or_(hit, found)
        sources = sources.filter(hit)
    keys = [(SORTS.get(sort, "seconds_seen"), "ascending" if order == "asc" else "descending")]
    keys += [(k, "ascending") for k in ("recording_id", "seen_by") if k != keys[0][0]]
    top = sources.take(pc.sort_indices(sources, sort_keys=keys)[:limit]) if sources.num_rows else sources
    return top.to_pylist(), sources.num_rows


def exposure_chart(sources: pa.Table, own_id: str, bars: int = CHART_BARS) -> dict[str, Any]:
    """Geometry of an inline SVG bar chart: the largest `bars` sources by seconds seen, own and inherited."""
    from lab.cards.render import top_sources

    rows = top_sources(sources, bars)
    peak = max((r["seconds_seen"] for r in rows), default=0.0) or 1.0
    return {
        "bars": [
            {
                "label": r["recording_id"] if r["seen_by"] == own_id else f"{r['recording_id']} ({r['seen_by']})",
                "title": r["title"],
                "seconds": r["seconds_seen"],
                "width": round(100 * r["seconds_seen"] / peak, 2),
                "own": r["seen_by"] == own_id,
            }
            for r in rows
        ],
        "shown": len(rows),
        "total": sources.num_rows,
        "total_seconds": float(pc.sum(sources["seconds_seen"]).as_py() or 0.0) if sources.num_rows else 0.0,
    }


def licence_rows(sources: pa.Table) -> list[dict[str, Any]]:
    """Each licence among the sources with its recordings and seconds."""
    if sources.num_rows == 0:
        return []
    g = sources.group_by("licence").aggregate([("recording_id", "count"), ("seconds_seen", "sum")])
    return sorted(g.to_pylist(), key=lambda r: -r["seconds_seen_sum"])


@router.get("/checkpoints/{checkpoint_id}", response_class=HTMLResponse)
def card_page(
    request: Request,
    checkpoint_id: str,
    q: str = Query("", max_length=200),
    sort: str = Query("seconds"),
    order: str = Query("desc"),
    limit: int = Query(50, ge=1, le=MAX_ROWS),
):
    folder, row = _folder(request, checkpoint_id)
    report = _audit(request, folder)
    bundle = report.bundle
    ctx: dict[str, Any] = {"row": row, "report": report, "checks": {c.name: c for c in report.checks}}
    if bundle is not None:
        rows, matches = select_sources(bundle.sources, q, sort, order, limit)
        ctx |= {
            "card": bundle.card,
            "rows": rows,
            "matches": matches,
            "chart": exposure_chart(bundle.sources, checkpoint_id),
            "licences": licence_rows(bundle.sources),
        }
    else:
        ctx |= {"card": None, "rows": [], "matches": 0, "chart": None, "licences": []}
    query = {"q": q, "sort": sort if sort in SORTS else "seconds", "order": order, "limit": limit}
    return render(request, "card.html.j2", **ctx, query=query, sorts=list(SORTS))


@router.get("/checkpoints/{checkpoint_id}/audit", response_class=HTMLResponse)
def audit_page(request: Request, checkpoint_id: str):
    from lab.audit.report import render_html

    folder, _ = _folder(request, checkpoint_id)
    return HTMLResponse(redact_text(render_html(_audit(request, folder))))
