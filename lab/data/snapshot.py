"""The snapshot: what clearance decided, content-addressed, written once and read by training.

Items are plain dicts on the write path (a million rows through pydantic costs seconds);
`load_snapshot` validates at the boundary where training picks one up.

Each entry's digest covers every field of the entry (the item metadata that conditions the
model, the exclusion detail) and, for a cleared item, the exact version *and terms* of each
grant that cleared it (`<grant_id>@<seq>#<sha256 of the terms>`): the Merkle root, hence the
snapshot id, changes if any of it is edited, including the parties and shares that data cards
and royalty statements copy from `grants`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from ..rights.clearance import Clearance, no_gc
from ..util.atomic import write_bytes
from ..util.canonical import canonical_json, digest
from ..util.merkle import leaf_hash, merkle_root
from ..util.timestamps import utcnow

SCHEMA = "lab.snapshot/1"
CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC  # == util.canonical.canonical_json
ITEM_FIELDS = ("recording_id", "isrc", "title", "artists", "description", "audio_path",
               "audio_sha256", "duration_s", "sample_rate", "channels")


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


def build_snapshot(
    catalog: pa.Table,
    clearance: Clearance,
    *,
    catalog_info: dict[str, Any],
    ledger_head: tuple[int, str],
    grant_payloads: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """Assemble the snapshot document. `grant_payloads` maps ledger seq → event payload for
    the effective version of each clearing grant (see `Clearance.grant_seq`)."""
    missing = sorted(g for g, seq in clearance.grant_seq.items() if seq not in grant_payloads)
    if missing:
        raise SnapshotError(f"terms missing for clearing grant(s): {missing[:5]}")
    with no_gc():
        return _build(catalog, clearance, catalog_info, ledger_head, grant_payloads)


def _build(catalog: pa.Table, clearance: Clearance, catalog_info: dict[str, Any], ledger_head: tuple[int, str],
           grant_payloads: dict[int, dict[str, Any]]) -> dict[str, Any]:
    # The loops below are `_leaf` inlined (a million calls): same core, same bytes.
    sha256, dumps, opts = hashlib.sha256, orjson.dumps, CANONICAL
    grants: dict[str, dict[str, Any]] = {}
    refs: dict[str, str] = {}  # == _grant_ref(gid, terms)
    for gid, seq in sorted(clearance.grant_seq.items()):
        terms = grants[gid] = _grant_terms(grant_payloads[seq], seq)
        refs[gid] = f"{gid}@{seq}#{sha256(dumps(terms, option=opts)).hexdigest()}"
    cleared = np.asarray(clearance.cleared, dtype=bool)
    pos, neg = np.flatnonzero(cleared), np.flatnonzero(~cleared)
    grant_ids = clearance.grant_ids
    leaves: list[bytes] = []
    # Only cleared rows need their metadata as Python objects.
    rows = catalog.select(list(ITEM_FIELDS)).take(pa.array(pos, pa.int64()))
    items = [dict(zip(ITEM_FIELDS, vals)) for vals in zip(*(rows[f].to_pylist() for f in ITEM_FIELDS))]
    for row, i in zip(items, pos.tolist()):
        gids = grant_ids[i]
        if len(gids) > 1:
            gids = sorted(gids)
            row["grants"] = sorted(refs[g] for g in gids)
        else:
            row["grants"] = [refs[g] for g in gids]
        row["grant_ids"] = gids
        row["cleared"] = True
        d = sha256(b"\x00" + dumps(row, option=opts)).digest()
        del row["grants"], row["cleared"]
        row["digest"] = d.hex()
        leaves.append(d)
    excluded = []
    take = pa.array(neg, pa.int64())
    reason, detail = clearance.reason, clearance.detail
    for i, rid, sha in zip(neg.tolist(), catalog["recording_id"].take(take).to_pylist(),
                           catalog["audio_sha256"].take(take).to_pylist()):
        entry = {"recording_id": rid, "reason": reason[i], "detail": detail[i], "audio_sha256": sha,
                 "grant_ids": grant_ids[i], "cleared": False}
        d = sha256(b"\x00" + dumps(entry, option=opts)).digest()
        del entry["cleared"]
        entry["digest"] = d.hex()
        excluded.append(entry)
        leaves.append(d)
    root = merkle_root(leaves)
    policy = clearance.policy.identity() | {"digest": clearance.policy.digest()}
    head_seq, head_hash = ledger_head
    return {
        "schema": SCHEMA,
        "snapshot_id": snapshot_id(root, policy["digest"], head_hash),
        "merkle_root": root,
        "created_at": utcnow().isoformat().replace("+00:00", "Z"),
        "cleared_at": clearance.at.isoformat().replace("+00:00", "Z"),
        "catalog": catalog_info,
        "policy": policy,
        "ledger": {"head_seq": head_seq, "head_hash": head_hash},
        "counts": {"items": catalog.num_rows, "cleared": len(items), "excluded": clearance.counts()},
        "grants": grants,
        "items": items,
        "excluded": excluded,
    }


def write_snapshot(doc: dict[str, Any], root_dir: Path) -> Path:
    """Write `<root_dir>/<snapshot_id>/snapshot.json` atomically; an existing identical id is kept."""
    folder = Path(root_dir) / doc["snapshot_id"]
    path = folder / "snapshot.json"
    write_bytes(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
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
