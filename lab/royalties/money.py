"""Money as integers of a currency's minor unit, and exact splits of a pool among lines.

A statement adds up to the cent only if nothing is rounded twice: an amount (Decimal) is rounded
to minor units once (`to_minor`), and a pool in minor units is split by the largest-remainder
method (Hamilton's), so the parts are integers that sum to the pool exactly and each is within one
minor unit of its exact share. `split_groups` does the same for millions of lines at once (numpy).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

import numpy as np
import pycountry
from babel.numbers import get_currency_precision

__all__ = ["minor_units", "split_groups", "split_largest_remainder", "to_minor"]

# Products below this fit int64 (isqrt(2**63 - 1)): a group whose weights sum to at most this
# is split in int64; a larger one with exact Python integers (numpy object arrays), see `split_groups`.
_INT64_SAFE = 3_037_000_499


@lru_cache(maxsize=256)
def minor_units(currency: str) -> int:
    """Decimal places of a currency's minor unit per CLDR (babel): EUR 2, JPY 0, BHD 3."""
    code = currency.upper()
    if pycountry.currencies.get(alpha_3=code) is None:  # the ISO 4217 list records.Compensation uses
        raise ValueError(f"currency {currency!r} is not an ISO 4217 code")
    return int(get_currency_precision(code))


def to_minor(amount: Decimal, currency: str) -> int:
    """`amount` in whole minor units (cents), rounded once, half to even.

    Half-even (banker's rounding) because half-up would bias every tie upwards, and over thousands
    of pools those half-cents would add up in one party's favour; it is also Decimal's default and
    the rule IEEE 754 and most accounting systems use. Call it once per pool, never on the lines:
    lines come from `split_largest_remainder`, which needs no rounding."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"amount must be a Decimal, not {type(amount).__name__} (floats are not money)")
    if not amount.is_finite():
        raise ValueError(f"amount {amount} is not finite")
    scaled = amount.scaleb(minor_units(currency)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return int(scaled)


def split_largest_remainder(total_minor: int, weights: Sequence[int]) -> list[int]:
    """`total_minor` split in proportion to integer `weights`: integers that sum to exactly
    `total_minor`, each the floor of its exact quota plus at most one. The units left after the
    floors go to the largest remainders; ties to the lower index (so the result is deterministic).
    A zero weight gets 0. All weights zero: only a zero total can be split."""
    total = int(total_minor)
    ws = [int(w) for w in weights]
    if total < 0:
        raise ValueError(f"cannot split a negative total ({total})")
    if any(w < 0 for w in ws):
        raise ValueError("weights must be non-negative")
    whole = sum(ws)
    if whole == 0:
        if total:
            raise ValueError(f"cannot split {total} among weights that are all zero")
        return [0] * len(ws)
    parts, rems = [], []
    for w in ws:
        q, r = divmod(total * w, whole)  # Python ints: exact at any size
        parts.append(q)
        rems.append(r)
    left = total - sum(parts)
    for i in sorted(range(len(ws)), key=lambda i: (-rems[i], i))[:left]:
        parts[i] += 1
    return parts


def split_groups(totals: np.ndarray, group: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`split_largest_remainder` for many pools at once: line k belongs to pool `group[k]` (an index
    into `totals`) and has integer weight `weights[k]`; returns each line's part (int64), the same
    numbers the per-pool function gives (same tie-break: larger remainder, then lower line index).

    Exact for any int64 totals and weights: with W a pool's weight sum, T = qW + r, so
    floor(T·w/W) = q·w + floor(r·w/W), where q·w <= T and r·w < W·w. When W <= 3.04e9 that last
    product fits int64; pools with a larger W take exact Python integers (object arrays: slower,
    still vectorised)."""
    totals = np.asarray(totals, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.int64)
    n = len(weights)
    if group.shape != weights.shape:
        raise ValueError("group and weights must have the same length")
    if n and (group.min() < 0 or group.max() >= len(totals)):
        raise ValueError("a line's group is not an index into totals")
    if (totals < 0).any():
        raise ValueError("cannot split a negative total")
    if (weights < 0).any():
        raise ValueError("weights must be non-negative")
    if n and float(weights.max()) * n >= 2.0**62:  # only then can a pool's weight sum leave int64
        if np.bincount(group, weights=weights.astype(np.float64), minlength=len(totals)).max() >= 2.0**62:
            raise ValueError("a pool's weights sum past int64: use coarser weight units")
    whole = _group_sums(group, weights, len(totals))
    empty = whole == 0
    if (empty & (totals != 0)).any():
        g = int(np.flatnonzero(empty & (totals != 0))[0])
        raise ValueError(f"cannot split {int(totals[g])} (pool {g}) among weights that are all zero")
    parts = np.zeros(n, dtype=np.int64)
    rems = np.zeros(n, dtype=np.int64)
    W = np.where(empty, 1, whole)
    q, r = np.divmod(totals, W)  # per pool
    lw, lq, lr = W[group], q[group], r[group]
    small = lw <= _INT64_SAFE
    if small.all():
        hi, rems = np.divmod(lr * weights, lw)
        parts = lq * weights + hi
    else:
        s = np.flatnonzero(small)
        hi, rems[s] = np.divmod(lr[s] * weights[s], lw[s])
        parts[s] = lq[s] * weights[s] + hi
        b = np.flatnonzero(~small)
        prod = lr[b].astype(object) * weights[b].astype(object)  # exact Python ints
        big_w = lw[b].astype(object)
        parts[b] = (lq[b].astype(object) * weights[b].astype(object) + prod // big_w).astype(np.int64)
        rems[b] = (prod % big_w).astype(np.int64)
    left = totals - _group_sums(group, parts, len(totals))  # < lines in the pool with a remainder
    if left.any():
        # rank lines within their pool: larger remainder first, then lower index
        order = np.lexsort((np.arange(n), -rems, group))
        g_sorted = group[order]
        starts = np.searchsorted(g_sorted, np.arange(len(totals)))
        rank = np.arange(n) - starts[g_sorted]
        parts[order[rank < left[g_sorted]]] += 1
    return parts


def _group_sums(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Exact int64 sums per group (np.bincount would go through float64 and lose units above 2**53)."""
    out = np.zeros(n_groups, dtype=np.int64)
    np.add.at(out, group, values)
    return out
