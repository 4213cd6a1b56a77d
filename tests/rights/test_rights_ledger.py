"""The ledger on SQLite and PostgreSQL: append, refusals, queries, frame, tamper detection, concurrency."""

from __future__ import annotations

import multiprocessing as mp
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from rights_helpers import SHA, amend, append_worker, drop_guards, expire, fetch_row, grant, raw_sql, revoke
from sqlalchemy.exc import DBAPIError

from lab.rights.ledger import COLUMNS, FRAME_COLUMNS, GENESIS, Ledger, LedgerError, from_ts, to_ts
from lab.rights.records import GrantEvent, RevokeEvent


@pytest.fixture
def ledger(ledger_url):
    with Ledger(ledger_url) as L:
        yield L


def test_table_has_exactly_the_agreed_columns(ledger, ledger_url):
    from sqlalchemy import create_engine, inspect

    ledger.head()
    engine = create_engine(ledger_url)
    try:
        cols = [c["name"] for c in inspect(engine).get_columns("ledger_events")]
    finally:
        engine.dispose()
    assert cols == list(COLUMNS)


def test_timestamps_one_fixed_format():
    t = datetime(2025, 3, 4, 5, 6, 7, 890, tzinfo=timezone(timedelta(hours=2)))
    assert to_ts(t) == "2025-03-04T03:06:07.000890Z"
    assert from_ts(to_ts(t)) == t
    with pytest.raises(ValueError):
        to_ts(datetime(2025, 1, 1))  # naive: refused


def test_append_chain_and_reads(ledger):
    assert ledger.head() == (0, GENESIS)
    s1 = ledger.append(grant("G-1"))
    s2 = ledger.append(GrantEvent.model_validate(grant("G-2", subject={"catalog": "acme-2025"})))
    s3 = ledger.append(amend("G-1", territories=["US", "gb"]))
    s4 = ledger.append(revoke("G-2"))
    assert [s.seq for s in (s1, s2, s3, s4)] == [1, 2, 3, 4]
    assert s1.prev_hash == GENESIS and s2.prev_hash == s1.hash and s4.prev_hash == s3.hash
    assert len({s.event_id for s in (s1, s2, s3, s4)}) == 4 and len(s1.event_id) == 32
    assert ledger.head() == (4, s4.hash)
    assert isinstance(s4.event, RevokeEvent) and s4.grant_id == "G-2"
    assert s1.recorded_at <= s2.recorded_at <= s3.recorded_at <= s4.recorded_at

    back = list(ledger.events())
    assert [e.hash for e in back] == [s1.hash, s2.hash, s3.hash, s4.hash]
    assert back[2].event.grant.territories == ["GB", "US"]
    assert [e.seq for e in ledger.events(upto_seq=2)] == [1, 2]
    assert [e.seq for e in ledger.grant_history("G-1")] == [1, 3]
    assert [e.seq for e in ledger.events_for_subject(catalog="acme-2025")] == [2, 4]
    assert [e.seq for e in ledger.events_for_subject(recording_id="rec-G-1")] == [1, 3]
    assert [e.seq for e in ledger.events_for_subject(isrc="GB-LAB-26-00001")] == [1, 3]
    assert [e.seq for e in ledger.events_for_subject(sha256=SHA.upper())] == [1, 3]
    assert ledger.events_for_subject(recording_id="nope") == []

    report = ledger.verify()
    assert report.ok and report.n_events == 4 and report.head_hash == s4.hash and report.problems == []


