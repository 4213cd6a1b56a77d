"""Compensation per right, decimal amounts and shares, typed party ids; a ledger written before them still reads."""

from __future__ import annotations

import copy
import sqlite3
from datetime import datetime, timezone
from decimal import Decimal
from hashlib import sha256

import pytest
from pydantic import ValidationError
from rights_helpers import SHA, grant

from lab.rights.ledger import COLUMNS, GENESIS, TABLE, Ledger, _derive
from lab.rights.records import parse_event
from lab.util.canonical import canonical_json
from lab.util.timestamps import to_ts

RECORDED = datetime(2025, 6, 1, tzinfo=timezone.utc)
TERMS = [
    {"right": "master", "model": "per_second_trained", "rate": "0.0020", "currency": "EUR"},
]
PARTIES = [
    {
        "name": "Acme",
        "role": "master_owner",
        "right": "master",
        "share": "62.5",
        "party_id": "DPID:PA-DPIDA-2014122301-Q",
    },
    {"name": "Ada", "role": "performer", "right": "master", "share": "37.5", "party_id": "isni:0000 0001 2103 2683"},
]


def event(**over):
    return grant("G-1", parties=PARTIES, compensation=TERMS, **over)


def refused(ev) -> str:
    with pytest.raises(ValidationError) as exc:
        parse_event(ev)
    return str(exc.value)


def test_terms_are_decimals_and_ids_are_normalised():
    g = parse_event(event()).grant
    assert g.compensation[0].rate == Decimal("0.0020") and g.parties[0].share == Decimal("62.5")
    assert [p.party_id for p in g.parties] == ["DPID:PADPIDA2014122301Q", "ISNI:0000000121032683"]
    dumped = parse_event(event()).model_dump(mode="json")["grant"]
    assert dumped["compensation"][0]["rate"] == "0.0020" and dumped["parties"][0]["share"] == "62.5"
    assert parse_event(dumped).grant == g  # the JSON form reads back as the same grant


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda g: g["compensation"][0].update(rate=0.002), "not the float 0.002"),
        (lambda g: g["parties"][0].update(share=62.5), "not the float 62.5"),
        (lambda g: g["parties"][0].update(share="62.4"), "must sum to 100 (got master=99.9)"),
        (lambda g: g["parties"][0].update(party_id="XYZ:12"), "unknown scheme 'XYZ'"),
        (lambda g: g["parties"][0].update(party_id="DPID:PADPIDA2014122301R"), "check character"),
        (lambda g: g["parties"][1].update(party_id="ISNI:0000000121032684"), "not a valid ISNI"),
        (lambda g: g["parties"][1].update(party_id="IPI:12345"), "9 to 11 digits"),
        (lambda g: g["compensation"][0].update(pool="5"), "takes no pool"),
        (lambda g: g["compensation"][0].pop("rate"), "needs rate"),
        (lambda g: g["compensation"][0].update(currency="EUX"), "not an ISO 4217 code"),
        (lambda g: g["compensation"].append(dict(TERMS[0])), "listed more than once"),
        (lambda g: g["compensation"].append({"right": "composition", "model": "none"}), "a right no party holds"),
        (lambda g: g.update(compensation={"model": "none"}), "one entry per right"),
        (lambda g: g["compensation"][0].update(model="revenue_share", rate=None, share="101"), "at most 100"),
    ],
)
def test_new_input_refused_in_one_line(change, message):
    ev = copy.deepcopy(event())
    change(ev["grant"])
    assert message in refused(ev)


def _old_payload(new_event: dict) -> dict:
    """The event as the ledger stored it before terms per right: one compensation object, floats."""
    d = parse_event(new_event).model_dump(mode="json")
    g = d["grant"]
    g["compensation"] = {"model": "per_second_trained", "rate": 0.002, "currency": "EUR", "notes": ""}
    g["parties"] = [p | {"share": float(p["share"]), "party_id": None} for p in g["parties"]]
    return d


