"""Money: rounding once, and largest-remainder splits that add up exactly (hypothesis properties)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.royalties.money import minor_units, split_groups, split_largest_remainder, to_minor

INT64_MAX = 2**63 - 1
weights_st = st.lists(st.integers(0, 10**6), min_size=1, max_size=30).filter(lambda ws: sum(ws) > 0)
totals_st = st.integers(0, 10**12)


def quotas(total: int, ws: list[int]) -> list[Fraction]:
    return [Fraction(total * w, sum(ws)) for w in ws]


def test_minor_units_and_rounding_once_half_even():
    assert (minor_units("EUR"), minor_units("JPY"), minor_units("BHD")) == (2, 0, 3)
    assert to_minor(Decimal("0.125"), "EUR") == 12 and to_minor(Decimal("0.135"), "EUR") == 14  # ties to even
    assert to_minor(Decimal("12.5"), "JPY") == 12 and to_minor(Decimal("1.0005"), "BHD") == 1000
    with pytest.raises(TypeError, match="floats are not money"):
        to_minor(0.1, "EUR")
    with pytest.raises(ValueError, match="ISO 4217"):
        minor_units("XXY")


@settings(max_examples=300, deadline=None)
@given(totals_st, weights_st)
def test_split_is_exact_and_within_one_unit_of_each_quota(total, ws):
    parts = split_largest_remainder(total, ws)
    assert sum(parts) == total and len(parts) == len(ws)
    for p, q, w in zip(parts, quotas(total, ws), ws):
        assert 0 <= p - q < 1 or 0 <= q - p < 1
        assert p in (int(q), int(q) + 1)  # floor, or floor + 1
        if w == 0:
            assert p == 0
    # the extra units went to the largest fractional parts
    fracs = [q - int(q) for q in quotas(total, ws)]
    got = [i for i, (p, q) in enumerate(zip(parts, quotas(total, ws))) if p > int(q)]
    missed = [i for i in range(len(ws)) if i not in got]
    assert all(fracs[i] >= fracs[j] for i in got for j in missed)


@settings(max_examples=200, deadline=None)
@given(totals_st, weights_st, st.randoms(use_true_random=False))
def test_split_is_order_invariant_up_to_ties(total, ws, rnd):
    perm = list(range(len(ws)))
    rnd.shuffle(perm)
    parts = split_largest_remainder(total, ws)
    shuffled = split_largest_remainder(total, [ws[i] for i in perm])
    fracs = [q - int(q) for q in quotas(total, ws)]
    for k, i in enumerate(perm):
        if fracs.count(fracs[i]) == 1:  # no tie: the same line gets the same amount wherever it stands
            assert shuffled[k] == parts[i]
        else:
            assert abs(shuffled[k] - parts[i]) <= 1


def test_ties_go_to_the_lower_index():
    assert split_largest_remainder(1, [1, 1, 1]) == [1, 0, 0]
    assert split_largest_remainder(2, [1, 3]) == [1, 1] and split_largest_remainder(2, [3, 1]) == [2, 0]
    assert split_largest_remainder(0, [0, 0]) == [0, 0]
    with pytest.raises(ValueError, match="all zero"):
        split_largest_remainder(5, [0, 0])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(totals_st, weights_st), min_size=1, max_size=8))
def test_vectorised_groups_equal_the_per_pool_split(pools):
    totals = np.array([t for t, _ in pools], dtype=np.int64)
    group = np.concatenate([np.full(len(ws), g) for g, (_, ws) in enumerate(pools)])
    weights = np.concatenate([np.array(ws, dtype=np.int64) for _, ws in pools])
    # lines of the pools interleaved, each pool's lines still in their order (ties go to the earlier line)
    slot = np.random.default_rng(len(weights)).permutation(len(weights))
    for g in range(len(pools)):
        slot[group == g] = np.sort(slot[group == g])
    mix = np.argsort(slot)
    got = split_groups(totals, group[mix], weights[mix])
    want = np.concatenate([split_largest_remainder(t, ws) for t, ws in pools])[mix]
    assert got.tolist() == want.tolist()
    assert np.bincount(group[mix], weights=got, minlength=len(pools)).astype(np.int64).tolist() == totals.tolist()


@pytest.mark.parametrize(
    "total, ws",
    [
        (INT64_MAX, [2**60, 2**60 - 1, 5]),  # weight sum above 3.04e9: the exact Python-int path
        (INT64_MAX, [2**40, 2**40 - 1, 5, 0]),
        (INT64_MAX, [3_037_000_499, 1]),  # at the int64 boundary of r * w
        (10**18 + 7, [1] * 7),
        (INT64_MAX, [1]),
    ],
)
def test_int64_boundary(total, ws):
    got = split_groups(np.array([total, 3]), np.array([0] * len(ws) + [1]), np.array(ws + [2]))
    assert got[:-1].tolist() == split_largest_remainder(total, ws) and int(got[:-1].astype(object).sum()) == total
    assert got[-1] == 3


def test_refusals():
    with pytest.raises(ValueError, match="all zero"):
        split_groups(np.array([4]), np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="negative"):
        split_groups(np.array([-1]), np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match="past int64"):
        split_groups(np.array([1]), np.array([0, 0]), np.array([2**62, 2**62]))
