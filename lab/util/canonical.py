"""Canonical JSON and hashing: every digest in lab goes through here so they agree."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTC datetimes: the same value always gives the same bytes."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of obj."""
    return sha256_hex(canonical_json(obj))


def sha256_file(path, chunk_size: int = 1 << 22) -> str:
    """Streamed sha256 of a file (4 MiB reads; hashlib releases the GIL on large buffers)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(chunk_size)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()
