"""A catalogue item: one recording as ingested, with what we verified about its audio."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..util.identifiers import normalize_isrc

# Reasons ingest can reject an item for; clearance reports them as exclusions verbatim.
IngestReject = Literal["decode_error", "path_outside_catalogue", "duplicate_audio", "missing_audio"]


class RecordingMeta(BaseModel):
    """One row of a catalogue's metadata file (JSONL or CSV), as the catalogue owner wrote it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    recording_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
    isrc: str | None = None
    title: str = Field(min_length=1)
    artists: list[str] = Field(min_length=1)
    description: str = Field(min_length=1, description="text that conditions the model")
    rights_holders: list[str] = Field(default_factory=list)
    licence: str | None = Field(default=None, description="declared licence; the ledger's grant decides")
    audio_path: str = Field(min_length=1, description="relative to the catalogue root")

    @field_validator("isrc")
    @classmethod
    def _isrc(cls, v):
        # Same canonical form as the ledger's grants, or an ISRC-only grant would never match.
        return normalize_isrc(v or None)


class CatalogItem(RecordingMeta):
    """RecordingMeta plus what ingest measured. Rejected items stay in the catalogue."""

    catalog: str
    status: Literal["ok", "rejected"] = "ok"
    reject_reason: IngestReject | None = None
    reject_detail: str = ""
    audio_sha256: str | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    frames: int | None = None
    format: str | None = None
    size_bytes: int | None = None
