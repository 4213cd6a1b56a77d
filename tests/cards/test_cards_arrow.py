"""combine_lists against plain Python sets on random lists: fast path (one normal list per group) and general path."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from lab.cards.arrow import combine_lists

VOCAB = ["WW", "GB", "FR", "US", "DE", "", "JP"]


def _reference(groups, lists, n, how, universal, order, skip_empty):
    out = []
    for g in range(n):
        mine = [lst for grp, lst in zip(groups, lists) if grp == g]
        if skip_empty:
            mine = [[v for v in lst if v != ""] for lst in mine]
        if how == "union":
            seen = list(dict.fromkeys(v for lst in mine for v in lst))
            out.append(sorted(seen) if order == "sorted" else seen)
            continue
        constraining = [lst for lst in mine if universal is None or universal not in lst]
        if not constraining:
            out.append([universal] if universal is not None else [])
            continue
        common = set(constraining[0]).intersection(*map(set, constraining[1:]))
        out.append(
            sorted(common)
            if order == "sorted"
            else [v for v in dict.fromkeys(v for lst in constraining for v in lst) if v in common]
        )
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "how,universal,order,skip_empty",
    [
        ("intersect", None, "sorted", False),
        ("intersect", "WW", "sorted", False),
        ("union", None, "sorted", False),
        ("union", None, "first", True),
    ],
)
def test_matches_python_sets(seed, how, universal, order, skip_empty):
    rng = random.Random(seed)
    n = 40
    groups, lists = [], []
    for g in range(n):
        for _ in range(rng.choice([1, 1, 1, 2, 3])):  # mostly one list per group, as with one grant per item
            groups.append(g)
            size = rng.choice([1, 2, 3])
            lst = rng.sample(VOCAB, size) if rng.random() < 0.5 else sorted(rng.sample(VOCAB[1:], size))
            if rng.random() < 0.1:
                lst = lst + lst[:1]  # a duplicate inside one list counts once
            lists.append(lst)
    order_idx = list(range(len(groups)))
    rng.shuffle(order_idx)  # groups need not be contiguous
    groups = [groups[i] for i in order_idx]
    lists = [lists[i] for i in order_idx]
    got = combine_lists(
        np.array(groups),
        pa.array(lists, pa.list_(pa.string())),
        n,
        how=how,
        universal=universal,
        order=order,
        skip_empty=skip_empty,
    ).to_pylist()
    want = _reference(groups, lists, n, how, universal, order, skip_empty)
    assert got == want


def test_fast_path_passes_normal_lists_through():
    lists = pa.array([["FR", "GB"], ["WW"], ["GB", "FR"], ["WW", "GB"]], pa.list_(pa.string()))
    got = combine_lists(np.arange(4), lists, 4, how="intersect", universal="WW").to_pylist()
    assert got == [["FR", "GB"], ["WW"], ["FR", "GB"], ["WW"]]
    assert combine_lists(
        np.zeros(0, np.int64), pa.array([], pa.list_(pa.string())), 2, how="intersect", universal="WW"
    ).to_pylist() == [["WW"], ["WW"]]
