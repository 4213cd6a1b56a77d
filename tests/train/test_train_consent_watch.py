"""ConsentWatch without training: which events touch the run, what it does about them, and a ledger
edited behind its back. One demo per module; each test works on its own copy of the ledger."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

from jobs_helpers import make_demo, stray_env  # noqa: E402

from lab.data.loader import Admission  # noqa: E402
from lab.rights.consent import LedgerBroken  # noqa: E402
from lab.rights.ledger import Ledger  # noqa: E402
from lab.rights.records import GrantEvent, RevokeEvent, Subject  # noqa: E402
from lab.snapshot import load_snapshot  # noqa: E402
from lab.train.consent_watch import ConsentConfig, ConsentWatch  # noqa: E402
from lab.train.distributed import DistInfo  # noqa: E402
from lab.util.timestamps import utcnow  # noqa: E402


@pytest.fixture(scope="module")
def base_demo(tmp_path_factory):
    with stray_env(tmp_path_factory.mktemp("env-unused")):
        return make_demo(tmp_path_factory.mktemp("watch-demo"))


@pytest.fixture
def setup(base_demo, tmp_path):
    from lab.cli.demo import compose
    from lab.recipes.clear import policy_from_cfg

    db = tmp_path / "ledger.sqlite"
    for f in base_demo.home.glob("ledger.sqlite*"):  # with its WAL
        shutil.copy(f, tmp_path / f.name)
    ledger = Ledger(f"sqlite:///{db}")
    snapshot = load_snapshot(base_demo.snapshot)
    policy = policy_from_cfg(compose("train", [*base_demo.overrides(), "policy=commercial"]).policy)

    def watch(on_change="exclude"):
        adm = Admission.from_snapshot(snapshot)
        return ConsentWatch(
            snapshot=snapshot,
            ledger=ledger,
            policy=policy,
            admission=adm,
            head=ledger.head(),
            config=ConsentConfig(poll_seconds=5, on_change=on_change),
            dist=DistInfo(),
            run_dir=tmp_path,
        )

    yield snapshot, ledger, watch, db
    ledger.close()


def test_nothing_new_changes_nothing(setup):
    _, _, watch, _ = setup
    w = watch()
    w.poll(3)
    assert w.events_applied == [] and w.admission.excluded == set() and w.stop_reason is None


def test_revocation_excludes_only_its_recording(setup):
    _, ledger, watch, _ = setup
    w = watch()
    ledger.append(RevokeEvent(grant_id="G-0005", reason="withdrawn", effective_at=utcnow(), issuer="t"))
    w.poll(7)
    assert w.admission.excluded == {"demo-0005"}
    (ev,) = w.events_applied
    assert (ev["kind"], ev["recordings"], ev["step"], ev["action"]) == ("revoke", ["demo-0005"], 8, "exclude")
    assert w.head == ledger.head()


def test_revocation_effective_later_becomes_a_deadline(setup):
    _, ledger, watch, _ = setup
    w = watch()
    when = utcnow() + timedelta(hours=2)
    ledger.append(RevokeEvent(grant_id="G-0006", reason="term ends", effective_at=when, issuer="t"))
    w.poll(1)
    assert w.admission.excluded == set()
    assert w.admission.deadlines["demo-0006"] == pytest.approx(when.timestamp())
    assert [e["action"] for e in w.events_applied] == ["deadline"]


def test_opt_out_by_audio_hash_excludes_the_recording(setup):
    snapshot, ledger, watch, _ = setup
    item = snapshot.item("demo-0009")
    g = ledger.grant_history("G-0010")[-1].event.grant
    opt_out = g.model_copy(
        update={"grant_id": "OPT-1", "status": "opted_out", "subject": Subject(audio_sha256=item["audio_sha256"])}
    )
    w = watch(on_change="stop")
    ledger.append(GrantEvent(grant=opt_out))
    w.poll(2)
    assert "demo-0009" in w.admission.excluded and "demo-0010" not in w.admission.excluded
    assert w.stop_reason and "demo-0009" in w.stop_reason


def test_edited_ledger_stops_the_run(setup):
    _, ledger, watch, db = setup
    w = watch()
    ledger.append(RevokeEvent(grant_id="G-0005", reason="withdrawn", effective_at=utcnow(), issuer="t"))
    seq = ledger.head()[0]
    with sqlite3.connect(db) as con:
        con.execute("DROP TRIGGER ledger_events_no_update")
        con.execute("UPDATE ledger_events SET grant_id = 'G-0001' WHERE seq = ?", (seq,))
    with pytest.raises(LedgerBroken, match=f"seq {seq}"):
        w.poll(4)
