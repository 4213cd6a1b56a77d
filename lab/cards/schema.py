"""`data_card.json` (schema `lab.data_card/1`): what a checkpoint was trained on, and under which consent.

Pydantic models are the source of truth; `write_json_schema` exports them to
`data_cards/schema/data_card.schema.json` (regenerate with `python -m lab.cards.schema`), and
`validate_card` checks a card against that committed file first, then against the models
(which add the cross-field rules a JSON Schema cannot say: validity is derived from the
sources, exposure adds up, shares per right sum to 100).

A card on disk is written by `write_card` (`dump_card` bytes: sorted keys, two-space indent,
trailing newline), so its sha256 is reproducible from the model alone.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lab.rights.licences import LicenceClass
from lab.rights.records import (
    PURPOSES,
    WORLDWIDE,
    OnTermination,
    Purpose,
    Right,
    Role,
    UTCDatetime,
    shares_off_100,
)
from lab.util import atomic
from lab.util.canonical import sha256_file

SCHEMA_ID = "lab.data_card/1"
SCHEMA_FILE = "data_card.schema.json"
REPO_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "data_cards" / "schema"

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")]
Territory = Annotated[str, Field(pattern=r"^(WW|[A-Z]{2})$")]
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


# --------------------------------------------------------------------------- sources


class RightsHolder(_Card):
    name: str = Field(min_length=1)
    role: Role
    right: Right
    share: float = Field(gt=0, le=100, description="percent of this right")
    grant_id: Identifier
    party_id: str | None = Field(default=None, description="IPI / ISNI / DDEX party id, when the grant gives one")


class SourceRow(_Card):
    """One recording actually fed to the model, with the consent it was fed under."""

    recording_id: Identifier
    isrc: str | None = Field(default=None, pattern=r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{2}[0-9]{5}$")
    title: str = Field(min_length=1)
    artists: list[str] = Field(min_length=1)
    audio_sha256: Sha256
    rights_holders: list[RightsHolder] = Field(min_length=1)
    licence: str = Field(min_length=1, description="SPDX expression, LicenseRef-lab-* for a contract")
    grant_ids: list[Identifier] = Field(min_length=1)
    purposes: list[Purpose] = Field(min_length=1, description="what every grant for this recording allows")
    territories: list[Territory] = Field(min_length=1)
    valid_until: UTCDatetime | None = Field(default=None, description="earliest end of its grants; null = open")
    on_termination: OnTermination
    seconds_seen: float = Field(ge=0, description="seconds of this audio the model saw up to this step")
    credit: str = Field(default="", description="attribution text the grant requires")

    @field_validator("seconds_seen")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("seconds_seen must be finite")
        return v

    @model_validator(mode="after")
    def _holders(self):
        unknown = sorted({h.grant_id for h in self.rights_holders} - set(self.grant_ids))
        if unknown:
            raise ValueError(f"rights holders cite grants not in grant_ids: {', '.join(unknown)}")
        off = shares_off_100(self.rights_holders)
        if off:
            raise ValueError(f"{self.recording_id}: shares per right must sum to 100 (got {off})")
        return self


def source_row_from_item(item: Mapping[str, Any], seconds_seen: float) -> SourceRow:
    """A SourceRow from one `items[]` entry of snapshot.json (see docs/snapshot-format.md)."""
    return SourceRow(
        recording_id=item["recording_id"],
        isrc=item.get("isrc"),
        title=item["title"],
        artists=list(item["artists"]),
        audio_sha256=item["audio_sha256"],
        rights_holders=[dict(h) for h in item["rights_holders"]],
        licence=item["licence"],
        grant_ids=list(item["grant_ids"]),
        purposes=list(item["purposes"]),
        territories=list(item["territories"]),
        valid_until=item.get("valid_until"),
        on_termination=item["on_termination"],
        seconds_seen=float(seconds_seen),
        credit=item.get("attribution") or item.get("credit") or "",
    )


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


class Lineage(_Card):
    base_model: BaseModelRef
    parent_checkpoint: ParentCheckpoint | None = None
    relation: Literal["pretrain", "finetune", "adapter"]
    inherited_sources: list[SourceRow] = Field(
        default_factory=list, description="source rows of the base's card when the base is a lab checkpoint"
    )

    @model_validator(mode="after")
    def _traceable(self):
        if self.base_model.kind == "lab_checkpoint" and self.parent_checkpoint is None:
            raise ValueError("a lab_checkpoint base needs parent_checkpoint (its data card sha256) for lineage")
        if self.inherited_sources and self.base_model.kind != "lab_checkpoint":
            raise ValueError("inherited_sources only come from a lab_checkpoint base")
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
    def from_snapshot(cls, snap: Mapping[str, Any]) -> "SnapshotRef":
        """From a parsed snapshot.json (see docs/snapshot-format.md)."""
        catalog = snap["catalog"]
        return cls(
            snapshot_id=snap["snapshot_id"],
            merkle_root=snap["merkle_root"],
            ledger_head_seq=snap["ledger"]["head_seq"],
            ledger_head_hash=snap["ledger"]["head_hash"],
            policy={k: snap["policy"][k] for k in PolicyRef.model_fields if k in snap["policy"]},
            cleared_at=snap["cleared_at"],
            catalog=catalog["name"] if isinstance(catalog, Mapping) else catalog,
        )


# --------------------------------------------------------------------------- derived


class Validity(_Card):
    """What every grant behind the weights allows at once (derived, never typed in)."""

    purposes: list[Purpose] = Field(description="intersection of the sources' purposes")
    territories: list[Territory] = Field(description="intersection of the sources' territories; ['WW'] = anywhere")
    earliest_expiry: UTCDatetime | None = Field(description="earliest valid_until; null = no source expires")
    on_termination: OnTermination | None = Field(description="strictest on_termination; null with no sources")


class Exposure(_Card):
    total_seconds: float = Field(ge=0)
    samples: int = Field(ge=0)
    tokens: int = Field(ge=0)


def derive_validity(sources: Iterable[SourceRow | Mapping[str, Any]]) -> Validity:
    """Intersect purposes and territories over sources ('WW' ∩ X = X), earliest expiry, strictest
    on_termination. No sources → nothing is allowed (empty lists): fail closed, not open.
    """
    rows = [s if isinstance(s, SourceRow) else SourceRow.model_validate(s) for s in sources]
    if not rows:
        return Validity(purposes=[], territories=[], earliest_expiry=None, on_termination=None)
    purposes = set(PURPOSES)
    territories: set[str] | None = None  # None = worldwide so far
    expiries: list[datetime] = []
    strictest = "retain"
    for row in rows:
        purposes &= set(row.purposes)
        if WORLDWIDE not in row.territories:
            territories = set(row.territories) if territories is None else territories & set(row.territories)
        if row.valid_until is not None:
            expiries.append(row.valid_until)
        if TERMINATION_ORDER[row.on_termination] > TERMINATION_ORDER[strictest]:
            strictest = row.on_termination
    return Validity(
        purposes=[p for p in PURPOSES if p in purposes],
        territories=[WORLDWIDE] if territories is None else sorted(territories),
        earliest_expiry=min(expiries) if expiries else None,
        on_termination=strictest,
    )


# --------------------------------------------------------------------------- the card


def _require_schema_id(schema: dict[str, Any]) -> None:
    schema.setdefault("required", [])
    if "schema" not in schema["required"]:
        schema["required"].insert(0, "schema")


class DataCard(_Card):
    """The machine-readable card of one checkpoint. `validity` may be omitted on input (it is
    derived from sources + inherited_sources); if given it must equal the derivation."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        populate_by_name=True,
        json_schema_extra=_require_schema_id,
        title="lab data card",
    )

    schema_id: Literal["lab.data_card/1"] = Field(default=SCHEMA_ID, alias="schema")
    identity: Identity
    lineage: Lineage
    snapshot: SnapshotRef
    sources: list[SourceRow]
    exclusions: dict[str, Annotated[int, Field(ge=0)]] = Field(description="clearance exclusions: reason -> count")
    validity: Validity
    exposure: Exposure

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("validity") is None and "sources" in data:
            data = dict(data)
            inherited = (data.get("lineage") or {})
            inherited = inherited.get("inherited_sources", []) if isinstance(inherited, Mapping) else (
                inherited.inherited_sources
            )
            try:
                data["validity"] = derive_validity([*data["sources"], *inherited])
            except Exception:  # let field validation report the bad rows
                pass
        return data

    @model_validator(mode="after")
    def _consistent(self):
        ids = [s.recording_id for s in self.sources]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate source rows: {', '.join(dupes)}")
        derived = derive_validity([*self.sources, *self.lineage.inherited_sources])
        if self.validity != derived:
            raise ValueError(
                f"validity does not match the sources: card says {self.validity.model_dump(mode='json')}, "
                f"sources give {derived.model_dump(mode='json')}"
            )
        seen = math.fsum(s.seconds_seen for s in self.sources)
        if abs(seen - self.exposure.total_seconds) > 1e-6 * max(1.0, seen) + 1e-3:
            raise ValueError(
                f"exposure.total_seconds={self.exposure.total_seconds} but sources' seconds_seen add to {seen}"
            )
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------- files


