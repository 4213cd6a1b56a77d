"""A clearance policy: which use, where, under which licence classes, at what moment."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import Field, field_validator

from ..util.canonical import digest
from .licences import LicenceClass
from .records import WORLDWIDE, Purpose, Strict, UTCDatetime

LICENCE_CLASSES = tuple(c.name for c in LicenceClass)


class Policy(Strict):
    name: str = Field(min_length=1)
    purposes: list[Purpose] = Field(min_length=1, description="every one must be granted")
    territory: str = Field(description="ISO 3166-1 alpha-2 code where the use happens")
    accept_licence_classes: list[str] = Field(min_length=1)
    # LicenseRef-* contract ids the lab has signed and what class each belongs to.
    contracts: dict[str, str] = Field(default_factory=dict)
    at: UTCDatetime | None = Field(default=None, description="moment of clearance; None = now")

    @field_validator("territory")
    @classmethod
    def _territory(cls, v: str) -> str:
        v = v.strip().upper()
        if v == WORLDWIDE or len(v) != 2 or not v.isalpha():
            raise ValueError("a policy names one concrete territory (ISO 3166-1 alpha-2), not 'WW'")
        return v

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, v: list[str]) -> list[str]:
        return sorted(set(v))  # a set: order must not change the policy digest (hence snapshot ids)

    @field_validator("accept_licence_classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(LICENCE_CLASSES))
        if bad:
            raise ValueError(f"unknown licence class(es) {bad}; known: {list(LICENCE_CLASSES)}")
        if "unknown" in v:
            raise ValueError("a policy may not accept the 'unknown' licence class (fail closed)")
        return sorted(set(v))

    @field_validator("contracts")
    @classmethod
    def _contracts(cls, v: dict[str, str]) -> dict[str, str]:
        for key, klass in v.items():
            if not key.startswith("LicenseRef-"):
                raise ValueError(f"contract id {key!r} must start with 'LicenseRef-'")
            if klass not in LICENCE_CLASSES or klass == "unknown":
                raise ValueError(f"contract {key!r}: class {klass!r} is not a known licence class")
        return v

    def moment(self) -> datetime:
        return self.at or datetime.now(timezone.utc)

    def identity(self) -> dict:
        """What the snapshot id depends on. The moment is left out: its effect shows in the decisions."""
        return self.model_dump(mode="json", exclude={"at"})

    def digest(self) -> str:
        return digest(self.identity())
