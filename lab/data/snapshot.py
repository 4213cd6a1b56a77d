"""The snapshot: what clearance decided, content-addressed, written once and read by training.

Items are plain dicts on the write path (a million rows through pydantic costs seconds);
`load_snapshot` validates at the boundary where training picks one up.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from ..rights.clearance import Clearance
from ..util.atomic import write_bytes
from ..util.canonical import canonical_json, digest
from ..util.merkle import leaf_hash, merkle_root
from ..util.timestamps import utcnow

SCHEMA = "lab.snapshot/1"
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
    cols = {f: catalog[f].to_pylist() for f in ITEM_FIELDS}
    items, excluded, leaves = [], [], []
    for i in range(catalog.num_rows):
        rid = cols["recording_id"][i]
        if clearance.cleared[i]:
            refs = sorted(f"{g}@{clearance.grant_seq[g]}" for g in clearance.grant_ids[i])
            core = {"recording_id": rid, "audio_sha256": cols["audio_sha256"][i], "cleared": True, "grants": refs}
            d = leaf_hash(canonical_json(core))
            row = {f: cols[f][i] for f in ITEM_FIELDS}
            row["grant_ids"] = sorted(clearance.grant_ids[i])
            row["digest"] = d.hex()
            items.append(row)
        else:
            core = {"recording_id": rid, "audio_sha256": cols["audio_sha256"][i], "cleared": False,
                    "reason": clearance.reason[i]}
            d = leaf_hash(canonical_json(core))
            excluded.append({"recording_id": rid, "reason": clearance.reason[i], "detail": clearance.detail[i],
                             "audio_sha256": cols["audio_sha256"][i], "grant_ids": clearance.grant_ids[i],
                             "digest": d.hex()})
        leaves.append(d)
    root = merkle_root(leaves)
    policy = clearance.policy.identity() | {"digest": clearance.policy.digest()}
    head_seq, head_hash = ledger_head
    missing = sorted(g for g, seq in clearance.grant_seq.items() if seq not in grant_payloads)
    if missing:
        raise SnapshotError(f"terms missing for clearing grant(s): {missing[:5]}")
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
        "grants": {gid: _grant_terms(grant_payloads[seq], seq) for gid, seq in sorted(clearance.grant_seq.items())},
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
    """Read and check a snapshot: schema, per-item digests, Merkle root, id."""
    path = Path(path)
    if path.is_dir():
        path = path / "snapshot.json"
    if not path.is_file():
        raise SnapshotError(f"no snapshot at {path}")
    try:
        snap = Snapshot.model_validate(orjson.loads(path.read_bytes()))
    except Exception as exc:  # noqa: BLE001 - pydantic or JSON, either way the file is unusable
        raise SnapshotError(f"{path}: not a valid {SCHEMA} document: {exc}") from None
    leaves = []
    for it in snap.items:
        refs = sorted(f"{g}@{snap.grants[g].seq}" for g in it.grant_ids if g in snap.grants)
        if len(refs) != len(it.grant_ids):
            raise SnapshotError(f"{path}: item {it.recording_id} names a grant with no terms in the snapshot")
        core = {"recording_id": it.recording_id, "audio_sha256": it.audio_sha256, "cleared": True, "grants": refs}
        leaves.append(_check_leaf(path, it.recording_id, core, it.digest))
    for ex in snap.excluded:
        core = {"recording_id": ex.recording_id, "audio_sha256": ex.audio_sha256, "cleared": False,
                "reason": ex.reason}
        leaves.append(_check_leaf(path, ex.recording_id, core, ex.digest))
    root = merkle_root(leaves)
    if root != snap.merkle_root:
        raise SnapshotError(f"{path}: Merkle root does not match its items (edited snapshot?)")
    expect = snapshot_id(root, snap.policy.get("digest", ""), snap.ledger.get("head_hash", ""))
    if expect != snap.snapshot_id:
        raise SnapshotError(f"{path}: snapshot id {snap.snapshot_id} does not match its content ({expect})")
    if digest({k: v for k, v in snap.policy.items() if k != "digest"}) != snap.policy.get("digest"):
        raise SnapshotError(f"{path}: policy digest does not match the policy recorded")
    return snap


def _check_leaf(path: Path, rid: str, core: dict, recorded: str) -> bytes:
    d = leaf_hash(canonical_json(core))
    if d.hex() != recorded:
        raise SnapshotError(f"{path}: item {rid} digest mismatch (edited snapshot?)")
    return d
