"""The checkpoint registry: an index of every signed checkpoint and the sources it carries.

Derived data only (DESIGN.md): `lab registry rebuild PATH…` recreates it from signed checkpoint
folders, so losing it loses nothing. `Registry` (store.py) reads and writes it; `describe`
(entry.py) turns one checkpoint folder into its rows; `rebuild` (rebuild.py) re-indexes folders.
"""

from __future__ import annotations

from .entry import CheckpointEntry, describe
from .rebuild import RebuildReport, find_checkpoints, rebuild
from .store import Registry, RegistryError

__all__ = ["CheckpointEntry", "RebuildReport", "Registry", "RegistryError", "describe", "find_checkpoints", "rebuild"]
