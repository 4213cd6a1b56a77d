"""Read and write the registry in any SQLAlchemy database (SQLite beside the ledger by default).

Writes are idempotent: registering a checkpoint replaces whatever the registry held under its
id, in one transaction. Source rows go in by `executemany` straight from Arrow columns (SQLite:
the DBAPI cursor, no per-row ORM objects), so a million rows take seconds, not minutes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine, create_engine, delete, event, inspect, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

from lab.sample.records import OutputRecord
from lab.util.timestamps import to_ts, utcnow

from .entry import CheckpointEntry, describe
from .schema import CHECKPOINT_COLUMNS, INDEXES, SOURCE_COLUMNS, audits, checkpoints, metadata, outputs, sources

_CHUNK = 500  # ids per IN (...) clause
_SOURCE_TYPES = {"seconds_seen": pa.float64()}
_REINDEX_ROWS = 100_000  # inserts this big drop the source indexes and build them again afterwards


class RegistryError(Exception):
    """The registry cannot be opened or written."""


def _url(url: str | None) -> str:
    if url is None:
        from lab.settings import registry_url

        url = registry_url()
    url = str(url)
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    u = make_url(url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _chunks(items: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Registry:
    """The checkpoint index. `Registry()` opens `lab.settings.registry_url()`; nothing is created
    until the first write, so read-only callers can ask `is_empty()` without leaving a file behind."""

    def __init__(self, url: str | None = None):
        self.url = _url(url)
        u = make_url(self.url)
        self._sqlite = u.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self._sqlite:
            db = u.database
            if not db or db == ":memory:":
                kwargs |= {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
            else:
                self._sqlite_file = Path(db).expanduser()
                kwargs["connect_args"] = {"timeout": 60}
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self._sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._ready = False

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({make_url(self.url).render_as_string(hide_password=True)!r})"

    # -- plumbing ------------------------------------------------------------

    def exists(self) -> bool:
        """Has anything ever been registered here (the tables exist)?"""
        if self._ready:
            return True
        file = getattr(self, "_sqlite_file", None)
        if file is not None and not file.exists():
            return False
        with self.engine.connect() as conn:
            return inspect(conn).has_table(checkpoints.name)

    def _ensure(self) -> None:
        if self._ready:
            return
        file = getattr(self, "_sqlite_file", None)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        with self.engine.begin() as conn:
            metadata.create_all(conn, checkfirst=True)
            for ix in INDEXES:
                ix.create(conn, checkfirst=True)
        self._ready = True

    # -- writing -------------------------------------------------------------

    def register(self, folder: str | Path) -> CheckpointEntry:
        """Index one checkpoint folder the caller vouches for (just signed, or verified); idempotent."""
        entry = describe(folder)
        self.add([entry])
        return entry

    def add(self, entries: Iterable[CheckpointEntry]) -> int:
        """Replace-or-insert these checkpoints and their source rows in one transaction."""
        entries = list(entries)
        if not entries:
            return 0
        rows = [e.row for e in entries]
        table = pa.concat_tables([e.sources for e in entries]) if entries else None
        self._write(rows, table, replace=True)
        return len(entries)

    def bulk_load(self, checkpoint_rows: pa.Table | Sequence[dict[str, Any]], source_rows: pa.Table) -> None:
        """Append many checkpoints at once (rebuild, benchmarks): ids must not be registered yet."""
        if isinstance(checkpoint_rows, pa.Table):
            checkpoint_rows = checkpoint_rows.select(list(CHECKPOINT_COLUMNS)).to_pylist()
        self._write(list(checkpoint_rows), source_rows, replace=False)

    def _write(self, rows: list[dict[str, Any]], table: pa.Table | None, *, replace: bool) -> None:
        self._ensure()
        ids = [r["checkpoint_id"] for r in rows]
        with self.engine.begin() as conn:
            if replace:
                for chunk in _chunks(ids):
                    conn.execute(delete(sources).where(sources.c.checkpoint_id.in_(chunk)))
                    conn.execute(delete(checkpoints).where(checkpoints.c.checkpoint_id.in_(chunk)))
            conn.execute(checkpoints.insert(), [{c: r.get(c) for c in CHECKPOINT_COLUMNS} for r in rows])
            if table is not None and table.num_rows:
                self._insert_sources(conn, table)

    def _insert_sources(self, conn: Connection, table: pa.Table) -> None:
        table = table.select(list(SOURCE_COLUMNS))
        # Index maintenance per random key (grant, hash) dominates a big insert; rebuilding the
        # indexes after one sorted pass is several times faster (DDL is transactional in both engines).
        rebuild = [ix for ix in INDEXES if ix.table is sources] if table.num_rows >= _REINDEX_ROWS else []
        for ix in rebuild:
            ix.drop(conn)
        if self._sqlite:  # the DBAPI cursor: tuples straight from Arrow columns
            cols = ", ".join(SOURCE_COLUMNS)
            marks = ", ".join("?" * len(SOURCE_COLUMNS))
            cursor = conn.connection.driver_connection.cursor()
            for batch in table.to_batches(max_chunksize=200_000):
                cursor.executemany(
                    f"INSERT INTO {sources.name} ({cols}) VALUES ({marks})",
                    zip(*(batch.column(c).to_pylist() for c in SOURCE_COLUMNS)),
                )
            cursor.close()
        else:
            for batch in table.to_batches(max_chunksize=50_000):
                conn.execute(sources.insert(), batch.to_pylist())
        for ix in rebuild:
            ix.create(conn)

    def clear(self) -> None:
        """Forget every checkpoint and source row (audit summaries stay: they are keyed by id)."""
        if not self.exists():
            return
        with self.engine.begin() as conn:
            conn.execute(delete(sources))
            conn.execute(delete(checkpoints))

    def record_audit(self, checkpoint_id: str, report: dict[str, Any], *, data_card_sha256: str | None = None) -> None:
        """Keep the last `lab audit` result of a checkpoint (passed / failed checks)."""
        self._ensure()
        checks = report.get("checks", [])
        failed = [{"name": c["name"], "detail": c["detail"]} for c in checks if not c["ok"]]
        summary = {"passed": len(checks) - len(failed), "failed": failed}
        if report.get("status"):
            summary["status"] = report["status"]  # ok | retained | retrain | retired: what the sampling gate reads
        row = {
            "checkpoint_id": checkpoint_id,
            "audited_at": to_ts(utcnow()),
            "ok": bool(report.get("ok")),
            "data_card_sha256": data_card_sha256,
            "summary": json.dumps(summary, sort_keys=True),
        }
        with self.engine.begin() as conn:
            conn.execute(delete(audits).where(audits.c.checkpoint_id == checkpoint_id))
            conn.execute(audits.insert(), [row])

    def record_output(self, record: OutputRecord) -> None:
        """Keep one sampling attempt (released, withheld or refused); recording it again replaces the row."""
        self._ensure()
        row = output_row(record)
        with self.engine.begin() as conn:
            conn.execute(delete(outputs).where(outputs.c.record_id == row["record_id"]))
            conn.execute(outputs.insert(), [row])

    def clear_outputs(self) -> None:
        """Forget every output row (rebuild reads them back from their records)."""
        if self._has_outputs():
            with self.engine.begin() as conn:
                conn.execute(delete(outputs))

    def _has_outputs(self) -> bool:
        """The outputs table exists (a registry written before outputs were recorded has none until a write)."""
        if self._ready:
            return True
        if not self.exists():
            return False
        with self.engine.connect() as conn:
            return inspect(conn).has_table(outputs.name)

    # -- reading -------------------------------------------------------------

    def outputs(
        self,
        checkpoint_ids: Iterable[str] | None = None,
        kind: str | None = None,
        limit: int | None = None,
        *,
        with_record: bool = True,
    ) -> list[dict[str, Any]]:
        """Output rows, newest first: all, or those of the checkpoints named, of one kind; `uses`,
        `refusals` and `record` come back decoded (`with_record=False` leaves the whole record out:
        decoding it is most of the cost when impact reads thousands of rows)."""
        if not self._has_outputs():
            return []
        o = outputs.c
        cond = [o.kind == kind] if kind else []
        cols = [c for c in outputs.columns if with_record or c.name != "record"]
        query = select(*cols).order_by(o.created_at.desc(), o.record_id)
        with self.engine.connect() as conn:
            if checkpoint_ids is None:
                rows = conn.execute(query.where(*cond).limit(limit)).all()
            else:
                rows = []
                for chunk in _chunks(sorted(set(checkpoint_ids))):
                    rows += conn.execute(query.where(o.checkpoint_id.in_(chunk), *cond)).all()
                rows.sort(key=lambda r: r.record_id)
                rows.sort(key=lambda r: r.created_at, reverse=True)
                rows = rows[:limit] if limit is not None else rows
        out = []
        for r in rows:
            d = dict(r._mapping)
            for col in ("uses", "refusals", "record") if with_record else ("uses", "refusals"):
                d[col] = json.loads(d[col])
            out.append(d)
        return out

    def is_empty(self) -> bool:
        if not self.exists():
            return True
        with self.engine.connect() as conn:
            return conn.execute(select(checkpoints.c.checkpoint_id).limit(1)).first() is None

    def checkpoints(self, ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Checkpoint rows (all, or those named), oldest first."""
        if not self.exists():
            return []
        order = (checkpoints.c.created_at, checkpoints.c.checkpoint_id)
        with self.engine.connect() as conn:
            if ids is None:
                return [dict(r._mapping) for r in conn.execute(select(checkpoints).order_by(*order))]
            out = []
            for chunk in _chunks(sorted(set(ids))):
                out += [
                    dict(r._mapping)
                    for r in conn.execute(select(checkpoints).where(checkpoints.c.checkpoint_id.in_(chunk)))
                ]
        return sorted(out, key=lambda r: (r["created_at"], r["checkpoint_id"]))

    def checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None:
        found = self.checkpoints([checkpoint_id])
        return found[0] if found else None

    def lineage_edges(self) -> list[tuple[str, str]]:
        """(child, parent) for every registered checkpoint that has a parent."""
        if not self.exists():
            return []
        c = checkpoints.c
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(c.checkpoint_id, c.parent_id).where(c.parent_id.isnot(None)))]

    def source_rows(
        self,
        *,
        grant_ids: Iterable[str] = (),
        recording_id: str | None = None,
        catalog: str | None = None,
        isrc: str | None = None,
        audio_sha256: str | None = None,
    ) -> pa.Table:
        """Source rows naming any of the grants, the recording (in `catalog` if given), the ISRC or audio hash."""
        s = sources.c
        conds = []
        grant_ids = sorted(set(grant_ids))
        if recording_id:
            conds.append(
                s.recording_id == recording_id
                if catalog is None
                else (s.recording_id == recording_id) & (s.catalog == catalog)
            )
        if isrc:
            conds.append(s.isrc == isrc)
        if audio_sha256:
            conds.append(s.audio_sha256 == audio_sha256.lower())
        rows: list[tuple] = []
        if self.exists() and (conds or grant_ids):
            with self.engine.connect() as conn:
                for chunk in _chunks(grant_ids):
                    rows += conn.execute(select(sources).where(s.grant_id.in_(chunk))).all()
                for cond in conds:
                    rows += conn.execute(select(sources).where(cond)).all()
        rows = list(dict.fromkeys(tuple(r) for r in rows))  # a row can match twice (grant and recording)
        cols = list(zip(*rows)) if rows else [[] for _ in SOURCE_COLUMNS]
        return pa.table({c: pa.array(list(v), _SOURCE_TYPES.get(c, pa.string())) for c, v in zip(SOURCE_COLUMNS, cols)})

    def audits(self) -> dict[str, dict[str, Any]]:
        """checkpoint id → its last audit (audited_at, ok, data_card_sha256, summary)."""
        if not self.exists():
            return {}
        with self.engine.connect() as conn:
            out = {}
            for r in conn.execute(select(audits)):
                d = dict(r._mapping)
                d["summary"] = json.loads(d["summary"])
                out[d.pop("checkpoint_id")] = d
        return out

    def counts(self) -> tuple[int, int]:
        """(checkpoints, source rows)."""
        if not self.exists():
            return 0, 0
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return (
                conn.execute(select(func.count()).select_from(checkpoints)).scalar_one(),
                conn.execute(select(func.count()).select_from(sources)).scalar_one(),
            )


