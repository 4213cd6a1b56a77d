"""Atomic writes: a reader sees the old file or the new one, never half of either.

Files are staged beside their destination (same filesystem, so the final `os.replace` is one rename),
fsynced, then renamed; the folder is fsynced after. A staged file gets the mode a plain `open` would
give (0666 less the process umask) unless the caller asks for one, e.g. 0600 for a private key.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged_path(
    path: str | os.PathLike, *, mode: int | None = None, stage_in: str | os.PathLike | None = None
) -> Iterator[Path]:
    """Yield an empty temp file beside `path`; when the block exits cleanly it replaces `path`.

    For writers that want a path rather than a file object (a library that writes the file itself).
    `stage_in` puts the temp file in another folder of the same filesystem (e.g. outside a folder being
    hashed). On an exception the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.parent if stage_in is None else Path(stage_in)
    tmp = stage / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # O_EXCL + 0666: the process umask applies, as for any new file (mkstemp would force 0600).
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    if stage != path.parent:
        fsync_dir(stage)


@contextmanager
def open_atomic(path: str | os.PathLike, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file to write piece by piece; it appears at `path` only when the block exits cleanly."""
    with staged_path(path, mode=mode) as tmp, open(tmp, "wb") as f:
        yield f


def write_bytes(path: str | os.PathLike, data: bytes, *, mode: int | None = None) -> Path:
    with open_atomic(path, mode=mode) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, mode: int | None = None) -> Path:
    return write_bytes(path, text.encode("utf-8"), mode=mode)


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            _fsync_file(p)
    fsync_dir(folder)


def publish_new_dir(staging: str | os.PathLike, final: str | os.PathLike) -> bool:
    """Move a fully written staging folder to `final` unless a non-empty `final` is already there.

    For content-addressed folders that concurrent writers build alike (e.g. every DDP rank): the first
    rename wins and the others return False (their staging folder is left for them to remove).
    """
    staging, final = Path(staging), Path(final)
    _fsync_tree(staging)
    try:
        os.replace(staging, final)
    except OSError:
        if final.is_dir() and any(final.iterdir()):
            return False
        raise
    fsync_dir(final.parent)
    return True


def publish_dir(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a fully written staging folder into place in one rename.

    An existing `final` is swapped out first and removed only after the new folder is
    in place, so a crash at any point leaves one complete folder under `final` or its
    backup beside it (`.<name>.old`), never a partial one.
    """
    staging, final = Path(staging), Path(final)
    _fsync_tree(staging)
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


def set_aside(final: str | os.PathLike) -> None:
    """Move a refused folder out of the way in one rename (a concurrent process may already have), then
    remove it: readers never see it half deleted, and a rebuild can publish in its place at once."""
    final = Path(final)
    aside = final.parent / f".{final.name}.refused-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(final, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)