def write_old_ledger(path, events: list[dict]) -> Ledger:
    """A ledger whose rows were written by the old code: payload bytes as they were, hash chain intact."""
    fresh = Ledger(f"sqlite:///{path}")
    fresh.head()  # creates the table, its indexes and guards
    fresh.close()
    con = sqlite3.connect(path, isolation_level=None)
    prev = GENESIS
    for seq, ev in enumerate(events, 1):
        row = (seq, f"{seq:032x}", *_derive(ev), to_ts(RECORDED), canonical_json(ev).decode(), prev)
        h = sha256(canonical_json(dict(zip(COLUMNS[:-1], row)))).hexdigest()
        con.execute(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", (*row, h))
        prev = h
    con.close()
    return Ledger(f"sqlite:///{path}")


def test_an_old_ledger_verifies_and_reads_per_right(tmp_path):
    ev = grant("G-1", parties=[p | {"party_id": None} for p in PARTIES], compensation=TERMS)
    ev["grant"]["parties"].append({"name": "Ada", "role": "composer", "right": "composition", "share": "100"})
    ledger = write_old_ledger(tmp_path / "old.db", [_old_payload(ev)])
    report = ledger.verify(deep=True)
    assert report.ok, report.problems
    g = next(ledger.events()).event.grant
    assert [(c.right, c.model, c.rate, c.currency) for c in g.compensation] == [
        ("composition", "per_second_trained", Decimal("0.002"), "EUR"),
        ("master", "per_second_trained", Decimal("0.002"), "EUR"),
    ]
    assert [p.share for p in g.parties] == [Decimal("62.5"), Decimal("37.5"), Decimal("100")]


def test_an_old_ledger_clears_with_its_terms_copied_as_stored(tmp_path):
    """The snapshot copies stored terms verbatim: an old ledger's snapshot holds the old object and the
    same leaf digests as the snapshot definition gives for those rows (write_rows, the reference writer)."""
    from lab.catalog.items import CatalogItem
    from lab.catalog.store import Catalog, save_catalog
    from lab.recipes.clear import run_clearance
    from lab.rights.policy import Policy
    from lab.snapshot import load_snapshot, write_rows

    home = tmp_path / "home"
    rec = dict(isrc=None, title="t", artists=["Ada"], description="d", catalog="old", duration_s=2.0)
    rec |= dict(sample_rate=8000, channels=1, audio_path="r1.wav", audio_sha256=SHA)
    save_catalog(Catalog(name="old", root=tmp_path, items=[CatalogItem(recording_id="r1", **rec)]), home)
    ev = grant("G-1", subject={"recording_id": "r1", "catalog": "old"}, parties=PARTIES, compensation=TERMS)
    old = _old_payload(ev)
    ledger = write_old_ledger(tmp_path / "old.db", [old])
    policy = Policy(name="p", purposes=["ai_training"], territory="GB", accept_licence_classes=["permissive"])
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    res = run_clearance(catalog="old", ledger=ledger, policy=policy, snapshots_dir=tmp_path / "s", home=home, at=at)
    snap = load_snapshot(res.snapshot_path)
    row = snap.grants.to_pylist()[0]
    assert row["compensation"] == canonical_json(old["grant"]["compensation"]).decode()
    assert [p["share"] for p in row["parties"]] == [62.5, 37.5]
    g = old["grant"]
    ref_grant = {k: g[k] for k in ("grant_id", "version", "licence", "purposes", "territories", "on_termination")}
    ref_grant |= {"attribution": g["attribution"], "compensation": g["compensation"], "parties": g["parties"]}
    ref_grant |= {"seq": 1, "valid_until": row["valid_until"]}
    item = {k: v for k, v in snap.items.to_pylist()[0].items() if k != "digest"}
    ref, _ = write_rows(
        tmp_path / "ref",
        items=[item],
        grants=[ref_grant],
        catalog_info=snap.header["catalog"],
        policy=policy,
        ledger_head=(snap.header["ledger"]["head_seq"], snap.header["ledger"]["head_hash"]),
        cleared_at=at,
    )
    assert load_snapshot(ref).items["digest"].to_pylist() == snap.items["digest"].to_pylist()
