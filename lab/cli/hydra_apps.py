"""`lab clear` and `lab train`: Hydra apps. Everything after the command name is a Hydra
override (`policy=commercial`, `-m trainer.lr=1e-4,3e-4`, `--cfg job`), so sweeps and
launchers behave exactly as in any Hydra project. Configs come from the package
(pkg://lab.resources.configs); `--config-dir DIR` (any number) and env LAB_CONFIG_DIR put a user's
folders in front of it (lab.resources.searchpath)."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from ..resources import CONFIG_SOURCE, ConfigDirNotFoundError, config_search_path
from . import app
from .errors import guard, set_json
from .output import emit_json, table

_JSON_ON = re.compile(r"\+{0,2}json=(true|True|TRUE|1|yes)")
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
    argv, full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [f"lab {config_name}", *_pin_run_under_torchrun(overrides)]
    set_json(any(_JSON_ON.fullmatch(o) for o in overrides))  # until the composed config says
    # Hydra re-raises instead of printing its own report: a bad override reaches lab.cli.errors (one line, exit 2)
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with user_config_dirs(config_dirs):
            hydra.main(config_path=CONFIG_SOURCE, config_name=config_name, version_base="1.3")(task)()
    finally:
        sys.argv = argv
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error


def hydra_task(task: Callable) -> Callable:
    """A Hydra task inside lab.cli.errors' guard (its SystemExit passes through Hydra, whose job runner would
    report an exception with every override, passwords included), after hiding URL passwords in the config
    Hydra saved under `.hydra/` (a `ledger_url=...` override or a user's yaml can put one there)."""

    @functools.wraps(task)
    def run(cfg) -> None:
        set_json(bool(cfg.get("json", False)))
        with guard():
            scrub_hydra_output(cfg)
            task(cfg)

    return run


def scrub_hydra_output(cfg) -> None:
    """Rewrite `.hydra/*.yaml` of this job with every URL password hidden (Hydra writes them before the task)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from ..util.atomic import write_text
    from ..util.secrets import scrub_text, secret_urls

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.output_subdir is None:
        return
    secrets = secret_urls(OmegaConf.to_container(cfg, resolve=True)) | secret_urls(list(hc.overrides.task))
    folder = Path(hc.runtime.output_dir) / str(hc.output_subdir)
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        shown = scrub_text(text, secrets)
        if shown != text:
            write_text(path, shown)


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
    table(
        f"clearance of '{summary['catalog']}' under policy '{summary['policy']}' at {summary['cleared_at']}",
        ["", "recordings"],
        rows + [["total", summary["items"]]],
    )
    typer.echo(f"snapshot {summary['snapshot_id']} -> {summary['path']}")
    mismatched = (summary.get("notes") or {}).get("licence_mismatch", 0)
    if mismatched:
        typer.echo(
            f"note: {mismatched} cleared recording(s) whose metadata states another licence than the grant "
            "that clears them (the grant applies; not an exclusion): lab clear show=cleared"
        )


@hydra_task
def _clear_task(cfg) -> None:
    from ..recipes.clear import main
    from .output import print_error
    from .verdicts import check_show, print_verdicts, snapshot_verdicts

    as_json, show, limit = bool(cfg.get("json", False)), cfg.get("show"), cfg.get("limit")
    try:
        check_show(show, limit)  # before clearing: a typo must not cost a clearance
    except ValueError as exc:
        print_error(str(exc), kind="bad_config", as_json=as_json)
        raise SystemExit(2) from None
    result = main(cfg)  # a broken ledger: exit 1 (errors)
    if not show:
        return print_clear_summary(result.summary(), as_json)
    from ..snapshot import load_snapshot

    rows = snapshot_verdicts(load_snapshot(result.snapshot_path), show, limit)
    if as_json:
        return emit_json({**result.summary(), "show": show, "verdicts": rows})
    print_clear_summary(result.summary())
    print_verdicts(f"{show} recordings" + (f" (first {limit})" if limit is not None else ""), rows, False)


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
    rows = [
        ["run folder", summary["run_dir"]],
        ["snapshot", summary["snapshot_id"]],
        ["steps", f"{summary['start_step']} → {summary['steps']} (final loss {loss})"],
        ["last checkpoint", summary["last_checkpoint"] or "none written"],
        ["data card", summary["data_card"] or "none"],
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:  # plain lines, not a table: paths must survive a narrow terminal whole
        typer.echo(f"{key:<{width}}  {value}")
    if summary.get("audit"):
        typer.echo(f"audit it: {summary['audit']}")


@hydra_task
def _train_task(cfg) -> None:
    from ..recipes.train import main

    summary = main(cfg)  # a refusal is the user's answer, not a crash: one line, exit 1 (lab.cli.errors)
    if summary is not None and int(os.environ.get("RANK", "0")) == 0:
        print_train_summary(summary.to_dict(), bool(cfg.get("json", False)))


@app.command("train", context_settings=_PASS_THROUGH, add_help_option=False)
def train_cmd(ctx: typer.Context) -> None:
    """Fine-tune on a cleared snapshot; signed, carded checkpoints. Args: Hydra overrides."""
    run_hydra("train", _train_task, list(ctx.args))


def print_sample_summary(summary: dict, as_json: bool = False) -> None:
    """The closing lines of `lab sample`: each output released or withheld, or each refusal."""
    if as_json:
        emit_json(summary)
        return
    for line in summary["refusals"]:  # one line per refusal: check, recording, grant, reason
        typer.echo(line, err=True)
    if summary["refusals"]:
        for path in summary["refusal_records"]:
            typer.echo(f"refusal recorded: {path}", err=True)
        return
    for r in summary["released"]:
        scores = f"tokens {r['token_score']:.2f}, audio {r['audio_score']:.2f}"
        typer.echo(f"released  {r['path']}  (seed {r['seed']}; replication {scores}; credential {r['sidecar']})")
    for w in summary["withheld"]:
        typer.echo(f"withheld  prompt {w['prompt']!r} seed {w['seed']}: {w['detail']} (record {w['record']})")
    for note in summary.get("notes") or []:
        typer.echo(f"note: {note}")
    typer.echo(f"gate ok for {', '.join(summary['uses'])} in {summary['territory']}; outputs in {summary['out_dir']}")
    if summary["released"]:
        typer.echo(f"check one: lab verify-output {summary['released'][0]['path']}")


@hydra_task
def _sample_task(cfg) -> None:
    from ..recipes.sample import main
    from ..sample.gate import GateInputError
    from ..sample.generate import GenerationError
    from .output import print_error

    as_json = bool(cfg.get("json", False))
    try:
        summary = main(cfg).to_dict()
    except (GateInputError, GenerationError) as exc:  # a malformed request: bad input, nothing recorded
        print_error(str(exc), kind="bad_input", as_json=as_json)
        raise SystemExit(2) from None
    print_sample_summary(summary, as_json)
    if not summary["allowed"]:
        raise SystemExit(1)


@app.command("sample", context_settings=_PASS_THROUGH, add_help_option=False)
def sample_cmd(ctx: typer.Context) -> None:
    """Generate audio from a checkpoint, behind the consent gate; signed credentials. Args: Hydra overrides."""
    run_hydra("sample", _sample_task, list(ctx.args))
