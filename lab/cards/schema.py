"""`data_card.json` (schema `lab.data_card/2`): what a checkpoint was trained on, and under which consent.

The card itself is small: identity, lineage, snapshot, exclusions, exposure totals, derived
validity, and a reference (`sources`: file, sha256, row counts, seconds) to `sources.parquet`,
which holds one row per recording actually seen (see `lab.cards.sources`). Pydantic models are
the source of truth; `write_json_schema` exports `data_card.schema.json` and, for the rows,
`source_row.schema.json` into `lab.resources.schema_dir()` (regenerate with
`python -m lab.cards.schema`). Rules that need the rows (validity, totals) live in
`lab.cards.sources`; rules a JSON Schema cannot say but the card alone can are checked here.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lab.resources import schema_dir
from lab.rights.licences import LicenceClass
from lab.rights.records import OnTermination, Purpose, Right, Role, UTCDatetime
from lab.util import atomic

SCHEMA_ID = "lab.data_card/2"
ROW_SCHEMA_ID = "lab.source_row/1"
SCHEMA_FILE = "data_card.schema.json"
ROW_SCHEMA_FILE = "source_row.schema.json"
SOURCES_FILE = "sources.parquet"

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
TERRITORY_PATTERN = r"^(WW|[A-Z]{2})$"
ISRC_PATTERN = r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{2}[0-9]{5}$"

Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
Territory = Annotated[str, Field(pattern=TERRITORY_PATTERN)]
LicenceClassName = Literal[tuple(c.name for c in LicenceClass)]  # type: ignore[valid-type]

# retain < retrain < retire: retire withdraws the checkpoint at once, retrain replaces it.
TERMINATION_ORDER: dict[str, int] = {"retain": 0, "retrain": 1, "retire": 2}


class CardError(ValueError):
    """A data card does not validate; `errors` lists every problem found."""

    def __init__(self, errors: list[str]):
        super().__init__("invalid data card:\n  " + "\n  ".join(errors))
        self.errors = errors


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --------------------------------------------------------------------------- identity


class Identity(_Card):
    checkpoint_id: Identifier
    created_at: UTCDatetime
    step: int = Field(ge=0)
    code_commit: str = Field(pattern=r"^([0-9a-f]{7,64}|unknown)$", description="git sha, or 'unknown'")
    code_dirty: bool = Field(description="uncommitted changes in the working tree at training time")
    config_digest: Sha256 = Field(description="sha256 of the canonical JSON of the resolved config")
    seed: int
    lab_version: str = Field(min_length=1)


# --------------------------------------------------------------------------- one source row


class RightsHolder(_Card):
    name: str = Field(min_length=1)
    role: Role
    right: Right
    share: float = Field(gt=0, le=100, description="percent of this right; per right, a row's shares sum to 100")
    party_id: str | None = Field(default=None, description="IPI / ISNI / DDEX party id, when the grant gives one")
    grant_id: Identifier = Field(description="the grant whose parties these are (the most recent clearing grant)")


class SourceRow(_Card):
    """One row of sources.parquet: a recording a checkpoint saw, with the consent it was fed under.

    Exported as source_row.schema.json to document the columns; the file is checked column-wise
    by `lab.cards.sources.sources_errors`, which enforces the same rules.
    """

    model_config = ConfigDict(extra="forbid", title="lab source row")

    recording_id: Identifier
    seen_by: Identifier = Field(description="checkpoint whose training saw it: this one, or an ancestor")
    catalog: str = Field(min_length=1, description="catalogue name")
    isrc: str | None = Field(default=None, pattern=ISRC_PATTERN)
    title: str = Field(min_length=1)
    artists: list[str] = Field(min_length=1)
    audio_sha256: Sha256
    rights_holders: list[RightsHolder] = Field(min_length=1)
    licence: str = Field(
        min_length=1,
        description="SPDX expression, LicenseRef-lab-* for a contract; "
        "several grants → their distinct licences joined by ' AND '",
    )
    metadata_licence: str | None = Field(
        default=None,
        description="the licence the catalogue's metadata states, as written (null: none); "
        "the grants' licence is what applies, a disagreement is a licence_mismatch note of the snapshot",
    )
    grant_ids: list[Identifier] = Field(min_length=1)
    purposes: list[Purpose] = Field(min_length=1, description="what every grant for this recording allows")
    territories: list[Territory] = Field(min_length=1, description="intersection over grants; ['WW'] = anywhere")
    valid_until: UTCDatetime | None = Field(default=None, description="earliest end of its grants; null = open")
    on_termination: OnTermination = Field(description="strictest rule of its grants (retain < retrain < retire)")
    seconds_seen: float = Field(ge=0, description="seconds of this audio the `seen_by` checkpoint's run saw")
    credit: str = Field(default="", description="attribution text the grants require")
    extra: str = Field(
        default="{}",
        pattern=r"^\{.*\}$",
        description="the catalogue's extra facts for this recording (not interpreted by lab), as canonical JSON text",
    )

    @field_validator("seconds_seen")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("seconds_seen must be finite")
        return v


# --------------------------------------------------------------------------- lineage


class BaseCardRef(_Card):
    """The base model's own card: a file we hold (path + digest) and/or a summary of it."""

    path: str | None = None
    sha256: Sha256 | None = None
    summary: str = ""