def output_row(record: OutputRecord) -> dict[str, Any]:
    """The registry row of an output record: the queried fields as columns, the whole record as JSON."""
    data = record.model_dump(mode="json")
    rep = record.replication
    return {
        "record_id": record.record_id,
        "kind": record.kind,
        "created_at": to_ts(record.created_at),  # fixed precision: the column sorts as text
        "checkpoint_id": record.checkpoint_id,
        "prompt": record.prompt,
        "uses": json.dumps(data["uses"]),
        "territory": record.territory,
        "allowed": record.decision.allowed,
        "refusals": json.dumps(data["decision"]["refusals"], sort_keys=True),
        "token_score": rep.token_score if rep else None,
        "audio_score": rep.audio_score if rep else None,
        "nearest_recording": rep.nearest_recording if rep else None,
        "ledger_head_seq": record.decision.ledger_head_seq,
        "ledger_head_hash": record.decision.ledger_head_hash,
        "path": record.path,
        "audio_sha256": record.audio_sha256,
        "sidecar": record.sidecar,
        "credential": record.credential,
        "record": json.dumps(data, sort_keys=True),
        "recorded_at": to_ts(utcnow()),
    }


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout = 60000")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA cache_size = -262144")  # 256 MiB at most: index builds over a million rows stay in memory
    cur.execute("PRAGMA temp_store = MEMORY")  # and so do their sorts
    cur.close()
