"""Fixtures shared by every test package.

`postgres_url`: a real, throwaway PostgreSQL server for the whole session (initdb + pg_ctl from
the Debian packages, run as the `postgres` user when we are root). Skips when PostgreSQL is not
installed, unless LAB_REQUIRE_POSTGRES=1, where that is a failure.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

# A developer's own config folder must not change what the tests compose (lab.resources.searchpath).
os.environ.pop("LAB_CONFIG_DIR", None)
# Offline as the `lab` command is (lab.cli.offline): nothing a test runs may reach a hub.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
}.items():
    os.environ.setdefault(_key, _value)


# What training looks like in a test or in a fixture it uses (a lab run, the generic Trainer, a
# CLI `lab train`): such a test is marked `slow` when collected, so that the
# fast suite (`make test-fast`) never trains and a new training test cannot forget its marker.
_TRAINS = re.compile(
    r"\btrain\(|\bTrainer\(|\bTrainRecipe\(|\.fit\("  # a run in-process (jobs_helpers.train, the Trainer)
    r"|[\"']train[\"'],\s*[\"']experiment="  # `lab train experiment=…` as a subprocess
)
_trains_cache: dict[object, bool] = {}


def _trains(func) -> bool:
    import inspect

    if func not in _trains_cache:
        try:
            _trains_cache[func] = bool(_TRAINS.search(inspect.getsource(func)))
        except (OSError, TypeError):
            _trains_cache[func] = False
    return _trains_cache[func]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") or not hasattr(item, "function"):
            continue
        fixtures = getattr(item, "_fixtureinfo", None)
        funcs = [item.function]
        if fixtures is not None:
            funcs += [d.func for defs in fixtures.name2fixturedefs.values() for d in defs]
        if any(_trains(f) for f in funcs):
            item.add_marker(pytest.mark.slow)


def _postgres_bindir() -> Path | None:
    def version(p: str) -> int:
        m = re.search(r"/postgresql/(\d+)/", p)
        return int(m.group(1)) if m else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """`postgresql+psycopg://postgres@127.0.0.1:PORT/postgres` of a server that lives for the session."""
    required = os.environ.get("LAB_REQUIRE_POSTGRES") == "1"
    bindir = _postgres_bindir()
    if bindir is None:
        if required:
            pytest.fail("LAB_REQUIRE_POSTGRES=1 but initdb was not found (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH)")
    as_postgres: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="lab-pg-"))  # not under pytest's 0700 tmp: postgres must reach it
    if os.geteuid() == 0:
        try:
            shutil.chown(root, "postgres", "postgres")
        except (LookupError, PermissionError) as exc:
            shutil.rmtree(root, ignore_errors=True)
            if required:
                pytest.fail(f"running as root but cannot hand the data dir to user postgres: {exc}")
            pytest.skip(f"running as root without a usable `postgres` user: {exc}")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, log, port = root / "data", root / "server.log", _free_port()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=120)

    started = False
    try:
        r = run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        if r.returncode:
            pytest.fail(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        r = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", opts, "start")
        if r.returncode:
            tail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"pg_ctl start failed:\n{r.stdout}\n{r.stderr}\n{tail}")
        started = True
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
