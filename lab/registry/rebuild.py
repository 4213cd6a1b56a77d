"""`lab registry rebuild PATH…`: the registry again, from the signed checkpoints found under paths.

Only a folder whose signature verifies under the lab key is indexed: the registry is then
exactly what the signed data cards say, never what an edited copy says. Everything else is
skipped with its reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lab.cards.files import CARD_FILE
from lab.cards.schema import CardError
from lab.cards.signing import verify_folder
from lab.checkpoint.folder import is_complete

from .entry import CheckpointEntry, describe
from .store import Registry


@dataclass
class RebuildReport:
    registered: list[str] = field(default_factory=list)  # checkpoint ids
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason)
    source_rows: int = 0

    def to_dict(self) -> dict:
        return {
            "registered": self.registered,
            "source_rows": self.source_rows,
            "skipped": [{"folder": f, "reason": r} for f, r in self.skipped],
        }


def find_checkpoints(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Folders holding a data card under `paths` (a path may be a checkpoint itself), sorted;
    dot-named folders (staging, trash, backups) are not looked into."""
    found: set[Path] = set()
    for root in map(Path, paths):
        if (root / CARD_FILE).is_file():
            found.add(root.resolve())
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            if CARD_FILE in filenames:
                found.add(Path(dirpath).resolve())
                dirnames[:] = []  # a checkpoint holds no checkpoints
    return sorted(found)


def check_folder(folder: Path, public_key: Path) -> tuple[CheckpointEntry | None, str]:
    """(entry, '') for a complete, validly signed checkpoint with a valid card; else (None, reason)."""
    if not is_complete(folder):
        return None, "not a complete checkpoint (no step-NNNNNN name, or COMPLETE missing or wrong)"
    result = verify_folder(folder, public_key)
    if not result.ok:
        return None, f"signature: {result.reason}"
    try:
        return describe(folder), ""
    except CardError as exc:
        return None, f"data card: {'; '.join(exc.errors[:3])}"


def rebuild(registry: Registry, paths: Iterable[str | os.PathLike], public_key: Path) -> RebuildReport:
    """Empty the registry's checkpoints and index every verified checkpoint under `paths` anew.

    Two folders with the same checkpoint id (a copy): the first in path order is kept, the other
    skipped. Audit summaries survive (they are keyed by checkpoint id)."""
    report = RebuildReport()
    entries: dict[str, CheckpointEntry] = {}
    for folder in find_checkpoints(paths):
        entry, reason = check_folder(folder, Path(public_key))
        if entry is None:
            report.skipped.append((str(folder), reason))
        elif entry.checkpoint_id in entries:
            report.skipped.append((str(folder), f"duplicate of {entries[entry.checkpoint_id].row['folder']}"))
        else:
            entries[entry.checkpoint_id] = entry
    registry.clear()
    registry.add(entries.values())
    report.registered = sorted(entries)
    report.source_rows = sum(e.sources.num_rows for e in entries.values())
    return report