class BaseModelRef(_Card):
    id: str = Field(min_length=1, description="hub id, local path, or 'musicgen-tiny' for a from-config init")
    digest: Sha256 | None = Field(default=None, description="sha256 of the base weights; null for a fresh init")
    licence: str = Field(min_length=1, description="licence of the base weights (SPDX, or 'none' for a fresh init)")
    declared_training_data: str = Field(min_length=1, description="what the base's publisher says it was trained on")
    card: BaseCardRef = BaseCardRef()
    kind: Literal["tiny_from_config", "local_pretrained", "lab_checkpoint"]


class ParentCheckpoint(_Card):
    checkpoint_id: Identifier
    data_card_sha256: Sha256
    path: str = Field(min_length=1)


class InheritedSources(_Card):
    """Summary of the rows sources.parquet carries over from the parent checkpoint's own file."""

    rows: int = Field(ge=0)
    total_seconds: float = Field(ge=0)
    seen_by: list[Identifier] = Field(description="the ancestor checkpoints that saw them (sorted)")


class Lineage(_Card):
    base_model: BaseModelRef
    parent_checkpoint: ParentCheckpoint | None = None
    relation: Literal["pretrain", "finetune", "adapter"]
    inherited_sources: InheritedSources | None = Field(
        default=None,
        description="summary of the rows inherited from a lab_checkpoint base (the rows are in "
        "sources.parquet with seen_by = an ancestor); set by build_card",
    )

    @model_validator(mode="after")
    def _traceable(self):
        if self.base_model.kind == "lab_checkpoint" and self.parent_checkpoint is None:
            raise ValueError("a lab_checkpoint base needs parent_checkpoint (its data card sha256) for lineage")
        if self.inherited_sources is not None and self.parent_checkpoint is None:
            raise ValueError("inherited_sources only come from a parent checkpoint")
        return self


# --------------------------------------------------------------------------- snapshot


class PolicyRef(_Card):
    name: str = Field(min_length=1)
    purposes: list[Purpose] = Field(min_length=1)
    territory: Territory
    accept_licence_classes: list[LicenceClassName] = Field(min_length=1)  # type: ignore[valid-type]
    contracts: dict[str, str] = Field(default_factory=dict, description="LicenseRef-* contract id -> licence class")
    digest: Sha256


class SnapshotRef(_Card):
    snapshot_id: Identifier
    merkle_root: Sha256
    ledger_head_seq: int = Field(ge=0)
    ledger_head_hash: Sha256
    policy: PolicyRef
    cleared_at: UTCDatetime
    catalog: str = Field(min_length=1, description="catalogue name")

    @classmethod
    def from_snapshot(cls, snap: Any) -> SnapshotRef:
        """From a snapshot object (attributes as in docs/snapshot-format.md) or its parsed header."""
        get = snap.get if isinstance(snap, Mapping) else (lambda k: getattr(snap, k))
        catalog, ledger, policy = get("catalog"), get("ledger"), get("policy")
        return cls(
            snapshot_id=get("snapshot_id"),
            merkle_root=get("merkle_root"),
            ledger_head_seq=ledger["head_seq"],
            ledger_head_hash=ledger["head_hash"],
            policy={k: policy[k] for k in PolicyRef.model_fields if k in policy},
            cleared_at=get("cleared_at"),
            catalog=catalog["name"] if isinstance(catalog, Mapping) else catalog,
        )


