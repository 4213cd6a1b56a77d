"""`lab clear` and `lab train`: Hydra apps. Everything after the command name is a Hydra
override (`policy=commercial`, `-m trainer.lr=1e-4,3e-4`, `--cfg job`), so sweeps and
launchers behave exactly as in any Hydra project."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import typer

from . import app
from .output import emit_json, table

CONFIG_DIR = Path(os.environ.get("LAB_CONFIG_DIR") or Path(__file__).resolve().parents[2] / "configs")
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def run_hydra(config_name: str, task: Callable, overrides: list[str]) -> None:
    import hydra

    if not (CONFIG_DIR / f"{config_name}.yaml").is_file():
        raise typer.BadParameter(f"no {config_name}.yaml under {CONFIG_DIR} (set LAB_CONFIG_DIR)")
    overrides = _pin_run_under_torchrun(overrides)
    argv = sys.argv
    sys.argv = [f"lab {config_name}", *overrides]
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(task)()
    finally:
        sys.argv = argv


def _pin_run_under_torchrun(overrides: list[str]) -> list[str]:
    """Every torchrun rank composes the config itself, and `${now:}` can tick between them;
    name the run after torchrun's rendezvous id (shared by all ranks) unless the user named it."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id or run_id == "none" or any(o.split("=", 1)[0].lstrip("+") in ("run_name", "run_dir") for o in overrides):
        return overrides
    return [*overrides, f"run_name=torchrun-{run_id}"]


def print_clear_summary(summary: dict, as_json: bool = False) -> None:
    if as_json:
        emit_json(summary)
        return
    rows = [["cleared", summary["cleared"]]] + [[f"excluded: {r}", n] for r, n in summary["excluded"].items()]
    table(f"clearance of '{summary['catalog']}' under policy '{summary['policy']}' at {summary['cleared_at']}",
          ["", "recordings"], rows + [["total", summary["items"]]])
    typer.echo(f"snapshot {summary['snapshot_id']} -> {summary['path']}")


def _clear_task(cfg) -> None:
    from ..jobs.clear import main

    result = main(cfg)
    print_clear_summary(result.summary(), bool(cfg.get("json", False)))


@app.command("clear", context_settings=_PASS_THROUGH, add_help_option=False)
def clear_cmd(ctx: typer.Context) -> None:
    """Clear a catalogue against the ledger under a policy; writes a snapshot. Args: Hydra overrides."""
    run_hydra("clear", _clear_task, list(ctx.args))


def _train_task(cfg) -> None:
    from ..jobs.train import main

    main(cfg)


@app.command("train", context_settings=_PASS_THROUGH, add_help_option=False)
def train_cmd(ctx: typer.Context) -> None:
    """Fine-tune on a cleared snapshot; signed, carded checkpoints. Args: Hydra overrides."""
    run_hydra("train", _train_task, list(ctx.args))
