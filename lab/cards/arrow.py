"""Column-wise helpers the card builder and validator share: set algebra over list columns, by group.

A data card at a million sources cannot afford a Python loop per row, so "intersect the purposes
of every grant behind this recording" and "the purposes every source allows" are both one call
to `combine_lists`: each list belongs to a group, and the result holds one list per group. A group
made of one list that is already in normal form (the common case: one grant per recording) is
passed through; the rest is a few numpy passes over (group, value) codes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_BINCOUNT_LIMIT = 1 << 23  # groups × vocabulary below which counting beats sorting


def plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (numpy views and list offsets need a single chunk)."""
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def lists_from(lengths: np.ndarray, values: pa.Array) -> pa.ListArray:
    """A list array with these per-row lengths over `values` (laid out row after row)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def singletons(values: pa.Array) -> pa.ListArray:
    """Each value as a one-element list."""
    return lists_from(np.ones(len(values), dtype=np.int32), plain(values))


def positions(keys: pa.Array | pa.ChunkedArray, index: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Row of each key in `index` (a hash lookup); -1 where absent."""
    found = pc.index_in(keys, value_set=plain(index))
    return plain(found).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _normal(
    lists: pa.ListArray, values: pa.Array, owner: np.ndarray, *, universal: str | None, order: str, skip_empty: bool
) -> np.ndarray:
    """Per list: already what combining it alone gives (distinct, sorted or single, no null,
    no '' when skipped, and the universal token only on its own)."""
    lengths = plain(pc.list_value_length(lists)).fill_null(0).to_numpy(zero_copy_only=False)
    ok = np.ones(len(lists), dtype=bool)
    if order == "first":
        ok &= lengths <= 1
    elif len(values) > 1:
        bad = ~plain(pc.less(values[:-1], values[1:])).fill_null(False).to_numpy(zero_copy_only=False)
        bad &= owner[:-1] == owner[1:]
        ok[owner[:-1][bad]] = False
    flags = [pc.is_null(values)]
    if skip_empty:
        flags.append(pc.equal(values, ""))
    if universal is not None:
        flags.append(pc.and_(pc.equal(values, universal), pa.array(lengths[owner] > 1)))
    for flag in flags:
        ok[owner[plain(flag).fill_null(True).to_numpy(zero_copy_only=False)]] = False
    return ok


def combine_lists(
    groups: np.ndarray,
    lists: pa.Array | pa.ChunkedArray,
    n_groups: int,
    *,
    how: Literal["intersect", "union"],
    universal: str | None = None,
    order: Literal["sorted", "first"] = "sorted",
    skip_empty: bool = False,
) -> pa.ListArray:
    """Per group, the intersection (or union) of the string lists that belong to it.

    groups: group of each list (len(lists) ints in [0, n_groups)). Duplicates inside a list count
    once. `universal` is an identity for intersection ('WW' ∩ X = X): a list holding it constrains
    nothing, and a group with no constraining list gets `[universal]`. order='sorted' sorts each
    result; 'first' keeps first appearance (list order, then position). skip_empty drops ''.
    Nulls inside lists are ignored (the validator reports them on its own).
    """
    lists = plain(lists).cast(pa.list_(pa.string()))
    groups = np.asarray(groups, dtype=np.int64)
    values = plain(pc.list_flatten(lists))
    owner = plain(pc.list_parent_indices(lists)).to_numpy().astype(np.int64)
    normal = _normal(lists, values, owner, universal=universal, order=order, skip_empty=skip_empty)
    alone = np.bincount(groups, minlength=n_groups)[groups] == 1
    simple = normal & alone
    if simple.all() and len(lists) == n_groups:
        return lists.take(pa.array(np.argsort(groups, kind="stable")))
    simple_groups = np.zeros(n_groups, dtype=bool)
    simple_groups[groups[simple]] = True
    rest = np.flatnonzero(~simple_groups)
    remap = np.full(n_groups, -1, dtype=np.int64)
    remap[rest] = np.arange(len(rest))
    sub = _combine(
        remap[groups[~simple]],
        lists.filter(pa.array(~simple)),
        len(rest),
        how=how,
        universal=universal,
        order=order,
        skip_empty=skip_empty,
        distinct=bool(normal[~simple].all()),
    )
    if not simple.any():
        return sub
    pick = np.empty(n_groups, dtype=np.int64)
    pick[groups[simple]] = np.flatnonzero(simple)
    pick[rest] = len(lists) + np.arange(len(rest))
    return pa.concat_arrays([lists, sub]).take(pa.array(pick))


def _combine(
    groups: np.ndarray,
    lists: pa.ListArray,
    n_groups: int,
    *,
    how: str,
    universal: str | None,
    order: str,
    skip_empty: bool,
    distinct: bool,
) -> pa.ListArray:
    values = plain(pc.list_flatten(lists))
    owner = plain(pc.list_parent_indices(lists)).to_numpy().astype(np.int64)
    vocab = pc.unique(values.drop_null())
    if universal is not None and not pc.any(pc.equal(vocab, universal)).as_py():
        vocab = pa.concat_arrays([vocab, pa.array([universal], vocab.type)])
    if order == "sorted":
        vocab = vocab.take(pc.sort_indices(vocab))
    codes = positions(values, vocab)
    n_vocab = max(len(vocab), 1)
    keep = codes >= 0
    if skip_empty:
        keep &= plain(pc.not_equal(values, "")).fill_null(False).to_numpy(zero_copy_only=False)
    member = np.ones(len(lists), dtype=bool)  # lists that constrain their group
    u = -1
    if universal is not None and how == "intersect":
        u = int(positions(pa.array([universal]), vocab)[0])
        member[owner[keep & (codes == u)]] = False
        keep &= member[owner]
    first = np.flatnonzero(keep)
    pair = owner[keep] * n_vocab + codes[keep]
    if not distinct:  # count a value once per list
        pair, at = np.unique(pair, return_index=True)
        first = first[at]
    key = groups[pair // n_vocab] * n_vocab + pair % n_vocab
    if order == "sorted" and n_groups * n_vocab <= _BINCOUNT_LIMIT:
        counts = np.bincount(key, minlength=n_groups * n_vocab)
        key = np.flatnonzero(counts)
        counts = counts[key]
    else:
        key, at, counts = np.unique(key, return_index=True, return_counts=True)
        first = first[at]
    group, code = key // n_vocab, key % n_vocab
    if how == "intersect":
        required = np.bincount(groups[member], minlength=n_groups)
        ok = counts == required[group]
        group, code = group[ok], code[ok]
        first = first[ok] if order == "first" else first
        if universal is not None:
            empty = np.flatnonzero(required == 0)
            group = np.concatenate([group, empty])
            code = np.concatenate([code, np.full(len(empty), u, dtype=np.int64)])
            if order == "first":
                first = np.concatenate([first, np.full(len(empty), -1, dtype=np.int64)])
    if universal is not None or order == "first":
        sort = np.lexsort((code, group)) if order == "sorted" else np.lexsort((first, group))
        group, code = group[sort], code[sort]
    return lists_from(np.bincount(group, minlength=n_groups), vocab.take(pa.array(code)))


def segment_reduce(ufunc: np.ufunc, values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """ufunc.reduceat over consecutive segments of these (all positive) lengths."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return ufunc.reduceat(values, starts) if len(values) else values[:0]
