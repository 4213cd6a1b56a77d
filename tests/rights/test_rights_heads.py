"""Signed ledger heads: a cut tail or a re-hashed chain is caught, and the event named.

A tamperer here has write access to the database (triggers dropped), not to the lab key or
the head log beside the database.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from rights_helpers import drop_guards, fetch_row, grant, raw_sql, revoke

from lab.rights.consent import LedgerBroken, verify_chain
from lab.rights.heads import HeadLog, open_ledger, verify_ledger
from lab.rights.ledger import COLUMNS, Ledger, _row_hash


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'db' / 'ledger.sqlite'}"


@pytest.fixture
def ledger(url, tmp_path):
    led = open_ledger(url, home=tmp_path / "home")
    yield led
    led.close()


def write(ledger: Ledger, n_grants: int = 3) -> list:
    """n grants and a revocation of the second, one write each (a signed head after each)."""
    stored = [ledger.append(grant(f"G-{i}")) for i in range(n_grants)]
    return stored + [ledger.append(revoke("G-1"))]


def rehash_from(url: str, seq: int, **change: str) -> None:
    """A tamperer who edits event `seq` (columns `change`) and recomputes every hash from there on."""
    drop_guards(url)
    head = Ledger(url).head()[0]
    prev = fetch_row(url, seq - 1)[-1] if seq > 1 else "0" * 64
    for s in range(seq, head + 1):
        row = dict(zip(COLUMNS, fetch_row(url, s)))
        edits = dict(change) if s == seq else {}
        row.update(edits)
        row["prev_hash"] = prev
        row["hash"] = _row_hash([row[c] for c in COLUMNS[:-1]])
        edits.update(prev_hash=row["prev_hash"], hash=row["hash"])
        sets = ", ".join(f"{c} = '" + str(v).replace("'", "''") + "'" for c, v in edits.items())
        raw_sql(url, f"UPDATE ledger_events SET {sets} WHERE seq = {s}")
        prev = row["hash"]


def test_every_write_signs_the_head_outside_the_database(ledger, url, tmp_path):
    stored = write(ledger)
    log = ledger.heads
    assert log.path == tmp_path / "db" / "ledger.sqlite.heads.jsonl"
    heads, bad = log.read()
    assert not bad and [(h.seq, h.hash, h.event_id) for h in heads] == [(s.seq, s.hash, s.event_id) for s in stored]
    assert {h.ledger for h in heads} == {ledger.ledger_id} and "secret" not in json.dumps([h.ledger for h in heads])
    good, problems = log.check_signatures(heads)
    assert len(good) == 4 and not problems
    report = verify_ledger(ledger, deep=True)
    assert report.ok and report.head_seq == 4
    assert log.last_verified() == (4, stored[-1].hash)
    assert not (tmp_path / ".lab").exists()


def test_a_bare_ledger_signs_nothing(url, tmp_path):
    bare = Ledger(url)
    bare.append(grant("G-0"))
    assert bare.heads is None and not list((tmp_path / "db").glob("*.heads.*"))


def test_deleting_the_last_event_is_named(ledger, url):
    stored = write(ledger)
    assert Ledger(url).verify().ok
    drop_guards(url)
    raw_sql(url, "DELETE FROM ledger_events WHERE seq = 4")
    assert Ledger(url).verify().ok, "the chain alone cannot see a cut tail"
    report = verify_ledger(ledger)
    assert not report.ok
    first = report.problems[0]
    assert first.seq == 4 and first.event_id == stored[3].event_id
    assert f"event seq 4 (event {stored[3].event_id}) was deleted or rewritten" in first.problem
    with pytest.raises(LedgerBroken, match=r"seq 4: event seq 4 .* deleted or rewritten"):
        verify_chain(ledger, incremental=True)


def test_a_rehashed_chain_is_caught_and_the_edited_event_named(ledger, url):
    stored = write(ledger, n_grants=4)  # revoke of G-1 is seq 5
    rehash_from(
        url, 2, licence="CC0-1.0", payload=fetch_row(url, 2)[COLUMNS.index("payload")].replace("CC-BY-4.0", "CC0-1.0")
    )
    assert Ledger(url).verify().ok, "a recomputed chain verifies on its own"
    report = verify_ledger(ledger)
    assert not report.ok and report.anchors_failed == [2, 3, 4, 5]
    assert report.problems[0].event_id == stored[1].event_id
    assert "event seq 2" in report.problems[0].problem and "seq 1 holds" in report.problems[0].problem


def test_two_events_in_one_write_are_bounded_by_a_range(ledger, url):
    ledger.append(grant("G-0"))
    ledger.append_many([grant("G-1"), grant("G-2")])  # one write, one head (seq 3)
    rehash_from(url, 2, licence="MIT")
    first = verify_ledger(ledger).problems[0]
    assert first.seq == 2 and first.event_id is None and "an event in seq 2..3" in first.problem


def test_a_forged_head_line_is_refused(ledger, url):
    write(ledger)
    lines = ledger.heads.path.read_bytes().splitlines()
    forged = orjson.loads(lines[-1]) | {"hash": "f" * 64}
    ledger.heads.path.write_bytes(b"\n".join([*lines[:-1], orjson.dumps(forged)]) + b"\n")
    report = verify_ledger(ledger)
    assert not report.ok and "signature does not verify" in report.problems[0].problem


def test_heads_need_the_lab_public_key(ledger, url, tmp_path):
    write(ledger)
    other = HeadLog(ledger.heads.path, tmp_path / "other-keys")
    other._signer  # noqa: B018  a key pair of another lab
    report = verify_ledger(ledger, other)
    assert not report.ok and "not this lab's" in report.problems[0].problem


def test_incremental_rehashes_only_what_is_new(ledger, url):
    write(ledger)
    assert verify_chain(ledger, incremental=True) == ledger.head()
    ledger.append(grant("G-9"))
    report = verify_ledger(ledger, incremental=True)
    assert report.ok and report.start_seq == 4 and report.n_events == 1
    assert ledger.heads.last_verified()[0] == 5


def test_incremental_catches_an_edit_after_the_verified_head(ledger, url):
    write(ledger)
    verify_chain(ledger, incremental=True)  # remembered: seq 4
    ledger.append(grant("G-9"))
    drop_guards(url)
    raw_sql(url, "UPDATE ledger_events SET licence = 'MIT' WHERE seq = 5")  # in place, no re-hash
    report = verify_ledger(ledger, incremental=True)
    assert not report.ok and report.start_seq == 4
    assert any(p.seq == 5 and "hash does not match" in p.problem for p in report.problems)


def test_incremental_catches_a_rehash_behind_the_verified_head(ledger, url):
    stored = write(ledger)
    verify_chain(ledger, incremental=True)
    rehash_from(url, 4, effective_at="2099-01-01T00:00:00.000000Z")  # the revocation, re-hashed
    with pytest.raises(LedgerBroken) as exc:
        verify_chain(ledger, incremental=True)
    assert f"event seq 4 (event {stored[3].event_id})" in str(exc.value) and "\n" not in str(exc.value)


def test_cli_verify_names_the_deleted_event(ledger, url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import lab.cli

    stored = write(ledger)
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "home"))
    lab.cli._register()
    ok = CliRunner().invoke(lab.cli.app, ["rights", "verify", "--ledger", url])
    assert ok.exit_code == 0 and "extends every signed head" in " ".join(ok.output.split())
    drop_guards(url)
    raw_sql(url, "DELETE FROM ledger_events WHERE seq = 4")
    r = CliRunner().invoke(lab.cli.app, ["rights", "verify", "--ledger", url])
    text = " ".join(r.output.split())
    assert r.exit_code == 1 and stored[3].event_id in text and "deleted or rewritten" in text


def test_postgres_heads_live_under_the_configured_home(tmp_path, monkeypatch):
    from lab.settings import ledger_heads_path

    monkeypatch.delenv("LAB_LEDGER_HEADS", raising=False)
    pg = Ledger("postgresql://lab:hunter2@db.example/lab")
    path = ledger_heads_path(pg.engine.url, pg.ledger_id, tmp_path / "home")
    assert path.parent == tmp_path / "home" / "ledger-heads" and "hunter2" not in path.name
    assert "hunter2" not in pg.ledger_id and len(pg.ledger_id) == 64
    assert ledger_heads_path(Ledger("sqlite://").engine.url, "x") is None
    monkeypatch.setenv("LAB_LEDGER_HEADS", str(tmp_path / "h.jsonl"))
    assert ledger_heads_path(pg.engine.url, pg.ledger_id) == tmp_path / "h.jsonl"
    pg.close()


def test_open_ledger_writes_nothing_under_lab_home_when_paths_are_configured(url, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "stray"))
    led = open_ledger(url, home=tmp_path / "home")
    led.append(grant("G-0"))
    assert verify_ledger(led).ok
    assert not (tmp_path / "stray").exists() and (tmp_path / "home" / "keys").is_dir()
    assert Path(led.heads.path).is_file()


# --------------------------------------------------------------------------- lab clear and lab train refuse


@pytest.fixture
def tampered_demo(tmp_path):
    """A demo whose latest revocation was edited in place (triggers dropped) after it was recorded and signed."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "jobs"))
    from jobs_helpers import make_demo, stray_env

    from lab.rights.records import RevokeEvent
    from lab.snapshot import load_snapshot
    from lab.util.timestamps import utcnow

    with stray_env(tmp_path / "unused"):
        demo = make_demo(tmp_path / "demo")
        gid = load_snapshot(demo.snapshot).items["grant_ids"][0].as_py()[0]
        led = open_ledger(demo.ledger_url, home=demo.home)
        seq = led.append(RevokeEvent(grant_id=gid, reason="withdrawn", effective_at=utcnow(), issuer="tests")).seq
        drop_guards(demo.ledger_url)
        raw_sql(
            demo.ledger_url, f"UPDATE ledger_events SET effective_at = '2099-01-01T00:00:00.000000Z' WHERE seq = {seq}"
        )
        yield demo, seq


def test_lab_clear_refuses_an_edited_ledger(tampered_demo):
    from lab.cli.demo import compose
    from lab.recipes.clear import main as clear_main

    demo, seq = tampered_demo
    with pytest.raises(LedgerBroken, match=rf"does not verify \(seq {seq}: hash does not match"):
        clear_main(compose("clear", [*demo.overrides(), "policy=commercial"]))


def test_lab_clear_cli_says_one_line_and_exits_1(tampered_demo):
    import subprocess
    import sys

    demo, seq = tampered_demo
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "clear", *demo.overrides(), "policy=commercial"],
        env=demo.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    text = " ".join(proc.stderr.split())  # one message (rich wraps it at the terminal width)
    assert text.startswith("error: the consent ledger does not verify") and f"seq {seq}" in text
    assert text.count("error:") == 1 and "Traceback" not in text and "Error executing job" not in text


def test_lab_train_refuses_an_edited_ledger(tampered_demo, tmp_path):
    from jobs_helpers import train

    from lab.recipes.train import TrainingRefused

    demo, seq = tampered_demo
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingRefused, match=rf"does not verify \(seq {seq}:"):
        train(demo.train_cfg(run_dir, "trainer.max_steps=2"))
    assert not (run_dir / "checkpoints").exists()
