"""`lab registry rebuild PATH…`: the registry again, from the signed checkpoints and output records under paths.

Only a folder whose signature verifies under the lab key is indexed: the registry is then
exactly what the signed data cards say, never what an edited copy says. Outputs come back the
same way: a released output from the claims embedded in its audio file, only when its content
credential reads trusted under the lab root (the `<file>.c2pa.json` sidecar says where one is);
a refused or withheld attempt from its record file (`OutputRecord` JSON; nothing was released,
so there is nothing to sign). Everything else is skipped with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from lab.cards.files import CARD_FILE
from lab.cards.schema import CardError
from lab.cards.signing import verify_folder
from lab.checkpoint.folder import is_complete
from lab.sample.records import OutputRecord

from .entry import CheckpointEntry, describe
from .store import Registry

_RECORD_MAX_BYTES = 1 << 20  # a JSON file bigger than this is not an output record


@dataclass
class RebuildReport:
    registered: list[str] = field(default_factory=list)  # checkpoint ids
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (folder or file, reason)
    source_rows: int = 0
    outputs: list[str] = field(default_factory=list)  # output record ids

    def to_dict(self) -> dict:
        return {
            "registered": self.registered,
            "source_rows": self.source_rows,
            "outputs": self.outputs,
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


def find_output_files(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(sidecars, other JSON files) under `paths`, sorted; checkpoint and dot-named folders are not looked into."""
    from lab.sample.credentials import SIDECAR_SUFFIX

    sidecars: set[Path] = set()
    others: set[Path] = set()
    for root in map(Path, paths):
        files = [root] if root.is_file() else []
        for dirpath, dirnames, filenames in os.walk(root) if root.is_dir() else ():
            if CARD_FILE in filenames:
                dirnames[:] = []
                continue
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            files += [Path(dirpath) / f for f in filenames if f.endswith(".json") and not f.startswith(".")]
        for f in files:
            (sidecars if f.name.endswith(SIDECAR_SUFFIX) else others).add(f.resolve())
    return sorted(sidecars), sorted(others)


def released_from_sidecar(sidecar: Path, *, home: Path | None = None) -> tuple[OutputRecord | None, str]:
    """(record, '') of the released output a sidecar names, from the claims its trusted audio file embeds."""
    from lab.sample.credentials import SIDECAR_SUFFIX, verify_output

    audio = sidecar.with_name(sidecar.name[: -len(SIDECAR_SUFFIX)])
    if not audio.is_file():
        return None, f"the audio file {audio.name} is missing"
    try:
        check = verify_output(audio, home=home)
    except (OSError, ValueError) as exc:
        return None, f"content credential: {exc}"
    if check.state != "trusted":
        return None, f"content credential {check.state}: {check.detail}"
    claims = check.claims or {}
    digest = hashlib.sha256(audio.read_bytes()).hexdigest()
    try:
        decision = claims["decision"]
        record = OutputRecord(
            record_id=digest,
            kind="released",
            created_at=claims["created_at"],
            checkpoint_id=claims["checkpoint_id"],
            checkpoint_folder=decision["checkpoint_folder"],
            data_card_sha256=claims.get("data_card_sha256"),
            prompt=claims["prompt"],
            seed=claims.get("seed"),
            duration_s=claims.get("duration_s"),
            uses=claims["uses"],
            territory=claims["territory"],
            decision=decision,
            replication=claims.get("replication"),
            path=str(audio),
            audio_sha256=digest,
            sample_rate=claims.get("sample_rate"),
            format=audio.suffix.lower().lstrip("."),
            credential="c2pa",
            sidecar=str(sidecar),
            credits=claims.get("credits") or [],
        )
    except (KeyError, TypeError, ValidationError) as exc:
        return None, f"the embedded claims are not an output record ({str(exc).splitlines()[0]})"
    return record, ""


def record_from_file(path: Path) -> tuple[OutputRecord | None, str]:
    """(record, '') for a refused or withheld output record file; (None, '') for a JSON file that is no record."""
    try:
        if path.stat().st_size > _RECORD_MAX_BYTES:
            return None, ""
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None, ""
    if not isinstance(data, dict) or not {"record_id", "kind", "decision"} <= data.keys():
        return None, ""
    try:
        return OutputRecord.model_validate(data), ""
    except ValidationError as exc:
        return None, f"not a valid output record ({exc.error_count()} error(s): {exc.errors()[0]['msg']})"


def rebuild_outputs(
    registry: Registry, paths: Iterable[str | os.PathLike], *, home: Path | None = None
) -> tuple[list[str], list[tuple[str, str]]]:
    """Replace the registry's outputs with the records found under `paths`: (record ids, skipped (file, reason)).

    A released output is restored only from its signed audio file; a record file that says
    `released` is left out (silently when its audio was restored, else with the reason)."""
    paths = list(paths)
    sidecars, others = find_output_files(paths)
    records: dict[str, OutputRecord] = {}
    skipped: list[tuple[str, str]] = []

    def keep(record: OutputRecord, where: Path) -> None:
        if record.record_id in records:
            skipped.append((str(where), f"duplicate of output record {record.record_id}"))
        else:
            records[record.record_id] = record

    for side in sidecars:
        record, reason = released_from_sidecar(side, home=home)
        if record is None:
            skipped.append((str(side), reason))
        else:
            keep(record, side)
    restored = {r.path for r in records.values()}
    for path in others:
        record, reason = record_from_file(path)
        if record is None:
            if reason:
                skipped.append((str(path), reason))
        elif record.kind == "released":
            if record.record_id not in records and record.path not in restored:
                skipped.append((str(path), "a released output is restored only from its signed audio file"))
        else:
            keep(record, path)
    registry.clear_outputs()
    for record in records.values():
        registry.record_output(record)
    return sorted(records), skipped


def rebuild(
    registry: Registry, paths: Iterable[str | os.PathLike], public_key: Path, *, home: Path | None = None
) -> RebuildReport:
    """Empty the registry's checkpoints and outputs and index every verified checkpoint and output record
    under `paths` anew (`home`: whose CA root the outputs' credentials must chain to; default LAB_HOME).

    Two folders with the same checkpoint id (a copy): the first in path order is kept, the other
    skipped. Audit summaries survive (they are keyed by checkpoint id)."""
    paths = list(paths)
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
    report.outputs, skipped = rebuild_outputs(registry, paths, home=home)
    report.skipped += skipped
    return report
