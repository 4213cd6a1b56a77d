"""Snapshots: what clearance decided, columnar and content-addressed (format · write · read)."""

from .format import SCHEMA, SnapshotError
from .read import Snapshot, load_snapshot, receipts_dir, write_receipt
from .write import GrantTerms, write_rows, write_snapshot

__all__ = [
    "SCHEMA",
    "GrantTerms",
    "Snapshot",
    "SnapshotError",
    "load_snapshot",
    "receipts_dir",
    "write_receipt",
    "write_rows",
    "write_snapshot",
]
