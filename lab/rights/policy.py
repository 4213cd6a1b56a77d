"""A clearance policy: which use, where, under which licence classes, at what moment."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from pydantic import AliasChoices, Field, field_validator

from ..util.canonical import digest
from ..util.territories import TerritoryError, check_territory
from .licences import LicenceClass, LicenceError, canonical_id
from .records import Purpose, Strict, UTCDatetime

LICENCE_CLASSES = tuple(c.name for c in LicenceClass)
MAX_OVERRIDES = 1000


def _no_duplicates(field: str, values: list[str]) -> None:
    twice = sorted(v for v, n in Counter(values).items() if n > 1)
    if twice:
        raise ValueError(f"{field}: {', '.join(map(repr, twice))} listed more than once")


class Policy(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    purposes: list[Purpose] = Field(min_length=1, max_length=16, description="every one must be granted")
    territory: str = Field(max_length=64, description="ISO 3166-1 alpha-2 code where the use happens")
    accept_licence_classes: list[str] = Field(min_length=1, max_length=len(LICENCE_CLASSES))
    # Any licence id (SPDX or LicenseRef-*) → the class this policy puts it in, over the built-in rules.
    # Read as `contracts` too (its former name, LicenseRef-* only), and stored under that key in
    # snapshot and card headers so their format and the digests of existing policies stay the same.
    licence_classes: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_OVERRIDES, validation_alias=AliasChoices("licence_classes", "contracts")
    )
    at: UTCDatetime | None = Field(default=None, description="moment of clearance; None = now")

    @field_validator("territory")
    @classmethod
    def _territory(cls, v: str) -> str:
        try:
            return check_territory(v, allow_worldwide=False)
        except TerritoryError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, v: list[str]) -> list[str]:
        _no_duplicates("purposes", v)
        return sorted(v)  # a set: order must not change the policy digest (hence snapshot ids)

    @field_validator("accept_licence_classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(LICENCE_CLASSES))
        if bad:
            raise ValueError(f"unknown licence class(es) {bad}; known: {list(LICENCE_CLASSES)}")
        if "unknown" in v:
            raise ValueError("a policy may not accept the 'unknown' licence class (fail closed)")
        _no_duplicates("accept_licence_classes", v)
        return sorted(v)

    @field_validator("licence_classes")
    @classmethod
    def _licence_classes(cls, v: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, klass in v.items():
            if klass not in LICENCE_CLASSES:
                known = ", ".join(LICENCE_CLASSES)
                raise ValueError(f"licence_classes[{key!r}]: {klass!r} is not a licence class ({known})")
            try:
                canon = key if key.startswith("LicenseRef-") and len(key) <= 200 else canonical_id(key)
            except LicenceError as exc:
                raise ValueError(f"licence_classes[{key!r}]: {exc}") from None
            if canon in out:
                raise ValueError(f"licence_classes: {key!r} names {canon!r} again")
            out[canon] = klass
        return dict(sorted(out.items()))

    @property
    def contracts(self) -> dict[str, str]:
        """Former name of `licence_classes`."""
        return self.licence_classes

    def moment(self) -> datetime:
        return self.at or datetime.now(timezone.utc)

    def identity(self) -> dict:
        """What the snapshot id depends on. The moment is left out: its effect shows in the decisions."""
        data = self.model_dump(mode="json", exclude={"at"})
        data["contracts"] = data.pop("licence_classes")  # the stored name (see the field's comment)
        return data

    def digest(self) -> str:
        return digest(self.identity())
