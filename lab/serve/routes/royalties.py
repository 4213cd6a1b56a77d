"""`/royalties`: the royalty statements the registry records, per rights holder (read-only: `lab royalties
statement` issues them). Each statement's signature is checked as the page is shown; the holder pages
are the signed HTML files of the statement folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from lab.util.secrets import redact_text

from .common import open_registry, render, settings_of

router = APIRouter()


def _available() -> bool:
    try:
        import lab.registry.royalty_schema  # noqa: F401
        import lab.royalties.reconcile  # noqa: F401
    except ImportError:
        return False
    return True


def recorded_statements(registry) -> list[dict[str, Any]]:
    """Every statement the registry records (period, statement_id, folder, issued_at, lines), newest period first."""
    from sqlalchemy import inspect, select

    from lab.registry.royalty_schema import statements

    if not registry.exists():
        return []
    with registry.engine.connect() as conn:
        if not inspect(conn).has_table(statements.name):
            return []
        rows = conn.execute(select(statements).order_by(statements.c.period.desc())).all()
    return [dict(r._mapping) for r in rows]


def _statement(request: Request, period: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the registry's record, the folder's statement.json or None when unreadable)."""
    from lab.royalties.statements import HEADER_FILE

    with open_registry(settings_of(request)) as registry:
        found = [s for s in recorded_statements(registry) if s["period"] == period]
    if not found:
        raise HTTPException(404, f"no royalty statement recorded for {period}")
    try:
        header = json.loads((Path(found[0]["folder"]) / HEADER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        header = None
    return found[0], header


@router.get("/royalties", response_class=HTMLResponse)
def royalties_page(
    request: Request,
    period: str = Query("", max_length=7),
    holder: str = Query("", max_length=200),
):
    if not _available():
        return render(request, "royalties.html.j2", available=False, statements=[], current=None)
    from lab.royalties.reconcile import verify_statement

    with open_registry(settings_of(request)) as registry:
        listed = recorded_statements(registry)
    if not listed:
        return render(request, "royalties.html.j2", available=True, statements=[], current=None)
    record, header = _statement(request, period or listed[0]["period"])
    signature = verify_statement(record["folder"], settings_of(request).public_key)
    totals = (header or {}).get("totals", [])
    if holder.strip():
        totals = [t for t in totals if holder.strip().lower() in f"{t['rights_holder']} {t['party_id']}".lower()]
    # the statement names each holder's page by its own rule (one definition, in lab.royalties.statements)
    from lab.royalties.statements import holder_slug

    listed_pages = (header or {}).get("holders") or {}
    for t in totals:
        slug = holder_slug(t["rights_holder"], t["party_id"])
        t["page"] = slug if slug in listed_pages else None
    current = {"record": record, "header": header, "signature": signature, "totals": totals}
    return render(
        request, "royalties.html.j2", available=True, statements=listed, current=current, holder=holder.strip()
    )


@router.get("/royalties/{period}/holders/{slug}", response_class=HTMLResponse)
def holder_page(request: Request, period: str, slug: str):
    """A rights holder's page from the signed statement folder (only a slug statement.json lists)."""
    record, header = _statement(request, period)
    if header is None or slug not in (header.get("holders") or {}):
        raise HTTPException(404, f"no rights holder page {slug} in the {period} statement")
    path = Path(record["folder"]) / "holders" / f"{slug}.html"
    if not path.is_file():
        raise HTTPException(404, f"the {period} statement folder has lost {path.name}")
    return HTMLResponse(redact_text(path.read_text(encoding="utf-8")))
