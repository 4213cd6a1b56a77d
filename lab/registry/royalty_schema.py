"""Royalty tables: statements issued per period, and the exposure each one paid.

`royalty_paid` is what makes payment exactly-once: a checkpoint whose exposure a statement paid is
never paid again (a later period skips it; a re-run of the same period reproduces the same lines).
One row per (checkpoint, recording, grant): every right of a grant is paid for the same
milliseconds in the same statement, so a per-right row would repeat the figure without adding a fact.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, Table, Text

from .schema import metadata

statements = Table(
    "royalty_statements",
    metadata,
    Column("period", Text, primary_key=True),  # YYYY-MM (UTC month)
    Column("statement_id", Text, nullable=False),  # sha256 of lines.csv
    Column("folder", Text, nullable=False),
    Column("issued_at", Text, nullable=False),
    Column("lines", Integer, nullable=False),
    Column("checkpoints", Text, nullable=False),  # JSON: [[checkpoint_id, previous_id | null], ...]
)

paid = Table(
    "royalty_paid",
    metadata,
    Column("period", Text, nullable=False),
    Column("statement_id", Text, nullable=False),
    Column("checkpoint_id", Text, nullable=False),
    Column("recording_id", Text, nullable=False),
    Column("grant_id", Text, nullable=False),
    Column("exposure_ms", BigInteger, nullable=False),
)

INDEXES = [
    Index("ix_royalty_paid_checkpoint_id", paid.c.checkpoint_id),
    Index("ix_royalty_paid_period", paid.c.period),
]
