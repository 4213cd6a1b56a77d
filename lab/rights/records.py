"""Consent and licence records: the only shapes allowed into the ledger.

Every field a decision depends on is validated here, at the boundary, so the ledger and
clearance never see a half-formed grant. Unknown keys are refused (audiocraft's manifests
silently drop them; a licence field must never vanish that way).
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, Union

import pycountry
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from stdnum import isni as _isni
from stdnum.exceptions import ValidationError as _StdnumError
from stdnum.iso7064 import mod_37_36

from ..util.identifiers import normalize_isrc
from ..util.territories import TerritoryError, expand_territories
from .licences import LicenceError, validate_expression

PURPOSES = ("ai_training", "ai_generative_training", "ai_inference", "commercial_output", "eval_only")
Purpose = Literal["ai_training", "ai_generative_training", "ai_inference", "commercial_output", "eval_only"]
Role = Literal["master_owner", "label", "publisher", "composer", "songwriter", "performer", "producer"]
Right = Literal["master", "composition", "performance"]
CompensationModel = Literal["none", "flat_fee", "per_second_trained", "revenue_share"]
# The one amount field each compensation model needs (the others stay null).
AMOUNT_FIELD: dict[str, str | None] = {
    "none": None,
    "per_second_trained": "rate",
    "flat_fee": "pool",
    "revenue_share": "share",
}
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


def shares_off_100(parties, *, tolerance: Decimal = Decimal(0)) -> str:
    """'' when each right's shares add up to exactly 100 (Decimal), else e.g. 'master=90' (the totals
    that do not). `tolerance`: for records stored when shares were floats (read, never re-judged)."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for p in parties:
        totals[p.right] += p.share
    return ", ".join(f"{r}={t:f}" for r, t in sorted(totals.items()) if abs(t - 100) > tolerance)


# Money and shares are decimals: JSON carries them as decimal strings ("0.0020"), never floats (a float
# cannot hold 0.1 exactly, and a statement must add up to the cent). A float is refused in new input;
# in an event stored before this rule it is read through its shortest round-trip text, Decimal(str(x)),
# which gives back the decimal that was typed (0.002 → Decimal("0.002")), not the binary float's expansion.
_STORED_FLOAT_SLACK = Decimal("1e-6")  # stored float shares were checked to sum to 100 within this


def _decimal(what: str, places: int):
    """A BeforeValidator: int / decimal string / Decimal → finite Decimal in plain notation, at most
    `places` decimal places (new input); a float only from a stored event."""

    def parse(v: Any, info: ValidationInfo) -> Decimal:
        stored = _stored(info)
        if isinstance(v, bool):
            raise ValueError(f'{what} must be a decimal string such as "12.50", not {v!r}')
        if isinstance(v, float):
            if not stored:
                raise ValueError(f'{what} must be a decimal string such as "{v!r}", not the float {v!r}')
            v = str(v)
        if isinstance(v, int):
            d = Decimal(v)
        elif isinstance(v, Decimal):
            d = v
        elif isinstance(v, str):
            try:
                d = Decimal(v.strip())
            except InvalidOperation:
                raise ValueError(f"{what} {v!r} is not a decimal number") from None
        else:
            raise ValueError(f'{what} must be a decimal string such as "12.50", not {type(v).__name__}')
        if not d.is_finite():
            raise ValueError(f"{what} {v!r} is not a finite number")
        if d.as_tuple().exponent > 0:  # 1E+2 → 100: plain notation only
            d = d.quantize(Decimal(1))
        if not stored and -d.as_tuple().exponent > places:
            raise ValueError(f"{what} {v!r} has more than {places} decimal places")
        if not stored and abs(d) >= Decimal(10) ** 15:
            raise ValueError(f"{what} {v!r} is too large (at most 15 digits before the point)")
        return d

    return parse


def _plain(d: Decimal) -> str:
    return format(d, "f")  # never exponent notation: str(Decimal("0.0000001")) is "1E-7"


def DecimalText(what: str, places: int):  # noqa: N802 - a type factory
    """Decimal in Python, a plain decimal string in JSON."""
    return Annotated[
        Decimal,
        BeforeValidator(_decimal(what, places)),
        PlainSerializer(_plain, return_type=str, when_used="json"),
    ]


# Amounts: 12 decimal places are ample for a rate per second (EUR 0.000000000001). Shares: 6 places
# (33.333333 + 33.333333 + 33.333334 = 100); a share with at most 6 places and 3 integer digits has at
# most 9 significant digits, so the float64 copies in snapshots and data cards round-trip exactly.
Amount = DecimalText("amount", 12)
Share = DecimalText("share", 6)


# Party ids carry their scheme: `ISNI:` + 16 characters (ISO 27729, checked with python-stdnum's isni:
# MOD 11-2 check character); `IPI:` + 9 to 11 digits (CISAC IPI name number, 11 digits, or the older
# 9-digit CAE number; digits and length only: the IPI check-digit rule is CISAC's and not published);
# `DPID:` + a DDEX Party ID, PADPID + one ID-type letter + 10 characters + a check character (18 in
# all, hyphens of the printed form dropped), the check character verified with ISO 7064 MOD 37,36
# (python-stdnum's mod_37_36, as for the GRid, DDEX's sister identifier).
PARTY_ID_SCHEMES = ("ISNI", "IPI", "DPID")
_IPI = re.compile(r"^[0-9]{9,11}$")
_DPID = re.compile(r"^PADPID[A-Z][0-9A-Z]{10}[0-9A-Z]$")