def test_frame_columns_types_and_values(ledger):
    ledger.append_many(
        [
            grant("G-1"),
            grant("G-2", status="opted_out", purposes=[], territories=[], parties=[]),
            amend("G-1", valid_until=None),
            expire("G-2"),
        ]
    )
    f = ledger.frame()
    assert f.column_names == list(FRAME_COLUMNS) and "payload" not in f.column_names
    assert f.schema.field("seq").type == pa.int64() and f.schema.field("version").type == pa.int64()
    assert f.schema.field("licence").type == pa.string()
    rows = f.to_pylist()
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    g1, g2, a1, e2 = rows
    assert g1["purposes"] == "ai_generative_training ai_training" and g1["territories"] == "WW"
    assert g1["valid_from"] == "2025-01-01T00:00:00.000000Z" and g1["valid_until"] == "2027-01-01T00:00:00.000000Z"
    assert g1["subject_isrc"] == "GBLAB2600001" and g1["subject_sha256"] == SHA and g1["subject_catalog"] is None
    assert g2["status"] == "opted_out" and g2["purposes"] == "" and g2["territories"] == ""
    assert a1["kind"] == "amend" and a1["version"] == 2 and a1["supersedes"] == "G-1" and a1["valid_until"] is None
    assert e2["kind"] == "expire" and e2["version"] is None and e2["status"] is None and e2["purposes"] is None
    assert e2["effective_at"] == "2025-07-01T00:00:00.000000Z"
    assert rows[3]["hash"] == ledger.head()[1] and rows[1]["prev_hash"] == rows[0]["hash"]
    assert ledger.frame(upto_seq=2).num_rows == 2
    # the bulk path (SQLite printf / PostgreSQL COPY, read by Arrow's CSV reader) was the one used,
    # and the plain-cursor path it falls back to gives the same table
    fast = ledger._frame_sqlite("") if ledger._sqlite else ledger._frame_pg("")
    assert fast.equals(f)
    assert ledger._frame_cursor("").equals(f)
    if ledger._sqlite:  # seq ranges read on parallel connections add up to the same table
        assert ledger._frame_sqlite("", step=1).equals(f)
        assert ledger._frame_sqlite(" WHERE seq <= 3", step=2).equals(f.slice(0, 3))
    # only the columns asked for, in that order (what clearance reads)
    cols = ["seq", "kind", "grant_id", "valid_until", "subject_catalog", "recorded_at"]
    assert ledger.frame(columns=cols).equals(f.select(cols))
    assert ledger.frame(upto_seq=3, columns=cols).equals(f.select(cols).slice(0, 3))
    assert ledger._frame_cursor("", cols).equals(f.select(cols))
    with pytest.raises(LedgerError, match="frame columns"):
        ledger.frame(columns=["seq", "payload"])


def test_payloads_read_only_the_rows_asked_for_in_that_order(ledger):
    ledger.append_many([grant(f"G-{i}", attribution=f'a\nb "{i}" \u00e9\U0001f3b5') for i in range(1, 8)])
    stored = {e.seq: e.event.model_dump(mode="json") for e in ledger.events()}
    want = [5, 2, 7, 99, 1]  # any order; 99 is not in the ledger
    got = list(ledger.payload_texts(want))
    assert [s for s, _ in got] == [5, 2, 7, 1]
    import orjson

    assert all(orjson.loads(p) == stored[s] for s, p in got)
    batches = list(ledger.payload_batches([1, 2, 3, 4, 5], batch=2))
    assert [[s for s, _ in b] for b in batches] == [[1, 2], [3, 4], [5]]
    assert all(orjson.loads(p) == stored[s] for b in batches for s, p in b)
    assert ledger.payloads([3, 1, 3]) == {1: stored[1], 3: stored[3]}
    assert ledger.payloads([]) == {} and list(ledger.payload_texts([])) == []
    # just some fields of each grant, cut out by the database (what the snapshot copies as terms)
    fields = ["attribution", "parties", "valid_until", "version", "no_such_field"]
    cut = [(s, orjson.loads(p)) for b in ledger.payload_batches([6, 3], grant_fields=fields) for s, p in b]
    assert cut == [(s, {f: stored[s]["grant"].get(f) for f in fields}) for s in (6, 3)]
    from lab.rights.ledger import _grant_subset  # what other databases get, cut in Python

    assert [(s, orjson.loads(_grant_subset(p, fields))) for s, p in ledger.payload_texts([6, 3])] == cut
    with pytest.raises(LedgerError, match="plain field names"):
        list(ledger.payload_batches([1], grant_fields=["x'); DROP TABLE ledger_events; --"]))


