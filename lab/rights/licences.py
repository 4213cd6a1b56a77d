"""Licence expressions (SPDX via `license-expression`) and the class each one puts a recording in.

Classes follow the Data Provenance Initiative: what matters to a policy is what a licence lets a
music lab do with a recording (train, ship the model commercially, keep derivatives closed), and
anything we cannot classify is treated as most restrictive. Every id is decided in this order, and
`explain` says which step decided it:

1. the policy's `licence_classes` overrides (any id);
2. `LicenseRef-lab-*` → contract (the grant's own terms); any other `LicenseRef-` not in the index → unknown;
3. ids deliberately left unknown (`DELIBERATELY_UNKNOWN`, each with its reason; listed in the README);
4. explicit rules (`EXPLICIT`) where the index's category is not what a music lab needs;
5. Creative Commons by name, every version and port: ND → no_derivatives, NC → non_commercial,
   SA → share_alike, BY → permissive, CC0 / PDM / PDDC → permissive;
6. the category of the ScanCode licence index that license-expression ships (`CATEGORY_CLASSES`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from functools import lru_cache

from license_expression import (
    ExpressionError,
    LicenseSymbol,
    LicenseWithExceptionSymbol,
    Licensing,
    get_license_index,
    get_spdx_licensing,
)


class LicenceClass(IntEnum):
    """Ordered from least to most restrictive; AND takes the max, OR the min."""

    permissive = 0  # commercial use and derivatives allowed (CC0, CC-BY, MIT, ...)
    contract = 1  # a LicenseRef-lab-* contract: the grant's purposes/territories are the terms
    share_alike = 2  # derivatives must carry the same licence (GPL, CC-BY-SA, MPL, ...)
    non_commercial = 3  # CC-BY-NC*: research only
    no_derivatives = 4  # CC-BY-ND*: a trained model is a derivative; never cleared by default
    unknown = 5


class LicenceError(ValueError):
    """The expression does not parse or names a licence we do not know."""


CONTRACT_PREFIX = "LicenseRef-lab-"

# Step 6: ScanCode index category → class. Categories not here (Source-available, Free Restricted,
# Proprietary Free, Unstated License, Commercial, CLA, Patent License) say a licence has terms of its
# own; each standard id in them is decided in EXPLICIT or DELIBERATELY_UNKNOWN (a test walks them all).
CATEGORY_CLASSES = {
    "Public Domain": LicenceClass.permissive,
    "Permissive": LicenceClass.permissive,
    "Copyleft": LicenceClass.share_alike,
    "Copyleft Limited": LicenceClass.share_alike,
    "Non-Commercial": LicenceClass.non_commercial,
}

# Step 4: explicit rules, where the index's category would be wrong or silent for a music lab.
EXPLICIT: dict[str, tuple[LicenceClass, str]] = {
    "Aladdin": (LicenceClass.non_commercial, "Aladdin Free Public License forbids commercial distribution"),
    "PolyForm-Noncommercial-1.0.0": (LicenceClass.non_commercial, "PolyForm Noncommercial: any non-commercial purpose"),
    "NCGL-UK-2.0": (LicenceClass.non_commercial, "UK Non-Commercial Government Licence"),
    "SSPL-1.0": (LicenceClass.share_alike, "strong copyleft extended to services offering the work"),
    "SISSL": (LicenceClass.share_alike, "modifications that deviate from the standard must be published"),
    "SISSL-1.2": (LicenceClass.share_alike, "modifications that deviate from the standard must be published"),
    "Watcom-1.0": (LicenceClass.share_alike, "deployed modifications must be published under the same licence"),
    "C-UDA-1.0": (
        LicenceClass.permissive,
        "Computational Use of Data Agreement: computational use and its results "
        "(a trained model) are free; only redistributing the data is limited",
    ),
    "BSD-3-Clause-No-Nuclear-Warranty": (
        LicenceClass.permissive,
        "BSD-3-Clause; its nuclear clause disclaims warranty",
    ),
    "HPND-export-US": (LicenceClass.permissive, "HPND; the US export notice restates the law, it adds no term"),
    "HPND-export-US-acknowledgement": (LicenceClass.permissive, "HPND; the US export notice restates the law"),
    "HPND-UC-export-US": (LicenceClass.permissive, "HPND; the US export notice restates the law"),
    "any-OSI": (LicenceClass.permissive, "any OSI-approved licence, the licensee's choice: the loosest"),
    "any-OSI-perl-modules": (LicenceClass.permissive, "any OSI-approved licence at the licensee's choice"),
}

# Step 3: standard ids deliberately left unknown (fail closed): their terms limit use by field, size,
# audience or service in ways no class expresses. A policy that has read one maps it in licence_classes.
DELIBERATELY_UNKNOWN: dict[str, str] = {
    "BUSL-1.1": "non-production use only, widened by a per-licensor 'Additional Use Grant' we cannot read",
    "Elastic-2.0": "forbids offering the work as a managed service; no class says whether a model is one",
    "FSL-1.1-ALv2": "Functional Source: any purpose except a competing one, until it converts after two years",
    "FSL-1.1-MIT": "Functional Source: any purpose except a competing one, until it converts after two years",
    "JPL-image": "NASA/JPL image-use policy: endorsement and context limits, not a licence of derivatives",
    "PolyForm-Small-Business-1.0.0": "depends on the licensee's size and revenue",
    "ASWF-Digital-Assets-1.0": "assets licensed for testing and demonstrating software only",
    "ASWF-Digital-Assets-1.1": "assets licensed for testing and demonstrating software only",
    "BSD-3-Clause-No-Military-License": "field-of-use exclusion (military)",
    "BSD-3-Clause-No-Nuclear-License": "field-of-use exclusion (nuclear facilities)",
    "BSD-3-Clause-No-Nuclear-License-2014": "field-of-use exclusion (nuclear facilities)",
    "Caldera": "limited to the Ancient UNIX sources and their derivatives",
    "CPOL-1.02": "forbids use for illegal or immoral purposes: an undefined field-of-use limit",
    "Hippocratic-2.1": "conditioned on human-rights standards the licensor may enforce: an open field-of-use limit",
    "SGI-B-1.0": "early SGI Free Software License B with use restrictions (versions 1.1 and 2.0 are permissive)",
    "SUL-1.0": "Sustainable Use License: internal business or non-commercial use only; neither class fits",
    "SOFA": "SOFA software licence: modified versions may not keep the original names or routines",
    "Unicode-TOU": "terms of use of a website, not a licence for works",
}

_CC = re.compile(r"^CC-(?P<parts>(?:BY|NC|ND|SA)(?:-(?:BY|NC|ND|SA))*)-\d", re.IGNORECASE)
_CC_PUBLIC = {
    "CC0-1.0": "Creative Commons public-domain dedication",
    "CC-PDM-1.0": "Public Domain Mark",
    "CC-PDDC": "Creative Commons public-domain dedication and certification",
}


@dataclass(frozen=True)
class SymbolVerdict:
    """One licence id in an expression, its class, and the step that decided it."""

    symbol: str
    licence_class: str
    rule: str
    exception: str | None = None


@dataclass(frozen=True)
class Explanation:
    """Why an expression has its class: each symbol, then how AND / OR combined them (innermost first)."""

    expression: str
    licence_class: str
    symbols: list[SymbolVerdict] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def klass(self) -> LicenceClass:
        return LicenceClass[self.licence_class]

    def deciding(self) -> list[SymbolVerdict]:
        """The symbols whose class is the expression's (what failed, when it fails)."""
        return [s for s in self.symbols if s.licence_class == self.licence_class]

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def _licensing() -> Licensing:
    return get_spdx_licensing()


