"""Consent and licence records: the only shapes allowed into the ledger.

Every field a decision depends on is validated here, at the boundary, so the ledger and
clearance never see a half-formed grant. Unknown keys are refused (audiocraft's manifests
silently drop them; a licence field must never vanish that way).
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, datetime, time, timezone
from typing import Annotated, Literal, Union

import pycountry
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..util.identifiers import normalize_isrc
from ..util.territories import TerritoryError, expand_territories
from .licences import LicenceError, validate_expression

PURPOSES = ("ai_training", "ai_generative_training", "ai_inference", "commercial_output", "eval_only")
Purpose = Literal["ai_training", "ai_generative_training", "ai_inference", "commercial_output", "eval_only"]
Role = Literal["master_owner", "label", "publisher", "composer", "songwriter", "performer", "producer"]
Right = Literal["master", "composition", "performance"]
OnTermination = Literal["retain", "retire", "retrain"]
ConsentStatus = Literal["opted_in", "opted_out"]
WORLDWIDE = "WW"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
# The shape of a territory code; new records are checked against ISO 3166-1 (lab.util.territories),
# records already stored only against this shape (an append-only ledger must stay readable).
_TERRITORY = re.compile(r"^[A-Z]{2}$")
# Sizes a record may have (checked on new records; `STORED` ones are read as they are).
LIMITS = {"text": 2000, "name": 256, "licence": 1000, "parties": 100, "territories": 300}


def _to_utc(value):
    """Accept a bare date as midnight UTC; naive datetimes are refused by AwareDatetime."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time.min, tzinfo=timezone.utc)
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return datetime.combine(date.fromisoformat(value), time.min, tzinfo=timezone.utc)
    return value


UTCDatetime = Annotated[AwareDatetime, BeforeValidator(_to_utc)]
Identifier = Annotated[str, Field(pattern=_ID.pattern)]


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


def _duplicates(field: str, values: list) -> None:
    seen, twice = set(), []
    for v in values:
        if v in seen and v not in twice:
            twice.append(v)
        seen.add(v)
    if twice:
        raise ValueError(f"{field}: {', '.join(map(repr, twice))} listed more than once")


def _check_sizes(model: BaseModel, sizes: dict[str, int]) -> None:
    """Each named str field within its size (new records only): errors name the field and its length."""
    for name, most in sizes.items():
        value = getattr(model, name)
        if isinstance(value, str) and len(value) > most:
            raise ValueError(f"{name} is {len(value)} characters long; at most {most}")


def shares_off_100(parties) -> str:
    """'' when each right's shares add up to 100, else e.g. 'master=90' (the totals that do not)."""
    totals: dict[str, float] = defaultdict(float)
    for p in parties:
        totals[p.right] += p.share
    return ", ".join(f"{r}={t:g}" for r, t in sorted(totals.items()) if abs(t - 100.0) > 1e-6)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Party(Strict):
    name: str = Field(min_length=1)
    role: Role
    right: Right
    share: float = Field(gt=0, le=100, description="percent of this right held by the party")
    party_id: str | None = Field(default=None, description="IPI / ISNI / DDEX party id")

    @model_validator(mode="after")
    def _sizes(self, info: ValidationInfo):
        if not _stored(info):
            _check_sizes(self, {"name": LIMITS["name"], "party_id": 64})
        return self


class Subject(Strict):
    """What a grant covers. An opt-in grant matches a catalogue item when every identifier it names
    equals the item's; an opt-out (or a revoked grant) matches every item, in every catalogue, that
    carries any of them. A recording id is unique only within its catalogue, so a subject that names
    one must also name the catalogue, an ISRC or the audio sha256."""

    recording_id: Identifier | None = None
    isrc: str | None = None
    audio_sha256: str | None = None
    catalog: Identifier | None = Field(default=None, description="a whole-catalogue deal")

    @field_validator("isrc")
    @classmethod
    def _isrc(cls, v):
        return normalize_isrc(v)

    @field_validator("audio_sha256")
    @classmethod
    def _sha(cls, v):
        if v is not None and not _SHA256.match(v):
            raise ValueError("audio_sha256 must be 64 lowercase hex characters")
        return v

    @model_validator(mode="after")
    def _some_identifier(self, info: ValidationInfo):
        if not any((self.recording_id, self.isrc, self.audio_sha256, self.catalog)):
            raise ValueError("subject needs at least one of recording_id, isrc, audio_sha256, catalog")
        stored = bool(info.context and info.context.get("stored"))  # written before the rule: read as it is
        if self.recording_id and not (self.catalog or self.isrc or self.audio_sha256) and not stored:
            raise ValueError(
                f"recording_id {self.recording_id!r} alone is ambiguous across catalogues: "
                "name its catalog too (or its isrc or audio_sha256)"
            )
        return self


