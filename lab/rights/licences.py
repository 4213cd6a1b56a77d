"""Licence expressions (SPDX via `license-expression`) and the classes a policy accepts.

Classes follow the Data Provenance Initiative's idea: what matters to a policy is what
a licence lets you do, and anything we cannot classify is treated as most restrictive.
"""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache

from license_expression import ExpressionError, LicenseSymbol, Licensing, get_spdx_licensing


class LicenceClass(IntEnum):
    """Ordered from least to most restrictive; AND takes the max, OR the min."""

    permissive = 0  # commercial use and derivatives allowed (CC0, CC-BY, MIT, ...)
    contract = 1  # a LicenseRef-lab-* contract: the grant's purposes/territories are the terms
    share_alike = 2  # derivatives must carry the same licence
    non_commercial = 3  # CC-BY-NC*: research only
    no_derivatives = 4  # CC-BY-ND*: a trained model is a derivative; never cleared by default
    unknown = 5


class LicenceError(ValueError):
    """The expression does not parse or names a licence we do not know."""


# Contract licences the lab has signed. `LicenseRef-` symbols are not SPDX ids, so
# license-expression only knows them once we add them (its own docs say so).
CONTRACT_PREFIX = "LicenseRef-lab-"

_NON_COMMERCIAL = ("-NC-", "-NC")
_NO_DERIV = ("-ND-", "-ND")
_SHARE_ALIKE = ("-SA-",)
_PERMISSIVE = {
    "CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause",
    "CC-PDDC", "Unlicense", "PDDL-1.0", "ODC-By-1.0",
}


@lru_cache(maxsize=1)
def _licensing() -> Licensing:
    return get_spdx_licensing()


def parse(expression: str):
    """Parse and validate an expression; LicenseRef-lab-* contracts are accepted as symbols."""
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
    unknown = [
        s.key for s in lic.license_symbols(parsed)
        if not s.key.startswith("LicenseRef-") and lic.validate(s.key).errors
    ]
    if unknown:
        raise LicenceError(f"unknown licence id(s) in {expression!r}: {', '.join(unknown)}")
    return parsed


@lru_cache(maxsize=65536)
def validate_expression(expression: str) -> str:
    """Return the normalised expression string or raise LicenceError."""
    return str(parse(expression))


def classify_symbol(key: str, contracts: dict[str, str] | None = None) -> LicenceClass:
    if key.startswith("LicenseRef-"):
        if contracts and key in contracts:
            return LicenceClass[contracts[key]]
        return LicenceClass.contract if key.startswith(CONTRACT_PREFIX) else LicenceClass.unknown
    if key in _PERMISSIVE:
        return LicenceClass.permissive
    upper = key.upper() + "-"
    if any(t in upper for t in _NO_DERIV):
        return LicenceClass.no_derivatives
    if any(t in upper for t in _NON_COMMERCIAL):
        return LicenceClass.non_commercial
    if any(t in upper for t in _SHARE_ALIKE):
        return LicenceClass.share_alike
    return LicenceClass.unknown


@lru_cache(maxsize=4096)
def classify(expression: str) -> LicenceClass:
    """Class of a whole expression: OR lets the licensee pick the loosest, AND binds to the strictest."""
    try:
        parsed = parse(expression)
    except LicenceError:
        return LicenceClass.unknown
    return _classify_node(parsed)


def _classify_node(node) -> LicenceClass:
    if isinstance(node, LicenseSymbol) or not hasattr(node, "args"):
        key = getattr(node, "key", str(node))
        return classify_symbol(key)
    parts = [_classify_node(a) for a in node.args]
    op = type(node).__name__.upper()
    return min(parts) if "OR" in op else max(parts)
