"""`Ledger.verify` on a large SQLite ledger re-hashes its halves in two processes: same answer as one pass."""

from __future__ import annotations

import pytest
from rights_helpers import drop_guards, grant, raw_sql

from lab.rights import ledger as ledger_module
from lab.rights.ledger import Ledger


@pytest.fixture
def big(sqlite_url, monkeypatch):
    """40 events, and the two-process path switched on from 10 events (it starts at 200,000); `big.fast`
    records what each call of that path answered (a report, or None: the one-pass loop decides)."""
    led = Ledger(sqlite_url)
    led.append_many([grant(f"G-{i:03d}", subject={"recording_id": f"r{i}", "catalog": "c"}) for i in range(40)])
    monkeypatch.setattr(ledger_module, "_PARALLEL_FROM", 10)
    led.fast = []
    real = Ledger._verify_intact

    def spy(self, *args):
        led.fast.append(real(self, *args))
        return led.fast[-1]

    monkeypatch.setattr(Ledger, "_verify_intact", spy)
    yield led
    led.close()


def test_an_intact_chain_verifies_the_same_in_two_processes(big, monkeypatch):
    fast = big.verify(deep=False, anchor=big.head(), anchors=[(7, big.hashes_at([7])[7][0])])
    assert fast.ok and (fast.head_seq, fast.head_hash) == big.head() and fast.n_events == 40
    assert big.fast[-1] is not None  # answered by the two halves
    monkeypatch.setattr(ledger_module, "_PARALLEL_FROM", 10**9)
    one_pass = big.verify(deep=False)
    assert (one_pass.ok, one_pass.head_seq, one_pass.head_hash, one_pass.n_events) == (
        True,
        fast.head_seq,
        fast.head_hash,
        40,
    )
    assert big.verify(deep=False, start=(20, big.hashes_at([20])[20][0])).n_events == 20


@pytest.mark.parametrize("seq", [3, 21, 22, 40])  # both halves, both sides of the seam, the last event
def test_any_edit_falls_back_to_the_pass_that_names_it(big, sqlite_url, seq):
    drop_guards(sqlite_url)
    raw_sql(sqlite_url, f"UPDATE ledger_events SET territories = 'US' WHERE seq = {seq}")
    report = big.verify(deep=False)
    assert big.fast[-1] is None  # the halves saw it and stepped aside
    assert not report.ok and report.first_problem.seq == seq
    assert "hash does not match" in report.first_problem.problem


def test_a_wrong_anchor_is_named(big):
    report = big.verify(deep=False, anchors=[(30, "0" * 64)])
    assert big.fast[-1] is None
    assert not report.ok and report.anchors_failed == [30]