def dump_card(card: DataCard) -> bytes:
    """The exact bytes of data_card.json: sorted keys, two-space indent, trailing newline."""
    return orjson.dumps(card.to_json(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def write_card(card: DataCard, path: str | Path) -> Path:
    """Validate against the repo schema, then write atomically. Returns the path."""
    data = dump_card(card)
    validate_card(orjson.loads(data))
    return atomic.write_bytes(path, data)


def load_card(path: str | Path) -> DataCard:
    return validate_card(json.loads(Path(path).read_text(encoding="utf-8")))


def card_sha256(path: str | Path) -> str:
    """sha256 of a data_card.json file as stored (what README and child checkpoints cite)."""
    return sha256_file(path)


def bytes_sha256(card: DataCard) -> str:
    """sha256 that `write_card(card, ...)` will produce, without writing it."""
    import hashlib

    return hashlib.sha256(dump_card(card)).hexdigest()


# --------------------------------------------------------------------------- JSON Schema


def json_schema() -> dict[str, Any]:
    schema = DataCard.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:lab:schema:data_card:1",
        "description": (
            f"{SCHEMA_ID}: the machine-readable card of a lab checkpoint. Generated from "
            "lab/cards/schema.py by `python -m lab.cards.schema`; do not edit by hand."
        ),
        **schema,
    }


def write_json_schema(directory: str | Path = REPO_SCHEMA_DIR) -> Path:
    text = json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return atomic.write_text(Path(directory) / SCHEMA_FILE, text)


@lru_cache(maxsize=4)
def _validator(path: str, mtime_ns: int):
    import jsonschema

    schema = json.loads(Path(path).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(data: Any, schema_path: str | Path | None = None) -> list[str]:
    """Problems the committed JSON Schema finds in data (empty list = valid)."""
    path = Path(schema_path) if schema_path else REPO_SCHEMA_DIR / SCHEMA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `python -m lab.cards.schema` to generate it")
    validator = _validator(str(path.resolve()), path.stat().st_mtime_ns)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]


def validate_card(data: Mapping[str, Any], schema_path: str | Path | None = None) -> DataCard:
    """Check a parsed card against the committed JSON Schema, then the pydantic rules.
    Raises CardError listing every problem."""
    errors = schema_errors(data, schema_path)
    if errors:
        raise CardError(errors)
    from pydantic import ValidationError

    try:
        return DataCard.model_validate(data)
    except ValidationError as exc:
        raise CardError(
            [f"{'/'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()]
        ) from None


if __name__ == "__main__":
    out = write_json_schema(sys.argv[1] if len(sys.argv) > 1 else REPO_SCHEMA_DIR)
    print(out)
