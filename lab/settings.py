"""Where lab keeps its state. One place, overridable by environment, so CLI, Hydra and tests agree."""

from __future__ import annotations

import os
from pathlib import Path


def lab_home() -> Path:
    """Ledger, catalogues, keys and caches live here (default `./.lab`, env LAB_HOME)."""
    return Path(os.environ.get("LAB_HOME", ".lab")).expanduser()


def experiments_root() -> Path:
    """Snapshots and runs (default `./experiments`, env LAB_EXPERIMENTS)."""
    return Path(os.environ.get("LAB_EXPERIMENTS", "experiments")).expanduser()


def ledger_url() -> str:
    """SQLAlchemy URL of the rights ledger (env LAB_LEDGER_URL; SQLite under lab_home by default)."""
    url = os.environ.get("LAB_LEDGER_URL")
    if url:
        return url
    return f"sqlite:///{(lab_home() / 'ledger.sqlite').resolve()}"


def registry_url() -> str:
    """SQLAlchemy URL of the checkpoint registry (env LAB_REGISTRY_URL; SQLite beside the ledger by default)."""
    url = os.environ.get("LAB_REGISTRY_URL")
    if url:
        return url
    return f"sqlite:///{(lab_home() / 'registry.sqlite').resolve()}"


def catalogs_dir() -> Path:
    return lab_home() / "catalogs"


def keys_dir() -> Path:
    return lab_home() / "keys"


def cache_dir() -> Path:
    return lab_home() / "cache"


def ledger_heads_path(url, ledger_id: str, home: Path | None = None) -> Path | None:
    """Where the signed-head log of the ledger at `url` (a SQLAlchemy URL) lives: env
    LAB_LEDGER_HEADS if set; beside a SQLite file as `<db>.heads.jsonl`; none for an in-memory
    SQLite ledger; else `<home or lab_home()>/ledger-heads/<ledger id, 16 hex>.jsonl`."""
    explicit = os.environ.get("LAB_LEDGER_HEADS")
    if explicit:
        return Path(explicit).expanduser()
    if url.get_backend_name() == "sqlite":
        db = url.database or ""
        if not db or db == ":memory:" or db.startswith("file::memory:"):
            return None
        return Path(db).expanduser().resolve().with_name(Path(db).name + ".heads.jsonl")
    return Path(home if home is not None else lab_home()) / "ledger-heads" / f"{ledger_id[:16]}.jsonl"
