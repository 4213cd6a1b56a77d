"""`/sample`: the form, and POST /sample through the recipe `lab sample` runs (`SampleRecipe`: gate →
generate → replication → credentials → record). The one page that writes: outputs, or a refusal record.
`/outputs/{record_id}/audio` plays a released output the registry holds."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from lab.rights.records import PURPOSES

from ..app import ServeSettings
from .common import open_registry, render, settings_of

router = APIRouter()

DEFAULTS = {"prompt": "warm piano, slow", "uses": ["ai_inference"], "territory": "GB", "duration": 2.0, "seed": 0}
MAX_SECONDS = 30.0
# One request samples at a time: generation takes the CPU, and Hydra's compose is process-global state.
_SAMPLING = threading.Lock()


@dataclass
class SampleView:
    """What one POST did: the gate's decision, and each output released (with its credential checked) or withheld."""

    decision: Any  # lab.sample.records.GateDecision
    released: list[dict[str, Any]] = field(default_factory=list)
    withheld: list[dict[str, Any]] = field(default_factory=list)
    refusal_records: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _available() -> bool:
    try:
        import lab.recipes.sample  # noqa: F401
    except ImportError:
        return False
    return True


def sample_config(settings: ServeSettings, folder: Path, values: dict[str, Any]):
    """The config `lab sample` composes, with this lab's paths and stores and the form's request."""
    from omegaconf import open_dict

    from lab.cli.demo import compose

    cfg = compose("sample", [f"paths.home={settings.home}", f"paths.experiments={settings.experiments}"])
    with open_dict(cfg):  # set after composing: a prompt or URL is never parsed as a Hydra override
        cfg.checkpoint = str(folder)
        cfg.prompt = values["prompt"]
        cfg.use = list(values["uses"])
        cfg.territory = values["territory"]
        cfg.duration = float(values["duration"])
        cfg.seed = int(values["seed"])
        cfg.progress = False
        cfg.ledger_url = settings.ledger_url
        cfg.registry_url = settings.registry_url
        cfg.signing.public_key = str(settings.public_key)
        if settings.sample_out is not None:
            cfg.outputs_root = str(settings.sample_out)
    return cfg


def run_sample(settings: ServeSettings, folder: Path, values: dict[str, Any]) -> SampleView:
    """`SampleRecipe(cfg).run()`, then each released file's credential read back (`verify_output`)."""
    from lab.recipes.sample import SampleRecipe
    from lab.sample.credentials import verify_output

    with _SAMPLING:
        recipe = SampleRecipe(sample_config(settings, folder, values))
        summary = recipe.run()
    released = []
    for r in summary.released:
        try:
            check = verify_output(Path(r["path"]), home=settings.home)
        except (OSError, ValueError) as exc:
            check = None
            r = r | {"credential_error": str(exc)}
        released.append(r | {"record_id": r["sha256"], "credential": check, "credits": recipe.credits})
    return SampleView(recipe.decision, released, summary.withheld, summary.refusal_records, summary.notes)


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
        max_seconds=MAX_SECONDS,
        **{"result": None, "error": None, **context},
    )


@router.get("/sample", response_class=HTMLResponse)
def sample_form(request: Request, checkpoint: str = Query("", max_length=200)):
    return _form(request, values={"checkpoint": checkpoint})


@router.post("/sample", response_class=HTMLResponse)
def sample_run(
    request: Request,
    checkpoint: str = Form(..., max_length=200),
    prompt: str = Form(..., max_length=500),
    uses: list[str] = Form([]),
    territory: str = Form(..., max_length=8),
    duration: float = Form(2.0),
    seed: int = Form(0, ge=0),
):
    values = {
        "checkpoint": checkpoint,
        "prompt": prompt.strip(),
        "uses": uses,
        "territory": territory.strip().upper(),
        "duration": duration,
        "seed": seed,
    }
    with open_registry(settings_of(request)) as registry:
        row = registry.checkpoint(checkpoint)
    if row is None:
        raise HTTPException(404, f"no registered checkpoint {checkpoint}")
    problem = (
        "choose at least one use"
        if not uses
        else "the prompt is empty"
        if not values["prompt"]
        else f"duration must be more than 0 and at most {MAX_SECONDS:g} seconds"
        if not 0 < duration <= MAX_SECONDS
        else None
    )
    if problem:
        return _form(request, 400, values=values, error=problem)
    if not _available():
        return _form(request, 503, values=values, error="sampling is not available in this version of lab")
    from lab.sample.gate import GateInputError
    from lab.sample.generate import GenerationError

    try:
        view = run_sample(settings_of(request), Path(row["folder"]), values)
    except (GateInputError, GenerationError) as exc:  # a malformed request (bad territory …): nothing recorded
        return _form(request, 400, values=values, error=str(exc))
    except FileNotFoundError as exc:
        raise HTTPException(404, f"checkpoint folder of {checkpoint} is gone: {exc}") from None
    return _form(request, values=values, result=view)


@router.get("/outputs/{record_id}/audio")
def output_audio(request: Request, record_id: str):
    """A released output's audio, as the registry records it (only released files; never an arbitrary path)."""
    from lab.util.canonical import sha256_file

    with open_registry(settings_of(request)) as registry:
        rows = [r for r in registry.outputs(kind="released") if r["record_id"] == record_id]
    if not rows or not rows[0]["path"]:
        raise HTTPException(404, f"no released output {record_id}")
    path = Path(rows[0]["path"])
    if not path.is_file() or sha256_file(path) != rows[0]["audio_sha256"]:
        raise HTTPException(404, f"output {record_id}: the file is missing or changed since it was released")
    return FileResponse(path, media_type="audio/flac" if path.suffix == ".flac" else "audio/wav")
