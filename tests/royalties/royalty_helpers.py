"""A small royalty world without training: a ledger of grants with terms per right, and registry rows
(checkpoints and their own / inherited source rows) written directly, as `Registry.bulk_load` takes them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from lab.registry import Registry
from lab.registry.schema import CHECKPOINT_COLUMNS
from lab.rights.ledger import Ledger

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SHA = "ab" * 32
PARTIES = [
    {"name": "Label A", "role": "label", "right": "master", "share": "62.5", "party_id": "DPID:PADPIDA2026000001Q"},
    {"name": "Singer B", "role": "performer", "right": "master", "share": "37.5", "party_id": "ISNI:0000000400000019"},
    {"name": "Publisher C", "role": "publisher", "right": "composition", "share": "100", "party_id": "IPI:00700799819"},
]


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def grant(gid: str, rid: str, compensation: list[dict], parties: list[dict] = PARTIES, version: int = 1) -> dict:
    return {
        "grant_id": gid,
        "version": version,
        "issued_at": _iso(T0 - timedelta(days=30)),
        "issuer": "tests",
        "subject": {"recording_id": rid, "catalog": "cat"},
        "status": "opted_in",
        "parties": parties,
        "purposes": ["ai_training", "ai_generative_training"],
        "territories": ["WW"],
        "valid_from": _iso(T0 - timedelta(days=30)),
        "valid_until": None,
        "on_termination": "retain",
        "licence": "CC-BY-4.0",
        "compensation": compensation,
    }


PER_SECOND = [
    {"right": "master", "model": "per_second_trained", "rate": "0.0020", "currency": "EUR"},
    {"right": "composition", "model": "flat_fee", "pool": "90.00", "currency": "EUR"},
]
REVENUE = [
    {"right": "master", "model": "revenue_share", "share": "12.5", "currency": "EUR"},
    {"right": "composition", "model": "none"},
]


def make_ledger(path: Path, grants: list[dict]) -> Ledger:
    ledger = Ledger(f"sqlite:///{path}")
    ledger.append_many([{"kind": "grant", "grant": g} for g in grants], recorded_at=T0 - timedelta(days=29))
    return ledger


def ckpt(cid: str, step: int, created: datetime, head: int, *, parent: str | None = None, folder: str = "") -> dict:
    row = {c: None for c in CHECKPOINT_COLUMNS}
    row |= {
        "checkpoint_id": cid,
        "folder": folder or f"/nowhere/{cid}",
        "step": step,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "data_card_sha256": SHA,
        "sources_sha256": SHA,
        "parent_id": parent,
        "relation": "finetune" if parent else "pretrain",
        "base_model_id": parent or "musicgen-tiny",
        "base_model_kind": "lab_checkpoint" if parent else "tiny_from_config",
        "snapshot_id": "snap",
        "catalog": "cat",
        "ledger_head_seq": head,
        "ledger_head_hash": SHA,
        "policy_name": "p",
        "sources_rows": 0,
        "total_seconds": 0.0,
        "registered_at": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    return row


def source_rows(cid: str, rows: list[tuple[str, str, float]], seen_by: str | None = None) -> pa.Table:
    """rows: (recording_id, grant_id, seconds)."""
    n = len(rows)
    return pa.table(
        {
            "checkpoint_id": [cid] * n,
            "recording_id": [r[0] for r in rows],
            "catalog": ["cat"] * n,
            "isrc": [None] * n,
            "audio_sha256": [SHA] * n,
            "grant_id": [r[1] for r in rows],
            "seconds_seen": pa.array([float(r[2]) for r in rows], pa.float64()),
            "on_termination": ["retain"] * n,
            "seen_by": [seen_by or cid] * n,
        },
        schema=pa.schema(
            [
                ("checkpoint_id", pa.string()),
                ("recording_id", pa.string()),
                ("catalog", pa.string()),
                ("isrc", pa.string()),
                ("audio_sha256", pa.string()),
                ("grant_id", pa.string()),
                ("seconds_seen", pa.float64()),
                ("on_termination", pa.string()),
                ("seen_by", pa.string()),
            ]
        ),
    )


def registry(path: Path, checkpoints: list[dict], rows: list[pa.Table]) -> Registry:
    reg = Registry(f"sqlite:///{path}")
    reg.bulk_load(checkpoints, pa.concat_tables(rows) if rows else source_rows("x", []))
    return reg
