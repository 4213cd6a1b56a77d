"""The rights ledger: every consent event, append-only and hash-chained (SQLAlchemy Core).

One table, `ledger_events`, one row per event. The columns clearance needs are stored flat
(read columnar by `Ledger.frame()`); `payload` holds the canonical JSON of the validated event,
and every column is derived from it. Each row's `hash` is the sha256 of the canonical JSON of
all its other columns, `prev_hash` links it to the row before, so any edit or deletion made
behind the ledger's back shows up in `verify()`. Triggers refuse UPDATE/DELETE as a first line
of defence; the chain is what actually proves integrity when someone drops them.

Appends are serialised across processes: SQLite transactions start with BEGIN IMMEDIATE,
PostgreSQL ones take a transaction-scoped advisory lock, and the head is read after that.

Deleting the *last* events, or re-hashing the chain from an edited event onward, cannot be seen
from inside the chain; anything that remembers a head (snapshots and data cards carry
`head_seq`/`head_hash`, the signed-head log of `lab.rights.heads` one per write) can pass it to
`verify(anchor=...)` / `verify(anchors=...)`. A `Ledger(url, heads=HeadLog(...))` has the lab key
sign its head after every write; a bare `Ledger(url)` signs nothing (tests, benchmarks, tools).
"""

from __future__ import annotations