def test_empty_frame_and_verify(ledger):
    assert ledger.frame().num_rows == 0 and ledger.frame().column_names == list(FRAME_COLUMNS)
    r = ledger.verify()
    assert r.ok and r.n_events == 0 and r.head_hash == GENESIS


# ---------------------------------------------------------------------------- semantic refusals


def _refused(ledger, event, *needles):
    head = ledger.head()
    with pytest.raises(LedgerError) as exc:
        ledger.append(event)
    for n in needles:
        assert n in str(exc.value)
    assert ledger.head() == head  # nothing written
    return exc.value


def test_semantic_refusals(ledger):
    ledger.append(grant("G-1"))
    _refused(ledger, grant("G-1"), "already exists", "amend")
    _refused(ledger, amend("G-9"), "supersedes 'G-9'", "not in the ledger")
    _refused(ledger, amend("G-1", version=1), "version must be greater than the current version 1")
    ledger.append(amend("G-1", version=3))
    _refused(ledger, amend("G-1", version=2), "current version 3")
    _refused(ledger, revoke("G-404"), "no such grant")
    _refused(ledger, expire("G-404"), "no such grant")
    # a replacement grant with a new id supersedes the old one
    ledger.append(amend("G-1b", version=1, supersedes="G-1"))
    ledger.append(revoke("G-1"))
    _refused(ledger, revoke("G-1"), "already revoked")
    _refused(ledger, amend("G-1", version=4), "revoked")
    ledger.append(expire("G-1b"))
    assert ledger.head()[0] == 5 and ledger.verify().ok


def test_batch_is_all_or_nothing(ledger):
    ledger.append(grant("G-1"))
    with pytest.raises(LedgerError, match=r"event 3: revoke 'G-2': already revoked earlier in this batch"):
        ledger.append_many([grant("G-2"), revoke("G-2"), revoke("G-2")])
    assert ledger.head()[0] == 1
    with pytest.raises(LedgerError, match=r"event 2: grant 'G-1': grant_id already exists"):
        ledger.append_many([grant("G-3"), grant("G-1")])
    assert ledger.head()[0] == 1
    stored = ledger.append_many([grant("G-2"), amend("G-2"), revoke("G-2")])
    assert [s.seq for s in stored] == [2, 3, 4] and ledger.verify().ok


def test_recorded_at_never_goes_backwards(ledger):
    t = datetime(2030, 1, 1, tzinfo=timezone.utc)
    s = ledger.append(grant("G-1"), recorded_at=t)
    assert s.recorded_at == t
    with pytest.raises(LedgerError, match="never goes backwards"):
        ledger.append(grant("G-2"), recorded_at=t - timedelta(seconds=1))
    # the clock reads earlier than the head: the ledger keeps the head's time
    assert ledger.append(grant("G-3")).recorded_at == t


def test_invalid_event_refused_with_field(ledger):
    with pytest.raises(LedgerError, match=r"grant\.licence: unknown licence id"):
        ledger.append(grant(licence="NOT-A-LICENCE"))
    with pytest.raises(LedgerError, match=r"event 2: grant\.parties: party shares per right must sum to 100"):
        ledger.append_many(
            [
                grant("G-1"),
                grant("G-2", parties=[{"name": "A", "role": "master_owner", "right": "master", "share": 90}]),
            ]
        )
    assert ledger.head()[0] == 0


# ---------------------------------------------------------------------------- tampering


def _bad(report):
    assert not report.ok
    return report.problems[0]


