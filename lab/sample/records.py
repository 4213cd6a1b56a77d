"""What sampling decides and records: the gate's decision, the replication check, the output record.

These are the boundary shapes shared by the gate, generation, content credentials, the registry
and `lab serve`; each is written once (as a sidecar, a refusal file or a registry row) and read
back by the reviewer tools, so they are pydantic models with no extra keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lab.rights.records import Purpose, UTCDatetime

OutputKind = Literal["released", "withheld", "refused"]
AudioFormat = Literal["wav", "flac"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Refusal(_Record):
    """One reason the gate says no, in clearance's vocabulary (README, "Exclusion reasons")."""

    check: str = Field(description="the gate check that failed: signature, card, registry, consent, licence")
    reason: str = Field(description="machine-readable reason, e.g. revoked, expired, territory, purpose")
    detail: str = Field(description="one line naming the term that failed")
    recording_id: str | None = None
    grant_id: str | None = None


class GateDecision(_Record):
    """Whether a checkpoint may be sampled for `uses` in `territory` at `at`, and why not."""

    allowed: bool
    checkpoint_id: str
    checkpoint_folder: str
    data_card_sha256: str | None = None
    uses: list[Purpose]
    territory: str
    at: UTCDatetime
    ledger_head_seq: int | None = None
    ledger_head_hash: str | None = None
    checks: dict[str, str] = Field(description="check name → 'ok' or the one-line detail of its failure")
    refusals: list[Refusal] = Field(default_factory=list)


class ReplicationResult(_Record):
    """How close an output came to the training data; `withheld` when over a threshold."""

    token_score: float = Field(ge=0, le=1, description="largest n-gram containment in one training recording")
    audio_score: float = Field(ge=0, le=1, description="best fingerprint match over sliding windows")
    nearest_recording: str | None = None
    nearest_by: Literal["tokens", "audio"] | None = None
    withheld: bool
    thresholds: dict[str, float]
    detail: str


class OutputRecord(_Record):
    """One sampling attempt: a released output, a withheld one, or a refusal (nothing generated)."""

    record_id: str = Field(description="sha256 of the audio file when released, else of the record itself")
    kind: OutputKind
    created_at: UTCDatetime
    checkpoint_id: str
    checkpoint_folder: str
    data_card_sha256: str | None = None
    prompt: str
    seed: int | None = None
    duration_s: float | None = None
    uses: list[Purpose]
    territory: str
    decision: GateDecision
    replication: ReplicationResult | None = None
    path: str | None = Field(default=None, description="the audio file (released only)")
    audio_sha256: str | None = None
    sample_rate: int | None = None
    format: AudioFormat | None = None
    credential: str | None = Field(default=None, description="'c2pa' when the file carries a signed manifest")
    sidecar: str | None = Field(default=None, description="the JSON sidecar holding the same claims")
    credits: list[str] = Field(default_factory=list, description="credit lines of the sources, own and inherited")
