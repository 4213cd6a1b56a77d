"""Refusals as a user sees them (real `lab` subprocesses): one `error:` line on stderr and no traceback,
exit 2 for bad input and 1 for a refused operation, an error object with --json / json=true, and the
traceback only with -v (or LAB_VERBOSE=1 where a flag cannot reach)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli.errors import BAD_INPUT, REFUSED, classify


def _lab() -> list[str]:
    script = Path(sys.executable).with_name("lab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lab"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A demo catalogue + ledger and its commercial snapshot (no training)."""
    root = tmp_path_factory.mktemp("cli-errors")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env.update(
        LAB_HOME=str(root / "home"),
        LAB_EXPERIMENTS=str(root / "experiments"),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
    )
    r = subprocess.run(
        [*_lab(), "demo", "--no-train", "--json"], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    return root, env, json.loads(r.stdout)["clearance"]["path"]


def lab(world, *args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    root, env, _ = world
    return subprocess.run(
        [*_lab(), *args], cwd=root, env=env | (extra_env or {}), capture_output=True, text=True, timeout=600
    )


def one_line(r: subprocess.CompletedProcess, code: int, contains: str) -> str:
    assert r.returncode == code, f"exit {r.returncode}, want {code}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert contains in errors[0], errors[0]
    return errors[0]


def error_object(r: subprocess.CompletedProcess, code: int, kind: str) -> dict:
    assert r.returncode == code, f"exit {r.returncode}, want {code}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["error"]["kind"] == kind and doc["error"]["message"], doc
    return doc["error"]


def train(world, *overrides: str):
    return ["train", "experiment=demo", "logger=none", "trainer.progress=false", "trainer.max_steps=1", *overrides]


def test_policy_mismatch_is_refused_naming_the_fields(world):
    snap = world[2]
    r = lab(world, *train(world, "policy=research", f"data.snapshot={snap}"))
    line = one_line(r, REFUSED, "cleared under policy 'commercial'")
    assert "name: snapshot 'commercial', run 'research'" in line and "accept_licence_classes" in line
    assert "purposes" in line and "territory" not in line  # only the fields that differ
    err = error_object(
        lab(world, *train(world, "policy=research", f"data.snapshot={snap}", "json=true")), REFUSED, "training_refused"
    )
    assert "purposes" in err["message"]


def test_verbose_shows_the_traceback(world):
    snap = world[2]
    r = lab(world, *train(world, "policy=research", f"data.snapshot={snap}"), extra_env={"LAB_VERBOSE": "1"})
    assert r.returncode == REFUSED and "Traceback" in r.stderr and "TrainingRefused" in r.stderr
    r = lab(world, "-v", "catalog", "show", "nope")
    assert r.returncode == BAD_INPUT and "Traceback" in r.stderr and "CatalogNotFoundError" in r.stderr


def test_bad_input_exits_2(world):
    one_line(lab(world, "clear", "policy=nonexistent"), BAD_INPUT, "Could not find 'policy/nonexistent'")
    one_line(lab(world, "clear", "trainer.lrr=1"), BAD_INPUT, "Could not override")
    one_line(lab(world, "clear", "policy.territory=[1]"), BAD_INPUT, "territory")
    one_line(lab(world, *train(world, "data.snapshot=/nonexistent/snap")), BAD_INPUT, "/nonexistent/snap")
    one_line(lab(world, "catalog", "show", "nope"), BAD_INPUT, "no catalogue named 'nope'")
    one_line(lab(world, "audit", "/nonexistent/ckpt"), BAD_INPUT, "/nonexistent/ckpt")
    one_line(lab(world, "rights", "verify", "--ledger", "nosuchdialect://x"), BAD_INPUT, "cannot open ledger")
    one_line(
        lab(world, "rights", "grant", "--grant-id", "G-1", "--party", "no-colons"), BAD_INPUT, "NAME:ROLE:RIGHT:SHARE"
    )
    err = error_object(lab(world, "clear", "policy.territory=[1]", "json=true"), BAD_INPUT, "invalid")
    assert err["errors"][0]["loc"] == ["territory"]
    error_object(lab(world, "catalog", "show", "nope", "--json"), BAD_INPUT, "not_found")
    error_object(lab(world, "audit", "--json"), BAD_INPUT, "usage")  # a missing argument


def test_a_broken_ledger_is_refused(world, tmp_path):
    import sqlite3

    root, env, _ = world
    db = Path(env["LAB_HOME"]) / "ledger.sqlite"
    copy = tmp_path / "ledger.sqlite"
    copy.write_bytes(db.read_bytes())
    heads = db.with_name(db.name + ".heads.jsonl")  # the signed heads travel with it
    copy.with_name(heads.name).write_bytes(heads.read_bytes())
    with sqlite3.connect(copy) as c:  # rewrite one event in place, past its guards
        for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
            c.execute(f"DROP TRIGGER {name}")
        c.execute("UPDATE ledger_events SET payload = payload || ' ' WHERE seq = 3")
    one_line(lab(world, "clear", f"ledger_url=sqlite:///{copy}"), REFUSED, "")
    error_object(lab(world, "clear", f"ledger_url=sqlite:///{copy}", "json=true"), REFUSED, "ledger_broken")


def test_classification_follows_the_class_hierarchy():
    from hydra.errors import MissingConfigException
    from pydantic import BaseModel

    from lab.catalog.store import CatalogIntegrityError, CatalogNotFoundError

    class M(BaseModel):
        x: int

    try:
        M(x="no")
    except Exception as exc:  # noqa: BLE001
        assert classify(exc) == ("invalid", BAD_INPUT)
    assert classify(MissingConfigException("m", "policy/x")) == ("bad_config", BAD_INPUT)
    assert classify(CatalogNotFoundError("gone")) == ("not_found", BAD_INPUT)
    assert classify(CatalogIntegrityError("tampered")) == ("catalog_integrity", REFUSED)  # a subclass of both
    assert classify(FileNotFoundError(2, "x", "/p")) == ("not_found", BAD_INPUT)
    assert classify(ZeroDivisionError()) == ("unexpected", REFUSED)
