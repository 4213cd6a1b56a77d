"""No secret leaves the process: a whole `lab` session on a PostgreSQL ledger whose URL carries a known
password (demo, clear, train with wandb offline, rights, audit, a failing command), then every byte
written under the session's folders and every captured stdout/stderr is searched for it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from lab.util.secrets import redact_config, redact_log_records, redact_text, redact_url, secret_urls

PASSWORD = "pw-Zq81xK-n0t-f0r-y0ur-eyes"


def test_redact_url_and_text():
    url = f"postgresql+psycopg://lab:{PASSWORD}@db.example:5432/ledger"
    assert PASSWORD not in redact_url(url) and redact_url(url).startswith("postgresql+psycopg://lab:***@db.example")
    assert redact_url("sqlite:////tmp/ledger.sqlite") == "sqlite:////tmp/ledger.sqlite"
    assert redact_url("postgresql://lab@db/ledger") == "postgresql://lab@db/ledger"  # no password: unchanged
    at_in_pw = "postgresql://lab:p@ss:w@db/ledger"
    assert "p@ss" not in redact_url(at_in_pw) and "p@ss" not in redact_text(f"cannot open {at_in_pw}: refused")
    text = f"cannot open ledger {url}: connection refused"
    assert (
        redact_text(text) == "cannot open ledger postgresql+psycopg://lab:***@db.example:5432/ledger: "
        "connection refused"
    )
    cfg = {"ledger_url": url, "nested": [{"u": url}], "n": 3}
    shown = redact_config(cfg)
    assert PASSWORD not in json.dumps(shown) and shown["n"] == 3 and cfg["ledger_url"] == url  # a copy
    assert secret_urls(cfg) == {url: redact_url(url)}


def test_log_records_are_redacted(caplog):
    redact_log_records()
    with caplog.at_level(logging.INFO, logger="lab.test"):
        logging.getLogger("lab.test").info("ledger at %s", f"postgresql://lab:{PASSWORD}@db/x")
    assert PASSWORD not in caplog.text and "lab:***@db" in caplog.text


def _lab() -> list[str]:
    script = Path(sys.executable).with_name("lab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lab"]


def _database(admin_url: str, name: str) -> str:
    """A fresh database on the session's server (the other PostgreSQL tests keep theirs)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        c.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.mark.slow
def test_no_password_in_any_artefact(postgres_url, tmp_path):
    url = _database(postgres_url, "lab_secrets").replace("://postgres@", f"://postgres:{PASSWORD}@")
    assert PASSWORD in url  # the server trusts local connections: any password connects
    home, experiments = tmp_path / "home", tmp_path / "experiments"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAB_", "WANDB_"))}
    env.update(
        LAB_HOME=str(home),
        LAB_EXPERIMENTS=str(experiments),
        LAB_LEDGER_URL=url,
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_SILENT="true",
    )
    captured: list[str] = []

    def lab(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([*_lab(), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        captured.extend([r.stdout, r.stderr])
        assert (r.returncode == 0) == ok, f"lab {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    lab("-v", "demo", "--no-train", "--json")  # the ledger URL from the environment
    cleared = json.loads(lab("clear", f"ledger_url={url}", "policy=commercial", "json=true").stdout)  # an override
    run_dir = experiments / "runs" / "secret-run"
    lab(
        "-v",
        "train",
        "experiment=demo",
        "policy=commercial",
        f"ledger_url={url}",
        f"data.snapshot={cleared['path']}",
        "trainer.max_steps=2",
        "trainer.save_every=2",
        "trainer.progress=false",
        "logger=wandb_offline",
        "run_name=secret-run",
    )
    checkpoint = run_dir / "checkpoints" / "step-000002"
    assert (checkpoint / "COMPLETE").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert any((run_dir / "wandb").rglob("*.wandb")), "wandb wrote no offline run"
    lab("rights", "verify", "--ledger", url, "--json")
    lab("rights", "show", "demo-0001", "--ledger", url, "--json")
    lab("audit", str(checkpoint), "--ledger", url, "--json")
    unreachable = make_url(url).set(port=1).render_as_string(hide_password=False)  # a refused connection
    lab("-v", "rights", "verify", "--ledger", unreachable, ok=False)
    failed = lab("rights", "verify", "--ledger", f"nosuchdb://lab:{PASSWORD}@127.0.0.1/x", ok=False)
    assert "nosuchdb://lab:***@127.0.0.1/x" in failed.stderr, failed.stderr  # the URL named, its password hidden

    hits = [str(p) for p in tmp_path.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert not hits, f"the password was written to {hits}"
    leaked = [c for c in captured if PASSWORD in c]
    assert not leaked, f"the password was printed:\n{leaked[0][:2000]}"
    saved = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "postgres:***@127.0.0.1" in saved  # scrubbed, not dropped: the run still says which ledger