@lru_cache(maxsize=1)
def _index() -> dict[str, dict]:
    """Licence key (SPDX id, old SPDX alias, or LicenseRef-scancode-*) → its ScanCode index entry."""
    out: dict[str, dict] = {}
    for entry in get_license_index():
        if entry.get("is_exception"):
            continue
        for key in (entry.get("spdx_license_key"), *entry.get("other_spdx_license_keys", ())):
            if key:
                out.setdefault(key, entry)
    return out


def standard_ids() -> list[str]:
    """Every SPDX licence id license-expression knows (current and deprecated), exceptions excluded."""
    symbols = _licensing().known_symbols
    return sorted(k for k, s in symbols.items() if not k.startswith("LicenseRef-") and not s.is_exception)


def parse(expression: str):
    """Parse and validate an expression; LicenseRef-* symbols are accepted (they are classified later)."""
    if not isinstance(expression, str) or not expression.strip():
        raise LicenceError("licence expression is empty")
    lic = _licensing()
    try:
        parsed = lic.parse(expression, validate=False, strict=True)
    except (ExpressionError, AttributeError, TypeError) as exc:
        # license-expression raises AttributeError on some malformed input.
        raise LicenceError(f"invalid licence expression {expression!r}: {exc}") from None
    if parsed is None:
        raise LicenceError(f"invalid licence expression {expression!r}")
    known = lic.known_symbols
    unknown = [s.key for s in lic.license_symbols(parsed) if not s.key.startswith("LicenseRef-") and s.key not in known]
    if unknown:
        raise LicenceError(f"unknown licence id(s) in {expression!r}: {', '.join(unknown)}")
    return parsed


