"""Snapshots: what clearance decided, columnar and content-addressed (format · write · read)."""

from .format import SCHEMA, SnapshotError
from .read import Snapshot, load_snapshot
from .write import GrantTerms, write_rows, write_snapshot

__all__ = ["SCHEMA", "GrantTerms", "Snapshot", "SnapshotError", "load_snapshot", "write_rows", "write_snapshot"]
