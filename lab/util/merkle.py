"""Merkle root over sorted leaf digests: pages of leaves, then a binary tree over the pages.

Leaves (32-byte digests, RFC 6962's 0x00 prefix applied by `leaf_hash`) are sorted bytewise and
cut into pages of `PAGE` leaves; a page's node is `sha256(0x02 || its leaves laid end to end)`,
and the pages form an RFC 6962-style binary tree (`sha256(0x01 || left || right)`, an odd node
promoted unchanged). One page per 1,024 leaves instead of one node per pair: hashing a million
leaves is ~1,000 large `sha256` calls (which release the GIL and run at memory speed) plus a
~1,000-leaf tree, where a plain binary tree costs a million small Python-level calls (~2 s). An
inclusion proof is the leaf's page (32 KiB) plus log2(pages) siblings.

Hand-written because it is a few lines and every library for it pulls a blockchain SDK.
`merkle_root` is the plain reference over a list; `merkle_root_packed` the same tree over digests
packed into one buffer, sorted with numpy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

_EMPTY = hashlib.sha256(b"").hexdigest()
PAGE = 1024  # leaves per page node


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _tree(nodes: list[bytes]) -> str:
    """Binary tree over page nodes: pairs hashed with 0x01, an odd node promoted unchanged."""
    sha = hashlib.sha256
    while len(nodes) > 1:
        nxt = [sha(b"\x01" + a + b).digest() for a, b in zip(nodes[0::2], nodes[1::2])]
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    return nodes[0].hex()


def merkle_root(leaves: Iterable[bytes]) -> str:
    """Root of the tree over `leaves` (32-byte leaf digests), sorted first so order never matters."""
    level = sorted(leaves)
    if not level:
        return _EMPTY
    if any(len(x) != 32 for x in level):
        raise ValueError("leaves must be 32-byte digests")
    pages = [hashlib.sha256(b"\x02" + b"".join(level[i : i + PAGE])).digest() for i in range(0, len(level), PAGE)]
    return _tree(pages)


def _sorted_digests(packed: bytes | bytearray | memoryview) -> np.ndarray:
    """(n, 32) uint8 rows in bytewise (memcmp) order."""
    rows = np.frombuffer(packed, dtype=np.uint8).reshape(-1, 32)
    first = np.ascontiguousarray(rows[:, :8]).view(">u8").ravel().astype(np.uint64)  # numeric = byte order
    order = np.argsort(first)
    key = first[order]
    if len(key) > 1 and (key[1:] == key[:-1]).any():  # ties on the first 8 bytes: the full key
        words = rows.view(">u8").astype(np.uint64)
        order = np.lexsort((words[:, 3], words[:, 2], words[:, 1], words[:, 0]))
    return rows.view("V32").ravel()[order].view(np.uint8).reshape(-1, 32)  # one 32-byte item per row: a fast gather


def merkle_root_packed(packed: bytes | bytearray | memoryview) -> str:
    """`merkle_root` of the 32-byte digests laid end to end in `packed` (any order)."""
    if len(packed) % 32:
        raise ValueError("packed leaf digests must be 32 bytes each")
    if not len(packed):
        return _EMPTY
    buf = _sorted_digests(packed).tobytes()
    step = 32 * PAGE
    sha = hashlib.sha256
    return _tree([sha(b"\x02" + buf[i : i + step]).digest() for i in range(0, len(buf), step)])
