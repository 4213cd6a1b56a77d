"""The snapshot: what clearance decided, content-addressed, written once and read by training.

Each entry's digest covers every field of the entry (the item metadata that conditions the
model, the exclusion detail) and, for a cleared item, the exact version *and terms* of each
grant that cleared it (`<grant_id>@<seq>#<sha256 of the terms>`): the Merkle root, hence the
snapshot id, changes if any of it is edited, including the parties and shares that data cards
and royalty statements copy from `grants`.

The write path is streamed (`write_snapshot_stream`; `lab clear` uses it): a million entries as
Python dicts cost seconds and gigabytes. Entries are built a chunk at a time with pyarrow string
kernels, each as its canonical JSON (what its digest hashes) and in the file's indented layout,
hashed row by row and handed to a writer thread, section by section in the file's (sorted) key
order: `excluded`, then `grants` (the clearing grants' terms, parsed and hashed per grant with
orjson from payloads read ahead on another thread), then `items`, then the Merkle root and the
id. The bytes are those `write_snapshot` (`orjson.dumps(doc, OPT_INDENT_2 | OPT_SORT_KEYS)`)
gives for the same document; the tests hold it to that. `load_snapshot` validates at the
boundary where training picks a snapshot up and recomputes every digest the plain per-entry way
(`_leaf`, `_grant_ref`), independently of the writer.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from ..rights.clearance import Clearance, no_gc
from ..util.atomic import fsync_dir, write_bytes
from ..util.canonical import canonical_json, digest
from ..util.merkle import leaf_hash, merkle_root, merkle_root_packed
from ..util.timestamps import utcnow

SCHEMA = "lab.snapshot/1"
CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC  # == util.canonical.canonical_json
PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS  # the file's layout
ITEM_FIELDS = ("recording_id", "isrc", "title", "artists", "description", "audio_path",
               "audio_sha256", "duration_s", "sample_rate", "channels")
CHUNK = 1 << 16  # entries built and written per step
TERMS_FIELDS = ("attribution", "compensation", "grant_id", "licence", "on_termination", "parties", "purposes",
                "territories", "valid_until", "version")  # the grant's, as `_grant_terms` copies them (+ seq)
_TERMS_KEYS = frozenset(TERMS_FIELDS)


class SnapshotError(RuntimeError):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SnapshotItem(_Model):
    recording_id: str
    isrc: str | None
    title: str
    artists: list[str]
    description: str
    audio_path: str
    audio_sha256: str
    duration_s: float
    sample_rate: int
    channels: int
    grant_ids: list[str] = Field(min_length=1)
    digest: str


class SnapshotExclusion(_Model):
    recording_id: str
    reason: str
    detail: str
    audio_sha256: str | None
    grant_ids: list[str] = Field(default_factory=list)
    digest: str


class SnapshotGrant(_Model):
    """The terms of a clearing grant, copied in so data cards never need the ledger to be read."""

    grant_id: str
    version: int
    seq: int
    licence: str
    parties: list[dict[str, Any]]
    purposes: list[str]
    territories: list[str]
    valid_until: datetime | None
    on_termination: str
    attribution: str
    compensation: dict[str, Any]


class Snapshot(_Model):
    schema_: Literal["lab.snapshot/1"] = Field(alias="schema")
    snapshot_id: str
    merkle_root: str
    created_at: datetime
    cleared_at: datetime
    catalog: dict[str, Any]
    policy: dict[str, Any]
    ledger: dict[str, Any]
    counts: dict[str, Any]
    grants: dict[str, SnapshotGrant]
    items: list[SnapshotItem]
    excluded: list[SnapshotExclusion]

    def item_by_id(self) -> dict[str, SnapshotItem]:
        return {i.recording_id: i for i in self.items}


def snapshot_id(root: str, policy_digest: str, ledger_head_hash: str) -> str:
    return "snap-" + hashlib.sha256(f"{root}:{policy_digest}:{ledger_head_hash}".encode()).hexdigest()[:16]


def _grant_terms(payload: dict[str, Any], seq: int) -> dict[str, Any]:
    """Terms from a stored grant/amend event payload (already validated when it was appended)."""
    g = payload["grant"]
    return {
        "grant_id": g["grant_id"], "version": g["version"], "seq": seq, "licence": g["licence"],
        "parties": g["parties"], "purposes": g["purposes"], "territories": g["territories"],
        "valid_until": g["valid_until"], "on_termination": g["on_termination"],
        "attribution": g["attribution"], "compensation": g["compensation"],
    }


def _grant_ref(grant_id: str, terms: dict[str, Any]) -> str:
    """What a cleared item's digest binds: grant id, effective version (ledger seq) and terms."""
    return f"{grant_id}@{terms['seq']}#{digest(terms)}"


