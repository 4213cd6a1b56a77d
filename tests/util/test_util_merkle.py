"""The snapshot's Merkle root: order-free, every leaf bound, paged tree as documented."""

from __future__ import annotations

import hashlib
import random

import pytest

from lab.util.merkle import PAGE, leaf_hash, merkle_root, merkle_root_packed


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"row {i}".encode()) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE + 7])
def test_packed_equals_reference_and_order_does_not_matter(n):
    leaves = _leaves(n)
    shuffled = leaves[:]
    random.Random(n).shuffle(shuffled)
    root = merkle_root(leaves)
    assert merkle_root(shuffled) == root == merkle_root_packed(b"".join(shuffled))


def test_documented_shape():
    sha = hashlib.sha256
    one = _leaves(1)
    assert merkle_root(one) == sha(b"\x02" + one[0]).hexdigest()  # one page
    many = sorted(_leaves(PAGE + 1))
    pages = [sha(b"\x02" + b"".join(many[:PAGE])).digest(), sha(b"\x02" + many[PAGE]).digest()]
    assert merkle_root(many) == sha(b"\x01" + pages[0] + pages[1]).hexdigest()
    assert merkle_root([]) == sha(b"").hexdigest()


def test_every_leaf_is_bound():
    leaves = _leaves(2 * PAGE + 5)
    root = merkle_root_packed(b"".join(leaves))
    for k in (0, PAGE, 2 * PAGE + 4):
        changed = leaves[:k] + [leaf_hash(b"edited")] + leaves[k + 1 :]
        assert merkle_root_packed(b"".join(changed)) != root
    assert merkle_root_packed(b"".join(leaves[:-1])) != root  # a dropped leaf
    assert merkle_root_packed(b"".join(leaves + leaves[:1])) != root  # a duplicated leaf
    with pytest.raises(ValueError):
        merkle_root_packed(b"x" * 33)
