"""Statements: pools per model, exact lines, signed files, recorded once; revenue input checked."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow.compute as pc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from royalty_helpers import PARTIES, PER_SECOND, REVENUE, ckpt, grant, make_ledger, registry, source_rows  # noqa: E402

from lab.registry.schema import sources  # noqa: E402
from lab.royalties.statements import RoyaltyInputError, RoyaltyRefused, build, issue, period_bounds  # noqa: E402

# parties without ids (allowed): each still gets its own line
NO_IDS = [{k: v for k, v in p.items() if k != "party_id"} for p in PARTIES]
NOV = datetime(2026, 11, 5, tzinfo=timezone.utc)
DEC = datetime(2026, 12, 3, tzinfo=timezone.utc)
A, B, C = "run-step-000010", "run-step-000020", "run-step-000030"


@pytest.fixture
def world(tmp_path):
    led = make_ledger(
        tmp_path / "l.sqlite",
        [grant("G1", "r1", PER_SECOND), grant("G2", "r2", PER_SECOND, NO_IDS), grant("G3", "r3", REVENUE)],
    )
    head = led.head()[0]
    reg = registry(
        tmp_path / "r.sqlite",
        [ckpt(A, 10, NOV, head), ckpt(B, 20, NOV + timedelta(hours=1), head), ckpt(C, 30, DEC, head)],
        [
            source_rows(A, [("r1", "G1", 1000.0), ("r2", "G2", 500.0), ("r3", "G3", 100.0)]),
            source_rows(B, [("r1", "G1", 2550.5), ("r2", "G2", 500.0), ("r3", "G3", 300.0)]),
            source_rows(C, [("r1", "G1", 3000.0), ("r2", "G2", 800.0), ("r3", "G3", 300.0)]),
        ],
    )
    return tmp_path, led, reg


def _lines(folder: Path) -> list[dict]:
    with (folder / "lines.csv").open() as fh:
        return list(csv.DictReader(fh))


def _minor(text: str) -> int:
    return int(Decimal(text) * 100)


def test_pools_and_lines_add_up_exactly(world):
    tmp, led, reg = world
    built = build(reg, led, "2026-11", licensee="lab")
    lines = built.lines.to_pylist()
    pools = {p["pool_id"]: p for p in built.pools.to_pylist()}
    for pid, pool in pools.items():
        assert sum(_minor(x["payable"]) for x in lines if x["pool_id"] == pid) == pool["amount_minor"]
    # per second: 0.0020 EUR × seconds of each checkpoint's difference, rounded once per pool
    assert pools["per_second_trained:G1:master:" + A]["amount"] == "2.00"
    assert pools["per_second_trained:G1:master:" + B]["amount"] == "3.10"  # 1550.5 s × 0.002 = 3.101
    # flat fee: one monthly pool per grant × right, shared by payable exposure over the period's checkpoints
    ff = [x for x in lines if x["pool_id"] == "flat_fee:G1:composition:2026-11"]
    assert sum(_minor(x["payable"]) for x in ff) == 9000 and {x["checkpoint_id"] for x in ff} == {A, B}
    # parties split each recording's gross by share (62.5 / 37.5)
    g1a = [x for x in lines if x["pool_id"] == "per_second_trained:G1:master:" + A]
    assert sorted((x["rights_holder"], x["payable"]) for x in g1a) == [("Label A", "1.25"), ("Singer B", "0.75")]
    g2 = [x for x in lines if x["pool_id"] == "per_second_trained:G2:master:" + A]
    assert sorted((x["rights_holder"], x["party_id"]) for x in g2) == [("Label A", None), ("Singer B", None)]
    # a none right has no pool and no line; revenue share without revenue has none either
    assert not [x for x in lines if x["grant_id"] == "G3"]


def test_issue_is_idempotent_and_a_later_period_pays_only_the_difference(world):
    tmp, led, reg = world
    first = issue(reg, led, "2026-11", out=tmp / "out", key_dir=tmp / "keys")
    again = issue(reg, led, "2026-11", out=tmp / "out", key_dir=tmp / "keys")
    assert again.statement_id == first.statement_id and not again.reissued and first.reissued
    header = json.loads((first.folder / "statement.json").read_text())
    assert {c["checkpoint_id"]: c["previous"] for c in header["checkpoints"]} == {A: None, B: A}
    assert (first.folder / "statement.sig").is_file() and list((first.folder / "holders").glob("*.html"))
    dec = issue(reg, led, "2026-12", out=tmp / "out", key_dir=tmp / "keys")
    dec_lines = _lines(dec.folder)
    assert {x["checkpoint_id"] for x in dec_lines} == {C}
    g1 = {x["exposure_ms"] for x in dec_lines if x["grant_id"] == "G1"}
    assert g1 == {str(3_000_000 - 2_550_500)}  # C minus B: what November paid is not paid again


def test_a_revocation_does_not_claw_back(world):
    tmp, led, reg = world
    first = issue(reg, led, "2026-11", out=tmp / "out", key_dir=tmp / "keys")
    led.append(
        {
            "kind": "revoke",
            "grant_id": "G1",
            "reason": "artist withdrew",
            "effective_at": "2026-11-20T00:00:00Z",
            "issuer": "t",
        }
    )
    again = issue(reg, led, "2026-11", out=tmp / "out", key_dir=tmp / "keys")
    assert again.statement_id == first.statement_id  # terms are those the checkpoints trained under
    dec = build(reg, led, "2026-12", licensee="lab")
    assert min(dec.lines["payable"].to_pylist()) >= "0" and all(
        not p.startswith("-") for p in dec.lines["payable"].to_pylist()
    )


def test_a_late_checkpoint_is_carried_to_the_next_statement_not_lost_nor_paid_twice(world):
    tmp, led, reg = world
    first = issue(reg, led, "2026-11", out=tmp / "out", key_dir=tmp / "keys")
    late = "late-step-000010"
    reg.bulk_load([ckpt(late, 10, NOV + timedelta(days=2), led.head()[0])], source_rows(late, [("r1", "G1", 5.0)]))
    again = issue(reg, led, "2026-11", out=tmp / "out", key_dir=tmp / "keys")
    assert (again.statement_id, again.reissued, again.waiting) == (first.statement_id, False, 1)
    dec = build(reg, led, "2026-12", licensee="lab")
    assert late in [c["checkpoint_id"] for c in dec.checkpoints]  # beside December's own checkpoints
    mine = dec.accounted.filter(pc.equal(dec.accounted["checkpoint_id"], late))
    assert mine["exposure_ms"].to_pylist() == [5000]


def test_an_issued_period_is_not_rewritten_when_what_it_paid_changes(world):
    tmp, led, reg = world
    first = issue(reg, led, "2026-11", out=tmp / "out", key_dir=tmp / "keys")
    paid_one = first.folder / "statement.json"
    cid = json.loads(paid_one.read_text())["checkpoints"][0]["checkpoint_id"]
    with reg.engine.begin() as conn:  # the registry now says that checkpoint saw twice as much
        conn.execute(
            sources.update().where(sources.c.checkpoint_id == cid).values(seconds_seen=sources.c.seconds_seen * 2)
        )
    with pytest.raises(RoyaltyRefused, match="was issued as statement"):
        issue(reg, led, "2026-11", out=tmp / "out", key_dir=tmp / "keys")


def test_revenue_per_checkpoint_and_per_output(world):
    tmp, led, reg = world
    _output(reg, "out-1", B)
    rev = tmp / "rev.csv"
    rev.write_text(f"checkpoint_id,output_id,amount,currency\n{B},,600,EUR\n,out-1,4E2,eur\n")
    built = build(reg, led, "2026-11", licensee="lab", revenue=_read(rev, reg))
    pool = {p["pool_id"]: p for p in built.pools.to_pylist()}["revenue_share:G3:master:" + B + ":EUR"]
    # 12.5 % of 1000 EUR × r3's part of B's whole card exposure (300 of 3350.5 s)
    exact = Decimal("0.125") * 1000 * 300_000 / 3_350_500
    assert pool["amount_minor"] == int((exact * 100).quantize(Decimal(1)))
    lines = [x for x in built.lines.to_pylist() if x["pool_id"] == pool["pool_id"]]
    assert sum(_minor(x["payable"]) for x in lines) == pool["amount_minor"] and {
        x["exposure_basis"] for x in lines
    } == {"card"}


def _read(path, reg):
    from lab.royalties.statements import read_revenue

    return read_revenue(path, reg, "2026-11")


def _output(reg, record_id: str, checkpoint_id: str) -> None:
    from lab.registry.schema import outputs

    reg._ensure()
    row = {c.name: None for c in outputs.columns} | {
        "record_id": record_id,
        "kind": "released",
        "created_at": "2026-11-10T00:00:00.000000Z",
        "checkpoint_id": checkpoint_id,
        "prompt": "p",
        "uses": "[]",
        "territory": "GB",
        "allowed": True,
        "refusals": "[]",
        "record": "{}",
    }
    row |= {c.name: "2026-11-10T00:00:00.000000Z" for c in outputs.columns if not c.nullable and row[c.name] is None}
    with reg.engine.begin() as conn:
        conn.execute(outputs.insert(), [row])


@pytest.mark.parametrize(
    "body, message",
    [
        ("checkpoint_id,amount,currency\nnope-step-000001,10,EUR\n", "unknown checkpoint 'nope-step-000001'"),
        (f"checkpoint_id,amount,currency\n{B},ten,EUR\n", "amount 'ten' is not a decimal number"),
        (f"checkpoint_id,amount,currency\n{B},-1,EUR\n", "must be a finite, non-negative decimal"),
        (f"checkpoint_id,amount,currency\n{B},NaN,EUR\n", "must be a finite, non-negative decimal"),
        (f"checkpoint_id,amount,currency\n{B},1,XXY\n", "is not an ISO 4217 code"),
        ("output_id,amount,currency\nmissing,1,EUR\n", "unknown output 'missing'"),
        (f"checkpoint,amount\n{B},1\n", "needs columns"),
    ],
)
def test_bad_revenue_is_one_line(world, body, message):
    tmp, led, reg = world
    rev = tmp / "rev.csv"
    rev.write_text(body)
    with pytest.raises(RoyaltyInputError, match=message):
        _read(rev, reg)


def test_amounts_are_read_as_decimal_text(world):
    tmp, led, reg = world
    rev = tmp / "rev.csv"
    rev.write_text(f"checkpoint_id,amount,currency,period\n{B},0.1,EUR,2026-11\n{B},0.2,EUR,\n{B},99,EUR,2026-10\n")
    (got,) = _read(rev, reg)
    assert got.amount == Decimal("0.3")  # 0.1 + 0.2 exactly; October's row is another period's


@pytest.mark.parametrize("period", ["2026-13", "2026-1", "26-11", ""])
def test_bad_period(period):
    with pytest.raises(RoyaltyInputError, match="YYYY-MM"):
        period_bounds(period)


def test_cli_bad_input_exits_2_with_one_line(world):
    tmp, led, reg = world
    rev = tmp / "rev.csv"
    rev.write_text("checkpoint_id,amount,currency\nnope-step-000001,10,EUR\n")
    common = ["--ledger", led.url if hasattr(led, "url") else f"sqlite:///{tmp / 'l.sqlite'}", "--registry", reg.url]
    for args in (["--period", "2026-11", "--revenue", str(rev)], ["--period", "November"]):
        p = subprocess.run(
            [sys.executable, "-m", "lab", "royalties", "statement", *args, *common, "--out", str(tmp / "o")],
            capture_output=True,
            text=True,
            env={"LAB_HOME": str(tmp / "home"), "PATH": "/usr/bin:/bin"},
        )
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error: "), p.stderr
