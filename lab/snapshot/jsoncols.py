"""Canonical JSON text, one value per row, built column-wise with pyarrow string kernels.

A million leaf digests built from per-row Python dicts cost seconds; these helpers give, per
row, exactly the text `lab.util.canonical.canonical_json` writes for that value (strings escaped
as orjson escapes them: `"`, `\\` and U+0000..U+001F; floats and timestamps through orjson itself,
once per distinct value), so concatenating literal pieces and these columns reproduces the
canonical JSON of a whole object byte for byte. The snapshot tests hold them to that.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC  # == util.canonical.canonical_json


def plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array; large_string as string."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return arr.cast(pa.string()) if arr.type == pa.large_string() else arr


def _data_bytes(arr: pa.Array) -> np.ndarray:
    """The bytes of a string array's values (of the slice only, not its whole buffer)."""
    buf = arr.buffers()[2]
    if buf is None or not len(arr):
        return np.zeros(0, np.uint8)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)
    return np.frombuffer(buf, dtype=np.uint8)[offsets[arr.offset] : offsets[arr.offset + len(arr)]]


def _needs_escape(data: np.ndarray) -> bool:
    """Whether any byte is one JSON must escape: < 0x20, `"` or `\\` (three vectorised passes)."""
    return bool((data < 0x20).any() or (data == 0x22).any() or (data == 0x5C).any())


class Raw:
    """A string column whose JSON text is each value between quotes (no nulls, nothing to escape):
    the quotes are folded into the literal pieces around it instead of costing a pass of their own."""

    __slots__ = ("arr",)

    def __init__(self, arr: pa.Array):
        self.arr = arr


Text = pa.Array | Raw  # JSON text per row


def json_str(arr: pa.Array | pa.ChunkedArray) -> Text:
    """JSON string literal per value (null → `null`)."""
    arr = plain(arr)
    if arr.type == pa.null():
        arr = arr.cast(pa.string())
    escape = len(arr) > 0 and _needs_escape(_data_bytes(arr))
    if not escape and not arr.null_count:
        return Raw(arr)
    if escape:
        enc = pc.dictionary_encode(arr)
        if len(enc.dictionary) * 4 < len(arr):  # a few distinct values (a compensation, a caption): escape those
            text = json_str(enc.dictionary)
            text = pc.binary_join_element_wise('"', text.arr, '"', "") if isinstance(text, Raw) else text
            out = text.take(enc.indices)
            return out.fill_null("null") if out.null_count else out
    out = pc.binary_join_element_wise('"', arr, '"', "")
    if escape:
        need = pc.match_substring_regex(arr, r'[\x00-\x1f"\\]').fill_null(False)
        rows = np.flatnonzero(need.to_numpy(zero_copy_only=False))
        if len(rows):
            fixed = [orjson.dumps(v).decode() for v in arr.take(pa.array(rows, pa.int64())).to_pylist()]
            out = pc.replace_with_mask(out, need, pa.array(fixed, pa.string()))
    return out.fill_null("null") if out.null_count else out


def json_int(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    out = pc.cast(plain(arr), pa.string())
    return out.fill_null("null") if out.null_count else out


def json_each_distinct(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """orjson's text of each value (floats: shortest round trip, `30.0`; timestamps: RFC 3339 `Z`),
    computed once per distinct value; null → `null`."""
    arr = plain(arr)
    enc = pc.dictionary_encode(arr)
    texts = [orjson.dumps(v, option=CANONICAL).decode() for v in enc.dictionary.to_pylist()]
    out = pa.array(texts + ["null"], pa.string())
    return out.take(enc.indices.fill_null(len(texts)))


def json_list(elements: Text, offsets: np.ndarray, nulls: np.ndarray | None = None) -> pa.Array:
    """Compact JSON array per row of JSON-encoded `elements` (row i = elements[offsets[i]:offsets[i+1]])."""
    counts = np.diff(offsets)
    q = '"' if isinstance(elements, Raw) else ""
    flat = elements.arr if isinstance(elements, Raw) else elements
    lists = pa.ListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int32)), plain(flat))
    out = pc.binary_join_element_wise("[" + q, pc.binary_join(lists, q + "," + q), q + "]", "")
    if q and (counts == 0).any():
        out = pc.if_else(pa.array(counts == 0), pa.scalar("[]", pa.string()), out)
    if nulls is not None and nulls.any():
        out = pc.if_else(pa.array(nulls), pa.scalar("null", pa.string()), out)
    return out


def list_offsets(arr: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, np.ndarray | None]:
    """(values, offsets from 0, null mask or None) of a list array."""
    arr = plain(arr)
    off = np.asarray(arr.offsets.to_numpy(), dtype=np.int64)
    values = arr.values.slice(off[0], off[-1] - off[0])
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    return values, off - off[0], nulls


def json_str_list(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """JSON array of strings per row of a list<string> column."""
    values, off, nulls = list_offsets(arr)
    return json_list(json_str(values), off, nulls)


def concat(pieces: list[Any]) -> pa.Array:
    """Element-wise concatenation of literal strings and JSON text columns (adjacent literals,
    and the quotes of `Raw` columns, merged into one piece)."""
    args: list[Any] = []
    for p in pieces:
        for x in ['"', p.arr, '"'] if isinstance(p, Raw) else [p]:
            if isinstance(x, str) and args and isinstance(args[-1], str):
                args[-1] += x
            else:
                args.append(x)
    return pc.binary_join_element_wise(*args, "")


def json_object(fields: dict[str, Any]) -> pa.Array:
    """Canonical JSON object per row: `fields` maps key → JSON text column or a literal JSON
    text (str) shared by every row; keys are written sorted, as canonical JSON does."""
    pieces: list[Any] = []
    for i, key in enumerate(sorted(fields)):
        pieces.append(("{" if i == 0 else ",") + orjson.dumps(key).decode() + ":")
        pieces.append(fields[key])
    pieces.append("}")
    return concat(pieces)


def sha256_each(arr: pa.Array) -> bytes:
    """sha256 of every value of a string array, concatenated (32 bytes per row)."""
    arr = plain(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1].tolist()
    data = memoryview(arr.buffers()[2] if arr.buffers()[2] is not None else b"")
    sha = hashlib.sha256
    return b"".join([sha(data[a:b]).digest() for a, b in zip(offsets, offsets[1:])])


def hex_column(packed: bytes) -> pa.Array:
    """`packed` (32-byte digests) as a column of 64-char lowercase hex strings."""
    n = len(packed) // 32
    offsets = np.arange(0, 64 * (n + 1), 64, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(packed.hex().encode()))


def unhex_column(arr: pa.Array | pa.ChunkedArray) -> bytes | None:
    """A column of 64-char hex digests packed as 32 bytes each; None if any value is not one."""
    arr = plain(arr)
    if arr.null_count or not len(arr):
        return b"" if not len(arr) else None
    lengths = pc.binary_length(arr)
    if pc.min(lengths).as_py() != 64 or pc.max(lengths).as_py() != 64:
        return None
    start = arr.offset * 64  # every value is 64 bytes: they lie end to end
    text = bytes(memoryview(arr.buffers()[2])[start : start + 64 * len(arr)])
    try:
        return bytes.fromhex(text.decode("ascii")) if text == text.lower() else None
    except (ValueError, UnicodeDecodeError):
        return None