class Compensation(Strict):
    model: Literal["none", "flat_fee", "per_second_trained", "revenue_share"]
    rate: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    notes: str = ""

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo):
        if not _stored(info):
            _check_sizes(self, {"notes": LIMITS["text"]})
            if pycountry.currencies.get(alpha_3=self.currency) is None:
                raise ValueError(f"currency {self.currency!r} is not an ISO 4217 code")
        return self


class Grant(Strict):
    """A consent record: one recording, or a catalogue deal, for named purposes and places."""

    grant_id: Identifier
    version: int = Field(default=1, ge=1)
    supersedes: Identifier | None = Field(default=None, description="grant_id this version replaces")
    issued_at: UTCDatetime
    issuer: str = Field(min_length=1)
    subject: Subject
    status: ConsentStatus = "opted_in"
    parties: list[Party] = Field(default_factory=list)
    purposes: list[Purpose] = Field(default_factory=list)
    territories: list[str] = Field(default_factory=list)
    valid_from: UTCDatetime
    valid_until: UTCDatetime | None = None
    on_termination: OnTermination = "retain"
    licence: str
    attribution: str = ""
    compensation: Compensation = Compensation(model="none")
    evidence: str = Field(default="", description="contract / signed form reference")

    @field_validator("licence")
    @classmethod
    def _licence(cls, v):
        try:
            return validate_expression(v)
        except LicenceError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("territories")
    @classmethod
    def _territories(cls, v, info: ValidationInfo):
        if not _stored(info):  # ISO 3166-1 via pycountry, with hints; groups (EU) written out as their members
            if len(v) > LIMITS["territories"]:
                raise ValueError(f"{len(v)} territories; at most {LIMITS['territories']}")
            try:
                return expand_territories(v)
            except TerritoryError as exc:
                raise ValueError(str(exc)) from None
        out = []
        for t in v:
            t = t.strip().upper()
            if t in ("WORLDWIDE", "WORLD"):
                t = WORLDWIDE
            if t != WORLDWIDE and not _TERRITORY.match(t):
                raise ValueError(f"territory {t!r} is not an ISO 3166-1 alpha-2 code or 'WW'")
            out.append(t)
        return sorted(set(out))

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, v, info: ValidationInfo):
        if not _stored(info):
            _duplicates("purposes", v)
        return sorted(set(v))

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        if not _stored(info):
            _check_sizes(
                self,
                {
                    "issuer": LIMITS["name"],
                    "licence": LIMITS["licence"],
                    "attribution": LIMITS["text"],
                    "evidence": LIMITS["text"],
                },
            )
            if len(self.parties) > LIMITS["parties"]:
                raise ValueError(f"{len(self.parties)} parties; at most {LIMITS['parties']}")
            _duplicates("parties", [f"{p.name} ({p.role}, {p.right})" for p in self.parties])
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if self.status == "opted_in":
            if not self.purposes:
                raise ValueError("an opted_in grant must name at least one purpose")
            if not self.territories:
                raise ValueError("an opted_in grant must name at least one territory (or 'WW')")
            if not self.parties:
                raise ValueError("an opted_in grant must name its rights holders (parties)")
        off = shares_off_100(self.parties)
        if off:
            raise ValueError(f"party shares per right must sum to 100 (got {off})")
        return self


class GrantEvent(Strict):
    kind: Literal["grant"] = "grant"
    grant: Grant


class AmendEvent(Strict):
    """A new version of a grant (or a replacement grant) that supersedes an earlier one."""

    kind: Literal["amend"] = "amend"
    grant: Grant

    @model_validator(mode="after")
    def _names_what_it_supersedes(self):
        if not self.grant.supersedes:
            raise ValueError("an amend must name the grant it supersedes (grant.supersedes)")
        return self


class RevokeEvent(Strict):
    kind: Literal["revoke"] = "revoke"
    grant_id: Identifier
    reason: str = Field(min_length=1)
    effective_at: UTCDatetime
    issuer: str = Field(min_length=1)

    @model_validator(mode="after")
    def _sizes(self, info: ValidationInfo):
        if not _stored(info):
            _check_sizes(self, {"reason": LIMITS["text"], "issuer": LIMITS["name"]})
        return self


class ExpireEvent(Strict):
    kind: Literal["expire"] = "expire"
    grant_id: Identifier
    effective_at: UTCDatetime
    reason: str = "term ended"


LedgerEvent = Annotated[Union[GrantEvent, AmendEvent, RevokeEvent, ExpireEvent], Field(discriminator="kind")]
EVENT_ADAPTER: TypeAdapter = TypeAdapter(LedgerEvent)
# Validation context for events read back from a ledger: rules added since they were written
# (a recording id must come with its catalogue) do not make an append-only ledger unreadable.
STORED = {"stored": True}


def parse_event(data: dict) -> GrantEvent | AmendEvent | RevokeEvent | ExpireEvent:
    """Validate one raw event; a bare grant (no `kind`) is read as a grant event."""
    if isinstance(data, dict) and "kind" not in data and "grant_id" in data:
        data = {"kind": "grant", "grant": data}
    return EVENT_ADAPTER.validate_python(data)
