"""Read a snapshot folder and prove it is what its id says, before training touches it.

Every rank calls `load_snapshot`, so it stays columnar: the Parquet files are read as Arrow
tables, the leaf digests recomputed column-wise (`format`), and nothing becomes a Python object
per row unless asked for (`Snapshot.item`, `Snapshot.take`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from ..util.atomic import write_bytes
from ..util.canonical import digest, sha256_file
from . import format as fmt
from .format import SnapshotError
from .jsoncols import plain, unhex_column


class Snapshot:
    """A verified snapshot: the header's fields as attributes, the entries as Arrow tables."""

    def __init__(
        self,
        folder: Path,
        header: fmt.Header,
        raw: dict[str, Any],
        items: pa.Table,
        grants: pa.Table | None,
        excluded: pa.Table | None = None,
    ):
        self.folder = folder
        self.header = raw
        self.snapshot_id = header.snapshot_id
        self.merkle_root = header.merkle_root
        self.created_at = header.created_at
        self.cleared_at = header.cleared_at
        self.catalog = header.catalog
        self.policy = header.policy
        self.ledger = header.ledger.model_dump()
        self.counts = header.counts.model_dump()
        self.items = items
        self._grants = grants
        self._excluded = excluded
        self._grant_ids: pa.ChunkedArray | None = None  # what load checked, when the terms are read later
        self._header = header
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return self.items.num_rows

    def __repr__(self) -> str:
        return f"Snapshot({self.snapshot_id}, {len(self)} cleared, {self.folder})"

    @property
    def grants(self) -> pa.Table:
        """grants.parquet (the clearing grants' terms). Read at load when the items' leaves were recomputed
        from it; under a receipt, read on first access (a card is built) after its sha256 is checked again."""
        if self._grants is None:
            path = self.folder / fmt.GRANTS
            if sha256_file(path) != self._header.files[fmt.GRANTS].sha256:
                raise SnapshotError(f"{path}: sha256 does not match the header (edited since it was loaded?)")
            self._grants = _read(self.folder, fmt.GRANTS)
            if not self._grants.column("grant_id").equals(self._grant_ids):
                raise SnapshotError(f"{path}: grant ids differ from those checked at load (edited snapshot?)")
        return self._grants

    @property
    def excluded(self) -> pa.Table:
        """excluded.parquet, read and verified (file hash, every leaf, counts) on first access."""
        if self._excluded is None:
            self._excluded = _verified_excluded(self.folder, self._header)
        return self._excluded

    def item(self, recording_id: str) -> dict[str, Any] | None:
        """One cleared item as a plain dict, or None (the id index is built on first call)."""
        if self._index is None:
            self._index = {rid: i for i, rid in enumerate(self.items["recording_id"].to_pylist())}
        i = self._index.get(recording_id)
        return None if i is None else self.items.slice(i, 1).to_pylist()[0]

    def take(self, recording_ids: Iterable[str]) -> pa.Table:
        """items rows for `recording_ids`, in that order."""
        ids = pa.array(list(recording_ids), pa.string())
        at = pc.index_in(ids, value_set=self.items["recording_id"])
        if at.null_count:
            unknown = ids.filter(pc.is_null(at)).to_pylist()
            raise SnapshotError(
                f"{self.folder}: not cleared in snapshot {self.snapshot_id}: {unknown[:5]}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            )
        return self.items.take(at)


def _read(folder: Path, name: str, columns: list[str] | None = None) -> pa.Table:
    path = folder / name
    try:
        table = pq.read_table(path, columns=columns, use_threads=False, pre_buffer=False)  # lower peak memory
    except (OSError, pa.ArrowException) as exc:
        raise SnapshotError(f"{path}: not a readable Parquet file: {exc}") from None
    want = fmt.SCHEMAS[name]
    if columns is not None:
        want = pa.schema([want.field(c) for c in columns])
    if not table.schema.equals(want, check_metadata=False):
        raise SnapshotError(f"{path}: columns do not match {fmt.SCHEMA} ({table.schema.names})")
    return table


def _header(folder: Path) -> tuple[fmt.Header, dict[str, Any]]:
    path = folder / fmt.HEADER
    try:
        raw = orjson.loads(path.read_bytes())
        header = fmt.Header.model_validate(raw)
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (orjson.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()
        raise SnapshotError(f"{path}: not a valid {fmt.SCHEMA} header: {' '.join(first[:3])}") from None
    if sorted(header.files) != sorted(fmt.FILES):
        raise SnapshotError(f"{path}: lists files {sorted(header.files)}, expected {sorted(fmt.FILES)}")
    return header, raw


def _check_files(folder: Path, header: fmt.Header) -> None:
    for name, entry in header.files.items():
        path = folder / name
        if not path.is_file():
            raise SnapshotError(f"{path}: missing")
        if sha256_file(path) != entry.sha256:
            raise SnapshotError(f"{path}: sha256 does not match the header (edited snapshot?)")


def _strictly_sorted(col) -> bool:
    col = plain(col)
    n = len(col)
    return n < 2 or pc.all(pc.less(col.slice(0, n - 1), col.slice(1))).as_py()


def _first_mismatch(table: pa.Table, stored: pa.Array, computed: bytes) -> str | None:
    """recording_id of the first row whose stored digest is not the recomputed one."""
    got = np.frombuffer(computed, dtype=np.uint8).reshape(-1, 32)
    have = unhex_column(stored)
    if have is not None and have == computed:
        return None
    if have is not None:
        bad = int(np.flatnonzero((np.frombuffer(have, np.uint8).reshape(-1, 32) != got).any(axis=1))[0])
    else:
        want = [bytes(r).hex() for r in got]
        bad = next(i for i, d in enumerate(stored.to_pylist()) if d != want[i])
    return table["recording_id"][bad].as_py()


def load_snapshot(path: str | Path, *, deep: bool = False, receipts: str | Path | None = None) -> Snapshot:
    """Read and verify a snapshot folder (or its snapshot.json): file sha256s against the header,
    the columns, every item's leaf digest recomputed column-wise (grant terms included: what
    training uses), every grant named and used, the Merkle root from the digest columns, the
    policy digest and the id. The excluded entries' own leaves are recomputed when
    `Snapshot.excluded` is first read, or here with `deep` (not the default: at a million
    recordings that is ~1 s more, over the 5 s a training rank may spend here).

    `receipts`: a folder of verification receipts this lab keeps (`<LAB_HOME>/cache/snapshots`):
    when it holds one for this snapshot naming the very file sha256s just checked, the items'
    leaves were already recomputed (by `lab clear`, which wrote them, or an earlier load) and are
    taken from their digest column; the Merkle root, the id and every other check still run. At a
    million cleared recordings that saves ~2 million sha256 calls (seconds) on every rank."""
    path = Path(path)
    folder = path.parent if path.name == fmt.HEADER else path
    if not (folder / fmt.HEADER).is_file():
        raise SnapshotError(f"no snapshot at {path}")
    header, raw = _header(folder)
    _check_files(folder, header)
    trusted = receipts is not None and _receipt_holds(Path(receipts), header)
    items = _read(folder, fmt.ITEMS)
    grants = _read(folder, fmt.GRANTS, ["grant_id"] if trusted else None)  # whole terms later, when asked
    excluded = _read(folder, fmt.EXCLUDED) if deep else _read(folder, fmt.EXCLUDED, ["digest"])
    for name, table in ((fmt.ITEMS, items), (fmt.GRANTS, grants), (fmt.EXCLUDED, excluded)):
        if table.num_rows != header.files[name].rows:
            raise SnapshotError(f"{folder / name}: {table.num_rows} rows, the header says {header.files[name].rows}")
    if not _strictly_sorted(items["recording_id"]):
        raise SnapshotError(f"{folder / fmt.ITEMS}: rows are not sorted by unique recording_id")
    if not _strictly_sorted(grants["grant_id"]):
        raise SnapshotError(f"{folder / fmt.GRANTS}: rows are not sorted by unique grant_id")
    counts = header.counts
    if (
        counts.cleared != items.num_rows
        or sum(counts.excluded.values()) != excluded.num_rows
        or counts.items != counts.cleared + excluded.num_rows
        or counts.notes != fmt.note_counts(items)
    ):
        raise SnapshotError(f"{folder / fmt.HEADER}: counts do not match the files (edited snapshot?)")

    it_leaves = _item_leaves(folder, items, grants, recompute=not trusted)
    if receipts is not None and not trusted:
        write_receipt(Path(receipts), header)
    if deep:
        excluded = _verified_excluded(folder, header, excluded, checked=True)
    ex_leaves = unhex_column(excluded["digest"])
    if ex_leaves is None:
        raise SnapshotError(f"{folder / fmt.EXCLUDED}: a digest is not 64 hex characters (edited snapshot?)")
    root = fmt.root_of(it_leaves, ex_leaves)
    if root != header.merkle_root:
        raise SnapshotError(f"{folder}: Merkle root does not match the entries (edited snapshot?)")
    policy = dict(header.policy)
    if digest({k: v for k, v in policy.items() if k != "digest"}) != policy.get("digest"):
        raise SnapshotError(f"{folder / fmt.HEADER}: policy digest does not match the policy recorded")
    expect = fmt.snapshot_id(root, policy["digest"], header.ledger.head_hash)
    if expect != header.snapshot_id or (folder.name.startswith("snap-") and folder.name != expect):
        raise SnapshotError(f"{folder}: snapshot id {header.snapshot_id} does not match its content ({expect})")
    snap = Snapshot(folder, header, raw, items, None if trusted else grants, excluded if deep else None)
    snap._grant_ids = grants["grant_id"]
    return snap


def _verified_excluded(
    folder: Path, header: fmt.Header, table: pa.Table | None = None, *, checked: bool = False
) -> pa.Table:
    """excluded.parquet with every leaf recomputed against its digest and the counts by reason
    (`checked`: the file's sha256 was just compared with the header's)."""
    path = folder / fmt.EXCLUDED
    if not checked and sha256_file(path) != header.files[fmt.EXCLUDED].sha256:
        raise SnapshotError(f"{path}: sha256 does not match the header (edited since it was loaded?)")
    table = _read(folder, fmt.EXCLUDED) if table is None else table
    bad = _first_mismatch(table, table["digest"], fmt.excluded_leaves(table))
    if bad is not None:
        raise SnapshotError(f"{path}: recording {bad}: digest does not match its row (edited snapshot?)")
    reasons = dict(sorted((d["values"].as_py(), d["counts"].as_py()) for d in pc.value_counts(table["reason"])))
    if reasons != header.counts.excluded:
        raise SnapshotError(f"{folder / fmt.HEADER}: counts do not match the files (edited snapshot?)")
    return table


def _receipt(header: fmt.Header) -> dict[str, Any]:
    return {
        "schema": "lab.snapshot-receipt/1",
        "snapshot_id": header.snapshot_id,
        "files": {n: header.files[n].sha256 for n in (fmt.ITEMS, fmt.GRANTS)},
    }


def _receipt_holds(receipts: Path, header: fmt.Header) -> bool:
    try:
        return orjson.loads((receipts / f"{header.snapshot_id}.json").read_bytes()) == _receipt(header)
    except (OSError, orjson.JSONDecodeError):
        return False


def receipts_dir(home: str | Path) -> Path:
    """Where a lab keeps its snapshot verification receipts."""
    return Path(home) / "cache" / "snapshots"


def write_receipt(receipts: Path, header: fmt.Header | dict[str, Any]) -> None:
    """Remember that this snapshot's items were verified leaf by leaf (see `load_snapshot`)."""
    header = header if isinstance(header, fmt.Header) else fmt.Header.model_validate(header)
    write_bytes(receipts / f"{header.snapshot_id}.json", orjson.dumps(_receipt(header)))


def _item_leaves(folder: Path, items: pa.Table, grants: pa.Table, *, recompute: bool = True) -> bytes:
    """Recompute the items' leaves (checking each against its digest cell; `recompute=False`: a
    receipt says that was done for these very files) and that every grant an item names is in
    grants.parquet, and every grant there is named."""
    lists = plain(items["grant_ids"])
    flat = lists.flatten()
    at = pc.index_in(flat, value_set=grants["grant_id"])
    if at.null_count:
        row = int(pc.list_parent_indices(lists).filter(pc.is_null(at))[0].as_py())
        raise SnapshotError(
            f"{folder / fmt.ITEMS}: recording {items['recording_id'][row].as_py()} names a grant "
            f"with no terms in {fmt.GRANTS} (edited snapshot?)"
        )
    used = np.bincount(at.to_numpy(), minlength=grants.num_rows) if len(flat) else np.zeros(grants.num_rows)
    if (used == 0).any():
        unused = grants["grant_id"].filter(pa.array(used == 0)).to_pylist()
        raise SnapshotError(
            f"{folder / fmt.GRANTS}: terms of grant(s) no cleared item names: {unused[:5]} (edited snapshot?)"
        )
    if (pc.list_value_length(lists).to_numpy(zero_copy_only=False) == 0).any():
        raise SnapshotError(f"{folder / fmt.ITEMS}: a cleared item names no grant (edited snapshot?)")
    if not recompute:
        stored = unhex_column(items["digest"])
        if stored is None:
            raise SnapshotError(f"{folder / fmt.ITEMS}: a digest is not 64 hex characters (edited snapshot?)")
        return stored
    leaves = fmt.item_leaves(items, fmt.grant_refs(grants).take(at))
    bad = _first_mismatch(items, items["digest"], leaves)
    if bad is not None:
        raise SnapshotError(
            f"{folder / fmt.ITEMS}: recording {bad}: digest does not match its row and the terms of "
            "its grants (edited snapshot?)"
        )
    return leaves
