"""Merkle root over sorted leaf digests (RFC 6962 domain separation: 0x00 leaf, 0x01 node).

Hand-written because it is a few lines and every library for it pulls a blockchain SDK.
`merkle_root_packed` is the same tree over digests packed into one buffer (32 bytes each),
sorted with numpy and hashed from one flat buffer per level: a million leaves in well under
a second instead of building and sorting a million bytes objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

_EMPTY = hashlib.sha256(b"").hexdigest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def merkle_root(leaves: Iterable[bytes]) -> str:
    """Root of the tree over `leaves` (already leaf-hashed), sorted first so order never matters."""
    leaves = list(leaves)
    if leaves and all(len(x) == 32 for x in leaves):
        return merkle_root_packed(b"".join(leaves))
    level = sorted(leaves)
    if not level:
        return _EMPTY
    sha = hashlib.sha256
    while len(level) > 1:
        nxt = [sha(b"\x01" + a + b).digest() for a, b in zip(level[0::2], level[1::2])]
        if len(level) % 2:
            nxt.append(level[-1])  # an odd node is promoted unchanged
        level = nxt
    return level[0].hex()


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
    level = _sorted_digests(packed)
    sha = hashlib.sha256
    while len(level) > 1:
        pairs = len(level) // 2
        node = np.empty((pairs, 65), dtype=np.uint8)
        node[:, 0] = 1
        node[:, 1:] = level[:2 * pairs].reshape(pairs, 64)
        buf = node.tobytes()
        nxt = np.frombuffer(b"".join([sha(buf[i:i + 65]).digest() for i in range(0, 65 * pairs, 65)]),
                            dtype=np.uint8).reshape(pairs, 32)
        if len(level) % 2:
            nxt = np.concatenate([nxt, level[-1:]])  # an odd node is promoted unchanged
        level = nxt
    return level[0].tobytes().hex()
