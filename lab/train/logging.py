"""Run logging: a JSONL metrics file always, Weights & Biases when asked, a loss-curve PNG.

wandb defaults to *offline*: nothing leaves the machine unless a config says
`mode: online`. `mode="auto"` defers to the `WANDB_MODE` environment variable (and is
offline when it is unset). Only rank 0 logs; other ranks get `None` / no-ops.

Offline init starts a `wandb-core` child process that lives until `wandb.teardown()`;
`finish()` here calls both.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lab.train.distributed import is_main as _is_main
from lab.util.secrets import redact_config, redact_text

log = logging.getLogger(__name__)

__all__ = [
    "METRICS_FILE",
    "WANDB_MODES",
    "MetricsLog",
    "resolve_wandb_mode",
    "init_wandb",
    "log_metrics",
    "log_artifact",
    "finish",
    "WandbHooks",
    "plot_losses",
]

METRICS_FILE = "metrics.jsonl"
WANDB_MODES = ("offline", "disabled", "online", "auto")


# ---------------------------------------------------------------------------- JSONL


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN/inf; a null loss is the signal
    if hasattr(value, "item") and callable(value.item):  # 0-d tensors, numpy scalars
        try:
            return _jsonable(value.item())
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class MetricsLog:
    """Append-only `metrics.jsonl`: one object per line, `{"step", "time", **metrics}`.

    Lines are flushed as written, so a killed run keeps everything logged before it.
    A resumed run appends to the same file; rows for steps after the resume point may
    then appear twice (the later row is the one that continued).
    """

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._f = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self._f is None:
            return
        row = {"step": int(step), "time": round(time.time(), 3), **_jsonable(dict(metrics))}
        self._f.write(json.dumps(row, sort_keys=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict[str, Any]]:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------- wandb


def resolve_wandb_mode(mode: str = "offline") -> str | None:
    """The `mode=` to hand `wandb.init`, or None to let wandb read `WANDB_MODE` itself.

    An explicit "offline" / "disabled" / "online" wins over the environment (that is
    what wandb does with an explicit argument). "auto" follows `WANDB_MODE` when it is
    set and is "offline" otherwise, so "online" is only ever passed when asked for.
    """
    mode = (mode or "auto").lower()
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {WANDB_MODES}, not {mode!r}")
    if mode == "auto":
        return None if os.environ.get("WANDB_MODE") else "offline"
    return mode


def _no_analytics() -> None:
    """Offline or disabled means nothing leaves the machine: recent wandb sends usage analytics
    (OpenTelemetry, to wandb's servers) from a "disabled" run too unless told not to."""
    try:
        from wandb.analytics.opentelemetry.opentelemetry_proxy import disable
    except ImportError:  # an older wandb without it sends none
        return
    disable()


def init_wandb(
    cfg: Mapping[str, Any] | None,
    run_dir: str | os.PathLike,
    mode: str = "offline",
    project: str = "lab",
    name: str | None = None,
    tags: Sequence[str] | None = None,
    *,
    is_main: bool | None = None,
    **settings: Any,
):
    """Start a wandb run writing under `run_dir/wandb/` (rank 0 only; None elsewhere).

    `settings` go to `wandb.Settings` (defaults: `console="off"`, `silent=True`). URL passwords in `cfg`
    and on the command line are hidden from wandb (lab.util.secrets).
    Returns the `wandb.Run` (a no-op run in "disabled" mode, which creates no files).
    """
    if is_main is None:
        is_main = _is_main()
    if not is_main:
        return None
    import wandb

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolve_wandb_mode(mode)
    if (resolved or os.environ.get("WANDB_MODE", "")) != "online":
        _no_analytics()
    settings.setdefault("console", "off")
    settings.setdefault("silent", True)
    kwargs: dict[str, Any] = {}
    if resolved is not None:
        kwargs["mode"] = resolved
    argv = sys.argv
    sys.argv = [redact_text(a) for a in argv]  # wandb records the command line (`args`) in the run's metadata
    try:
        run = wandb.init(
            project=project,
            name=name,
            tags=list(tags) if tags else None,
            config=redact_config(dict(cfg)) if cfg is not None else None,
            dir=str(run_dir),
            settings=wandb.Settings(**settings),
            **kwargs,
        )
    finally:
        sys.argv = argv
    mode_used = resolved or os.environ.get("WANDB_MODE")
    log.info("wandb run %s (mode %s) under %s", getattr(run, "id", "?"), mode_used, run_dir)
    return run


def _current_run(run: Any = None) -> Any:
    if run is not None:
        return run
    if not _is_main():
        return None
    import wandb

    return wandb.run


def log_metrics(step: int, metrics: Mapping[str, Any], run: Any = None) -> None:
    run = _current_run(run)
    if run is not None:
        run.log(dict(metrics), step=int(step))


def log_artifact(path: str | os.PathLike, name: str, type: str, run: Any = None, **metadata: Any) -> Any:
    """Log a file or folder as a wandb artifact (e.g. `data_card.json`, type "data_card").

    Returns the logged artifact, or None on non-main ranks / without an active run.
    In offline mode it is stored in the offline run and uploaded by `wandb sync`.
    """
    run = _current_run(run)
    if run is None:
        return None
    import wandb

    if getattr(run, "disabled", False) or run.__class__.__name__ == "NoopRun":
        return None
    path = Path(path)
    artifact = wandb.Artifact(name=name, type=type, metadata=dict(metadata) or None)
    if path.is_dir():
        artifact.add_dir(str(path))
    else:
        artifact.add_file(str(path))
    return run.log_artifact(artifact)


def finish(run: Any = None) -> None:
    """Finish the run and tear wandb down, so no `wandb-core` child outlives it."""
    if run is None and not _is_main():
        return
    import wandb

    if run is not None:
        run.finish()
    else:
        wandb.finish()
    wandb.teardown()


# ---------------------------------------------------------------------------- trainer hook


class WandbHooks:
    """Trainer hook that forwards `on_log` metrics to a wandb run (rank 0 only).

    It defines no `write_checkpoint_extras`, so it never takes over writing model files.
    """

    state_key = "wandb"

    def __init__(self, run: Any = None):
        self.run = run

    def on_log(self, step: int, metrics: Mapping[str, Any]) -> None:
        log_metrics(step, metrics, self.run)


# ---------------------------------------------------------------------------- plot


def plot_losses(
    losses: Sequence[float] | Iterable[float],
    path: str | os.PathLike,
    *,
    title: str | None = "training loss",
    first_step: int = 1,
    smooth: int | None = None,
) -> Path:
    """Write a loss-curve PNG (steps on x; optional moving average over `smooth` steps).

    Uses matplotlib's Agg canvas directly, so it never touches pyplot's global backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = [float("nan") if v is None else float(v) for v in losses]
    steps = list(range(first_step, first_step + len(values)))
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, values, lw=1, alpha=0.5 if smooth else 1.0, label="loss")
    if smooth and smooth > 1 and len(values) >= smooth:
        avg = [sum(values[i - smooth + 1 : i + 1]) / smooth for i in range(smooth - 1, len(values))]
        ax.plot(steps[smooth - 1 :], avg, lw=1.5, label=f"mean of {smooth}")
        ax.legend(loc="upper right")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
