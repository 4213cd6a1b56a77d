"""Registry tables (SQLAlchemy Core): checkpoints, their per-grant source rows, last audits, sampling outputs.

`registry_sources` has one row per (checkpoint, recording, seen_by, grant): a revocation names a
grant, so the grant is what the impact query looks up; `seconds_seen` repeats per grant of a row.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, MetaData, Table, Text

metadata = MetaData()

checkpoints = Table(
    "registry_checkpoints",
    metadata,
    Column("checkpoint_id", Text, primary_key=True),
    Column("folder", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("data_card_sha256", Text, nullable=False),
    Column("sources_sha256", Text, nullable=False),
    Column("weights_sha256", Text),
    Column("parent_id", Text),
    Column("relation", Text, nullable=False),
    Column("base_model_id", Text, nullable=False),
    Column("base_model_kind", Text, nullable=False),
    Column("base_model_path", Text),
    Column("snapshot_id", Text, nullable=False),
    Column("catalog", Text, nullable=False),
    Column("ledger_head_seq", Integer, nullable=False),
    Column("ledger_head_hash", Text, nullable=False),
    Column("policy_name", Text, nullable=False),
    Column("sources_rows", Integer, nullable=False),
    Column("total_seconds", Float, nullable=False),
    Column("on_termination", Text),
    Column("registered_at", Text, nullable=False),
)

sources = Table(
    "registry_sources",
    metadata,
    Column("checkpoint_id", Text, nullable=False),
    Column("recording_id", Text, nullable=False),
    Column("catalog", Text, nullable=False),
    Column("isrc", Text),
    Column("audio_sha256", Text, nullable=False),
    Column("grant_id", Text, nullable=False),
    Column("seconds_seen", Float, nullable=False),
    Column("on_termination", Text, nullable=False),
    Column("seen_by", Text, nullable=False),
)

audits = Table(
    "registry_audits",
    metadata,
    Column("checkpoint_id", Text, primary_key=True),
    Column("audited_at", Text, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("data_card_sha256", Text),
    Column("summary", Text, nullable=False),  # JSON: passed/failed counts and the failing checks
)

# One row per sampling attempt (lab.sample.records.OutputRecord): released, withheld or refused. `record`
# holds the whole record as JSON; the other columns are what `lab outputs list` and impact query.
outputs = Table(
    "registry_outputs",
    metadata,
    Column("record_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),  # released | withheld | refused
    Column("created_at", Text, nullable=False),
    Column("checkpoint_id", Text, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("uses", Text, nullable=False),  # JSON list of purposes
    Column("territory", Text, nullable=False),
    Column("allowed", Boolean, nullable=False),  # the gate's decision
    Column("refusals", Text, nullable=False),  # JSON list of {check, reason, detail, recording_id, grant_id}
    Column("token_score", Float),
    Column("audio_score", Float),
    Column("nearest_recording", Text),
    Column("ledger_head_seq", Integer),
    Column("ledger_head_hash", Text),
    Column("path", Text),
    Column("audio_sha256", Text),
    Column("sidecar", Text),
    Column("credential", Text),
    Column("record", Text, nullable=False),  # the OutputRecord, JSON
    Column("recorded_at", Text, nullable=False),
)

CHECKPOINT_COLUMNS = tuple(c.name for c in checkpoints.columns)
SOURCE_COLUMNS = tuple(c.name for c in sources.columns)

INDEXES = [
    Index("ix_registry_checkpoints_parent_id", checkpoints.c.parent_id),
    Index("ix_registry_sources_checkpoint_id", sources.c.checkpoint_id),
    Index("ix_registry_sources_grant_id", sources.c.grant_id),
    Index("ix_registry_sources_recording_id", sources.c.recording_id),
    Index("ix_registry_sources_audio_sha256", sources.c.audio_sha256),
    Index("ix_registry_outputs_checkpoint_id", outputs.c.checkpoint_id),
    Index(
        "ix_registry_sources_isrc",
        sources.c.isrc,
        sqlite_where=sources.c.isrc.isnot(None),
        postgresql_where=sources.c.isrc.isnot(None),
    ),  # most rows have none; `isrc = ?` still uses it
]

from . import royalty_schema  # noqa: E402,F401  (royalty tables on the same metadata: create_all makes them)
