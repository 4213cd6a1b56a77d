"""A catalogue item: one recording as ingested, with what we verified about its audio."""

from __future__ import annotations

import math
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
ExtraScalar = StrictStr | StrictBool | StrictInt | StrictFloat | None
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
        description=f"facts lab carries to the snapshot and the data card without interpreting them: "
        f"at most {MAX_EXTRA_KEYS} keys of 1..{MAX_EXTRA_KEY} characters, each a JSON scalar or a list of "
        f"at most {MAX_NAMES} scalars; at most {MAX_EXTRA_BYTES} bytes as canonical JSON",
    )

    @field_validator("extra", mode="before")
    @classmethod
    def _extra_text(cls, v: Any) -> Any:
        # Stored catalogues and snapshots hold `extra` as its canonical JSON text.
        if isinstance(v, str):
            try:
                return orjson.loads(v)
            except orjson.JSONDecodeError:
                raise ValueError("not a JSON object") from None
        if v is None:
            return {}
        if isinstance(v, dict):  # one clear message instead of one per member of the value union
            for key, value in v.items():
                if not isinstance(key, str):
                    raise ValueError(f"key {key!r} is not a string")
                if isinstance(value, list):
                    if any(not _is_scalar(x) for x in value):
                        raise ValueError(f"key {key!r}: a list holds only JSON scalars (no objects or lists)")
                elif not _is_scalar(value):
                    raise ValueError(f"key {key!r}: a value is a JSON scalar or a list of scalars, not an object")
        return v

    @field_validator("extra")
    @classmethod
    def _extra_limits(cls, v: dict[str, Any]) -> dict[str, Any]:
        if len(v) > MAX_EXTRA_KEYS:
            raise ValueError(f"{len(v)} keys, at most {MAX_EXTRA_KEYS}")
        for key, value in v.items():
            if not key.strip() or len(key) > MAX_EXTRA_KEY:
                raise ValueError(f"key {key[:40]!r}: keys are 1..{MAX_EXTRA_KEY} characters, not blank")
            for x in value if isinstance(value, list) else [value]:
                if isinstance(x, float) and not math.isfinite(x):
                    raise ValueError(f"key {key!r}: numbers must be finite")
                if isinstance(x, str) and len(x) > MAX_TEXT:
                    raise ValueError(f"key {key!r}: a text is {len(x)} characters, at most {MAX_TEXT}")
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
