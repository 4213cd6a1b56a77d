"""What a checkpoint's weights may be used for: a licence derived from what they were made of.

Weights carry the obligations of the base model they started from AND of every recording they
saw, inherited ones included (a share-alike or non-commercial source does not disappear because
the base was Apache-2.0). The expression is the AND of the base licence and each distinct source
licence, simplified with `license-expression` (duplicates dropped, terms sorted, absorbed ORs
removed); its class is `lab.rights.licences.classify` of it. What the grants allow (purposes,
territories, expiry) is `validity`, beside it in the card.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from license_expression import Licensing

from lab.rights.licences import LicenceError, classify, parse

from .schema import DataCard, WeightsLicence

# A base without a licence of its own (a fresh init); it adds no term to the expression.
NO_LICENCE = ("none", "")
# SPDX's word for "nothing can be said": what weights with no base licence and no sources carry.
NOASSERTION = "NOASSERTION"


def source_licences(sources: pa.Table) -> list[str]:
    """The distinct licence expressions of the rows, sorted."""
    if sources.num_rows == 0:
        return []
    return sorted(pc.unique(sources["licence"]).drop_null().to_pylist())


def derive_licence(base: str, sources: pa.Table) -> WeightsLicence:
    """The weights' licence: `base` AND every distinct licence in `sources` (own and inherited rows).

    Raises LicenceError (one line naming the expression) when the base licence does not parse:
    an undeclared licence must not turn into a permissive one."""
    licences = source_licences(sources)
    terms = [] if base.strip().lower() in NO_LICENCE else [base.strip()]
    terms += licences
    if not terms:
        return WeightsLicence(expression=NOASSERTION, licence_class="unknown", base=base or "none", sources=[])
    try:
        expression = str(parse(" AND ".join(f"({t})" for t in terms)).simplify())
    except LicenceError as exc:
        raise LicenceError(f"cannot derive the weights' licence (base model licence {base!r}): {exc}") from None
    return WeightsLicence(
        expression=expression, licence_class=classify(expression).name, base=base or "none", sources=licences
    )


def licence_errors(card: DataCard, sources: pa.Table) -> list[str]:
    """[] when the card's licence section is what its base licence and rows derive, else the problem."""
    try:
        derived = derive_licence(card.lineage.base_model.licence, sources)
    except LicenceError as exc:
        return [f"licence: {exc}"]
    if derived != card.licence:
        return [
            f"licence does not match the sources: card says {card.licence.model_dump()}, "
            f"base licence and rows give {derived.model_dump()}"
        ]
    return []


def licence_keys(expression: str) -> list[str]:
    """The licence ids an expression names (the expression itself when it does not parse)."""
    try:
        return list(Licensing().license_keys(parse(expression)))
    except LicenceError:
        return [expression]