def _leaf(entry: dict[str, Any], refs: list[str] | None) -> bytes:
    """Leaf digest of one `items` (refs given) or `excluded` (refs None) entry: the canonical JSON
    of every field but `digest`, whether it was cleared, and the refs of its clearing grants."""
    core = {k: v for k, v in entry.items() if k != "digest"}
    core["cleared"] = refs is not None
    if refs is not None:
        core["grants"] = sorted(refs)
    return leaf_hash(canonical_json(core))


# --------------------------------------------------------------------------- JSON, column-wise
#
# Each helper gives, per row, the exact JSON text orjson writes for that value (strings escaped
# as orjson escapes them: `"`, `\` and U+0000..U+001F, nothing else; floats through orjson
# itself), so that concatenating literal pieces and these columns reproduces `canonical_json`
# and the indented layout byte for byte.

_ESCAPE_BYTES = np.zeros(256, dtype=bool)
_ESCAPE_BYTES[:0x20] = True
_ESCAPE_BYTES[[ord('"'), ord("\\")]] = True


def _plain(arr: pa.Array) -> pa.Array:
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return arr.cast(pa.string()) if arr.type == pa.large_string() else arr


def _data_bytes(arr: pa.Array) -> np.ndarray:
    """The bytes of a string array's values (those of a slice, or a superset of them)."""
    buf = arr.buffers()[2]
    return np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)


def _needs_escape(data: np.ndarray) -> bool:
    """Whether any byte is one JSON must escape: < 0x20, `"` or `\\` (8 bytes at a time)."""
    n = len(data) // 8 * 8
    w = data[:n].view(np.uint64)
    ones, high = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080)
    hit = (w - np.uint64(0x2020202020202020)) & ~w  # high bit set where a byte is < 0x20
    for c in (0x22, 0x5C):
        x = w ^ np.uint64(c * 0x0101010101010101)
        hit |= (x - ones) & ~x  # ... where a byte equals c
    return bool((hit & high).any()) or bool(_ESCAPE_BYTES[data[n:]].any())


class _Raw:
    """A string column whose JSON text is each value between quotes (no nulls, nothing to escape):
    the quotes are folded into the literal pieces around it instead of costing a pass of their own."""

    __slots__ = ("arr",)

    def __init__(self, arr: pa.Array):
        self.arr = arr


Text = pa.Array | _Raw  # JSON text per row


def _json_str(arr: pa.Array) -> Text:
    """JSON string literal per value (null → `null`)."""
    arr = _plain(arr)
    if arr.type == pa.null():
        arr = arr.cast(pa.string())
    escape = len(arr) > 0 and _needs_escape(_data_bytes(arr))
    if not escape and not arr.null_count:
        return _Raw(arr)
    out = pc.binary_join_element_wise('"', arr, '"', "")
    if escape:
        need = pc.match_substring_regex(arr, r'[\x00-\x1f"\\]').fill_null(False)
        rows = np.flatnonzero(need.to_numpy(zero_copy_only=False))
        if len(rows):
            fixed = [orjson.dumps(v).decode() for v in arr.take(pa.array(rows, pa.int64())).to_pylist()]
            out = pc.replace_with_mask(out, need, pa.array(fixed, pa.string()))
    return out.fill_null("null") if out.null_count else out


def _json_int(arr: pa.Array) -> pa.Array:
    out = pc.cast(_plain(arr), pa.string())
    return out.fill_null("null") if out.null_count else out


def _json_float(arr: pa.Array) -> pa.Array:
    """orjson's float text (shortest round trip, `30.0`, `1e-7`, NaN/inf → null), once per distinct value."""
    arr = _plain(arr)
    vals = arr.fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64)
    uniq, inv = np.unique(vals.view(np.uint64), return_inverse=True)  # by bit pattern: -0.0 stays -0.0
    texts = pa.array([orjson.dumps(v).decode() for v in uniq.view(np.float64).tolist()], pa.string())
    out = texts.take(pa.array(inv.reshape(-1), pa.int64()))
    if arr.null_count:
        out = pc.if_else(pc.is_null(arr), pa.scalar("null", pa.string()), out)
    return out


def _json_list(elements: Text, offsets: np.ndarray, indent: int | None,
               nulls: np.ndarray | None = None) -> pa.Array:
    """JSON array per row of JSON-encoded `elements` (row i = elements[offsets[i]:offsets[i+1]]).
    indent=None: compact; else pretty, the row's value sitting at that many levels deep."""
    counts = np.diff(offsets)
    q = '"' if isinstance(elements, _Raw) else ""
    flat = elements.arr if isinstance(elements, _Raw) else elements
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32, copy=False)), _plain(flat))
    if indent is None:
        out = pc.binary_join_element_wise("[" + q, pc.binary_join(lists, q + "," + q), q + "]", "")
    else:
        inner, outer = "\n" + "  " * (indent + 1), "\n" + "  " * indent
        out = pc.binary_join_element_wise("[" + inner + q, pc.binary_join(lists, q + "," + inner + q),
                                          q + outer + "]", "")
    if (indent is not None or q) and (counts == 0).any():
        out = pc.if_else(pa.array(counts == 0), pa.scalar("[]", pa.string()), out)
    if nulls is not None and nulls.any():
        out = pc.if_else(pa.array(nulls), pa.scalar("null", pa.string()), out)
    return out