def test_guards_refuse_update_and_delete(ledger, ledger_url):
    ledger.append(grant("G-1"))
    for sql in ("UPDATE ledger_events SET licence = 'MIT'", "DELETE FROM ledger_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            raw_sql(ledger_url, sql)
    assert ledger.verify().ok


def test_tamper_payload_is_detected(ledger, ledger_url):
    stored = ledger.append_many([grant("G-1"), grant("G-2"), grant("G-3")])
    drop_guards(ledger_url)
    raw_sql(ledger_url, "UPDATE ledger_events SET payload = replace(payload, 'CC-BY-4.0', 'CC0-1.0') WHERE seq = 2")
    report = ledger.verify()
    p = _bad(report)
    assert (p.seq, p.event_id) == (2, stored[1].event_id) and "hash does not match" in p.problem
    assert any("column(s) differ from the payload: licence" in q.problem for q in report.problems)
    assert any("guard" in w for w in report.warnings)
    # the quick pass (chain only) catches it too
    assert _bad(ledger.verify(deep=False)).seq == 2


def test_tamper_column_is_detected(ledger, ledger_url):
    stored = ledger.append_many([grant("G-1"), grant("G-2", licence="CC-BY-NC-4.0")])
    drop_guards(ledger_url)
    raw_sql(ledger_url, "UPDATE ledger_events SET licence = 'CC0-1.0' WHERE seq = 2")
    p = _bad(ledger.verify())
    assert (p.seq, p.event_id) == (2, stored[1].event_id)


def test_rehashed_row_breaks_the_next_link(ledger, ledger_url):
    """A tamperer who also recomputes the edited row's hash is caught by the next prev_hash."""
    from lab.rights.ledger import _row_hash

    stored = ledger.append_many([grant("G-1"), grant("G-2"), grant("G-3")])
    drop_guards(ledger_url)
    row = list(fetch_row(ledger_url, 2))
    row[COLUMNS.index("territories")] = "US"
    new_hash = _row_hash(row)
    raw_sql(ledger_url, f"UPDATE ledger_events SET territories = 'US', hash = '{new_hash}' WHERE seq = 2")
    report = ledger.verify(deep=False)
    p = _bad(report)
    assert (p.seq, p.event_id) == (3, stored[2].event_id) and "prev_hash" in p.problem


def test_deleted_row_is_detected(ledger, ledger_url):
    stored = ledger.append_many([grant("G-1"), grant("G-2"), grant("G-3")])
    drop_guards(ledger_url)
    raw_sql(ledger_url, "DELETE FROM ledger_events WHERE seq = 2")
    report = ledger.verify()
    p = _bad(report)
    assert p.seq == 2 and p.event_id is None and "missing" in p.problem
    assert report.problems[1].seq == 3 and report.problems[1].event_id == stored[2].event_id


def test_truncated_tail_needs_an_anchor(ledger, ledger_url):
    stored = ledger.append_many([grant("G-1"), grant("G-2"), grant("G-3")])
    anchor = (3, stored[2].hash)
    assert ledger.verify(anchor=anchor).ok
    assert not ledger.verify(anchor=(3, "f" * 64)).ok
    drop_guards(ledger_url)
    raw_sql(ledger_url, "DELETE FROM ledger_events WHERE seq = 3")
    assert ledger.verify().ok  # the chain alone cannot see a cut tail...
    p = _bad(ledger.verify(anchor=anchor))  # ...a remembered head can
    assert p.seq == 3 and "truncated" in p.problem


def test_append_puts_dropped_guards_back(ledger_url):
    Ledger(ledger_url).append(grant("G-1"))
    drop_guards(ledger_url)
    with Ledger(ledger_url) as L:
        assert L.verify().warnings
        L.append(grant("G-2"))
        assert not L.verify().warnings
    with pytest.raises(DBAPIError, match="append-only"):
        raw_sql(ledger_url, "DELETE FROM ledger_events")


# ---------------------------------------------------------------------------- concurrency


def test_four_processes_append_gap_free(ledger_url):
    Ledger(ledger_url).head()  # create the schema once; workers race on appends only
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=append_worker, args=(ledger_url, f"W{w}", 25, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with Ledger(ledger_url) as L:
        f = L.frame()
        assert f["seq"].to_pylist() == list(range(1, 101))
        assert len(set(f["grant_id"].to_pylist())) == 100
        report = L.verify()
        assert report.ok and report.n_events == 100, report.problems
