"""`lab clear` and `lab train`: Hydra apps. Everything after the command name is a Hydra
override (`policy=commercial`, `-m trainer.lr=1e-4,3e-4`, `--cfg job`), so sweeps and
launchers behave exactly as in any Hydra project. Configs come from the package
(pkg://lab.resources.configs); `--config-dir DIR` (any number) and env LAB_CONFIG_DIR put a user's
folders in front of it (lab.resources.searchpath)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import typer

from ..resources import CONFIG_SOURCE, ConfigDirNotFoundError, config_search_path
from . import app
from .output import emit_json, fail, table

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
_CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def split_config_dirs(args: list[str]) -> tuple[list[str], list[str]]:
    """`--config-dir DIR` / `-cd DIR` / `--config-dir=DIR` (any number) out of Hydra's arguments."""
    dirs, rest, it = [], [], iter(args)
    for a in it:
        if a in _CONFIG_DIR_FLAGS:
            value = next(it, None)
            if value is None:
                raise typer.BadParameter(f"{a} needs a folder")
            dirs.append(value)
        elif a.startswith("--config-dir="):
            dirs.append(a.split("=", 1)[1])
        else:
            rest.append(a)
    return dirs, rest


def run_hydra(config_name: str, task: Callable, args: list[str]) -> None:
    import hydra

    from ..resources.searchpath import user_config_dirs

    config_dirs, overrides = split_config_dirs(args)
    try:
        config_search_path(config_dirs)
    except ConfigDirNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from None
    argv = sys.argv
    sys.argv = [f"lab {config_name}", *_pin_run_under_torchrun(overrides)]
    try:
        with user_config_dirs(config_dirs):
            hydra.main(config_path=CONFIG_SOURCE, config_name=config_name, version_base="1.3")(task)()
    finally:
        sys.argv = argv


def _pin_run_under_torchrun(overrides: list[str]) -> list[str]:
    """Every torchrun rank composes the config itself, and `${now:}` can tick between them;
    name the run after torchrun's rendezvous id (shared by all ranks) unless the user named it."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    named = any(o.split("=", 1)[0].lstrip("+") in ("run_name", "run_dir") for o in overrides)
    if not run_id or run_id == "none" or named:
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
    from ..rights.consent import LedgerBroken

    try:
        result = main(cfg)
    except LedgerBroken as exc:  # one line and exit 1, not Hydra's error report
        try:
            fail(str(exc), as_json=bool(cfg.get("json", False)))
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
    print_clear_summary(result.summary(), bool(cfg.get("json", False)))


@app.command("clear", context_settings=_PASS_THROUGH, add_help_option=False)
def clear_cmd(ctx: typer.Context) -> None:
    """Clear a catalogue against the ledger under a policy; writes a snapshot. Args: Hydra overrides."""
    run_hydra("clear", _clear_task, list(ctx.args))


def print_train_summary(summary: dict, as_json: bool = False) -> None:
    """What a training run did and where it is: the closing lines of `lab train` and `lab demo`."""
    if as_json:
        emit_json(summary)
        return
    loss = f"{summary['final_loss']:.3f}" if summary.get("final_loss") is not None else "n/a"
    rows = [["run folder", summary["run_dir"]], ["snapshot", summary["snapshot_id"]],
            ["steps", f"{summary['start_step']} → {summary['steps']} (final loss {loss})"],
            ["last checkpoint", summary["last_checkpoint"] or "none written"],
            ["data card", summary["data_card"] or "none"]]
    table("training run", ["", ""], rows)
    if summary.get("audit"):
        typer.echo(f"audit it: {summary['audit']}")


def _train_task(cfg) -> None:
    from ..recipes.train import TrainingRefused, main

    try:
        summary = main(cfg)
    except TrainingRefused as exc:  # a refusal is the user's answer, not a crash: no Hydra error report
        try:
            fail(str(exc), as_json=bool(cfg.get("json", False)))
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
    if summary is not None and int(os.environ.get("RANK", "0")) == 0:
        print_train_summary(summary.to_dict(), bool(cfg.get("json", False)))


@app.command("train", context_settings=_PASS_THROUGH, add_help_option=False)
def train_cmd(ctx: typer.Context) -> None:
    """Fine-tune on a cleared snapshot; signed, carded checkpoints. Args: Hydra overrides."""
    run_hydra("train", _train_task, list(ctx.args))