@lru_cache(maxsize=65536)
def validate_expression(expression: str) -> str:
    """Return the normalised expression string or raise LicenceError."""
    return str(parse(expression))


def canonical_id(key: str) -> str:
    """The canonical spelling of one licence id (`gpl-2.0` → `GPL-2.0-only`); LicenceError if not one id."""
    parsed = parse(key)
    if not isinstance(parsed, LicenseSymbol) or isinstance(parsed, LicenseWithExceptionSymbol):
        raise LicenceError(f"{key!r} is an expression, not one licence id")
    return parsed.key


def _decide(key: str, overrides: Mapping[str, str]) -> tuple[LicenceClass, str]:
    if key in overrides:
        return LicenceClass[overrides[key]], "policy licence_classes override"
    if key.startswith(CONTRACT_PREFIX):
        return LicenceClass.contract, f"{CONTRACT_PREFIX}* contract: the grant's terms decide"
    if key in DELIBERATELY_UNKNOWN:
        return LicenceClass.unknown, f"deliberately unknown: {DELIBERATELY_UNKNOWN[key]}"
    if key in EXPLICIT:
        klass, why = EXPLICIT[key]
        return klass, f"explicit rule: {why}"
    if key in _CC_PUBLIC:
        return LicenceClass.permissive, f"Creative Commons rule: {_CC_PUBLIC[key]}"
    cc = _CC.match(key)
    if cc:
        parts = set(cc["parts"].upper().split("-"))
        for tag, klass, name in (
            ("ND", LicenceClass.no_derivatives, "NoDerivatives"),
            ("NC", LicenceClass.non_commercial, "NonCommercial"),
            ("SA", LicenceClass.share_alike, "ShareAlike"),
        ):
            if tag in parts:
                return klass, f"Creative Commons rule: {name} (-{tag})"
        return LicenceClass.permissive, "Creative Commons rule: Attribution only (BY)"
    entry = _index().get(key)
    if entry is None:
        if key.startswith("LicenseRef-"):
            return LicenceClass.unknown, "not a standard licence: map it in the policy's licence_classes"
        return LicenceClass.unknown, "not in the licence index"
    category = entry.get("category") or "(none)"
    klass = CATEGORY_CLASSES.get(category, LicenceClass.unknown)
    return klass, f"index category {category!r}"


def classify_symbol(key: str, overrides: Mapping[str, str] | None = None) -> LicenceClass:
    """Class of one licence id (see the module docstring for the order of the rules)."""
    return _decide(key, overrides or {})[0]


def _freeze(overrides: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((overrides or {}).items()))


def explain(expression: str, overrides: Mapping[str, str] | None = None) -> Explanation:
    """The class of `expression` and why: OR lets the licensee pick the loosest, AND binds to the strictest."""
    return _explain(expression, _freeze(overrides))


@lru_cache(maxsize=4096)
def _explain(expression: str, frozen: tuple[tuple[str, str], ...]) -> Explanation:
    overrides = dict(frozen)
    try:
        node = parse(expression)
    except LicenceError as exc:
        return Explanation(expression, LicenceClass.unknown.name, error=str(exc))
    symbols: list[SymbolVerdict] = []
    steps: list[str] = []

    def walk(n) -> LicenceClass:
        if isinstance(n, LicenseWithExceptionSymbol):
            klass, rule = _decide(n.license_symbol.key, overrides)
            symbols.append(SymbolVerdict(n.license_symbol.key, klass.name, rule, n.exception_symbol.key))
            return klass
        if isinstance(n, LicenseSymbol) or not getattr(n, "args", None):
            key = getattr(n, "key", str(n))
            klass, rule = _decide(key, overrides)
            symbols.append(SymbolVerdict(key, klass.name, rule))
            return klass
        parts = [walk(a) for a in n.args]
        is_or = "OR" in type(n).__name__.upper()
        klass = min(parts) if is_or else max(parts)
        how = "OR: the licensee may pick the loosest" if is_or else "AND: every licence binds, the strictest wins"
        steps.append(f"{n} → {klass.name} ({how}: {', '.join(p.name for p in parts)})")
        return klass

    klass = walk(node)
    return Explanation(str(node), klass.name, symbols, steps)


def classify(expression: str, overrides: Mapping[str, str] | None = None) -> LicenceClass:
    """Class of a whole expression (unknown when it does not parse)."""
    return explain(expression, overrides).klass
