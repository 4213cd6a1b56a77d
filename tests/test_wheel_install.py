"""`pip install .` gives a working lab: build the wheel, install it into a fresh venv, and run
`lab demo --no-train`, a two-step `lab train` and `lab audit` from a folder outside the checkout.

Tactic (why this takes seconds, not minutes): reinstalling every dependency (torch!) into the
fresh venv would cost minutes of CI. So the wheel goes in with `--no-deps`, and a `.pth` file in
the fresh venv names the project venv's site-packages as one more path entry. A path entry is
only appended to sys.path: Python does not process the `.pth` files inside it, so the editable
install's `__editable__` finder never runs and `import lab` can only come from the wheel (asserted
below). The wheel's declared dependencies are then resolved against that environment (a `pip
check` for requirements satisfied by another site dir), so a missing or unpinned-out dependency
still fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("git") is None or not (REPO / ".git").exists(), reason="builds from the git checkout"
    ),
]

CHECK_DEPS = """
import importlib.metadata as md, json, sys
from packaging.requirements import Requirement
bad = []
for line in md.requires("lab") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # optional extras (dev, lora) and other platforms
    try:
        have = md.version(req.name)
    except md.PackageNotFoundError:
        bad.append(f"{req}: not installed"); continue
    if not req.specifier.contains(have, prereleases=True):
        bad.append(f"{req}: have {have}")
import lab, lab.resources as r
print(json.dumps({"bad": bad, "lab": lab.__file__, "configs": str(r.config_dir()), "schema": str(r.schema_dir()),
                  "dist": str(md.distribution("lab").locate_file(""))}))
"""


def _source_copy(dest: Path) -> Path:
    """The checkout's files (tracked or not ignored, symlinks kept) in a clean folder: no stale
    `build/` of an earlier build can leak removed modules into the wheel, and nothing is written
    into the source tree."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src, dst = REPO / rel, dest / rel
        if not src.is_symlink() and not src.is_file():
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("wheel")
    src, dist, venv, work = _source_copy(root / "src"), root / "dist", root / "venv", root / "work"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("lab-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    project_sites = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_lab_project_deps.pth").write_text("".join(f"{p}\n" for p in project_sites))
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        LAB_HOME=str(work / ".lab"),
        LAB_EXPERIMENTS=str(work / "experiments"),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="disabled",
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return {"wheel": wheel, "venv": venv, "py": py, "lab": venv / "bin" / "lab", "work": work, "env": env, "state": {}}


def run(inst: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [str(a) for a in args], cwd=inst["work"], env=inst["env"], capture_output=True, text=True, timeout=timeout
    )
    command = " ".join(map(str, args))
    assert r.returncode == 0, f"{command} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_wheel_carries_every_config_and_schema(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    configs = {p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    schemas = {p.name for p in (REPO / "data_cards" / "schema").glob("*.json")}
    assert configs and "hydra/launcher/slurm.yaml" in configs
    assert {f"lab/resources/configs/{c}" for c in configs} <= names
    assert {f"lab/resources/schema/{s}" for s in schemas} <= names
    assert not any(n.startswith(("configs/", "data_cards/", "tests/")) for n in names)


def test_lab_imports_from_the_wheel_with_its_dependencies_satisfied(installed):
    out = json.loads(run(installed, installed["py"], "-c", CHECK_DEPS).stdout)
    assert out["bad"] == [], out["bad"]
    venv = str(installed["venv"])
    for key in ("lab", "configs", "schema", "dist"):
        assert out[key].startswith(venv), f"{key} resolves outside the fresh venv: {out[key]}"
    assert Path(out["configs"], "train.yaml").is_file() and not Path(out["configs"]).is_symlink()


def test_demo_clearance_from_outside_the_checkout(installed):
    out = json.loads(run(installed, installed["lab"], "demo", "--no-train", "--json").stdout)
    home = installed["work"] / ".lab"
    assert out["demo"]["dataset_card"] == str(home / "catalogs" / "demo" / "card.md")
    assert out["clearance"]["cleared"] > 0 and out["clearance"]["excluded"]
    assert Path(out["clearance"]["path"]).is_relative_to(installed["work"] / "experiments")
    assert "lab catalogue `demo`" in run(installed, installed["lab"], "catalog", "card", "demo").stdout
    installed["state"]["snapshot"] = out["clearance"]["path"]


def test_train_two_steps_and_audit(installed):
    snapshot = installed["state"].get("snapshot")
    if snapshot is None:
        pytest.skip("needs the demo clearance above")
    run_dir = installed["work"] / "run"
    run(
        installed,
        installed["lab"],
        "train",
        "experiment=demo",
        "policy=commercial",
        f"data.snapshot={snapshot}",
        "trainer.max_steps=2",
        "trainer.save_every=2",
        "trainer.progress=false",
        "logger=none",
        f"run_dir={run_dir}",
    )
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"))
    assert ckpts, f"no checkpoint under {run_dir}"
    report = json.loads(run(installed, installed["lab"], "audit", ckpts[-1], "--json").stdout)
    assert report["ok"] is True, report
    installed["state"]["checkpoint"] = ckpts[-1]


def test_sample_and_royalties_from_the_wheel(installed):
    """The product team's and the rights holders' steps from the installed package: the sample config,
    the replication defaults, the C2PA trust root and the statement templates all come from the wheel."""
    checkpoint = installed["state"].get("checkpoint")
    if checkpoint is None:
        pytest.skip("needs the training run above")
    out = json.loads(
        run(
            installed,
            installed["lab"],
            "sample",
            f"checkpoint={checkpoint}",
            "prompt=soft piano",
            "duration=1.0",
            "json=true",
        ).stdout
    )
    assert out["allowed"] and len(out["released"]) == 1, out
    wav = out["released"][0]["path"]
    assert Path(wav).is_relative_to(installed["work"] / "experiments")
    check = json.loads(run(installed, installed["lab"], "verify-output", wav, "--json").stdout)
    assert check["state"] == "trusted", check
    period = json.loads(
        run(installed, installed["lab"], "royalties", "statement", "--period", _this_month(), "--json").stdout
    )
    assert period["lines"] > 0 and Path(period["folder"], "statement.json").is_file(), period
    run(installed, installed["lab"], "royalties", "reconcile", "--period", period["period"])


def _this_month() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m")  # the checkpoint was written moments ago