# --------------------------------------------------------------------------- derived and totals


class Validity(_Card):
    """What every grant behind the weights allows at once, over own and inherited rows (derived)."""

    purposes: list[Purpose] = Field(description="intersection of the rows' purposes")
    territories: list[Territory] = Field(description="intersection of the rows' territories; ['WW'] = anywhere")
    earliest_expiry: UTCDatetime | None = Field(description="earliest valid_until; null = no source expires")
    on_termination: OnTermination | None = Field(description="strictest on_termination; null with no sources")


class WeightsLicence(_Card):
    """What the weights may be used for, derived (`lab.cards.licence`), never copied from the base:
    the base model's licence AND every licence of the sources seen (own and inherited), simplified."""

    expression: str = Field(min_length=1, description="SPDX expression of the weights (simplified, deduplicated)")
    licence_class: LicenceClassName = Field(  # type: ignore[valid-type]
        description="lab.rights.licences.classify of the expression (AND binds to the strictest)"
    )
    base: str = Field(min_length=1, description="the base model's licence as declared ('none' for a fresh init)")
    sources: list[str] = Field(description="the distinct licence expressions of the rows (sorted)")


class Exposure(_Card):
    """This checkpoint's own run (inherited exposure is in lineage.inherited_sources)."""

    total_seconds: float = Field(ge=0, description="sum of seconds_seen over the rows seen_by this checkpoint")
    samples: int = Field(ge=0)
    tokens: int = Field(ge=0)


class SourcesRef(_Card):
    """The per-source rows: a Parquet file beside data_card.json, bound to the card by its sha256."""

    file: Literal["sources.parquet"] = SOURCES_FILE
    format: Literal["parquet"] = "parquet"
    row_schema: Literal["lab.source_row/1"] = ROW_SCHEMA_ID
    sha256: Sha256
    bytes: int = Field(ge=0)
    rows: int = Field(ge=0, description="own_rows + inherited_rows")
    own_rows: int = Field(ge=0, description="rows seen_by this checkpoint")
    inherited_rows: int = Field(ge=0)
    total_seconds: float = Field(ge=0, description="sum of seconds_seen over every row")


class ConsentEventApplied(_Card):
    """A ledger event that changed the run while it trained (lab.train.consent_watch)."""

    seq: int = Field(ge=1, description="the event's ledger seq")
    event_id: str = Field(min_length=1)
    kind: Literal["grant", "amend", "revoke", "expire"]
    grant_id: Identifier
    recordings: list[Identifier] = Field(min_length=1, description="recordings in use that it touched")
    effective_at: UTCDatetime = Field(description="a revocation's or expiry's effective time; else when recorded")
    detected_at: UTCDatetime = Field(description="when the run read it from the ledger")
    step: int = Field(ge=0, description="the first step trained under it")
    action: Literal["exclude", "stop", "deadline"] = Field(
        description="exclude: left the sampler; stop: the run saved and stopped; deadline: fed only until effective_at"
    )


class ExpiredSource(_Card):
    """A row whose valid_until is earlier than the card's created_at: fed only before it."""

    recording_id: Identifier
    seen_by: Identifier
    valid_until: UTCDatetime
    seconds_seen: float = Field(ge=0, description="all of it before valid_until (the loader drops it at the deadline)")


class ConsentSection(_Card):
    """Consent while training: how fast changes reach the run, and the ones that did."""

    poll_seconds: float = Field(
        gt=0,
        description="the polling bound: a change is applied within this many seconds (plus one step) of being "
        "recorded, so exposure after its effective time is zero up to this bound",
    )
    on_change: Literal["exclude", "stop"]
    events_applied: list[ConsentEventApplied] = Field(default_factory=list)
    expired_sources: list[ExpiredSource] = Field(default_factory=list)


# --------------------------------------------------------------------------- the card


