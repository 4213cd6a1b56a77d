"""The catalogue's own licence text against the grant that cleared the recording.

A metadata row may state a licence (`licence`: an SPDX expression, or free text as the catalogue
wrote it). The ledger's grant is what licenses lab, so a disagreement never excludes anything; it
is reported (`licence_mismatch`) so that someone checks which of the two is wrong. Expressions are
compared after SPDX normalisation (ids canonically spelled, `+` as `-or-later`, AND/OR operands
sorted); text that does not parse as SPDX is never equal to a grant's licence.

Column-wise: one normalisation per distinct licence text, then integer comparisons per row.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lab.rights.licences import LicenceError, parse

LICENCE_MISMATCH = "licence_mismatch"


@lru_cache(maxsize=4096)
def normalise_licence(text: str | None) -> str | None:
    """The SPDX-normalised expression, or None when `text` is empty or does not parse as SPDX."""
    if text is None or not text.strip():
        return None
    try:
        return str(parse(text).simplify())
    except (LicenceError, ValueError, TypeError, AttributeError):
        return None


def _codes(arr: pa.Array, vocab: dict[str, int], unparsed: int) -> np.ndarray:
    """Per value: an integer naming its normalised expression; `unparsed` for null or non-SPDX text."""
    enc = pc.dictionary_encode(arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr)
    norm = [normalise_licence(t) for t in enc.dictionary.to_pylist()]
    per_distinct = np.array(
        [unparsed if t is None else vocab.setdefault(t, len(vocab)) for t in norm] + [unparsed], dtype=np.int64
    )
    idx = enc.indices.fill_null(len(norm)).to_numpy(zero_copy_only=False).astype(np.int64)
    return per_distinct[idx]


def licence_mismatch(stated: pa.Array, grant_licences: pa.Array, owner: np.ndarray) -> np.ndarray:
    """Per row: the row states a licence and it agrees with none of its clearing grants' licences.

    `stated`: the metadata licence per row (null: none stated); `grant_licences[k]` the licence of
    the k-th clearing grant, `owner[k]` the row it clears."""
    n = len(stated)
    if not n:
        return np.zeros(0, dtype=bool)
    vocab: dict[str, int] = {}
    mine = _codes(stated, vocab, -1)
    theirs = _codes(grant_licences, vocab, -2) if len(grant_licences) else np.zeros(0, np.int64)
    owner = np.asarray(owner, dtype=np.int64)
    agrees = np.zeros(n, dtype=bool)
    agrees[owner[mine[owner] == theirs]] = True
    return pc.is_valid(stated).to_numpy(zero_copy_only=False) & ~agrees


def note_detail(notes: list[str], stated: str | None, grant_licences: list[str]) -> str:
    """One line for a cleared item's notes (`lab clear show=cleared`); '' when it has none."""
    if LICENCE_MISMATCH not in (notes or []):
        return ""
    theirs = " / ".join(dict.fromkeys(grant_licences)) or "?"
    return f"{LICENCE_MISMATCH}: the metadata states {stated!r}, the grant says {theirs!r} (the grant applies)"