def normalize_party_id(value: str) -> str:
    """`SCHEME:ID` checked and written compactly (`ISNI:0000000121032683`); ValueError in one line."""
    scheme, sep, rest = value.partition(":")
    scheme, rest = scheme.strip().upper(), rest.strip()
    if not sep or scheme not in PARTY_ID_SCHEMES:
        raise ValueError(f"party_id {value!r}: unknown scheme {scheme if sep else ''!r}; write ISNI:…, IPI:… or DPID:…")
    if scheme == "ISNI":
        try:
            return "ISNI:" + _isni.validate(rest)
        except _StdnumError as exc:
            raise ValueError(f"party_id {value!r} is not a valid ISNI ({exc})") from None
    compact = re.sub(r"[\s\-.]", "", rest).upper()
    if scheme == "IPI":
        if not _IPI.match(compact):
            raise ValueError(f"party_id {value!r}: an IPI is 9 to 11 digits")
        return "IPI:" + compact
    if not _DPID.match(compact):
        raise ValueError(f"party_id {value!r}: a DDEX party id is PADPID + 12 letters or digits (18 in all)")
    if not mod_37_36.is_valid(compact):
        raise ValueError(f"party_id {value!r}: the DDEX party id's check character does not match")
    return "DPID:" + compact


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Party(Strict):
    name: str = Field(min_length=1)
    role: Role
    right: Right
    share: Share = Field(gt=0, le=100, description="percent of this right held by the party (decimal string)")
    party_id: str | None = Field(default=None, description="ISNI:…, IPI:… or DPID:… (DDEX party id)")

    @field_validator("party_id")
    @classmethod
    def _party_id(cls, v, info: ValidationInfo):
        if v is None or _stored(info):  # stored before ids were typed: read as written
            return v
        return normalize_party_id(v)

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
    """What one right of a grant earns: `per_second_trained` pays `rate` per second of the recording's
    audio a checkpoint saw; `flat_fee` a `pool` per calendar month, shared by exposure among the grant's
    recordings; `revenue_share` `share` percent of the revenue reported for a checkpoint's outputs,
    shared by exposure; `none` nothing. Exactly the amount field its model needs is set."""

    right: Right
    model: CompensationModel
    rate: Amount | None = Field(default=None, description="currency per second of audio seen")
    pool: Amount | None = Field(default=None, description="flat fee per calendar month")
    share: Share | None = Field(default=None, description="percent of reported revenue, 0 < share <= 100")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217")
    notes: str = ""

    @model_validator(mode="after")
    def _terms(self, info: ValidationInfo):
        stored = _stored(info)
        need = AMOUNT_FIELD[self.model]
        for f in ("rate", "pool", "share"):
            v = getattr(self, f)
            if f == need and v is None:
                raise ValueError(f"{self.model} needs {f}")
            if f != need and v is not None:
                raise ValueError(f"{self.model} takes no {f}" + (f" (it takes {need})" if need else ""))
            if v is not None and (v < 0 or (v == 0 and not stored)):
                raise ValueError(f"{f} must be greater than 0 (a right that earns nothing is model none)")
        if self.share is not None and self.share > 100:
            raise ValueError("share is a percent of revenue: at most 100")
        if need and self.currency is None:
            raise ValueError(f"{self.model} needs a currency (ISO 4217)")
        if not stored:
            _check_sizes(self, {"notes": LIMITS["text"]})
            if self.currency is not None and pycountry.currencies.get(alpha_3=self.currency) is None:
                raise ValueError(f"currency {self.currency!r} is not an ISO 4217 code")
        return self


def legacy_compensation(old: dict[str, Any], parties: list[Any]) -> list[dict[str, Any]]:
    """A compensation stored before terms were per right (one object, a float `rate`) as the list it
    means: the same model for every right the grant's parties hold, its rate read into the amount
    field that model takes (flat_fee → pool, revenue_share → share), via Decimal(str(rate))."""
    model = old.get("model", "none")
    rights = sorted({p["right"] if isinstance(p, dict) else p.right for p in parties})
    field = AMOUNT_FIELD.get(model)
    entry: dict[str, Any] = {"model": model, "notes": old.get("notes", "")}
    if field is not None:
        rate = old.get("rate", 0)
        entry[field] = Decimal(str(rate)) if isinstance(rate, float) else Decimal(rate)
        entry["currency"] = old.get("currency", "EUR")
    return [{"right": r, **entry} for r in rights]


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
    compensation: list[Compensation] = Field(default_factory=list, description="terms per right, at most one each")
    evidence: str = Field(default="", description="contract / signed form reference")

    @model_validator(mode="before")
    @classmethod
    def _legacy_terms(cls, data: Any, info: ValidationInfo):
        """A stored event's single compensation object read as per-right terms (`legacy_compensation`)."""
        if isinstance(data, dict) and isinstance(data.get("compensation"), dict):
            if not _stored(info):
                raise ValueError(
                    "compensation is a list with one entry per right, e.g. "
                    '[{"right": "master", "model": "per_second_trained", "rate": "0.0020", "currency": "EUR"}]'
                )
            data = {**data, "compensation": legacy_compensation(data["compensation"], data.get("parties") or [])}
        return data

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
        off = shares_off_100(self.parties, tolerance=_STORED_FLOAT_SLACK if _stored(info) else Decimal(0))
        if off:
            raise ValueError(f"party shares per right must sum to 100 (got {off})")
        rights = [c.right for c in self.compensation]
        if not _stored(info):
            _duplicates("compensation rights", rights)
            held = {p.right for p in self.parties}
            unheld = sorted(set(rights) - held)
            if unheld:
                raise ValueError(f"compensation for {', '.join(unheld)}, a right no party holds")
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