def _concat(pieces: list) -> pa.Array:
    """Element-wise concatenation of literal strings and JSON text columns (adjacent literals,
    and the quotes of `_Raw` columns, merged into one piece)."""
    args: list[Any] = []
    for p in pieces:
        if isinstance(p, _Raw):
            p = ['"', p.arr, '"']
        else:
            p = [p]
        for x in p:
            if isinstance(x, str) and args and isinstance(args[-1], str):
                args[-1] += x
            else:
                args.append(x)
    return pc.binary_join_element_wise(*args, "")


def _values(arr: pa.Array) -> tuple[memoryview, list[int]]:
    """A string array's data and its n+1 offsets (into that data) as Python ints."""
    arr = _plain(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    return memoryview(data if data is not None else b""), offsets.tolist()


def _sha256_each(arr: pa.Array) -> bytes:
    """sha256 of every value of a string array, concatenated (32 bytes per row)."""
    data, off = _values(arr)
    sha = hashlib.sha256
    return b"".join([sha(data[a:b]).digest() for a, b in zip(off, off[1:])])


def _hex_column(packed: bytes) -> pa.Array:
    """`packed` (32-byte digests) as a column of 64-char lowercase hex strings."""
    n = len(packed) // 32
    offsets = np.arange(0, 64 * (n + 1), 64, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(packed.hex().encode()))


def _text(arr: pa.Array) -> memoryview:
    """The concatenated values of a string array (no separators), zero-copy."""
    data, off = _values(arr)
    return data[off[0]:off[-1]] if off else memoryview(b"")


def _ranges(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in a flat array of rows' runs (row r = flat[offsets[r]:offsets[r+1]]), and the
    new offsets of those runs laid end to end."""
    starts, counts = offsets[rows], offsets[rows + 1] - offsets[rows]
    new = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=new[1:])
    total = int(new[-1])
    pos = np.repeat(starts - new[:-1], counts) + np.arange(total, dtype=np.int64)
    return pos, new


def _sort_runs(key_rank: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Permutation that sorts each run of a flat array by `key_rank` (runs keep their place)."""
    counts = np.diff(offsets)
    if (counts <= 1).all():
        return np.arange(len(key_rank), dtype=np.int64)
    run = np.repeat(np.arange(len(counts)), counts)
    return np.lexsort((key_rank, run))


def _rank(strings: pa.Array) -> np.ndarray:
    """Rank of each string in code-point order (what Python's `sorted` gives)."""
    order = pc.sort_indices(strings).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


# --------------------------------------------------------------------------- streaming writer


def _field(key: str, value: Any) -> bytes:
    """`  "key": <value>` as a member of the top-level object (pretty, sorted)."""
    return b"  " + orjson.dumps(key) + b": " + orjson.dumps(value, option=PRETTY).replace(b"\n", b"\n  ")


_ENTRY = ",\n      "  # between the fields of a list/map entry (entries sit at depth 2)

# payloads(seqs) → batches of (seq, stored event payload: JSON text or dict), in the order asked.
Payloads = Callable[[list[int]], Iterable[Sequence[tuple[int, Any]]]]


def _excluded_chunk(catalog: pa.Table, clearance: Clearance, rows: np.ndarray) -> tuple[pa.Array, list]:
    """(canonical leaf preimages, pretty entry pieces; None = the digest) of excluded rows."""
    take = pa.array(rows, pa.int64())
    rid = _json_str(catalog["recording_id"].take(take))
    sha = _json_str(catalog["audio_sha256"].take(take))
    reason = _json_str(clearance.reasons.take(take))
    detail = _json_str(clearance.details.take(take))
    pos, offs = _ranges(clearance.grant_offsets, rows)
    gids = _json_str(clearance.grant_flat.take(pa.array(pos, pa.int64())))
    canon = _concat(['\x00{"audio_sha256":', sha, ',"cleared":false,"detail":', detail, ',"grant_ids":',
                     _json_list(gids, offs, None), ',"reason":', reason, ',"recording_id":', rid, "}"])
    return canon, [
        '    {\n      "audio_sha256": ', sha, _ENTRY + '"detail": ', detail, _ENTRY + '"digest": "', None,
        '"' + _ENTRY + '"grant_ids": ', _json_list(gids, offs, 3), _ENTRY + '"reason": ', reason,
        _ENTRY + '"recording_id": ', rid, "\n    },\n"]


class _ItemGrants:
    """The grant ids and refs of every cleared row, each row's sorted, JSON-encoded once."""

    def __init__(self, clearance: Clearance, rows: np.ndarray, clearing_sorted: pa.Array, refs: pa.Array):
        pos, self.offsets = _ranges(clearance.grant_offsets, rows)
        flat = clearance.grant_flat.take(pa.array(pos, pa.int64()))
        k = pc.index_in(flat, value_set=clearing_sorted)
        if k.null_count:
            raise SnapshotError("a cleared item names a grant that is not among the clearing grants")
        k = k.to_numpy(zero_copy_only=False).astype(np.int64)  # == rank of the grant id
        ref_rank = _rank(refs)
        # Two orders: ids sorted, refs sorted ("G-10@.." sorts before "G-1@..").
        self.by_id = k[_sort_runs(k, self.offsets)]
        self.by_ref = k[_sort_runs(ref_rank[k], self.offsets)]
        self.ids_json = _json_str(clearing_sorted)
        self.refs_json = _json_str(refs)

    def slice(self, a: int, b: int) -> tuple[np.ndarray, Text, Text]:
        lo, hi = int(self.offsets[a]), int(self.offsets[b])
        at_id, at_ref = pa.array(self.by_id[lo:hi], pa.int64()), pa.array(self.by_ref[lo:hi], pa.int64())
        return self.offsets[a:b + 1] - lo, _take(self.ids_json, at_id), _take(self.refs_json, at_ref)


def _take(text: Text, rows: pa.Array) -> Text:
    return _Raw(text.arr.take(rows)) if isinstance(text, _Raw) else text.take(rows)


def _items_chunk(catalog: pa.Table, rows: np.ndarray, grants: tuple[np.ndarray, Text, Text]
                 ) -> tuple[pa.Array, list]:
    """(canonical leaf preimages, pretty entry pieces; None = the digest) of cleared rows."""
    take = pa.array(rows, pa.int64())
    col = {f: catalog[f].take(take) for f in ITEM_FIELDS}
    artists = _plain(col["artists"])
    a_off = np.asarray(artists.offsets.to_numpy(), dtype=np.int64)
    a_vals = _json_str(artists.values.slice(a_off[0], a_off[-1] - a_off[0]))
    a_off = a_off - a_off[0]
    a_null = artists.is_null().to_numpy(zero_copy_only=False) if artists.null_count else None
    offs, gids, grefs = grants
    s = {f: _json_str(col[f]) for f in ("recording_id", "isrc", "title", "description", "audio_path",
                                        "audio_sha256")}
    dur, sr, ch = _json_float(col["duration_s"]), _json_int(col["sample_rate"]), _json_int(col["channels"])
    canon = _concat([
        '\x00{"artists":', _json_list(a_vals, a_off, None, a_null), ',"audio_path":', s["audio_path"],
        ',"audio_sha256":', s["audio_sha256"], ',"channels":', ch, ',"cleared":true,"description":',
        s["description"], ',"duration_s":', dur, ',"grant_ids":', _json_list(gids, offs, None),
        ',"grants":', _json_list(grefs, offs, None), ',"isrc":', s["isrc"], ',"recording_id":', s["recording_id"],
        ',"sample_rate":', sr, ',"title":', s["title"], "}"])
    return canon, [
        '    {\n      "artists": ', _json_list(a_vals, a_off, 3, a_null), _ENTRY + '"audio_path": ', s["audio_path"],
        _ENTRY + '"audio_sha256": ', s["audio_sha256"], _ENTRY + '"channels": ', ch,
        _ENTRY + '"description": ', s["description"], _ENTRY + '"digest": "', None,
        '"' + _ENTRY + '"duration_s": ', dur, _ENTRY + '"grant_ids": ', _json_list(gids, offs, 3),
        _ENTRY + '"isrc": ', s["isrc"], _ENTRY + '"recording_id": ', s["recording_id"],
        _ENTRY + '"sample_rate": ', sr, _ENTRY + '"title": ', s["title"], "\n    },\n"]


class _Writer:
    """Collects the pieces of the file and hands them, `batch` bytes at a time, to a thread of its
    own that writes them with one `writev` (no copy, no GIL) while the next part is built, and
    syncs every `sync_every` bytes so the final fsync finds little left."""

    _STOP = object()

    def __init__(self, out: BinaryIO, batch: int = 1 << 23, sync_every: int = 1 << 26):
        self.out, self.batch, self.sync_every, self.error = out, batch, sync_every, None
        self.fileno: int | None = None
        if hasattr(os, "writev"):
            try:
                out.flush()
                self.fileno = out.fileno()
            except (AttributeError, OSError, io.UnsupportedOperation):
                self.fileno = None
        self.pending: list[bytes | memoryview] = []
        self.size = 0
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.thread = threading.Thread(target=self._run, name="lab-snapshot-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        unsynced = 0
        while (parts := self.queue.get()) is not self._STOP:
            if self.error is not None:
                continue  # drain: the producer sees the error on its next write
            try:
                if self.fileno is None:
                    for p in parts:
                        self.out.write(p)
                    continue
                _writev_all(self.fileno, parts)
                unsynced += sum(len(p) for p in parts)
                if unsynced >= self.sync_every:
                    os.fdatasync(self.fileno)
                    unsynced = 0
            except BaseException as exc:  # noqa: BLE001 - handed to the producer
                self.error = exc

    def write(self, data: bytes | memoryview) -> None:
        """Queue `data` (not copied: it must not change afterwards)."""
        if self.error is not None:
            raise self.error
        if len(data):
            self.pending.append(data)
            self.size += len(data)
            if self.size >= self.batch:
                self._submit()

    def _submit(self) -> None:
        if self.pending:
            self.queue.put(self.pending)
            self.pending, self.size = [], 0

    def close(self) -> None:
        self._submit()
        self.queue.put(self._STOP)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _writev_all(fd: int, parts: list[bytes | memoryview]) -> None:
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        done = os.writev(fd, views[:512])  # IOV_MAX is 1024 on Linux
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if done:
            views[0] = views[0][done:]


class _Prefetch:
    """Runs an iterator on a thread of its own, ahead of the consumer by up to `max_bytes` of
    items (sized by `_nbytes`) and at least one."""

    def __init__(self, make: Callable[[], Iterable[Any]], max_bytes: int = 1 << 28):
        self.max_bytes = max_bytes
        self.items: deque[tuple[Any, int]] = deque()
        self.ahead = 0
        self.cond = threading.Condition()
        self.done = self.stopped = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(make,), name="lab-snapshot-prefetch", daemon=True)
        self.thread.start()

    def _run(self, make) -> None:
        try:
            for item in make():
                size = _nbytes(item)
                with self.cond:
                    while not self.stopped and self.items and self.ahead + size > self.max_bytes:
                        self.cond.wait()
                    if self.stopped:
                        return
                    self.items.append((item, size))
                    self.ahead += size
                    self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self.error = exc
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def __iter__(self) -> Iterator[Any]:
        while True:
            with self.cond:
                while not self.items and not self.done:
                    self.cond.wait()
                if not self.items:
                    if self.error is not None:
                        raise self.error
                    return
                item, size = self.items.popleft()
                self.ahead -= size
                self.cond.notify_all()
            yield item

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.items.clear()
            self.cond.notify_all()
        self.thread.join()


def _nbytes(batch: Any) -> int:
    n = getattr(batch, "nbytes", None)
    if n is not None:
        return n
    return sum(len(p) for _, p in batch if isinstance(p, (str, bytes, bytearray)))


class _Section:
    """Writes the entries of one top-level list/map: `[`/`{`, entries separated by `,\\n`, close."""

    def __init__(self, out: _Writer, key: str, brackets: str):
        self.out, self.key, self.brackets, self.empty = out, key, brackets, True
        self.pending = b""  # the last entry's trailing ",\n" is held back until we know it is not the last

    def write(self, text: memoryview | bytes, terminated: bool = True) -> None:
        """`text`: whole entries, separated by `,\\n` and (`terminated`) followed by one."""
        if not len(text):
            return
        if self.empty:
            self.out.write(b"  " + orjson.dumps(self.key) + b": " + self.brackets[0].encode() + b"\n")
            self.empty = False
        self.out.write(self.pending)
        self.out.write(memoryview(text)[:-2] if terminated else text)
        self.pending = b",\n"

    def close(self) -> None:
        if self.empty:
            self.out.write(b"  " + orjson.dumps(self.key) + b": " + self.brackets.encode() + b",\n")
        else:
            self.out.write(b"\n  " + self.brackets[1].encode() + b",\n")


class GrantTerms:
    """The stored payloads of grant versions, in grant-id order, read (`payloads(seqs)`, e.g.
    `Ledger.payload_batches`) on a thread of its own, up to 256 MiB ahead of the snapshot that
    consumes them. Start it as soon as the candidates are known (`candidates`: every grant whose
    verdict is ok, a superset of those that will clear something) and the ledger reads overlap
    the rest of clearance; the snapshot takes the clearing grants' terms and skips the others."""

    def __init__(self, payloads: Payloads, ids: pa.Array, seqs: np.ndarray):
        ids = _plain(ids)
        order = pc.sort_indices(ids).to_numpy() if len(ids) else np.zeros(0, np.int64)
        self.ids = ids.take(pa.array(order, pa.int64()))
        self.seqs = np.asarray(seqs, dtype=np.int64)[order]
        seq_list = self.seqs.tolist()
        self._prefetch = _Prefetch(lambda: payloads(seq_list))

    @classmethod
    def candidates(cls, payloads: Payloads, grants: pa.Table) -> GrantTerms:
        """From `effective_grants(...)`: the grants with an ok verdict."""
        ok = pc.equal(grants["code"], 0)
        return cls(payloads, grants["grant_id"].filter(ok), _np_int(grants["seq"].filter(ok)))

    def batches(self) -> Iterator[Sequence[tuple[int, Any]]]:
        return iter(self._prefetch)

    def close(self) -> None:
        self._prefetch.close()


def _np_int(arr) -> np.ndarray:
    return np.asarray(_plain(arr).to_numpy(zero_copy_only=False), dtype=np.int64)


def stream_snapshot(
    out: BinaryIO,
    catalog: pa.Table,
    clearance: Clearance,
    *,
    catalog_info: dict[str, Any],
    ledger_head: tuple[int, str],
    payloads: Payloads | None = None,
    terms: GrantTerms | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the snapshot document to `out` (bytes identical to `write_snapshot(doc)`'s) and
    return its summary: every top-level field but `excluded`, `grants` and `items`.

    The clearing grants' terms come from `terms` (already fetching, see `GrantTerms`; closed
    here) or else from `payloads(seqs)`, which yields batches of `(seq, stored event payload)`
    (JSON text or dict) for the ledger seqs asked for, in that order. Either way on a thread of
    their own, ahead of the rest; so does writing to `out`.
    """
    n = catalog.num_rows
    if len(clearance.cleared) != n:
        raise SnapshotError(f"clearance has {len(clearance.cleared)} rows, the catalogue {n}")
    if terms is None:
        if payloads is None:
            raise TypeError("stream_snapshot needs payloads or terms")
        terms = GrantTerms(payloads, clearance.clearing_ids, clearance.clearing_seqs)
    writer = _Writer(out)
    try:
        with no_gc():
            summary = _stream(writer, catalog, clearance, catalog_info, ledger_head, terms,
                              progress or (lambda _: None))
    except BaseException:
        terms.close()
        try:
            writer.close()
        except BaseException:  # noqa: BLE001 - the first error is the one to report
            pass
        raise
    terms.close()
    writer.close()
    return summary


def _stream(out: _Writer, catalog: pa.Table, clearance: Clearance, catalog_info: dict[str, Any],
            ledger_head: tuple[int, str], terms: GrantTerms, progress: Callable[[str], None]) -> dict[str, Any]:
    n = catalog.num_rows
    cleared = np.asarray(clearance.cleared, dtype=bool)
    pos, neg = np.flatnonzero(cleared), np.flatnonzero(~cleared)
    policy = clearance.policy.identity() | {"digest": clearance.policy.digest()}
    head_seq, head_hash = ledger_head
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "created_at": utcnow().isoformat().replace("+00:00", "Z"),
        "cleared_at": clearance.at.isoformat().replace("+00:00", "Z"),
        "catalog": catalog_info,
        "policy": policy,
        "ledger": {"head_seq": head_seq, "head_hash": head_hash},
        "counts": {"items": n, "cleared": len(pos), "excluded": clearance.counts()},
    }
    leaves = bytearray()
    out.write(b"{\n" + b"".join(_field(k, summary[k]) + b",\n" for k in ("catalog", "cleared_at", "counts",
                                                                        "created_at")))

    def entries(section: _Section, canon: pa.Array, pieces: list) -> None:
        d = _sha256_each(canon)
        leaves.extend(d)
        section.write(_text(_concat([_hex_column(d) if p is None else p for p in pieces])))

    section = _Section(out, "excluded", "[]")
    for s in range(0, len(neg), CHUNK):
        entries(section, *_excluded_chunk(catalog, clearance, neg[s:s + CHUNK]))
    section.close()
    progress("snapshot: excluded entries")

    ids = _plain(clearance.clearing_ids)
    order = pc.sort_indices(ids).to_numpy() if len(ids) else np.zeros(0, np.int64)
    clearing_sorted = ids.take(pa.array(order, pa.int64()))
    seqs = np.asarray(clearance.clearing_seqs, dtype=np.int64)[order]
    refs = _write_grants(out, clearing_sorted, seqs, terms.batches())
    progress("snapshot: grant terms")

    section = _Section(out, "items", "[]")
    if len(pos):
        grants = _ItemGrants(clearance, pos, clearing_sorted, refs)
        for s in range(0, len(pos), CHUNK):
            e = min(s + CHUNK, len(pos))
            entries(section, *_items_chunk(catalog, pos[s:e], grants.slice(s, e)))
    section.close()
    progress("snapshot: cleared items")

    root = merkle_root_packed(leaves)
    summary["merkle_root"] = root
    summary["snapshot_id"] = snapshot_id(root, policy["digest"], head_hash)
    out.write(b"".join(_field(k, summary[k]) + b",\n" for k in ("ledger", "merkle_root", "policy", "schema"))
              + _field("snapshot_id", summary["snapshot_id"]) + b"\n}")
    progress("snapshot: Merkle root")
    return summary


def _write_grants(out: _Writer, ids: pa.Array, seqs: np.ndarray, batches: Iterable[Sequence[tuple[int, Any]]],
                  group: int = 256) -> pa.Array:
    """Write the `grants` map (terms of each clearing grant, by id) and return each grant's ref,
    `<id>@<seq>#<sha256 of the canonical terms>` (== `_grant_ref`).

    `batches`: for at least the seqs in `seqs`, in their order (others are skipped), the stored
    event payload (JSON text or dict) or JSON text of an object with just `TERMS_FIELDS` of its
    `grant` (`Ledger.payload_batches(grant_fields=TERMS_FIELDS)`: less to parse here). Per grant: parse, pick the terms, hash their canonical
    JSON. The map's text comes from one orjson call per `group` grants (`[{id: terms, ...}]`
    pretty-printed puts them at the file's depth). Small groups, consumed as they come: a
    million live dicts would cost more than their parsing (allocator traffic)."""
    section = _Section(out, "grants", "{}")
    digests = bytearray()
    sha, dumps, loads, terms_keys = hashlib.sha256, orjson.dumps, orjson.loads, _TERMS_KEYS
    id_list, seq_list = ids.to_pylist(), seqs.tolist()
    k = 0
    try:
        for batch in _only(batches, np.sort(seqs)):
            for a in range(0, len(batch), group):
                m: dict[str, dict[str, Any]] = {}
                for seq, payload in batch[a:a + group]:
                    if k >= len(seq_list) or seq != seq_list[k]:
                        raise SnapshotError(f"terms missing for clearing grant {id_list[min(k, len(id_list) - 1)]} "
                                            f"(ledger seq {seq_list[min(k, len(seq_list) - 1)]}): the ledger "
                                            f"returned seq {seq} there")
                    if isinstance(payload, dict):
                        g, fresh = payload.get("grant", payload), False
                    else:
                        g = loads(payload)
                        g, fresh = g.get("grant", g), "grant" not in g
                    if fresh and g.keys() == terms_keys:  # already just the terms (grant_fields=TERMS_FIELDS)
                        terms = g
                        terms["seq"] = seq
                    else:
                        terms = {"attribution": g["attribution"], "compensation": g["compensation"],
                                 "grant_id": g["grant_id"], "licence": g["licence"],
                                 "on_termination": g["on_termination"], "parties": g["parties"],
                                 "purposes": g["purposes"], "seq": seq, "territories": g["territories"],
                                 "valid_until": g["valid_until"], "version": g["version"]}  # == _grant_terms
                    digests += sha(dumps(terms, option=CANONICAL)).digest()
                    m[id_list[k]] = terms
                    k += 1
                if m:  # `[\n  {\n` + entries + `\n  }\n]`
                    section.write(memoryview(dumps([m], option=PRETTY))[6:-6], terminated=False)
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise SnapshotError(f"terms of clearing grant {id_list[k]} (ledger seq {seq_list[k]}) are malformed: "
                            f"{exc!r}") from None
    if k != len(seq_list):
        raise SnapshotError(f"terms missing for clearing grant {id_list[k]} (ledger seq {seq_list[k]})")
    section.close()
    if not k:
        return pa.array([], pa.string())
    return pc.binary_join_element_wise(ids, "@", pc.cast(pa.array(seqs), pa.string()), "#",
                                       _hex_column(bytes(digests)), "")


def _only(batches: Iterable[Sequence[tuple[int, Any]]], wanted: np.ndarray) -> Iterator[Sequence[tuple[int, Any]]]:
    """The batches' rows whose seq is in `wanted` (sorted): the clearing grants among candidates."""
    for batch in batches:
        got = np.fromiter((s for s, _ in batch), dtype=np.int64, count=len(batch))
        at = np.minimum(np.searchsorted(wanted, got), max(len(wanted) - 1, 0))
        keep = (wanted[at] == got) if len(wanted) else np.zeros(len(got), dtype=bool)
        if keep.all():
            yield batch
        elif keep.any():
            rows = batch if isinstance(batch, list) else list(batch)
            yield [rows[i] for i in np.flatnonzero(keep).tolist()]


class _AtomicFile:
    """A temp file beside its destination: `commit(path)` flushes, fsyncs and renames it into
    place (the `lab.util.atomic` protocol, for a file written piece by piece); otherwise removed."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=".snapshot.", suffix=".tmp", dir=folder)
        self.file = os.fdopen(fd, "wb", buffering=0)

    def commit(self, path: Path) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, path)
        for d in {path.parent, Path(self.tmp).parent}:
            fsync_dir(d)
        return path

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        Path(self.tmp).unlink(missing_ok=True)


def write_snapshot_stream(
    root_dir: Path,
    catalog: pa.Table,
    clearance: Clearance,
    *,
    catalog_info: dict[str, Any],
    ledger_head: tuple[int, str],
    payloads: Payloads | None = None,
    terms: GrantTerms | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Stream the snapshot into `<root_dir>/<snapshot_id>/snapshot.json` (atomically: a temp file
    in `root_dir`, fsync, rename; a rewrite replaces the file) and return (path, summary).
    `payloads` / `terms`: see `stream_snapshot`."""
    root_dir = Path(root_dir)
    try:
        f = _AtomicFile(root_dir)
    except BaseException:
        if terms is not None:
            terms.close()
        raise
    try:
        summary = stream_snapshot(f.file, catalog, clearance, catalog_info=catalog_info, ledger_head=ledger_head,
                                  payloads=payloads, terms=terms, progress=progress)
        path = f.commit(root_dir / summary["snapshot_id"] / "snapshot.json")
    except BaseException:
        f.discard()
        raise
    return path, summary


def build_snapshot(
    catalog: pa.Table,
    clearance: Clearance,
    *,
    catalog_info: dict[str, Any],
    ledger_head: tuple[int, str],
    grant_payloads: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """The snapshot document in memory (small catalogues, tests). `grant_payloads` maps ledger
    seq → event payload for the effective version of each clearing grant (see `Clearance.grant_seq`)."""
    missing = sorted(g for g, seq in clearance.grant_seq.items() if seq not in grant_payloads)
    if missing:
        raise SnapshotError(f"terms missing for clearing grant(s): {missing[:5]}")
    buf = io.BytesIO()
    stream_snapshot(buf, catalog, clearance, catalog_info=catalog_info, ledger_head=ledger_head,
                    payloads=lambda seqs: [[(s, grant_payloads[s]) for s in seqs]])
    return orjson.loads(buf.getvalue())


def write_snapshot(doc: dict[str, Any], root_dir: Path) -> Path:
    """Write `<root_dir>/<snapshot_id>/snapshot.json` atomically (a rewrite replaces the file)."""
    folder = Path(root_dir) / doc["snapshot_id"]
    path = folder / "snapshot.json"
    write_bytes(path, orjson.dumps(doc, option=PRETTY))
    return path


def load_snapshot(path: str | Path) -> Snapshot:
    """Read and check a snapshot: schema, per-entry digests (grant terms included), Merkle root, id."""
    path = Path(path)
    if path.is_dir():
        path = path / "snapshot.json"
    if not path.is_file():
        raise SnapshotError(f"no snapshot at {path}")
    try:
        raw = orjson.loads(path.read_bytes())
        snap = Snapshot.model_validate(raw)
    except Exception as exc:  # noqa: BLE001 - pydantic or JSON, either way the file is unusable
        raise SnapshotError(f"{path}: not a valid {SCHEMA} document: {exc}") from None
    # Digests are recomputed from the JSON values as read (what was hashed when it was written),
    # not from the pydantic models, which may coerce.
    with no_gc():
        refs = {gid: _grant_ref(gid, terms) for gid, terms in raw["grants"].items()}
        used: set[str] = set()
        leaves = []
        for it in raw["items"]:
            gids = it["grant_ids"]
            if any(g not in refs for g in gids):
                raise SnapshotError(f"{path}: item {it['recording_id']} names a grant with no terms in the snapshot")
            used.update(gids)
            leaves.append(_check_leaf(path, it, [refs[g] for g in gids]))
        for ex in raw["excluded"]:
            leaves.append(_check_leaf(path, ex, None))
    unused = sorted(set(refs) - used)
    if unused:
        raise SnapshotError(f"{path}: terms of grant(s) no cleared item names: {unused[:5]} (edited snapshot?)")
    root = merkle_root(leaves)
    if root != snap.merkle_root:
        raise SnapshotError(f"{path}: Merkle root does not match its items (edited snapshot?)")
    expect = snapshot_id(root, snap.policy.get("digest", ""), snap.ledger.get("head_hash", ""))
    if expect != snap.snapshot_id:
        raise SnapshotError(f"{path}: snapshot id {snap.snapshot_id} does not match its content ({expect})")
    if digest({k: v for k, v in snap.policy.items() if k != "digest"}) != snap.policy.get("digest"):
        raise SnapshotError(f"{path}: policy digest does not match the policy recorded")
    return snap


def _check_leaf(path: Path, entry: dict[str, Any], refs: list[str] | None) -> bytes:
    d = _leaf(entry, refs)
    if d.hex() != entry["digest"]:
        raise SnapshotError(f"{path}: item {entry['recording_id']} digest mismatch (edited snapshot?)")
    return d
