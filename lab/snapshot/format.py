"""The snapshot format `lab.snapshot/2`: files, column schemas, leaf digests, Merkle root, id.

A snapshot is a folder `<snapshots>/<snapshot_id>/` holding a small header (`snapshot.json`)
and three Parquet files (`items`, `excluded`, `grants`). What makes it content-addressed:

* a grant's *ref* is `<grant_id>@<seq>#<sha256 of the canonical JSON of its grants.parquet row>`:
  the exact version (ledger seq) and terms (parties, shares, licence ...) that cleared something;
* an entry's *leaf* is `sha256(0x00 || canonical_json(row without "digest" + {"cleared": bool}))`,
  and for a cleared item also `"grants"`: the refs of its `grant_ids`, in that order;
* the Merkle root is `lab.util.merkle` over every leaf (items and excluded, sorted);
* the id is `snap-` + sha256(`<root>:<policy digest>:<ledger head hash>`)[:16].

Rows mean what `pyarrow.Table.to_pylist()` gives (timestamps as UTC datetimes); `docs/snapshot-format.md`
spells every column out. The functions below compute the same bytes column-wise (see `jsoncols`).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from ..util.merkle import merkle_root_packed
from . import jsoncols as jc

SCHEMA = "lab.snapshot/2"
HEADER = "snapshot.json"
ITEMS = "items.parquet"
EXCLUDED = "excluded.parquet"
GRANTS = "grants.parquet"
FILES = (ITEMS, EXCLUDED, GRANTS)
CHUNK = 1 << 16  # rows per column-wise step: bounds the JSON text alive at once

_S, _L = pa.string(), pa.list_(pa.string())
ITEM_FIELDS = (
    "recording_id",
    "isrc",
    "title",
    "artists",
    "description",
    "audio_path",
    "audio_sha256",
    "duration_s",
    "sample_rate",
    "channels",
    "extra",
)  # copied from the catalogue row
ITEMS_SCHEMA = pa.schema(
    [
        pa.field("recording_id", _S, False),
        ("isrc", _S),
        pa.field("title", _S, False),
        ("artists", _L),
        pa.field("description", _S, False),
        pa.field("audio_path", _S, False),
        pa.field("audio_sha256", _S, False),
        pa.field("duration_s", pa.float64(), False),
        pa.field("sample_rate", pa.int64(), False),
        pa.field("channels", pa.int64(), False),
        pa.field("extra", _S, False),
        ("metadata_licence", _S),
        pa.field("grant_ids", _L, False),
        pa.field("notes", _L, False),
        pa.field("digest", _S, False),
    ]
)
NOTES = ("licence_mismatch",)  # what an item's `notes` may say (lab.catalog.licence)
EXCLUDED_SCHEMA = pa.schema(
    [
        pa.field("recording_id", _S, False),
        ("audio_sha256", _S),
        pa.field("reason", _S, False),
        pa.field("detail", _S, False),
        pa.field("grant_ids", _L, False),
        pa.field("digest", _S, False),
    ]
)
PARTY = pa.struct(
    [
        pa.field("name", _S, False),
        pa.field("role", _S, False),
        pa.field("right", _S, False),
        pa.field("share", pa.float64(), False),
        ("party_id", _S),
    ]
)
GRANTS_SCHEMA = pa.schema(
    [
        pa.field("grant_id", _S, False),
        pa.field("version", pa.int64(), False),
        pa.field("seq", pa.int64(), False),
        pa.field("licence", _S, False),
        pa.field("parties", pa.list_(pa.field("item", PARTY, False)), False),
        pa.field("purposes", _L, False),
        pa.field("territories", _L, False),
        ("valid_until", pa.timestamp("us", tz="UTC")),
        pa.field("on_termination", _S, False),
        pa.field("attribution", _S, False),
        pa.field("compensation", _S, False),
    ]
)
SCHEMAS = {ITEMS: ITEMS_SCHEMA, EXCLUDED: EXCLUDED_SCHEMA, GRANTS: GRANTS_SCHEMA}


class SnapshotError(RuntimeError):
    """A snapshot that cannot be written or trusted; the message names the file or recording."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Model):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: int = Field(ge=0)


class LedgerHead(_Model):
    head_seq: int = Field(ge=0)
    head_hash: str


class Counts(_Model):
    items: int = Field(ge=0)
    cleared: int = Field(ge=0)
    excluded: dict[str, int]
    notes: dict[str, int] = Field(default_factory=dict)  # cleared items per note


class Header(_Model):
    """`snapshot.json`: everything but the rows, readable by eye."""

    schema_: Literal["lab.snapshot/2"] = Field(alias="schema")
    snapshot_id: str = Field(pattern=r"^snap-[0-9a-f]{16}$")
    merkle_root: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime
    cleared_at: datetime
    catalog: dict[str, Any]
    policy: dict[str, Any]
    ledger: LedgerHead
    counts: Counts
    files: dict[str, FileEntry]


def snapshot_id(root: str, policy_digest: str, ledger_head_hash: str) -> str:
    return "snap-" + hashlib.sha256(f"{root}:{policy_digest}:{ledger_head_hash}".encode()).hexdigest()[:16]


def root_of(*packed_leaves: bytes) -> str:
    """Merkle root over the leaves of every entry file (32-byte digests laid end to end)."""
    return merkle_root_packed(b"".join(packed_leaves))


def _chunks(n: int):
    return ((a, min(a + CHUNK, n)) for a in range(0, n, CHUNK))