import gc
import hashlib
import io
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import (
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable

from ..util.canonical import canonical_json
from ..util.timestamps import FORMAT as TS_FORMAT
from ..util.timestamps import from_ts, to_ts, utcnow
from .records import EVENT_ADAPTER, STORED, AmendEvent, ExpireEvent, GrantEvent, RevokeEvent, parse_event

__all__ = [
    "COLUMNS",
    "FRAME_COLUMNS",
    "GENESIS",
    "TABLE",
    "Ledger",
    "LedgerError",
    "PayloadBatch",
    "Problem",
    "StoredEvent",
    "TS_FORMAT",
    "VerifyReport",
    "format_validation_error",
    "from_ts",
    "to_ts",
]

Event = GrantEvent | AmendEvent | RevokeEvent | ExpireEvent

TABLE = "ledger_events"
GENESIS = "0" * 64
# pg_advisory_xact_lock key that serialises appends ("lab-ldg" in ASCII).
PG_LOCK_KEY = 0x6C61622D6C6467
KINDS = ("grant", "amend", "revoke", "expire")

COLUMNS = (
    "seq",
    "event_id",
    "kind",
    "grant_id",
    "version",
    "supersedes",
    "status",
    "subject_recording_id",
    "subject_isrc",
    "subject_sha256",
    "subject_catalog",
    "purposes",
    "territories",
    "licence",
    "valid_from",
    "valid_until",
    "effective_at",
    "recorded_at",
    "payload",
    "prev_hash",
    "hash",
)
HASHED = COLUMNS[:-1]  # everything but `hash`
FRAME_COLUMNS = tuple(c for c in COLUMNS if c != "payload")
# Columns derived from the payload, in order (COLUMNS[2:17]).
DERIVED = COLUMNS[2:17]
_I = {c: i for i, c in enumerate(COLUMNS)}
_INT_COLUMNS = {"seq", "version"}
_FRAME_NOT_NULL = {"seq", "event_id", "kind", "grant_id", "recorded_at", "prev_hash", "hash"}
_FRAME_SCHEMA = pa.schema([(c, pa.int64() if c in _INT_COLUMNS else pa.string()) for c in FRAME_COLUMNS])

metadata = MetaData()
ledger_events = Table(
    TABLE,
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("event_id", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("grant_id", Text, nullable=False),
    Column("version", Integer),
    Column("supersedes", Text),
    Column("status", Text),
    Column("subject_recording_id", Text),
    Column("subject_isrc", Text),
    Column("subject_sha256", Text),
    Column("subject_catalog", Text),
    Column("purposes", Text),
    Column("territories", Text),
    Column("licence", Text),
    Column("valid_from", Text),
    Column("valid_until", Text),
    Column("effective_at", Text),
    Column("recorded_at", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", Text, nullable=False, unique=True),
    Column("hash", Text, nullable=False, unique=True),
    CheckConstraint("seq >= 1", name="ck_ledger_events_seq"),
    CheckConstraint("kind IN ('grant', 'amend', 'revoke', 'expire')", name="ck_ledger_events_kind"),
)
_INDEXES = [Index(f"ix_{TABLE}_grant_id", ledger_events.c.grant_id)] + [
    # Partial: most rows leave some of these empty (only amends name `supersedes`), and
    # `col = ?` implies `col IS NOT NULL`, so lookups still use them (SQLite and PostgreSQL).
    Index(
        f"ix_{TABLE}_{c}",
        ledger_events.c[c],
        sqlite_where=ledger_events.c[c].isnot(None),
        postgresql_where=ledger_events.c[c].isnot(None),
    )
    for c in ("supersedes", "subject_recording_id", "subject_isrc", "subject_sha256", "subject_catalog")
]

_SQLITE_CACHE_KIB = 64 * 1024
_SQLITE_BULK_CACHE_KIB = 512 * 1024
_FIELD_RE = re.compile(r"[a-z_][a-z0-9_]*")
_SQLITE_MMAP = 17179869184  # SQLite caps it at its compile-time maximum (2 GiB by default)

_GUARD_MSG = "ledger_events is append-only"
_SQLITE_GUARDS = {
    "ledger_events_no_update": f"CREATE TRIGGER IF NOT EXISTS ledger_events_no_update BEFORE UPDATE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{_GUARD_MSG}: UPDATE refused'); END",
    "ledger_events_no_delete": f"CREATE TRIGGER IF NOT EXISTS ledger_events_no_delete BEFORE DELETE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{_GUARD_MSG}: DELETE refused'); END",
}
# No '%' anywhere: psycopg would read it as a placeholder.
_PG_GUARD_FN = (
    "CREATE OR REPLACE FUNCTION lab_ledger_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN RAISE EXCEPTION USING MESSAGE = '{_GUARD_MSG}: ' || TG_OP || ' refused'; END $$"
)
_PG_GUARDS = {
    "ledger_events_no_update_delete": "CREATE TRIGGER ledger_events_no_update_delete "
    f"BEFORE UPDATE OR DELETE ON {TABLE} FOR EACH ROW EXECUTE FUNCTION lab_ledger_events_append_only()",
    "ledger_events_no_truncate": f"CREATE TRIGGER ledger_events_no_truncate BEFORE TRUNCATE ON {TABLE} "
    "FOR EACH STATEMENT EXECUTE FUNCTION lab_ledger_events_append_only()",
}


class PayloadBatch(Sequence):
    """(seq, payload JSON bytes) pairs whose payloads arrived as one newline-joined blob, split on
    first use: by whoever consumes the batch, not by the thread that read it."""

    __slots__ = ("seqs", "blob", "_rows")

    def __init__(self, seqs: list[int], blob: bytes):
        self.seqs, self.blob, self._rows = seqs, blob, None

    @property
    def nbytes(self) -> int:
        return len(self.blob) if self._rows is None else sum(len(p) for _, p in self._rows)

    def _split(self) -> list[tuple[int, bytes]]:
        if self._rows is None:
            self._rows = list(zip(self.seqs, self.blob.split(b"\n")))
            self.blob = b""
        return self._rows

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i):
        return self._split()[i]

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return iter(self._split())


class LedgerError(Exception):
    """A refused append, a bad import, or a ledger that cannot be read."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index  # position in the batch that caused it, when there is one


class LedgerInputError(LedgerError):
    """The events given do not parse or validate (bad input, as opposed to a refused append)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event_id: str
    kind: str
    recorded_at: datetime
    event: Event
    prev_hash: str
    hash: str

    @property
    def grant_id(self) -> str:
        ev = self.event
        return ev.grant.grant_id if isinstance(ev, (GrantEvent, AmendEvent)) else ev.grant_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "kind": self.kind,
            "grant_id": self.grant_id,
            "recorded_at": to_ts(self.recorded_at),
            "event": self.event.model_dump(mode="json"),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


class Problem(BaseModel):
    seq: int
    event_id: str | None = None
    problem: str


class VerifyReport(BaseModel):
    ok: bool
    n_events: int
    head_seq: int
    head_hash: str
    problems: list[Problem] = Field(default_factory=list)
    n_problems: int = 0  # problems found; `problems` keeps the first `max_problems`
    warnings: list[str] = Field(default_factory=list)
    deep: bool = True  # columns re-derived and payloads re-validated, not just the chain
    start_seq: int = 0  # events after this seq were re-hashed (0: the whole chain)
    anchors_failed: list[int] = Field(default_factory=list)  # seqs of `anchors` not held with their hash

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None


# ---------------------------------------------------------------------------- helpers


@lru_cache(maxsize=1 << 16)
def _json_ts(value: str | None) -> str | None:
    """A datetime as pydantic writes it in JSON → the ledger's fixed UTC text form."""
    if value is None:
        return None
    if value.endswith("Z"):  # fromisoformat reads "Z" only from Python 3.11
        value = value[:-1] + "+00:00"
    return to_ts(datetime.fromisoformat(value))


def _derive(p: dict) -> tuple:
    """The flat columns (DERIVED order) of an event, from its JSON form (model_dump(mode="json"))."""
    kind = p["kind"]
    if kind == "grant" or kind == "amend":
        g = p["grant"]
        s = g["subject"]
        return (
            kind,
            g["grant_id"],
            g["version"],
            g["supersedes"],
            g["status"],
            s["recording_id"],
            s["isrc"],
            s["audio_sha256"],
            s["catalog"],
            " ".join(sorted(g["purposes"])),
            " ".join(sorted(g["territories"])),
            g["licence"],
            _json_ts(g["valid_from"]),
            _json_ts(g["valid_until"]),
            None,
        )
    if kind == "revoke" or kind == "expire":
        return (
            kind,
            p["grant_id"],
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            _json_ts(p["effective_at"]),
        )
    raise ValueError(f"unknown event kind {kind!r}")


def _row_hash(row: Sequence) -> str:
    """sha256 of the canonical JSON of every column but `hash` (row in COLUMNS order)."""
    return hashlib.sha256(canonical_json(dict(zip(HASHED, row)))).hexdigest()


_FIELD_HINTS = (
    # Model-level validators in records.py report at the model; point at the field they judge.
    ("party shares per right", "parties"),
    ("must name its rights holders", "parties"),
    ("at least one purpose", "purposes"),
    ("at least one territory", "territories"),
    ("valid_until must be after", "valid_until"),
    ("must name the grant it supersedes", "grant.supersedes"),
)


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per error: `<prefix>: <field.path>: <message>` (field path in the event's JSON form)."""
    out = []
    for err in exc.errors(include_url=False):
        loc = list(err.get("loc", ()))
        if err.get("type", "").startswith("union_tag"):
            loc = ["kind"]
        elif loc and loc[0] in KINDS:
            loc = loc[1:]  # the discriminator tag pydantic puts first
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err.get("type") == "value_error":
            for needle, field in _FIELD_HINTS:
                if needle in msg:
                    tail = field.split(".")
                    if loc[-len(tail) :] != tail:
                        loc = [x for x in loc if x not in tail] + tail
                    break
        path = ".".join(str(x) for x in loc)
        parts = [p for p in (prefix, path, msg) if p]
        out.append(": ".join(parts))
    return out


def _coerce(event: Any) -> Event:
    if isinstance(event, (GrantEvent, AmendEvent, RevokeEvent, ExpireEvent)):
        return event
    if isinstance(event, BaseModel):
        event = event.model_dump(mode="json")
    return parse_event(event)


def _sqlite_url(url: str) -> str:
    if "://" in url:
        return url
    return f"sqlite:///{Path(url).expanduser().resolve()}"


# ---------------------------------------------------------------------------- the ledger


# A million-event chain re-hashed in one Python loop takes ~12 s (row fetch, canonical JSON, sha256,
# each per row, holding the GIL). `verify` first tries the intact case on SQLite in two processes, one
# per half of the range: if both halves and the seam between them hold, that is the answer; anything
# else (a problem anywhere, a small ledger, PostgreSQL) takes the one-pass loop that names every problem.
_PARALLEL_FROM = 200_000  # events to re-hash before a second process pays for its start-up


def _scan_intact(db: str, lo: int, hi: int, anchors: dict[int, str]) -> dict[str, Any]:
    """Re-hash events lo..hi of a SQLite ledger, read-only, stopping at the first problem. Returns the
    first row's (seq, prev_hash, recorded_at), the last row's (seq, hash, newest recorded_at), the
    anchors' hashes as found, and whether every row and link in between held."""
    i_rec, i_prev, i_hash = _I["recorded_at"], _I["prev_hash"], _I["hash"]
    sha256, dumps, hashed = hashlib.sha256, orjson.dumps, HASHED
    opts = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC  # == canonical_json
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out: dict[str, Any] = {"ok": True, "n": 0, "first": None, "last": None, "seen": {}}
    try:
        cur = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE seq >= ? AND seq <= ? ORDER BY seq", (lo, hi)
        )
        expected, prev_hash, prev_rec = lo, None, ""
        while rows := cur.fetchmany(20_000):
            for row in rows:
                seq, h, rec = row[0], row[i_hash], row[i_rec]
                if out["first"] is None:
                    out["first"] = (seq, row[i_prev], rec)
                    prev_hash, prev_rec = row[i_prev], rec if isinstance(rec, str) else ""
                if seq != expected or row[i_prev] != prev_hash or type(rec) is not str or rec < prev_rec:
                    out["ok"] = False
                    return out
                try:
                    if sha256(dumps(dict(zip(hashed, row)), option=opts)).hexdigest() != h:
                        out["ok"] = False
                        return out
                except TypeError:
                    out["ok"] = False
                    return out
                if seq in anchors:
                    out["seen"][seq] = h
                prev_hash, expected, out["n"] = h, seq + 1, out["n"] + 1
                prev_rec = max(prev_rec, rec)
                out["last"] = (seq, h, prev_rec)
        out["ok"] = out["ok"] and expected == hi + 1
        return out
    finally:
        con.close()


def _child_env() -> dict[str, str]:
    """This process's environment, with the folder this `lab` was imported from first on the path."""
    here = str(Path(__file__).resolve().parents[2])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))