def _require_schema_id(schema: dict[str, Any]) -> None:
    schema.setdefault("required", [])
    if "schema" not in schema["required"]:
        schema["required"].insert(0, "schema")


def seconds_close(a: float, b: float) -> bool:
    """Equal up to float summation order (relative 1e-6, plus a millisecond)."""
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b)) + 1e-3


class DataCard(_Card):
    """The machine-readable card of one checkpoint (the rows are in `sources.file`)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        populate_by_name=True,
        json_schema_extra=_require_schema_id,
        title="lab data card",
    )

    schema_id: Literal["lab.data_card/2"] = Field(default=SCHEMA_ID, alias="schema")
    identity: Identity
    lineage: Lineage
    snapshot: SnapshotRef
    sources: SourcesRef
    exclusions: dict[str, Annotated[int, Field(ge=0)]] = Field(description="clearance exclusions: reason -> count")
    validity: Validity
    licence: WeightsLicence
    exposure: Exposure
    consent: ConsentSection | None = Field(default=None, description="consent during training (lab train)")

    @model_validator(mode="after")
    def _consistent(self):
        s, inh = self.sources, self.lineage.inherited_sources
        problems = []
        if s.rows != s.own_rows + s.inherited_rows:
            problems.append(f"sources.rows={s.rows} but own_rows + inherited_rows = {s.own_rows + s.inherited_rows}")
        if s.inherited_rows != (inh.rows if inh else 0):
            problems.append(
                f"sources.inherited_rows={s.inherited_rows} but lineage.inherited_sources says {inh.rows if inh else 0}"
            )
        inherited_seconds = inh.total_seconds if inh else 0.0
        if not seconds_close(s.total_seconds, self.exposure.total_seconds + inherited_seconds):
            problems.append(
                f"sources.total_seconds={s.total_seconds} but exposure + inherited = "
                f"{self.exposure.total_seconds + inherited_seconds}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------- JSON Schema


def json_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:lab:schema:data_card:2",
        "description": (
            f"{SCHEMA_ID}: the machine-readable card of a lab checkpoint; per-source rows are in "
            "sources.parquet (see source_row.schema.json). Generated from lab/cards/schema.py by "
            "`python -m lab.cards.schema`; do not edit by hand."
        ),
        **DataCard.model_json_schema(by_alias=True, mode="validation"),
    }


def row_json_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:lab:schema:source_row:1",
        "description": (
            f"{ROW_SCHEMA_ID}: one row of a checkpoint's sources.parquet, as JSON (valid_until as an "
            "RFC 3339 string). Generated from lab/cards/schema.py; do not edit by hand."
        ),
        **SourceRow.model_json_schema(mode="validation"),
    }


def write_json_schema(directory: str | Path | None = None) -> list[Path]:
    """Write both schemas (default: the shipped schema folder, data_cards/schema/ in a checkout)."""
    directory = Path(directory) if directory else schema_dir()
    out = []
    for name, doc in ((SCHEMA_FILE, json_schema()), (ROW_SCHEMA_FILE, row_json_schema())):
        text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        out.append(atomic.write_text(directory / name, text))
    return out


@lru_cache(maxsize=8)
def _validator(path: str, mtime_ns: int):
    import jsonschema

    schema = json.loads(Path(path).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(data: Any, schema_file: str = SCHEMA_FILE, directory: str | Path | None = None) -> list[str]:
    """Problems the committed JSON Schema (jsonschema, not pydantic) finds in data; [] = valid."""
    path = Path(directory or schema_dir()) / schema_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `python -m lab.cards.schema` to generate it")
    validator = _validator(str(path.resolve()), path.stat().st_mtime_ns)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]


def validate_card_json(data: Mapping[str, Any]) -> DataCard:
    """Check a parsed data_card.json against the committed JSON Schema, then the pydantic rules.
    Raises CardError listing every problem (the rows are checked by `lab.cards.sources`)."""
    errors = schema_errors(data)
    if errors:
        raise CardError(errors)
    try:
        return DataCard.model_validate(data)
    except ValidationError as exc:
        raise CardError(
            [f"{'/'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()]
        ) from None


if __name__ == "__main__":
    for written in write_json_schema(sys.argv[1] if len(sys.argv) > 1 else None):
        print(written)