def _hashed(table: pa.Table, text, prefix: str = "") -> bytes:
    """sha256 of `prefix` + `text(chunk, first row)` for every row, chunk by chunk. The next chunk's
    text is built (pyarrow kernels, GIL released) on a thread while this one is hashed (Python)."""
    out = bytearray()
    spans = list(_chunks(table.num_rows))

    def build(a: int, b: int) -> pa.Array:
        t = text(table.slice(a, b - a), a)
        return jc.concat([prefix, t]) if prefix else t

    with ThreadPoolExecutor(1, thread_name_prefix="lab-snapshot-text") as pool:
        ahead = pool.submit(build, *spans[0]) if spans else None
        for k in range(len(spans)):
            chunk = ahead.result()
            ahead = pool.submit(build, *spans[k + 1]) if k + 1 < len(spans) else None
            out += jc.sha256_each(chunk)
    return bytes(out)


def _leaves(table: pa.Table, text) -> bytes:
    """Leaf digests of `table`'s rows, `text(chunk, first row)` giving each row's canonical JSON."""
    return _hashed(table, text, "\x00")


def _party_text(parties: pa.ChunkedArray | pa.Array) -> pa.Array:
    values, off, nulls = jc.list_offsets(parties)
    element = jc.json_object(
        {
            "name": jc.json_str(values.field("name")),
            "party_id": jc.json_str(values.field("party_id")),
            "right": jc.json_str(values.field("right")),
            "role": jc.json_str(values.field("role")),
            "share": jc.json_each_distinct(values.field("share")),
        }
    )
    return jc.json_list(element, off, nulls)


def grant_refs(grants: pa.Table) -> pa.Array:
    """`<grant_id>@<seq>#<sha256 of the canonical JSON of the row>` per grants.parquet row."""
    if not grants.num_rows:
        return pa.array([], pa.string())

    def text(t: pa.Table, _first: int) -> pa.Array:
        return jc.json_object(
            {
                "attribution": jc.json_str(t["attribution"]),
                "compensation": jc.json_str(t["compensation"]),
                "grant_id": jc.json_str(t["grant_id"]),
                "licence": jc.json_str(t["licence"]),
                "on_termination": jc.json_str(t["on_termination"]),
                "parties": _party_text(t["parties"]),
                "purposes": jc.json_str_list(t["purposes"]),
                "seq": jc.json_int(t["seq"]),
                "territories": jc.json_str_list(t["territories"]),
                "valid_until": jc.json_each_distinct(t["valid_until"]),
                "version": jc.json_int(t["version"]),
            }
        )

    digests = _hashed(grants, text)
    return pc.binary_join_element_wise(
        jc.plain(grants["grant_id"]), "@", pc.cast(jc.plain(grants["seq"]), _S), "#", jc.hex_column(bytes(digests)), ""
    )


def item_leaves(items: pa.Table, refs: pa.Array) -> bytes:
    """Leaf digests of items.parquet rows; `refs[k]` is the ref of the k-th grant id of
    `items["grant_ids"]` flattened (row by row, in list order)."""
    if not items.num_rows:
        return b""
    refs = jc.plain(refs)
    g_off = jc.list_offsets(items["grant_ids"])[1]

    def text(t: pa.Table, first: int) -> pa.Array:
        gids, off, _ = jc.list_offsets(t["grant_ids"])
        mine = refs.slice(int(g_off[first]), int(off[-1]))
        return jc.json_object(
            {
                "artists": jc.json_str_list(t["artists"]),
                "audio_path": jc.json_str(t["audio_path"]),
                "audio_sha256": jc.json_str(t["audio_sha256"]),
                "channels": jc.json_int(t["channels"]),
                "cleared": "true",
                "description": jc.json_str(t["description"]),
                "duration_s": jc.json_each_distinct(t["duration_s"]),
                "extra": json_text_str(t["extra"]),
                "grant_ids": jc.json_list(jc.json_str(gids), off),
                "grants": jc.json_list(jc.json_str(mine), off),
                "isrc": jc.json_str(t["isrc"]),
                "metadata_licence": jc.json_str(t["metadata_licence"]),
                "notes": jc.json_str_list(t["notes"]),
                "recording_id": jc.json_str(t["recording_id"]),
                "sample_rate": jc.json_int(t["sample_rate"]),
                "title": jc.json_str(t["title"]),
            }
        )

    return _leaves(items, text)


def json_text_str(arr: pa.Array | pa.ChunkedArray) -> jc.Text:
    """`json_str` of a column of JSON texts (`extra`): every value holds quotes, so escape `\\` and `"`
    with two kernels instead of orjson per row. JSON text holds no raw control character; a value
    that does (an edited file) goes through `json_str`, so the leaf stays exact either way."""
    arr = jc.plain(arr)
    data = jc._data_bytes(arr)
    if not len(arr) or (data < 0x20).any() or not ((data == 0x22).any() or (data == 0x5C).any()):
        return jc.json_str(arr)  # nothing to escape (all `{}`: free) or a control character
    escaped = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    out = pc.binary_join_element_wise('"', escaped, '"', "")
    return out.fill_null("null") if out.null_count else out


def note_counts(items: pa.Table) -> dict[str, int]:
    """Cleared items per note (the header's `counts.notes`), by note."""
    flat = pc.list_flatten(items["notes"])
    return dict(sorted((d["values"].as_py(), d["counts"].as_py()) for d in pc.value_counts(flat)))


def excluded_leaves(excluded: pa.Table) -> bytes:
    """Leaf digests of excluded.parquet rows."""

    def text(t: pa.Table, _first: int) -> pa.Array:
        return jc.json_object(
            {
                "audio_sha256": jc.json_str(t["audio_sha256"]),
                "cleared": "false",
                "detail": jc.json_str(t["detail"]),
                "grant_ids": jc.json_str_list(t["grant_ids"]),
                "reason": jc.json_str(t["reason"]),
                "recording_id": jc.json_str(t["recording_id"]),
            }
        )

    return _leaves(excluded, text)