def _scan_main() -> None:
    """The second process of `Ledger._verify_intact`: a job on stdin, `_scan_intact`'s answer on stdout."""
    job = orjson.loads(sys.stdin.buffer.read())
    out = _scan_intact(job["db"], job["lo"], job["hi"], {int(k): v for k, v in job["anchors"].items()})
    out["seen"] = {str(k): v for k, v in out["seen"].items()}
    sys.stdout.buffer.write(orjson.dumps(out))


class Ledger:
    """Append-only, hash-chained consent events in any SQLAlchemy database (SQLite by default)."""

    def __init__(self, url: str | None = None, *, echo: bool = False, heads: Any = None):
        if url is None:
            from ..settings import ledger_url

            url = ledger_url()
        u = make_url(_sqlite_url(str(url)))
        if u.drivername == "postgresql":  # psycopg 3 is the driver lab installs (psycopg2 is not)
            u = u.set(drivername="postgresql+psycopg")
        url = u.render_as_string(hide_password=False)
        self.url = url
        self.dialect = u.get_backend_name()
        self._sqlite = self.dialect == "sqlite"
        self._pg = self.dialect == "postgresql"
        self._psycopg = self._pg and u.get_driver_name() == "psycopg"
        kwargs: dict[str, Any] = {"echo": echo}
        if self._sqlite:
            db = u.database
            memory = not db or db == ":memory:" or db.startswith("file::memory:")
            if memory:
                kwargs["poolclass"] = StaticPool
            else:
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 60, **({"check_same_thread": False} if memory else {})}
        self.engine: Engine = create_engine(url, **kwargs)
        if self._sqlite:
            self._install_sqlite_listeners(self.engine)
        self._ready = False
        self._guarded = False
        self.heads = heads  # a lab.rights.heads.HeadLog: signs the head after every write (None: no log)

    @property
    def ledger_id(self) -> str:
        """Who this ledger is in a signed head: sha256 of its URL with the password hidden."""
        return hashlib.sha256(self.engine.url.render_as_string(hide_password=True).encode()).hexdigest()

    # -- plumbing ------------------------------------------------------------

    @staticmethod
    def _install_sqlite_listeners(engine: Engine) -> None:
        # SQLAlchemy's documented pysqlite recipe: take transaction control away from the
        # driver and emit BEGIN ourselves, IMMEDIATE for writers so they queue on the lock
        # instead of failing to upgrade a read lock.
        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 60000")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
            # Reads of a million-event ledger are page-bound; mmap skips a copy per page
            # (SQLite caps this at its compile-time maximum, 2 GiB by default).
            cur.execute(f"PRAGMA mmap_size = {_SQLITE_MMAP}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            mode = "BEGIN IMMEDIATE" if conn.get_execution_options().get("lab_write") else "BEGIN"
            conn.exec_driver_sql(mode)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def _ph(self) -> str:
        return "?" if self.engine.dialect.paramstyle in ("qmark", "numeric") else "%s"

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction that holds the ledger's append lock."""
        with self.engine.connect() as conn:
            conn.execution_options(lab_write=True)
            with conn.begin():
                if self._pg:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
                yield conn

    def _missing_guards(self, conn: Connection) -> list[str]:
        if self._sqlite:
            have = {
                r[0]
                for r in conn.exec_driver_sql(
                    f"SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = '{TABLE}'"
                )
            }
            return [n for n in _SQLITE_GUARDS if n not in have]
        if self._pg:
            have = {
                r[0]
                for r in conn.exec_driver_sql(
                    f"SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass('{TABLE}') AND NOT tgisinternal"
                )
            }
            return [n for n in _PG_GUARDS if n not in have]
        return []

    def _install_guards(self, conn: Connection, missing: list[str]) -> None:
        if self._sqlite:
            for name in missing:
                conn.exec_driver_sql(_SQLITE_GUARDS[name])
        elif self._pg and missing:
            conn.exec_driver_sql(_PG_GUARD_FN)
            for name in missing:
                conn.exec_driver_sql(_PG_GUARDS[name])

    def _ensure(self, write: bool = False) -> None:
        """Create the table on first use; writers also put back append-only guards someone dropped."""
        if self._ready and (self._guarded or not write):
            return
        if not self._ready:
            with self.engine.connect() as conn:
                exists = inspect(conn).has_table(TABLE)
            if not exists:
                with self._write() as conn:
                    conn.execute(CreateTable(ledger_events, if_not_exists=True))
                    for ix in _INDEXES:
                        conn.execute(CreateIndex(ix, if_not_exists=True))
                    self._install_guards(conn, self._missing_guards(conn))
                self._guarded = True
            self._ready = True
        if write and not self._guarded:
            with self.engine.connect() as conn:
                missing = self._missing_guards(conn)
            if missing:
                with self._write() as conn:
                    self._install_guards(conn, self._missing_guards(conn))
            self._guarded = True

    @contextmanager
    def _raw_cursor(self, sql: str, params: Sequence = ()) -> Iterator[Any]:
        """A DBAPI cursor over `sql` (server-side on PostgreSQL), for streaming large reads."""
        with self.engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            if self._psycopg:
                cur = dbapi.cursor(name=f"lab_{uuid.uuid4().hex[:12]}")
                cur.itersize = 50_000
            else:
                cur = dbapi.cursor()
            try:
                if params:
                    cur.execute(sql, tuple(params))
                else:
                    cur.execute(sql)
                yield cur
            finally:
                cur.close()

    # -- reading -------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last event; (0, GENESIS) for an empty ledger."""
        self._ensure()
        with self.engine.connect() as conn:
            row = self._head_row(conn)
        return row[0], row[1]

    @staticmethod
    def _head_row(conn: Connection) -> tuple[int, str, str]:
        row = conn.execute(
            select(ledger_events.c.seq, ledger_events.c.hash, ledger_events.c.recorded_at)
            .order_by(ledger_events.c.seq.desc())
            .limit(1)
        ).first()
        return (0, GENESIS, "") if row is None else (int(row[0]), row[1], row[2])

    def __len__(self) -> int:
        return self.head()[0]

    def _stored(self, row) -> StoredEvent:
        seq = row[0]
        try:
            ev = EVENT_ADAPTER.validate_json(row[4], context=STORED)
        except ValidationError as exc:
            raise LedgerError(
                f"event seq {seq} ({row[1]}): stored payload does not validate: "
                + "; ".join(format_validation_error(exc))
            ) from None
        return StoredEvent(
            seq=int(seq),
            event_id=row[1],
            kind=row[2],
            recorded_at=from_ts(row[3]),
            event=ev,
            prev_hash=row[5],
            hash=row[6],
        )

    _EV_COLS = (
        ledger_events.c.seq,
        ledger_events.c.event_id,
        ledger_events.c.kind,
        ledger_events.c.recorded_at,
        ledger_events.c.payload,
        ledger_events.c.prev_hash,
        ledger_events.c.hash,
    )

    def _select_events(self, where=None) -> list[StoredEvent]:
        self._ensure()
        q = select(*self._EV_COLS).order_by(ledger_events.c.seq)
        if where is not None:
            q = q.where(where)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [self._stored(r) for r in rows]

    def events(self, upto_seq: int | None = None) -> Iterator[StoredEvent]:
        """Every event in seq order (streamed), up to and including `upto_seq`."""
        self._ensure()
        q = select(*self._EV_COLS).order_by(ledger_events.c.seq)
        if upto_seq is not None:
            q = q.where(ledger_events.c.seq <= upto_seq)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=1000).execute(q)
            for row in result:
                yield self._stored(row)

    def events_since(self, seq: int) -> list[StoredEvent]:
        """Events appended after `seq`, in seq order (a running job's incremental read)."""
        return self._select_events(ledger_events.c.seq > int(seq))

    def verify_since(self, anchor: tuple[int, str]) -> VerifyReport:
        """Incremental integrity check for a reader that verified the chain up to `anchor` (seq, hash):
        that event still has that hash, and every later one follows without a gap, links to the one
        before and recomputes. Events before the anchor are not re-read (that is `verify()`)."""
        self._ensure()
        seq0, prev = int(anchor[0]), str(anchor[1])
        problems: list[Problem] = []
        sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE seq >= {self._ph} ORDER BY seq"
        with self._raw_cursor(sql, (seq0,)) as cur:
            rows = cur.fetchall()
        if seq0 > 0:
            if not rows or rows[0][0] != seq0 or rows[0][_I["hash"]] != prev:
                problems.append(Problem(seq=seq0, problem=f"the verified head seq {seq0} is gone or was rewritten"))
                rows = []
            else:
                rows = rows[1:]
        last, prev_rec, n = seq0, "", 0
        for row in rows:
            n += 1
            seq, h, rec = row[0], row[_I["hash"]], row[_I["recorded_at"]]
            if seq != last + 1 or row[_I["prev_hash"]] != prev or (prev_rec and rec < prev_rec):
                problems.append(Problem(seq=seq, event_id=row[1], problem=f"does not follow seq {last} in the chain"))
            elif _row_hash(row) != h:
                problems.append(Problem(seq=seq, event_id=row[1], problem="hash does not match the row"))
            if problems:
                break
            last, prev, prev_rec = seq, h, rec
        return VerifyReport(
            ok=not problems,
            n_events=n,
            head_seq=last,
            head_hash=prev,
            problems=problems,
            n_problems=len(problems),
            deep=False,
        )

    def payloads(self, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Raw stored payloads (already validated at append) by seq: the snapshot copies grant
        terms from here. Only the rows asked for are read."""
        out: dict[int, dict[str, Any]] = {}
        loads = orjson.loads
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a parsed payload is a dozen containers; nothing here forms cycles
        try:
            for seq, payload in self.payload_texts(sorted(set(int(s) for s in seqs))):
                out[seq] = loads(payload)
        finally:
            if gc_was_enabled:
                gc.enable()
        return out

    def payload_texts(self, seqs: Sequence[int]) -> Iterator[tuple[int, str | bytes]]:
        """(seq, stored payload JSON) for each of `seqs` that is in the ledger, in the order given."""
        for batch in self.payload_batches(seqs):
            yield from batch

    def payload_batches(
        self,
        seqs: Sequence[int],
        batch: int = 4096,
        *,
        grant_fields: Sequence[str] | None = None,
    ) -> Iterator[Sequence[tuple[int, str | bytes]]]:
        """`payload_texts` in lists of up to `batch`. Only the rows asked for are read (SQLite: a
        `json_each` list, each batch's payloads concatenated by SQLite in one step, so a reader
        thread holds the GIL for a split, not per row; PostgreSQL: an array, streamed).

        `grant_fields`: instead of each payload, the JSON of an object with just those fields of
        its `grant` (null where a field is absent), cut out by the database where it can: what the
        snapshot copies as grant terms, with nothing else to parse in Python."""
        seqs = [int(s) for s in seqs]
        fields = None if grant_fields is None else tuple(grant_fields)
        if fields is not None and not all(_FIELD_RE.fullmatch(f) for f in fields):
            raise LedgerError(f"grant_fields must be plain field names, got {list(fields)}")
        if not seqs:
            return
        self._ensure()
        if self._sqlite:
            started = False
            try:
                for rows in self._payload_batches_sqlite(seqs, batch, fields):
                    started = True
                    yield rows
                return
            except sqlite3.OperationalError:  # a SQLite built without JSON functions: IN lists below
                if started:
                    raise
        elif self._pg:
            expr = (
                "e.payload"
                if fields is None
                else (
                    "json_build_object("
                    + ", ".join(f"'{f}', e.payload::json -> 'grant' -> '{f}'" for f in fields)
                    + ")::text"
                )
            )
            sql = (
                f"SELECT e.seq, {expr} FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(seq, ord) "
                f"JOIN {TABLE} AS e ON e.seq = u.seq ORDER BY u.ord"
            )
            with self._raw_cursor(sql, (seqs,)) as cur:
                while rows := cur.fetchmany(batch):
                    yield rows
            return
        t = ledger_events.c
        with self.engine.connect() as conn:
            for chunk in _chunks(seqs, 500):
                found = dict(conn.execute(select(t.seq, t.payload).where(t.seq.in_(chunk))).all())
                rows = [(s, found[s]) for s in chunk if s in found]
                yield rows if fields is None else [(s, _grant_subset(p, fields)) for s, p in rows]

    def _payload_batches_sqlite(
        self, seqs: list[int], batch: int, fields: tuple[str, ...] | None
    ) -> Iterator[Sequence[tuple[int, str | bytes]]]:
        expr = (
            "e.payload"
            if fields is None
            else ("json_object(" + ", ".join(f"'{f}', e.payload -> '$.grant.{f}'" for f in fields) + ")")
        )
        pick = f"FROM json_each(?) AS j CROSS JOIN {TABLE} AS e ON e.seq = j.value"
        joined = (
            f"SELECT CAST(group_concat(x, char(10)) AS BLOB), count(*) FROM (SELECT {expr} AS x {pick} ORDER BY j.key)"
        )
        rows = f"SELECT e.seq, {expr} {pick} ORDER BY j.key"
        with self._bulk_read() as dbapi:
            for chunk in _chunks(seqs, batch):
                arg = orjson.dumps(chunk).decode()
                blob, count = dbapi.execute(joined, (arg,)).fetchone()
                if count == len(chunk) and blob.count(b"\n") == count - 1:  # all there, no payload held a line break
                    yield PayloadBatch(list(chunk), blob)
                else:
                    yield dbapi.execute(rows, (arg,)).fetchall()

    def grant_history(self, grant_id: str) -> list[StoredEvent]:
        """Every event of a grant's lineage: its own versions, revocations and expiries, and
        those of grants it superseded or that supersede it (followed transitively)."""
        self._ensure()
        t = ledger_events.c
        ids = {grant_id}
        with self.engine.connect() as conn:
            while True:
                found = set()
                for chunk in _chunks(sorted(ids), 500):
                    for gid, sup in conn.execute(
                        select(t.grant_id, t.supersedes).where(t.grant_id.in_(chunk) | t.supersedes.in_(chunk))
                    ):
                        found.add(gid)
                        if sup:
                            found.add(sup)
                if found <= ids:
                    break
                ids |= found
        out: list[StoredEvent] = []
        for chunk in _chunks(sorted(ids), 500):
            out += self._select_events(t.grant_id.in_(chunk))
        return sorted(out, key=lambda e: e.seq)

    def events_for_subject(
        self,
        recording_id: str | None = None,
        isrc: str | None = None,
        sha256: str | None = None,
        catalog: str | None = None,
    ) -> list[StoredEvent]:
        """Events of every grant whose subject names ANY of the given identifiers, with the
        revocations and expiries of those grants, in seq order."""
        t = ledger_events.c
        conds = []
        if recording_id:
            conds.append(t.subject_recording_id == recording_id)
        if isrc:
            conds.append(t.subject_isrc == isrc.replace("-", "").upper())
        if sha256:
            conds.append(t.subject_sha256 == sha256.lower())
        if catalog:
            conds.append(t.subject_catalog == catalog)
        if not conds:
            raise LedgerError("events_for_subject needs at least one of recording_id, isrc, sha256, catalog")
        self._ensure()
        cond = conds[0]
        for c in conds[1:]:
            cond = cond | c
        with self.engine.connect() as conn:
            ids = sorted({r[0] for r in conn.execute(select(t.grant_id).where(cond))})
        out: list[StoredEvent] = []
        for chunk in _chunks(ids, 500):
            out += self._select_events(t.grant_id.in_(chunk))
        return sorted(out, key=lambda e: e.seq)

    def frame(self, upto_seq: int | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Every column but `payload` (or only `columns`, in that order) as a pyarrow Table, in seq
        order (clearance's fast path; `lab.rights.clearance.CLEARANCE_COLUMNS` is what it reads).

        seq and version are int64; every other column is a string (timestamps in the fixed
        `%Y-%m-%dT%H:%M:%S.%fZ` UTC form, so string comparison is time comparison).

        Per-value Python objects are what make a million-row read slow, so the database
        serialises rows to delimited lines (SQLite `printf` + `group_concat`, one string per seq
        range, read ahead on a thread; PostgreSQL `COPY ... CSV`) and Arrow's C++ CSV reader
        builds the columns; anything odd falls back to a plain cursor.
        """
        cols = FRAME_COLUMNS if columns is None else tuple(columns)
        unknown = [c for c in cols if c not in FRAME_COLUMNS]
        if unknown or not cols:
            raise LedgerError(f"frame columns must be among {list(FRAME_COLUMNS)}, got {list(cols)}")
        self._ensure()
        where = "" if upto_seq is None else f" WHERE seq <= {int(upto_seq)}"
        try:
            if self._sqlite:
                return self._frame_sqlite(where, cols)
            if self._psycopg:
                return self._frame_pg(where, cols)
        except (_FrameFallback, pa.ArrowInvalid):
            pass
        return self._frame_cursor(where, cols)

    @contextmanager
    def _bulk_read(self) -> Iterator[Any]:
        """A DBAPI connection for one big read. On SQLite the mmap is switched off for it: a scan
        through mmap maps the whole ledger file into the process (1.5 GB of resident pages at a
        million events) where read() goes through a bounded page cache instead."""
        with self.engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            if self._sqlite:
                dbapi.execute("PRAGMA mmap_size = 0")
            try:
                yield dbapi
            finally:
                if self._sqlite:
                    dbapi.execute(f"PRAGMA mmap_size = {_SQLITE_MMAP}")

    def _frame_sqlite(self, where: str, cols: Sequence[str] = FRAME_COLUMNS, step: int = 50_000) -> pa.Table:
        schema = _frame_schema(cols)
        args = ", ".join(c if c in _FRAME_NOT_NULL else f"coalesce({c}, char(30))" for c in cols)
        sql = (
            f"SELECT CAST(group_concat(line, char(10)) AS BLOB), count(*) FROM (SELECT printf(?, {args}) AS line "
            f"FROM {TABLE} WHERE seq >= ? AND seq <= ? ORDER BY seq)"
        )
        fmt = "\x1f".join(["%s"] * len(cols))
        parse = pcsv.ParseOptions(delimiter="\x1f", quote_char=False, double_quote=False, escape_char=False)
        convert = pcsv.ConvertOptions(column_types=schema, null_values=["\x1e"], strings_can_be_null=True)
        read = pcsv.ReadOptions(column_names=list(cols))
        tables = []
        with self._bulk_read() as dbapi:
            # One read transaction: the seq ranges below see one state of the ledger.
            dbapi.execute("BEGIN")
            try:
                # min() and max() apart: together they would scan the table.
                lo, hi = dbapi.execute(
                    f"SELECT (SELECT min(seq) FROM {TABLE}{where}), (SELECT max(seq) FROM {TABLE}{where})"
                ).fetchone()
                starts = [] if lo is None else range(int(lo), int(hi) + 1, step)
                ranges = [(a, min(a + step - 1, int(hi))) for a in starts]

                def fetch(a: int, b: int) -> tuple[bytes | None, int]:
                    return dbapi.execute(sql, (fmt, a, b)).fetchone()

                # SQLite (printf, group_concat) reads the next range on another thread while
                # Arrow's CSV reader parses this one; neither holds the GIL. (Two connections
                # scanning at once are slower: they contend in the kernel and in SQLite's allocator.)
                with ThreadPoolExecutor(1, thread_name_prefix="lab-ledger-frame") as pool:
                    pending = pool.submit(fetch, *ranges[0]) if ranges else None
                    for k in range(len(ranges)):
                        blob, count = pending.result()
                        pending = pool.submit(fetch, *ranges[k + 1]) if k + 1 < len(ranges) else None
                        if not count:
                            continue
                        t = pcsv.read_csv(
                            pa.BufferReader(blob), read_options=read, parse_options=parse, convert_options=convert
                        )
                        if t.num_rows != count:  # a value held a line break or a delimiter
                            if pending is not None:
                                pending.result()
                            raise _FrameFallback
                        tables.append(t)
            finally:
                dbapi.execute("COMMIT")
        table = _concat(tables, schema)
        if "seq" in cols:
            seq = table["seq"].to_numpy()
            if len(seq) > 1 and not (seq[1:] > seq[:-1]).all():
                table = table.take(pa.array(np.argsort(seq, kind="stable"), pa.int64()))
        return table

    def _frame_pg(self, where: str, cols: Sequence[str] = FRAME_COLUMNS) -> pa.Table:
        schema = _frame_schema(cols)
        sql = f"COPY (SELECT {', '.join(cols)} FROM {TABLE}{where} ORDER BY seq) TO STDOUT (FORMAT csv, FORCE_QUOTE *)"
        buf = io.BytesIO()
        with self.engine.connect() as conn:
            with conn.connection.dbapi_connection.cursor() as cur:
                with cur.copy(sql) as copy:
                    for data in copy:
                        buf.write(data)
        if not buf.tell():
            return schema.empty_table()
        buf.seek(0)
        # Non-null values are all quoted; NULL is the unquoted empty field.
        return pcsv.read_csv(
            buf,
            read_options=pcsv.ReadOptions(column_names=list(cols)),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types=schema, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False
            ),
        )

    def _frame_cursor(self, where: str, cols: Sequence[str] = FRAME_COLUMNS, batch: int = 100_000) -> pa.Table:
        schema = _frame_schema(cols)
        sql = f"SELECT {', '.join(cols)} FROM {TABLE}{where} ORDER BY seq"
        chunks: list[list[pa.Array]] = [[] for _ in cols]
        with self._raw_cursor(sql) as cur:
            while rows := cur.fetchmany(batch):
                for j, col in enumerate(zip(*rows)):
                    chunks[j].append(pa.array(col, type=schema.field(j).type))
        arrays = [pa.chunked_array(c, type=f.type) for c, f in zip(chunks, schema)]
        return pa.Table.from_arrays(arrays, schema=schema)

    # -- writing -------------------------------------------------------------

    def append(self, event: Any, *, recorded_at: datetime | None = None) -> StoredEvent:
        """Validate, check against the ledger's state, chain and store one event."""
        return self.append_many([event], recorded_at=recorded_at)[0]

    def append_many(
        self, events: Iterable[Any], *, recorded_at: datetime | None = None, labels: Sequence[str] | None = None
    ) -> list[StoredEvent]:
        """Append a batch in ONE transaction: all of it, or (on any refusal) none of it.

        `events` are event models or raw dicts (validated with `parse_event`). `recorded_at`
        defaults to now; it never goes backwards (an earlier explicit value is refused).
        `labels[i]` names event i in error messages (default "event i+1").
        """
        events = events if isinstance(events, Sequence) else list(events)
        multi = len(events) > 1
        models: list[Event] = []
        for i, e in enumerate(events):
            try:
                models.append(_coerce(e))
            except ValidationError as exc:
                label = _label(labels, i, multi)
                raise LedgerInputError("\n".join(format_validation_error(exc, label)), index=i) from None
        if not models:
            return []
        explicit = to_ts(recorded_at) if recorded_at is not None else None
        ids: set[str] = set()
        for m in models:
            if isinstance(m, (GrantEvent, AmendEvent)):
                ids.add(m.grant.grant_id)
                if m.grant.supersedes:
                    ids.add(m.grant.supersedes)
            else:
                ids.add(m.grant_id)

        self._ensure(write=True)
        stored: list[StoredEvent] = []
        # A million-event import allocates millions of small objects that all stay alive; the
        # cyclic GC would rescan them over and over (measured: ~40% of the time). Nothing
        # here creates cycles.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._append_locked(models, ids, explicit, labels, multi, stored)
        finally:
            if gc_was_enabled:
                gc.enable()
        if self.heads is not None and stored:  # after the commit: a signed head is never ahead of the ledger
            last = stored[-1]
            self.heads.sign(self.ledger_id, last.seq, last.hash, last.event_id)
        return stored

    def hashes_at(self, seqs: Iterable[int]) -> dict[int, tuple[str, str]]:
        """seq → (hash, event_id) for each of `seqs` the ledger holds (a head check without a scan)."""
        self._ensure()
        t = ledger_events.c
        out: dict[int, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted({int(s) for s in seqs}), 500):
                for seq, h, eid in conn.execute(select(t.seq, t.hash, t.event_id).where(t.seq.in_(chunk))):
                    out[int(seq)] = (h, eid)
        return out

    def _append_locked(self, models, ids, explicit, labels, multi, stored) -> None:
        with self._write() as conn:
            head_seq, prev, head_rec = self._head_row(conn)
            if explicit is not None:
                if explicit < head_rec:
                    raise LedgerError(
                        f"recorded_at {explicit} is earlier than the ledger head's ({head_rec}); "
                        "the ledger's clock never goes backwards"
                    )
                rec = explicit
            else:
                rec = max(to_ts(utcnow()), head_rec)
            rec_dt = from_ts(rec)
            big = self._sqlite and len(models) > 50_000
            if big:  # random-key unique indexes (hash, event_id) thrash a small page cache
                conn.exec_driver_sql(f"PRAGMA cache_size = -{_SQLITE_BULK_CACHE_KIB}")
            state = self._grant_state(conn, ids) if head_seq else {}
            insert = self._inserter(conn)
            seq = head_seq
            step = 5000  # bounded memory for million-event imports
            for start in range(0, len(models), step):
                chunk = models[start : start + step]
                rows: list[tuple] = []
                for k, model in enumerate(chunk):
                    d = model.model_dump(mode="json")
                    cols = _derive(d)
                    _check_one(state, cols, start + k, labels, multi)
                    seq += 1
                    eid = uuid.uuid4().hex
                    row = (seq, eid, *cols, rec, canonical_json(d).decode(), prev)
                    h = _row_hash(row)
                    rows.append(row + (h,))
                    stored.append(
                        StoredEvent(
                            seq=seq, event_id=eid, kind=cols[0], recorded_at=rec_dt, event=model, prev_hash=prev, hash=h
                        )
                    )
                    prev = h
                insert(rows)
            if big:
                conn.exec_driver_sql(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")

    def _inserter(self, conn: Connection):
        if self.engine.dialect.paramstyle in ("qmark", "format", "pyformat"):
            ph = self._ph
            sql = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join([ph] * len(COLUMNS))})"
            return lambda rows: conn.exec_driver_sql(sql, rows)
        stmt = ledger_events.insert()
        return lambda rows: conn.execute(stmt, [dict(zip(COLUMNS, r)) for r in rows])

    def _grant_state(self, conn: Connection, ids: set[str]) -> dict[str, list]:
        """grant_id → [current version or None, seq of its revocation or None]."""
        t = ledger_events.c
        state: dict[str, list] = {}
        q = select(t.grant_id, t.kind, t.version, t.seq)
        if len(ids) > 5000:  # big import: one scan beats thousands of IN lists
            results = [conn.execute(q)]
        else:
            results = [conn.execute(q.where(t.grant_id.in_(chunk))) for chunk in _chunks(sorted(ids), 500)]
        for res in results:
            for gid, kind, version, seq in res:
                if gid not in ids:
                    continue
                st = state.setdefault(gid, [None, None])
                if kind in ("grant", "amend"):
                    st[0] = version if st[0] is None else max(st[0], version)
                elif kind == "revoke":
                    st[1] = seq
        return state

    def import_jsonl(self, path: str | Path, *, recorded_at: datetime | None = None) -> list[StoredEvent]:
        """Validate every line, then append them all in one transaction; any bad line → nothing written.

        Blank lines are skipped. Errors name the line and the field, one line per problem.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LedgerInputError(f"cannot read {path}: {exc.strerror or exc}") from None
        models: list[Event] = []
        labels: list[str] = []
        errors: list[str] = []
        for n, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                errors.append(f"line {n}: invalid JSON: {exc}")
                continue
            if not isinstance(raw, dict):
                errors.append(f"line {n}: expected a JSON object, got {type(raw).__name__}")
                continue
            try:
                models.append(parse_event(raw))
                labels.append(f"line {n}")
            except ValidationError as exc:
                errors += format_validation_error(exc, f"line {n}")
        if errors:
            shown = errors[:50] + ([f"... and {len(errors) - 50} more"] if len(errors) > 50 else [])
            raise LedgerInputError(f"{path}: nothing imported, {len(errors)} problem(s):\n" + "\n".join(shown))
        if not models:
            return []
        return self.append_many(models, recorded_at=recorded_at, labels=labels)

    # -- verifying -----------------------------------------------------------

    def verify(
        self,
        *,
        deep: bool = True,
        anchor: tuple[int, str] | None = None,
        anchors: Sequence[tuple[int, str]] = (),
        start: tuple[int, str] | None = None,
        max_problems: int = 100,
        batch: int = 20_000,
    ) -> VerifyReport:
        """Re-derive the whole chain and report every problem found.

        Always (integrity: catches any row changed, deleted or inserted after it was written):
        seq runs 1..n without gaps, every prev_hash is the hash of the row before, every hash
        recomputes from its row, recorded_at never goes backwards.
        deep=True adds (consistency: catches a writer that stored something it should not):
        every column equals what its payload says, and every payload still validates against
        the record models (pydantic; the costly part, ~20-30 µs an event).

        `anchor=(seq, hash)` is a head remembered elsewhere (a snapshot, a data card): the ledger
        must still hold that event with that hash, which also catches a truncated tail.
        `anchors`: more such heads (the signed heads); those that fail are listed in `anchors_failed`.
        `start=(seq, hash)`: a head verified before; only the events after it are re-hashed (and
        anchors after it checked), provided the ledger still holds it with that hash; if it does
        not, the whole chain is verified and that is the first problem.
        """
        self._ensure()
        problems: list[Problem] = []
        n_problems = 0

        def problem(seq: Any, eid: str | None, msg: str) -> None:
            nonlocal n_problems
            n_problems += 1
            if len(problems) < max_problems:
                problems.append(Problem(seq=seq if isinstance(seq, int) else -1, event_id=eid, problem=msg))

        with self.engine.connect() as conn:
            missing = self._missing_guards(conn)
            start_row = None
            if start is not None and start[0] > 0:
                t = ledger_events.c
                start_row = conn.execute(
                    select(t.seq, t.hash, t.event_id, t.recorded_at).where(t.seq == int(start[0]))
                ).first()
        warnings = [
            f"append-only guard {name!r} is missing (dropped?); the next append puts it back" for name in missing
        ]

        i_rec, i_prev, i_hash = _I["recorded_at"], _I["prev_hash"], _I["hash"]
        sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"
        expected, prev_hash, prev_rec, last_seq, n = 1, GENESIS, "", 0, 0
        if start_row is not None and start_row[1] == start[1]:
            sql += f" WHERE seq > {int(start[0])}"
            expected, prev_hash, prev_rec, last_seq = int(start[0]) + 1, start[1], start_row[3], int(start[0])
        elif start is not None and start[0] > 0:
            what = "is gone" if start_row is None else "has another hash"
            problem(
                int(start[0]),
                start_row[2] if start_row else None,
                f"the last verified head seq {start[0]} {what}: the ledger was rewritten since it was verified",
            )
        start_seq = last_seq
        sql += " ORDER BY seq"
        anchor_seen = anchor is None or anchor[0] <= start_seq
        amap = {int(s): h for s, h in anchors if int(s) > start_seq}
        if not deep and not problems:
            fast = self._verify_intact(start_seq, prev_hash, prev_rec, anchor, amap)
            if fast is not None:
                return fast.model_copy(update={"warnings": warnings, "start_seq": start_seq})
        seen_anchors: set[int] = set()
        failed: set[int] = set()
        validate = EVENT_ADAPTER.validate_python
        loads = orjson.loads
        sha256 = hashlib.sha256
        dumps = orjson.dumps
        opts = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC  # == canonical_json
        hashed = HASHED
        with self._raw_cursor(sql) as cur:
            while rows := cur.fetchmany(batch):
                n += len(rows)
                for row in rows:
                    seq = row[0]
                    h = row[i_hash]
                    rec = row[i_rec]
                    if seq != expected or row[i_prev] != prev_hash or type(rec) is not str or rec < prev_rec:
                        self._link_problems(problem, row, expected, prev_hash, prev_rec, last_seq)
                    try:
                        ok = sha256(dumps(dict(zip(hashed, row)), option=opts)).hexdigest() == h
                    except TypeError:  # a value orjson cannot encode: it was not written by us
                        ok = False
                    if not ok:
                        problem(seq, row[1], "hash does not match the row: it was changed after it was written")
                    if deep:
                        self._deep_check(problem, row, loads, validate)
                    if amap and seq in amap:
                        seen_anchors.add(seq)
                        if h != amap[seq]:
                            failed.add(seq)
                            problem(
                                seq,
                                row[1],
                                f"signed head seq {seq} has hash {amap[seq]}, the ledger now "
                                f"has {h}: rewritten after it was signed",
                            )
                    if anchor is not None and seq == anchor[0]:
                        anchor_seen = True
                        if h != anchor[1]:
                            problem(
                                seq,
                                row[1],
                                f"anchored head seq {anchor[0]} has hash {h}, not the remembered {anchor[1]}",
                            )
                    prev_hash, last_seq = h, seq
                    if type(rec) is str and rec > prev_rec:
                        prev_rec = rec
                    expected = (seq if isinstance(seq, int) else expected) + 1
        if not anchor_seen:
            problem(
                anchor[0],
                None,
                f"anchored head seq {anchor[0]} is not in the ledger, which ends at seq {last_seq} (truncated?)",
            )
        for seq in sorted(set(amap) - seen_anchors):
            failed.add(seq)
            problem(
                seq,
                None,
                f"signed head seq {seq} is not in the ledger, which ends at seq {last_seq} "
                "(deleted after it was signed?)",
            )
        return VerifyReport(
            ok=n_problems == 0,
            n_events=n,
            head_seq=last_seq if isinstance(last_seq, int) else -1,
            head_hash=prev_hash,
            problems=problems,
            n_problems=n_problems,
            warnings=warnings,
            deep=deep,
            start_seq=start_seq,
            anchors_failed=sorted(failed),
        )

    def _verify_intact(
        self, after: int, prev_hash: str, prev_rec: str, anchor: tuple[int, str] | None, anchors: dict[int, str]
    ) -> VerifyReport | None:
        """The report of an intact chain after seq `after`, re-hashed in two processes (see `_scan_intact`);
        None when it is not SQLite, too small to be worth it, or anything at all does not hold."""
        db = self.engine.url.database if self._sqlite else None
        if not db or db == ":memory:":
            return None
        with self.engine.connect() as conn:
            last = conn.exec_driver_sql(f"SELECT max(seq) FROM {TABLE}").scalar()
        if last is None or last - after < _PARALLEL_FROM:
            return None
        wanted = dict(anchors) | ({int(anchor[0]): anchor[1]} if anchor is not None and anchor[0] > after else {})
        mid = after + (last - after) // 2
        # A plain child interpreter, not multiprocessing: spawn would re-run the caller's main script.
        job = orjson.dumps({"db": db, "lo": mid + 1, "hi": last, "anchors": {str(k): v for k, v in wanted.items()}})
        try:
            child = subprocess.Popen(
                [sys.executable, "-c", "from lab.rights.ledger import _scan_main; _scan_main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=_child_env(),
            )
        except OSError:
            return None
        child.stdin.write(job)
        child.stdin.close()
        lower = _scan_intact(db, after + 1, mid, wanted)
        out = child.stdout.read()
        if child.wait() != 0:
            return None
        upper = orjson.loads(out)
        upper["first"], upper["last"] = (tuple(upper[k]) if upper[k] else None for k in ("first", "last"))
        upper["seen"] = {int(k): v for k, v in upper["seen"].items()}
        halves = (lower, upper)
        if not all(h["ok"] and h["first"] and h["last"] for h in halves):
            return None
        seams = ((after, prev_hash, prev_rec), lower["last"])
        for (seq, h, rec), nxt in zip(seams, halves):
            if nxt["first"] != (seq + 1, h, nxt["first"][2]) or nxt["first"][2] < rec:
                return None
        seen = lower["seen"] | upper["seen"]
        if any(seen.get(s) != h for s, h in wanted.items()):
            return None  # a head missing or rewritten: the one-pass loop names it
        return VerifyReport(
            ok=True, n_events=lower["n"] + upper["n"], head_seq=upper["last"][0], head_hash=upper["last"][1], deep=False
        )

    @staticmethod
    def _link_problems(problem, row, expected: int, prev_hash: str, prev_rec: str, last_seq: int) -> None:
        seq, eid = row[0], row[1]
        if seq != expected:
            if isinstance(seq, int) and seq > expected:
                gap = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
                problem(expected, None, f"event seq {gap} missing (deleted?): seq {seq} follows seq {expected - 1}")
            else:
                problem(seq, eid, f"seq {seq!r} out of order: expected {expected}")
        if row[_I["prev_hash"]] != prev_hash:
            problem(seq, eid, f"prev_hash does not match the hash of the event before it (seq {last_seq})")
        rec = row[_I["recorded_at"]]
        if not isinstance(rec, str) or rec < prev_rec:
            problem(seq, eid, f"recorded_at {rec!r} is earlier than the event before it ({prev_rec})")

    @staticmethod
    def _deep_check(problem, row, loads, validate) -> None:
        seq, eid = row[0], row[1]
        try:
            p = loads(row[_I["payload"]])
            derived = _derive(p)
        except Exception as exc:  # noqa: BLE001  any malformed payload is a finding
            problem(seq, eid, f"payload is not a ledger event: {exc!r}")
            return
        stored = row[2:17]
        if derived != stored:
            diff = [c for c, a, b in zip(DERIVED, derived, stored) if a != b]
            problem(seq, eid, f"column(s) differ from the payload: {', '.join(diff)}")
        try:
            validate(p, context=STORED)
        except ValidationError as exc:
            problem(seq, eid, "payload does not validate: " + "; ".join(format_validation_error(exc)))


def _label(labels: Sequence[str] | None, i: int, multi: bool) -> str:
    return labels[i] if labels else (f"event {i + 1}" if multi else "")


def _check_one(state: dict[str, list], cols: tuple, i: int, labels: Sequence[str] | None, multi: bool) -> None:
    """Refuse an event that contradicts the ledger (or earlier events of the same batch); update `state`."""
    kind, gid, version, supersedes = cols[0], cols[1], cols[2], cols[3]
    st = state.get(gid)
    exists = st is not None and st[0] is not None

    def refuse(msg: str) -> None:
        label = _label(labels, i, multi)
        raise LedgerError(f"{label + ': ' if label else ''}{kind} {gid!r}: {msg}", index=i)

    if kind == "grant":
        if exists:
            refuse(
                f"grant_id already exists (version {st[0]}); record a change as an amend "
                f"event with grant.supersedes={gid!r} and version > {st[0]}"
            )
        state[gid] = [version, None]
    elif kind == "amend":
        sup = state.get(supersedes)
        if sup is None or sup[0] is None:
            refuse(f"supersedes {supersedes!r}, which is not in the ledger")
        if sup[1] is not None:
            refuse(
                f"supersedes {supersedes!r}, which was revoked; consent given again is a new grant with a new grant_id"
            )
        if exists:
            if st[1] is not None:
                refuse("the grant was revoked; consent given again is a new grant with a new grant_id")
            if version <= st[0]:
                refuse(f"version must be greater than the current version {st[0]} (got {version})")
            st[0] = version
        else:
            state[gid] = [version, None]
    elif kind == "revoke":
        if not exists:
            refuse("no such grant in the ledger")
        if st[1] is not None:
            refuse("already revoked" + (f" (seq {st[1]})" if st[1] > 0 else " earlier in this batch"))
        st[1] = -1
    elif kind == "expire":
        if not exists:
            refuse("no such grant in the ledger")


class _FrameFallback(Exception):
    pass


def _concat(tables: list[pa.Table], schema: pa.Schema = _FRAME_SCHEMA) -> pa.Table:
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _grant_subset(payload: str | bytes, fields: Sequence[str]) -> bytes:
    grant = orjson.loads(payload).get("grant") or {}
    return orjson.dumps({f: grant.get(f) for f in fields})


def _frame_schema(cols: Sequence[str]) -> pa.Schema:
    return pa.schema([_FRAME_SCHEMA.field(c) for c in cols])


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
