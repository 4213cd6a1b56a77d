"""The checkpoint folder: its files, how it is written (atomically), and which folders count.

Layout (the contract of DESIGN.md; README "What a checkpoint folder contains")::

    <run>/checkpoints/
      step-000200/
        config.json generation_config.json model.safetensors tokenizer/processor files   weights (stock transformers)
        data_card.json sources.parquet README.md croissant.json config.lab.json           provenance (lab.cards)
        training_state/                                                                   resume (lab.checkpoint.state)
        COMPLETE      step, time and the size of every file above
        model.sig     OpenSSF model-signing bundle over every file, COMPLETE included
      .staging-step-000400-<pid>/   a save in progress (or one killed mid-way)

How a folder is written, in this order, all by rank 0 only:

1. `training_state/` into `.staging-step-NNNNNN-<pid>`;
2. `write_extras(staging)`: weights and provenance files;
3. `COMPLETE` (a small JSON: step, time, size of every other file);
4. `seal(staging)`: the signature, over everything above;
5. `lab.util.atomic.publish_dir` fsyncs everything and renames the folder into place.

A reader trusts a `step-*` folder only when `COMPLETE` is there and every file it lists
has the listed size (`is_complete`). A process killed anywhere in 1–4 leaves only a
dot-named staging folder, which `latest_complete` never looks at and `clean_stale`
removes once its writer's pid is gone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from lab.util.atomic import publish_dir

from .state import TrainingState, save_training_state

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
COMPLETE_MARKER = "COMPLETE"
SIGNATURE = "model.sig"
# What every lab checkpoint must hold (weights load with stock transformers; the card files come from lab.cards).
WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors")
_STEP_RE = re.compile(r"^step-(\d+)$")
_STAGING_RE = re.compile(r"^\.staging-(step-\d+)-(\d+)$")
_TRASH_RE = re.compile(r"^\.trash-(step-\d+)-(\d+)$")
_OLD_RE = re.compile(r"^\.(step-\d+)\.old$")  # publish_dir's backup while it swaps a folder


def checkpoint_name(step: int) -> str:
    return f"step-{int(step):06d}"


def checkpoints_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINTS_DIR


def step_of(path: str | os.PathLike) -> int:
    """The step number in a `step-NNNNNN` folder name."""
    m = _STEP_RE.match(Path(path).name)
    if not m:
        raise ValueError(f"not a checkpoint folder name: {Path(path).name!r}")
    return int(m.group(1))


# ---------------------------------------------------------------------------- reading


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` is a published checkpoint whose `COMPLETE` marker checks out."""
    path = Path(path)
    m = _STEP_RE.match(path.name)
    if not m or not path.is_dir():
        return False
    try:
        marker = json.loads((path / COMPLETE_MARKER).read_text("utf-8"))
        if int(marker["step"]) != int(m.group(1)):
            return False
        for rel, size in marker["files"].items():
            if (path / rel).stat().st_size != int(size):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def list_complete(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `out_dir/checkpoints`, oldest step first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found) if is_complete(p)]


def latest_complete(out_dir: str | os.PathLike) -> Path | None:
    """The highest-step complete checkpoint, ignoring staging and incomplete folders."""
    done = list_complete(out_dir)
    return done[-1] if done else None


# ---------------------------------------------------------------------------- writing


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(path: Path) -> None:
    """Rename out of the `step-*` namespace first, so a half-deleted folder is never a candidate."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_stale(out_dir: str | os.PathLike) -> list[Path]:
    """Remove leftovers of interrupted saves; returns what it removed.

    Staging folders whose writer pid is no longer alive on this host, trash from an
    interrupted prune, and `publish_dir` backups (`.step-N.old`): a backup is put back
    when its checkpoint is missing and the backup is complete, else removed.
    """
    root = checkpoints_dir(out_dir)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for p in sorted(root.iterdir()):
        if m := _STAGING_RE.match(p.name):
            if not _pid_alive(int(m.group(2))):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        elif _TRASH_RE.match(p.name):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        elif m := _OLD_RE.match(p.name):
            final = root / m.group(1)
            if not final.exists() and _is_complete_contents(p, step_of(final)):
                os.replace(p, final)
                log.warning("restored %s from its publish backup", final)
            else:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def _is_complete_contents(path: Path, step: int) -> bool:
    """`is_complete` for a folder whose name is not (yet) `step-NNNNNN`."""
    try:
        marker = json.loads((path / COMPLETE_MARKER).read_text("utf-8"))
        return int(marker["step"]) == step and all(
            (path / rel).stat().st_size == int(size) for rel, size in marker["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def prune(out_dir: str | os.PathLike, keep_last: int | None) -> list[Path]:
    """Delete all but the `keep_last` newest complete checkpoints (None or 0: keep all).

    Incomplete `step-*` folders are never produced by `write_checkpoint`; they are left
    alone (not ours to judge) and never returned by `latest_complete`.
    """
    if not keep_last or keep_last <= 0:
        return []
    done = list_complete(out_dir)
    doomed = done[: max(0, len(done) - keep_last)]
    for p in doomed:
        _remove_tree(p)
    return doomed


def _write_marker(staging: Path, step: int) -> None:
    files = {
        p.relative_to(staging).as_posix(): p.stat().st_size
        for p in sorted(staging.rglob("*"))
        if p.is_file() and p.name not in (COMPLETE_MARKER, SIGNATURE)
    }
    marker = {"step": step, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": files}
    (staging / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n", "utf-8")


def write_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    state: TrainingState,
    write_extras: Callable[[Path], None] | None = None,
    seal: Callable[[Path], None] | None = None,
) -> Path:
    """Write and atomically publish `out_dir/checkpoints/step-NNNNNN` (call on rank 0 only).

    `write_extras(staging_dir)` adds weights and provenance files; `seal(staging_dir)` runs
    after `COMPLETE` is written (the signature, so that it covers the marker too). On any
    exception the staging folder is removed and the exception re-raised; an existing folder
    for the same step is replaced atomically (`publish_dir`).
    """
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    staging = root / f".staging-{name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        save_training_state(staging, state)
        if write_extras is not None:
            write_extras(staging)
        _write_marker(staging, step)
        if seal is not None:
            seal(staging)
        final = publish_dir(staging, root / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def missing_files(folder: str | os.PathLike, required: tuple[str, ...]) -> list[str]:
    """Which of the contract's files a folder lacks (COMPLETE and the signature always required)."""
    folder = Path(folder)
    return [f for f in (*required, COMPLETE_MARKER, SIGNATURE) if not (folder / f).is_file()]
