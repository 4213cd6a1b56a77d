"""`/impact?q=GRANT-or-RECORDING`: the checkpoints and released outputs a grant or recording touches
(lab.audit.impact, as `lab impact`)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from .common import open_ledger, open_registry, render, settings_of

router = APIRouter()


@router.get("/impact", response_class=HTMLResponse)
def impact_page(
    request: Request,
    q: str = Query("", max_length=200, description="a grant id, recording id, ISRC or audio sha256"),
    catalog: str = Query("", max_length=200),
):
    from lab.audit.impact import MEANING, impact

    q = q.strip()
    report = None
    if q:
        settings = settings_of(request)
        with open_registry(settings) as registry, open_ledger(settings) as ledger:
            report = impact(registry, ledger, q, catalog=catalog.strip() or None)
    return render(request, "impact.html.j2", q=q, catalog=catalog, report=report, meaning=MEANING)
