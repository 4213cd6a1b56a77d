"""Event factories and direct-SQL tampering for the rights tests (also imported by spawned workers)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import create_engine

SHA = "ab" * 32


def grant(gid: str = "G-1", *, kind: str = "grant", **over) -> dict:
    """A valid grant event (as raw JSON-shaped dict); `over` replaces fields of the grant."""
    g = {
        "grant_id": gid,
        "version": 1,
        "issued_at": "2025-01-01T00:00:00Z",
        "issuer": "Acme Records",
        "subject": {"recording_id": f"rec-{gid}", "isrc": "GBLAB2600001", "audio_sha256": SHA},
        "status": "opted_in",
        "parties": [
            {"name": "Acme Records", "role": "master_owner", "right": "master", "share": 60},
            {"name": "Ada", "role": "performer", "right": "master", "share": 40},
        ],
        "purposes": ["ai_training", "ai_generative_training"],
        "territories": ["WW"],
        "valid_from": "2025-01-01",
        "valid_until": "2027-01-01",
        "licence": "CC-BY-4.0",
        "attribution": "Ada, courtesy of Acme",
    }
    g.update(over)
    return {"kind": kind, "grant": g}


def amend(gid: str = "G-1", version: int = 2, supersedes: str | None = None, **over) -> dict:
    return grant(gid, kind="amend", version=version, supersedes=supersedes or gid, **over)


def revoke(gid: str = "G-1", **over) -> dict:
    return {
        "kind": "revoke",
        "grant_id": gid,
        "reason": "artist withdrew consent",
        "effective_at": "2025-06-01T00:00:00Z",
        "issuer": "Ada",
        **over,
    }


def expire(gid: str = "G-1") -> dict:
    return {"kind": "expire", "grant_id": gid, "effective_at": "2025-07-01T00:00:00Z"}


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def raw_sql(url: str, *statements: str) -> None:
    """Run SQL straight at the database, behind the ledger's back (a tamperer's view)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for s in statements:
                conn.exec_driver_sql(s)
    finally:
        engine.dispose()


def fetch_row(url: str, seq: int) -> tuple:
    """One stored row, every column in table order."""
    from lab.rights.ledger import COLUMNS

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(
                conn.exec_driver_sql(f"SELECT {', '.join(COLUMNS)} FROM ledger_events WHERE seq = {int(seq)}").one()
            )
    finally:
        engine.dispose()


def drop_guards(url: str) -> None:
    if url.startswith("sqlite"):
        raw_sql(url, "DROP TRIGGER ledger_events_no_update", "DROP TRIGGER ledger_events_no_delete")
    else:
        raw_sql(
            url,
            "DROP TRIGGER ledger_events_no_update_delete ON ledger_events",
            "DROP TRIGGER ledger_events_no_truncate ON ledger_events",
        )


def append_worker(url: str, prefix: str, n: int, barrier) -> None:
    """Spawned process: wait for the others, then append n grants one transaction at a time."""
    from lab.rights.ledger import Ledger

    ledger = Ledger(url)
    ledger.head()  # schema ready before the race starts
    barrier.wait(timeout=120)
    for i in range(n):
        ledger.append(grant(f"{prefix}-{i:03d}"))
    ledger.close()
