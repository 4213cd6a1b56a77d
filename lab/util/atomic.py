"""Atomic writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def publish_dir(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a fully written staging folder into place in one rename.

    An existing `final` is swapped out first and removed only after the new folder is
    in place, so a crash at any point leaves one complete folder under `final` or its
    backup beside it (`.<name>.old`), never a partial one.
    """
    staging, final = Path(staging), Path(final)
    for p in staging.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(staging)
    backup = final.with_name(f".{final.name}.old")
    if final.exists():
        if backup.exists():
            shutil.rmtree(backup)
        os.replace(final, backup)
    os.replace(staging, final)
    fsync_dir(final.parent)
    if backup.exists():
        shutil.rmtree(backup)
    return final
