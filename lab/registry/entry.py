"""One checkpoint folder as registry rows: its identity, lineage and digests, and its sources per grant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from lab.cards.files import CARD_FILE, load_card
from lab.cards.signing import DEFAULT_SIGNATURE, read_statement
from lab.util.canonical import sha256_file
from lab.util.timestamps import to_ts, utcnow

from .schema import SOURCE_COLUMNS

WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class CheckpointEntry:
    """`row`: a registry_checkpoints row; `sources`: its registry_sources rows (SOURCE_COLUMNS)."""

    row: dict[str, Any]
    sources: pa.Table

    @property
    def checkpoint_id(self) -> str:
        return self.row["checkpoint_id"]


def explode_grants(table: pa.Table, checkpoint_id: str) -> pa.Table:
    """sources.parquet rows → one row per grant (column kernels, no Python per row)."""
    parents = pc.list_parent_indices(table["grant_ids"])
    taken = table.select(
        ["recording_id", "catalog", "isrc", "audio_sha256", "seconds_seen", "on_termination", "seen_by"]
    ).take(parents)
    n = taken.num_rows
    cols = {
        "checkpoint_id": pa.array([checkpoint_id] * n, pa.string()) if n else pa.array([], pa.string()),
        "grant_id": pc.list_flatten(table["grant_ids"]),
        **{c: taken[c] for c in taken.column_names},
    }
    return pa.table({c: cols[c] for c in SOURCE_COLUMNS})


def _weights_digest(folder: Path) -> str | None:
    """sha256 of model.safetensors from the signed manifest (what `sha256sum` prints), else hashed here."""
    try:
        statement = read_statement(folder / DEFAULT_SIGNATURE)
        if statement["predicate"]["serialization"].get("method") == "files":
            for res in statement["predicate"]["resources"]:
                if res["name"] == WEIGHTS_FILE:
                    return res["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    path = folder / WEIGHTS_FILE
    return sha256_file(path) if path.is_file() else None


def _base_path(folder: Path) -> str | None:
    """The base model's path from the run's resolved config (config.lab.json), when it had one."""
    try:
        cfg = orjson.loads((folder / "config.lab.json").read_bytes())
        path = (cfg.get("model") or {}).get("path")
        return str(path) if path else None
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None


def describe(folder: str | Path) -> CheckpointEntry:
    """Rows for a checkpoint folder (card and sources validated by `load_card`; raises CardError).

    The caller vouches for the folder (it just signed it, or `verify_folder` passed)."""
    folder = Path(folder).resolve()
    bundle = load_card(folder)
    card = bundle.card
    lineage, snap = card.lineage, card.snapshot
    cid = card.identity.checkpoint_id
    row = {
        "checkpoint_id": cid,
        "folder": str(folder),
        "step": card.identity.step,
        "created_at": to_ts(card.identity.created_at),
        "data_card_sha256": sha256_file(folder / CARD_FILE),
        "sources_sha256": card.sources.sha256,
        "weights_sha256": _weights_digest(folder),
        "parent_id": lineage.parent_checkpoint.checkpoint_id if lineage.parent_checkpoint else None,
        "relation": lineage.relation,
        "base_model_id": lineage.base_model.id,
        "base_model_kind": lineage.base_model.kind,
        "base_model_path": _base_path(folder),
        "snapshot_id": snap.snapshot_id,
        "catalog": snap.catalog,
        "ledger_head_seq": snap.ledger_head_seq,
        "ledger_head_hash": snap.ledger_head_hash,
        "policy_name": snap.policy.name,
        "sources_rows": card.sources.rows,
        "total_seconds": card.sources.total_seconds,
        "on_termination": card.validity.on_termination,
        "registered_at": to_ts(utcnow()),
    }
    return CheckpointEntry(row, explode_grants(bundle.sources, cid))
