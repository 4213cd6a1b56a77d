"""Synthetic registry entries and ledger events for the registry and impact tests (no training)."""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from lab.registry.entry import CheckpointEntry
from lab.registry.schema import SOURCE_COLUMNS

SHA = "ab" * 32


def entry(
    cid: str,
    parent: str | None = None,
    rows: list[tuple] = (),
    *,
    head: int = 1,
    created: str | None = None,
    folder: str | None = None,
    kind: str | None = None,
) -> CheckpointEntry:
    """A checkpoint `cid` whose sources are `rows` of (recording_id, grant_id, on_termination, seconds[, seen_by,
    catalog]); one row per grant, as the registry stores them."""
    full = [(r + (cid, "demo")[len(r) - 4 :]) if len(r) < 6 else r for r in rows]
    cols: dict[str, list[Any]] = {c: [] for c in SOURCE_COLUMNS}
    for rec, gid, rule, secs, seen_by, catalog in full:
        for c, v in (
            ("checkpoint_id", cid),
            ("recording_id", rec),
            ("catalog", catalog),
            ("isrc", None),
            ("audio_sha256", hashlib.sha256(f"{catalog}:{rec}".encode()).hexdigest()),
            ("grant_id", gid),
            ("seconds_seen", float(secs)),
            ("on_termination", rule),
            ("seen_by", seen_by),
        ):
            cols[c].append(v)
    table = pa.table({c: pa.array(v, pa.float64() if c == "seconds_seen" else pa.string()) for c, v in cols.items()})
    row = {
        "checkpoint_id": cid,
        "folder": folder or f"/nowhere/{cid}",
        "step": 1,
        "created_at": created or f"2026-01-01T00:00:{len(cid):02d}.000000Z",
        "data_card_sha256": SHA,
        "sources_sha256": SHA,
        "weights_sha256": SHA,
        "parent_id": parent,
        "relation": "finetune" if parent else "pretrain",
        "base_model_id": parent or "lab/musicgen-tiny",
        "base_model_kind": kind or ("lab_checkpoint" if parent else "tiny_from_config"),
        "base_model_path": f"/nowhere/{parent}" if parent else None,
        "snapshot_id": "snap-1",
        "catalog": "demo",
        "ledger_head_seq": head,
        "ledger_head_hash": SHA,
        "policy_name": "commercial",
        "sources_rows": len({(r[0], r[4]) for r in full}),
        "total_seconds": 0.0,
        "on_termination": None,
        "registered_at": "2026-01-01T00:00:00.000000Z",
    }
    return CheckpointEntry(row, table)


def grant(
    gid: str,
    *,
    rule: str = "retain",
    status: str = "opted_in",
    version: int = 1,
    supersedes: str | None = None,
    subject: dict | None = None,
) -> dict:
    """A valid grant (or amend, with `supersedes`) event as a raw dict."""
    g = {
        "grant_id": gid,
        "version": version,
        "issued_at": "2025-01-01T00:00:00Z",
        "issuer": "Acme Records",
        "subject": subject or {"recording_id": f"rec-{gid}", "catalog": "demo"},
        "status": status,
        "parties": [{"name": "Acme Records", "role": "master_owner", "right": "master", "share": 100}],
        "purposes": ["ai_training", "ai_generative_training"],
        "territories": ["WW"],
        "valid_from": "2025-01-01",
        "licence": "CC-BY-4.0",
        "on_termination": rule,
    }
    if supersedes:
        g["supersedes"] = supersedes
    return {"kind": "amend" if supersedes else "grant", "grant": g}
