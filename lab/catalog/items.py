"""A catalogue item: one recording as ingested, with what we verified about its audio."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

from ..util.canonical import canonical_json
from ..util.identifiers import normalize_isrc

# Sizes a metadata row may have: a real catalogue's row is far below them; a row above is a broken export.
MAX_TEXT = 2000
MAX_NAME = 256
MAX_NAMES = 100
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
# `extra`: facts lab carries but does not interpret (composer, source URL, rights notes ...).
MAX_EXTRA_KEYS = 50
MAX_EXTRA_KEY = 128
MAX_EXTRA_BYTES = 16_384  # of its canonical JSON: it travels into every snapshot item and card row
ExtraScalar = Annotated[StrictStr, Field(max_length=MAX_TEXT)] | StrictBool | StrictInt | StrictFloat | None
ExtraValue = ExtraScalar | Annotated[list[ExtraScalar], Field(max_length=MAX_NAMES)]

# Reasons ingest can reject an item for; clearance reports them as exclusions verbatim.
IngestReject = Literal["decode_error", "path_outside_catalogue", "duplicate_audio", "missing_audio"]


class RecordingMeta(BaseModel):
    """One row of a catalogue's metadata file (JSONL or CSV), as the catalogue owner wrote it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    recording_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
    isrc: str | None = Field(default=None, max_length=64)
    title: str = Field(min_length=1, max_length=MAX_NAME * 2)
    artists: list[Name] = Field(min_length=1, max_length=MAX_NAMES)
    description: str = Field(min_length=1, max_length=MAX_TEXT, description="text that conditions the model")
    rights_holders: list[Name] = Field(default_factory=list, max_length=MAX_NAMES)
    licence: str | None = Field(default=None, max_length=1000, description="declared; the ledger's grant decides")
    audio_path: str = Field(min_length=1, max_length=1024, description="relative to the catalogue root")
    extra: dict[str, ExtraValue] = Field(
        default_factory=dict,
        json_schema_extra={
            "maxProperties": MAX_EXTRA_KEYS,
            "propertyNames": {"minLength": 1, "maxLength": MAX_EXTRA_KEY, "pattern": r"\S"},
        },
        description=f"facts lab carries to the snapshot and the data card without interpreting them: "
        f"at most {MAX_EXTRA_KEYS} keys of 1..{MAX_EXTRA_KEY} characters, each a JSON scalar or a list of "
        f"at most {MAX_NAMES} scalars; at most {MAX_EXTRA_BYTES} bytes as canonical JSON",
    )

    @field_validator("extra", mode="before")
    @classmethod
    def _extra_values(cls, v: Any) -> Any:
        # Stored catalogues and snapshots hold `extra` as its canonical JSON text.
        if isinstance(v, str):
            try:
                v = orjson.loads(v)
            except orjson.JSONDecodeError:
                raise ValueError("not a JSON object") from None
        if v is None:
            return {}
        if isinstance(v, dict):  # checked here: one clear message, not one per member of the value union
            check_extra(v)
        return v

    @field_validator("extra")
    @classmethod
    def _extra_size(cls, v: dict[str, Any]) -> dict[str, Any]:
        size = len(extra_json(v))
        if size > MAX_EXTRA_BYTES:
            raise ValueError(f"{size} bytes as JSON, at most {MAX_EXTRA_BYTES}")
        return v

    @field_validator("licence")
    @classmethod
    def _licence(cls, v: str | None) -> str | None:
        return v or None  # blank: none stated

    @field_validator("isrc")
    @classmethod
    def _isrc(cls, v):
        # Same canonical form as the ledger's grants, or an ISRC-only grant would never match.
        return normalize_isrc(v or None)

    @field_validator("artists", "rights_holders")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        twice = sorted({a for a in v if v.count(a) > 1})
        if twice:
            raise ValueError(f"{', '.join(map(repr, twice))} listed more than once")
        return v


class CatalogItem(RecordingMeta):
    """RecordingMeta plus what ingest measured. Rejected items stay in the catalogue."""

    catalog: str
    status: Literal["ok", "rejected"] = "ok"
    reject_reason: IngestReject | None = None
    reject_detail: str = ""
    audio_sha256: str | None = None
    duration_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    sample_rate: int | None = Field(default=None, gt=0)
    channels: int | None = Field(default=None, gt=0)
    frames: int | None = Field(default=None, ge=0)
    format: str | None = None
    size_bytes: int | None = Field(default=None, ge=0)


def extra_json(extra: dict[str, Any] | None) -> str:
    """`extra` as stored (catalogue, snapshot, card): its canonical JSON text, `{}` when empty."""
    return canonical_json(extra or {}).decode()


def _is_scalar(x: Any) -> bool:
    return x is None or isinstance(x, (str, bool, int, float))


def check_extra(extra: dict[Any, Any]) -> None:
    """Raise ValueError naming the first key whose value lab cannot carry (shape and size, not meaning)."""
    if len(extra) > MAX_EXTRA_KEYS:
        raise ValueError(f"{len(extra)} keys, at most {MAX_EXTRA_KEYS}")
    for key, value in extra.items():
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_EXTRA_KEY:
            raise ValueError(f"key {str(key)[:40]!r}: keys are text of 1..{MAX_EXTRA_KEY} characters, not blank")
        if isinstance(value, list):
            if len(value) > MAX_NAMES:
                raise ValueError(f"key {key!r}: a list of {len(value)} values, at most {MAX_NAMES}")
            if any(not _is_scalar(x) for x in value):
                raise ValueError(f"key {key!r}: a list holds only JSON scalars (no objects or lists)")
        elif not _is_scalar(value):
            raise ValueError(f"key {key!r}: a value is a JSON scalar or a list of scalars, not an object")
        for x in value if isinstance(value, list) else [value]:
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"key {key!r}: numbers must be finite")
            if isinstance(x, str) and len(x) > MAX_TEXT:
                raise ValueError(f"key {key!r}: a text of {len(x)} characters, at most {MAX_TEXT}")


# --------------------------------------------------------------------------- JSON Schema

METADATA_SCHEMA_FILE = "catalog_metadata.schema.json"


def metadata_json_schema() -> dict[str, Any]:
    """The JSON Schema of one metadata.jsonl row, generated from RecordingMeta (the source of truth)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:lab:schema:catalog_metadata:1",
        "description": (
            "One row of a catalogue's metadata.jsonl, as `lab catalog ingest` reads it. In metadata.csv the same "
            "fields are columns (artists and rights_holders ';'-separated, an empty isrc / licence is null) and "
            "every other column goes into `extra` as text. Beyond this schema, ingest normalises the ISRC and "
            "refuses a recording_id, ISRC or audio_path twice in one file. Generated from lab/catalog/items.py "
            "by `python -m lab.catalog.items`; do not edit by hand."
        ),
        **RecordingMeta.model_json_schema(mode="validation"),
    }


def write_metadata_schema(directory: str | Path | None = None) -> Path:
    """Write catalog_metadata.schema.json (default: the shipped schema folder, data_cards/schema/ in a checkout)."""
    from ..resources import schema_dir
    from ..util.atomic import write_text

    text = json.dumps(metadata_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return write_text(Path(directory or schema_dir()) / METADATA_SCHEMA_FILE, text)


if __name__ == "__main__":
    print(write_metadata_schema(sys.argv[1] if len(sys.argv) > 1 else None))
