"""Read a catalogue's metadata file (JSONL or CSV) into validated `RecordingMeta` rows.

All-or-nothing: every malformed row is collected (file, line, field, message) and
reported together in one `CatalogError`; a file with any error yields no rows, so
nothing downstream is written from it.

JSONL: one JSON object per line; blank lines are skipped; duplicate keys, NaN/Infinity
and unknown top-level fields are errors (a typo must not pass as data); facts lab does not
interpret go in the row's `extra` object. CSV: a header row naming the columns (any order);
`artists` and `rights_holders` are `;`-separated; an empty `isrc` / `licence` is null; every
column lab does not know goes into `extra` as text (an empty cell: the key is left out), since
a spreadsheet export has no other place for them.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lab.util.canonical import sha256_hex

from .items import RecordingMeta

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
LIST_FIELDS = ("artists", "rights_holders")
OPTIONAL_NULLABLE = ("isrc", "licence")
COLUMNS = tuple(RecordingMeta.model_fields)
CSV_COLUMNS = tuple(c for c in COLUMNS if c != "extra")  # in a CSV, every other column is an extra
REQUIRED_COLUMNS = tuple(n for n, f in RecordingMeta.model_fields.items() if f.is_required())
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_CSV_SUFFIXES = (".csv",)


@dataclass(frozen=True)
class MetadataIssue:
    """One problem in a metadata file. `line` is 1-based (None: the file as a whole)."""

    path: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {what}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CatalogError(ValueError):
    """A catalogue cannot be read or written. `issues` lists each problem (may be empty)."""

    def __init__(self, message: str, issues: list[MetadataIssue] | None = None):
        self.issues: list[MetadataIssue] = list(issues or [])
        self.summary = message
        if self.issues:
            message = message + "\n" + "\n".join(f"  {i}" for i in self.issues)
        super().__init__(message)


@dataclass
class MetadataFile:
    """A parsed metadata file: the rows, and the sha256 of exactly the bytes they came from."""

    path: Path
    format: str  # "jsonl" | "csv"
    sha256: str
    rows: list[RecordingMeta] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # line number of each row, aligned with rows


def find_metadata(source: str | Path, metadata: str | Path | None = None) -> Path:
    """The metadata file: `metadata` if given, else SOURCE/metadata.jsonl or SOURCE/metadata.csv.

    Both present is ambiguous and an error (pass one explicitly).
    """
    if metadata is not None:
        p = Path(metadata)
        if not p.is_file():
            raise CatalogError(f"metadata file not found: {p}")
        return p
    source = Path(source)
    found = [source / n for n in METADATA_NAMES if (source / n).is_file()]
    if not found:
        raise CatalogError(f"no metadata file in {source}: expected one of {', '.join(METADATA_NAMES)}")
    if len(found) > 1:
        raise CatalogError(f"both {found[0].name} and {found[1].name} are in {source}; pass --metadata to choose one")
    return found[0]


def metadata_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    raise CatalogError(f"{path}: unknown metadata format '{path.suffix}' (expected .jsonl or .csv)")


def load_metadata(path: str | Path) -> MetadataFile:
    """Read, hash and validate a metadata file. Raises CatalogError listing every problem."""
    path = Path(path)
    fmt = metadata_format(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read metadata file {path}: {exc.strerror or exc}") from exc
    name = str(path)
    issues: list[MetadataIssue] = []
    raw = _jsonl_rows(data, name, issues) if fmt == "jsonl" else _csv_rows(data, name, issues)

    rows: list[RecordingMeta] = []
    lines: list[int] = []
    seen: dict[str, dict[str, int]] = {"recording_id": {}, "isrc": {}, "audio_path": {}}
    for line, obj in raw:
        try:
            meta = RecordingMeta.model_validate(obj)
        except ValidationError as exc:
            issues.extend(_validation_issues(exc, name, line))
            continue
        # One row per recording: an id, an ISRC or an audio file named twice in one file is a broken export.
        dup = False
        for key, firsts in seen.items():
            value = getattr(meta, key)
            first = firsts.setdefault(value, line) if value is not None else line
            if first != line:
                issues.append(MetadataIssue(name, line, key, f"duplicate {key} '{value}' (first on line {first})"))
                dup = True
        if dup:
            continue
        rows.append(meta)
        lines.append(line)

    if not issues and not rows:
        issues.append(MetadataIssue(name, None, None, "no recordings in metadata file"))
    if issues:
        n = len(issues)
        raise CatalogError(f"{n} problem{'s' if n != 1 else ''} in metadata file {name}; nothing was written", issues)
    return MetadataFile(path=path, format=fmt, sha256=sha256_hex(data), rows=rows, lines=lines)


# --------------------------------------------------------------------------- JSONL


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _jsonl_rows(data: bytes, name: str, issues: list[MetadataIssue]) -> Iterator[tuple[int, Any]]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    rows = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(MetadataIssue(name, lineno, None, f"not valid UTF-8 (byte {exc.start})"))
            continue
        try:
            obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
        except _DuplicateKey as exc:
            issues.append(MetadataIssue(name, lineno, exc.key, "key appears more than once"))
            continue
        except ValueError as exc:
            issues.append(MetadataIssue(name, lineno, None, f"invalid JSON: {exc}"))
            continue
        if not isinstance(obj, dict):
            issues.append(MetadataIssue(name, lineno, None, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        rows.append((lineno, obj))
    return iter(rows)


# --------------------------------------------------------------------------- CSV


def _split_list(value: str) -> list[str]:
    return [p.strip() for p in value.split(";") if p.strip()]


def _csv_rows(data: bytes, name: str, issues: list[MetadataIssue]) -> Iterator[tuple[int, Any]]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        issues.append(MetadataIssue(name, line, None, f"not valid UTF-8 (byte {exc.start})"))
        return iter(())
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        issues.append(MetadataIssue(name, None, None, "empty CSV file (no header row)"))
        return iter(())
    except csv.Error as exc:
        issues.append(MetadataIssue(name, 1, None, f"malformed CSV: {exc}"))
        return iter(())
    header = [h.strip() for h in header]
    header_ok = True
    for col in header:
        if not col:
            issues.append(MetadataIssue(name, 1, "(empty)", "column has no name"))
            header_ok = False
        elif col == "extra":
            issues.append(
                MetadataIssue(
                    name,
                    1,
                    col,
                    "in a CSV, give each extra fact a column of its own "
                    "(every column lab does not know goes into extra)",
                )
            )
            header_ok = False
        elif header.count(col) > 1:
            issues.append(MetadataIssue(name, 1, col, "column appears more than once"))
            header_ok = False
    for col in REQUIRED_COLUMNS:
        if col not in header:
            near = difflib.get_close_matches(col, [h for h in header if h not in CSV_COLUMNS], n=1)
            hint = f" (is '{near[0]}' meant to be '{col}'?)" if near else ""
            issues.append(MetadataIssue(name, 1, col, f"required column missing from header{hint}"))
            header_ok = False
    if not header_ok:
        return iter(())

    rows = []
    last = reader.line_num
    while True:
        start = last + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            issues.append(MetadataIssue(name, start, None, f"malformed CSV: {exc}"))
            break  # the reader cannot resynchronise after a quoting error
        last = reader.line_num
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        if len(values) != len(header):
            issues.append(MetadataIssue(name, start, None, f"{len(values)} fields but the header has {len(header)}"))
            continue
        obj: dict[str, Any] = {}
        extra: dict[str, str] = {}
        for col, val in zip(header, values):
            if col not in CSV_COLUMNS:
                if val.strip():
                    extra[col] = val.strip()
            elif col in LIST_FIELDS:
                obj[col] = _split_list(val)
            elif col in OPTIONAL_NULLABLE and not val.strip():
                obj[col] = None
            else:
                obj[col] = val
        if extra:
            obj["extra"] = extra
        rows.append((start, obj))
    return iter(rows)


# --------------------------------------------------------------------------- errors


def _loc_name(loc: tuple[Any, ...]) -> str | None:
    if not loc:
        return None
    out = str(loc[0])
    for part in loc[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _validation_issues(exc: ValidationError, name: str, line: int) -> list[MetadataIssue]:
    out = []
    for err in exc.errors(include_url=False):
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field (known: {', '.join(COLUMNS)}; put other facts in 'extra')"
        out.append(MetadataIssue(name, line, _loc_name(tuple(err.get("loc", ()))), msg))
    return out
