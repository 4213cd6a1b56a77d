"""Reconcile and verify: a tampered statement fails; a signed one whose lines do not add up fails too."""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from royalty_helpers import PER_SECOND, ckpt, grant, make_ledger, registry, source_rows  # noqa: E402

from lab.cards.signing import PUBLIC_KEY_NAME, ensure_keypair, sign_folder  # noqa: E402
from lab.royalties.reconcile import reconcile, verify_statement  # noqa: E402
from lab.royalties.statements import SIGNATURE, issue  # noqa: E402

NOV = datetime(2026, 11, 5, tzinfo=timezone.utc)


@pytest.fixture
def issued(tmp_path):
    led = make_ledger(tmp_path / "l.sqlite", [grant("G1", "r1", PER_SECOND), grant("G2", "r2", PER_SECOND)])
    a, b = "run-step-000010", "run-step-000020"
    reg = registry(
        tmp_path / "r.sqlite",
        [ckpt(a, 10, NOV, led.head()[0]), ckpt(b, 20, NOV + timedelta(hours=1), led.head()[0])],
        [source_rows(a, [("r1", "G1", 10.0), ("r2", "G2", 7.0)]), source_rows(b, [("r1", "G1", 31.0)])],
    )
    done = issue(reg, led, "2026-11", out=tmp_path / "out", key_dir=tmp_path / "keys")
    return done.folder, tmp_path / "keys" / PUBLIC_KEY_NAME, tmp_path / "keys", reg


def _tamper(folder: Path) -> None:
    text = (folder / "lines.csv").read_text()
    first = text.splitlines()[1]
    cols = first.split(",")
    cols[18] = '"9.99"'  # payable
    (folder / "lines.csv").write_text(text.replace(first, ",".join(cols), 1))


def test_an_untouched_statement_verifies(issued):
    folder, pub, _, _ = issued
    assert verify_statement(folder, pub).ok
    # the cards are not here (registry rows were written directly): reconcile gets past the arithmetic only
    res = reconcile(folder, public_key=pub)
    assert res.checks[:3] and "pools equal the sum" in res.checks[2]
    assert not res.ok and "is not here to check the card against" in res.problem


def test_a_tampered_lines_csv_fails_verify_and_reconcile(issued):
    folder, pub, _, _ = issued
    _tamper(folder)
    assert verify_statement(folder, pub).kind == "modified"
    res = reconcile(folder, public_key=pub)
    assert not res.ok and res.problem.startswith("signature modified")


def test_a_signed_statement_whose_lines_do_not_add_up_fails(issued):
    folder, pub, keys, _ = issued
    _tamper(folder)
    header = json.loads((folder / "statement.json").read_text())
    digest = hashlib.sha256((folder / "lines.csv").read_bytes()).hexdigest()
    header["files"]["lines.csv"] = header["statement_id"] = digest
    (folder / "statement.json").write_text(json.dumps(header))
    sign_folder(folder, ensure_keypair(keys).private_path, SIGNATURE)  # signed by the lab key, numbers wrong
    res = reconcile(folder, public_key=pub)
    assert not res.ok
    assert res.problem.startswith("pool ") and "lines add up to" in res.problem


def test_cli_verify_and_reconcile_exit_1_naming_the_problem(issued, tmp_path):
    import subprocess

    folder, pub, keys, reg = issued
    _tamper(folder)
    env = {"LAB_HOME": str(keys.parent), "PATH": "/usr/bin:/bin"}
    for args in (["verify", str(folder)], ["reconcile", "--period", "2026-11", "--registry", reg.url]):
        p = subprocess.run([sys.executable, "-m", "lab", "royalties", *args], capture_output=True, text=True, env=env)
        assert p.returncode == 1, p.stderr
        assert "modified" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
