"""Payable exposure: consecutive differences within a run, inherited rows never paid, integer ms."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from royalty_helpers import T0, ckpt, registry, source_rows  # noqa: E402

from lab.royalties.exposure import payable, previous_in_run, run_of, to_ms  # noqa: E402


def _paid(reg, ids) -> dict[tuple[str, str, str], int]:
    rows = [c for c in reg.checkpoints() if c["checkpoint_id"] in ids]
    t = payable(reg, rows).rows
    return {
        (c, r, g): ms
        for c, r, g, ms in zip(
            *(t[k].to_pylist() for k in ("checkpoint_id", "recording_id", "grant_id", "exposure_ms"))
        )
    }


def test_run_and_previous_checkpoint():
    assert run_of("demo-2026-step-000020") == "demo-2026"
    assert run_of("lonely") == "lonely"
    rows = [{"checkpoint_id": f"r-step-{s:06d}", "step": s} for s in (30, 10, 20)] + [
        {"checkpoint_id": "other-step-000010", "step": 10}
    ]
    prev = previous_in_run(rows)
    assert prev == {
        "r-step-000010": None,
        "r-step-000020": "r-step-000010",
        "r-step-000030": "r-step-000020",
        "other-step-000010": None,
    }


def test_ms_round_half_even():
    assert to_ms(pa.array([0.0015, 0.0025, 1.23449, 2.5])).to_pylist() == [2, 2, 1234, 2500]


def test_consecutive_checkpoints_of_a_run_pay_the_difference(tmp_path):
    a, b, c = "run-step-000010", "run-step-000020", "run-step-000030"
    reg = registry(
        tmp_path / "r.sqlite",
        [ckpt(a, 10, T0, 1), ckpt(b, 20, T0 + timedelta(hours=1), 1), ckpt(c, 30, T0 + timedelta(hours=2), 1)],
        [
            source_rows(a, [("r1", "G1", 10.0), ("r2", "G2", 4.0)]),
            # r1 grew, r2 unchanged, r3 new; r1 is covered by two grants (each pays for the same ms)
            source_rows(b, [("r1", "G1", 25.5), ("r1", "G9", 25.5), ("r2", "G2", 4.0), ("r3", "G3", 1.0)]),
            # a resume restores the meter: still cumulative; r3 dropped out of the card (never negative)
            source_rows(c, [("r1", "G1", 30.0), ("r1", "G9", 30.0), ("r2", "G2", 6.0)]),
        ],
    )
    paid = _paid(reg, {a, b, c})
    assert paid == {
        (a, "r1", "G1"): 10000,
        (a, "r2", "G2"): 4000,
        (b, "r1", "G1"): 15500,
        (b, "r1", "G9"): 15500,
        (b, "r3", "G3"): 1000,
        (c, "r1", "G1"): 4500,
        (c, "r1", "G9"): 4500,
        (c, "r2", "G2"): 2000,
    }
    # no double pay: per grant, the run's payable total is the last checkpoint's own exposure
    total = sum(ms for (ck, r, g), ms in paid.items() if g == "G1")
    assert total == 30000


def test_a_later_checkpoint_alone_still_pays_only_its_difference(tmp_path):
    a, b = "run-step-000010", "run-step-000020"
    reg = registry(
        tmp_path / "r.sqlite",
        [ckpt(a, 10, T0, 1), ckpt(b, 20, T0 + timedelta(days=40), 1)],
        [source_rows(a, [("r1", "G1", 10.0)]), source_rows(b, [("r1", "G1", 12.0)])],
    )
    assert _paid(reg, {b}) == {(b, "r1", "G1"): 2000}


def test_a_fine_tune_never_pays_again_for_its_base(tmp_path):
    base, ft = "base-step-000020", "ft-step-000010"
    reg = registry(
        tmp_path / "r.sqlite",
        [ckpt(base, 20, T0, 1), ckpt(ft, 10, T0 + timedelta(hours=1), 1, parent=base)],
        [
            source_rows(base, [("r1", "G1", 20.0), ("r2", "G2", 8.0)]),
            source_rows(ft, [("r1", "G1", 20.0), ("r2", "G2", 8.0)], seen_by=base),  # inherited
            source_rows(ft, [("r1", "G1", 3.0), ("r5", "G5", 2.0)]),  # its own run
        ],
    )
    paid = _paid(reg, {base, ft})
    assert paid == {(base, "r1", "G1"): 20000, (base, "r2", "G2"): 8000, (ft, "r1", "G1"): 3000, (ft, "r5", "G5"): 2000}


@pytest.mark.parametrize("seconds", [0.0, 0.0004])
def test_nothing_payable_gives_no_row(tmp_path, seconds):
    a = "run-step-000010"
    reg = registry(tmp_path / "r.sqlite", [ckpt(a, 10, T0, 1)], [source_rows(a, [("r1", "G1", seconds)])])
    assert _paid(reg, {a}) == {}
