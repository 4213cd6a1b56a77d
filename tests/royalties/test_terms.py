"""grant_terms: one row per (grant, version, right, party), decimal strings, old ledgers read per right."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rights"))
from rights_helpers import amend, grant  # noqa: E402
from test_compensation import _old_payload, write_old_ledger  # noqa: E402

import lab.royalties.terms as terms_mod  # noqa: E402
from lab.rights.ledger import Ledger  # noqa: E402
from lab.royalties.terms import TERMS_SCHEMA, TermsError, grant_terms  # noqa: E402

python_batch = terms_mod._python_batch

PARTIES = [
    {
        "name": "Label",
        "role": "master_owner",
        "right": "master",
        "share": "62.5",
        "party_id": "DPID:PADPIDA2014122301Q",
    },
    {"name": "Ada", "role": "performer", "right": "master", "share": "37.5", "party_id": "ISNI:0000000121032683"},
    {"name": "Pub", "role": "publisher", "right": "composition", "share": "40", "party_id": "IPI:00052210040"},
    {"name": "Ada", "role": "composer", "right": "composition", "share": "60"},
]
TERMS = [
    {"right": "master", "model": "per_second_trained", "rate": "0.0020", "currency": "EUR"},
    {"right": "composition", "model": "flat_fee", "pool": "150.00", "currency": "GBP"},
]


def keys(*pairs):
    return pa.table({"grant_id": [g for g, _ in pairs], "version": [v for _, v in pairs]})


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    led.append_many(
        [
            grant("G-1", parties=PARTIES, compensation=TERMS),
            grant("G-2", parties=PARTIES[:2], compensation=[{"right": "master", "model": "none"}]),
            amend(
                "G-1",
                parties=PARTIES,
                compensation=[{"right": "master", "model": "revenue_share", "share": "12.5", "currency": "USD"}],
            ),
        ]
    )
    return led


def test_rows_per_right_and_party(ledger):
    t = grant_terms(ledger, keys(("G-1", 1), ("G-2", 1), ("G-1", 1)))
    assert t.schema.names == TERMS_SCHEMA.names
    rows = t.to_pylist()
    assert [(r["grant_id"], r["right"], r["party_name"], r["role"]) for r in rows] == [
        ("G-1", "master", "Label", "master_owner"),
        ("G-1", "master", "Ada", "performer"),
        ("G-1", "composition", "Pub", "publisher"),
        ("G-1", "composition", "Ada", "composer"),
        ("G-2", "master", "Label", "master_owner"),
        ("G-2", "master", "Ada", "performer"),
    ]
    assert (rows[0]["model"], rows[0]["rate"], rows[0]["pool"], rows[0]["currency"]) == (
        "per_second_trained",
        "0.0020",
        None,
        "EUR",
    )
    assert (rows[2]["model"], rows[2]["pool"], rows[2]["rate"], rows[2]["currency"]) == (
        "flat_fee",
        "150.00",
        None,
        "GBP",
    )
    assert rows[0]["party_id"] == "DPID:PADPIDA2014122301Q" and rows[3]["party_id"] is None
    assert rows[4]["model"] == "none" and rows[4]["currency"] is None
    for right in ("master", "composition"):  # shares per right of a grant add up to exactly 100
        assert sum(Decimal(r["party_share"]) for r in rows[:4] if r["right"] == right) == 100


def test_versions_are_kept_apart_and_unknown_ones_refused(ledger):
    v2 = grant_terms(ledger, keys(("G-1", 2))).to_pylist()
    assert {(r["version"], r["right"], r["model"], r["share"], r["currency"]) for r in v2} == {
        (2, "master", "revenue_share", "12.5", "USD")
    }  # composition has no entry in version 2: nothing payable, no row
    assert len(v2) == 2
    with pytest.raises(TermsError, match="grant G-1 version 3 is not in the ledger"):
        grant_terms(ledger, keys(("G-1", 3), ("G-2", 1)))
    assert grant_terms(ledger, keys()).num_rows == 0


def test_an_old_ledger_reads_the_same_model_for_every_right(tmp_path):
    new = grant("G-1", parties=[p | {"party_id": None} for p in PARTIES], compensation=TERMS)
    led = write_old_ledger(tmp_path / "old.db", [_old_payload(new)])
    rows = grant_terms(led, keys(("G-1", 1))).to_pylist()
    assert {(r["right"], r["model"], r["rate"], r["currency"]) for r in rows} == {
        ("master", "per_second_trained", "0.002", "EUR"),
        ("composition", "per_second_trained", "0.002", "EUR"),
    }
    assert [r["party_share"] for r in rows] == ["62.5", "37.5", "40.0", "60.0"]  # floats via their shortest text


def test_arrow_and_python_reads_give_the_same_table(ledger, monkeypatch):
    ks = keys(("G-2", 1), ("G-1", 2), ("G-1", 1))  # (grant_id, version) order is not seq order
    fast = grant_terms(ledger, ks)
    calls = []
    monkeypatch.setattr(terms_mod, "_python_batch", lambda b: calls.append(len(b)) or python_batch(b))
    assert grant_terms(ledger, ks).equals(fast) and not calls  # today's payloads: Arrow's reader alone

    def refuse(*a, **k):
        raise pa.ArrowInvalid("JSON parse error: Column(/grant/compensation) changed from array to object")

    monkeypatch.setattr(terms_mod.pajson, "read_json", refuse)  # as for old payloads: every batch read in Python
    slow = grant_terms(ledger, ks)
    assert calls and slow.equals(fast)
    assert slow.num_rows == 8


def test_seqs_given_skip_the_lookup_and_are_checked(ledger, monkeypatch):
    frame = ledger.frame(columns=["seq", "grant_id", "version"])
    assert grant_terms(ledger, frame).equals(grant_terms(ledger, frame.select(["grant_id", "version"])))
    wrong = frame.set_column(0, "seq", pa.array(frame["seq"].to_pylist()[::-1], pa.int64()))
    with pytest.raises(TermsError, match="is not at ledger seq"):
        grant_terms(ledger, wrong)
    with pytest.raises(TermsError, match="not in the ledger"):
        grant_terms(ledger, frame.set_column(0, "seq", pa.array([1, 2, 99], pa.int64())))
