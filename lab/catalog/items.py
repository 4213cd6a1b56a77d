"""A catalogue item: one recording as ingested, with what we verified about its audio."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..util.identifiers import normalize_isrc

# Sizes a metadata row may have: a real catalogue's row is far below them; a row above is a broken export.
MAX_TEXT = 2000
MAX_NAME = 256
MAX_NAMES = 100
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]

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
