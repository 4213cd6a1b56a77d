"""Configs come from the package (pkg://lab.resources.configs), a user's folders go in front of
them (--config-dir, LAB_CONFIG_DIR), and running lab writes nothing into the source tree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

import lab.cli
from lab.cli.demo import compose
from lab.resources import CONFIG_SOURCE, config_dir

REPO = Path(__file__).resolve().parents[1]
SHIPPED_LR = yaml.safe_load((config_dir() / "trainer" / "cpu.yaml").read_text())["lr"]


@pytest.fixture(autouse=True)
def outside_the_checkout(tmp_path, monkeypatch):
    """Run from an unrelated folder with no user config: nothing may lean on the cwd."""
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.delenv("LAB_CONFIG_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    yield
    GlobalHydra.instance().clear()


def user_dir(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def experiment(max_steps: int) -> str:
    return f"# @package _global_\ntrainer:\n  max_steps: {max_steps}\n"


def lab_main(*argv: str) -> int:
    from hydra.core.global_hydra import GlobalHydra

    try:
        lab.cli.main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        GlobalHydra.instance().clear()
    return 0


def test_shipped_configs_compose_from_the_package():
    cfg = compose("train", ["experiment=demo"])
    assert cfg.trainer.max_steps == 400 and cfg.trainer.lr == SHIPPED_LR
    assert cfg.model._target_ == "lab.recipes.base_model.TinyFromConfig" and cfg.logger
    assert str(config_dir()).endswith("lab/resources/configs") and CONFIG_SOURCE == "pkg://lab.resources.configs"


def test_env_folder_with_one_experiment_composes_with_the_shipped_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CONFIG_DIR", str(user_dir(tmp_path / "mine", {"experiment/mine.yaml": experiment(3)})))
    cfg = compose("train", ["experiment=mine"])
    assert cfg.trainer.max_steps == 3
    assert cfg.trainer.lr == SHIPPED_LR and cfg.policy and cfg.paths.home  # the rest is shipped


def test_a_user_file_shadows_the_shipped_one(tmp_path, monkeypatch):
    shipped = yaml.safe_load((config_dir() / "trainer" / "cpu.yaml").read_text())
    mine = user_dir(tmp_path / "mine", {"trainer/cpu.yaml": yaml.safe_dump({**shipped, "lr": 0.125})})
    monkeypatch.setenv("LAB_CONFIG_DIR", str(mine))
    assert compose("train", []).trainer.lr == 0.125
    assert compose("clear", []).policy  # a clear.yaml it lacks still comes from the package


def test_cli_config_dir_goes_in_front_of_the_env_folder(tmp_path, monkeypatch, capsys):
    env = user_dir(tmp_path / "env", {"experiment/x.yaml": experiment(5), "experiment/only_env.yaml": experiment(7)})
    cli = user_dir(tmp_path / "cli", {"experiment/x.yaml": experiment(6)})
    monkeypatch.setenv("LAB_CONFIG_DIR", str(env))

    def job(*args: str) -> dict:
        capsys.readouterr()
        assert lab_main("train", *args, "--cfg", "job") == 0
        return yaml.safe_load(capsys.readouterr().out)

    assert job("--config-dir", str(cli), "experiment=x")["trainer"]["max_steps"] == 6
    assert job("experiment=x")["trainer"]["max_steps"] == 5
    assert job("-cd", str(cli), "experiment=only_env")["trainer"]["max_steps"] == 7

    capsys.readouterr()
    assert lab_main("train", f"--config-dir={cli}", "--info", "searchpath") == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "://" in ln]
    order = [
        next(p for p in (f"file://{cli}", f"file://{env}", CONFIG_SOURCE) if p in ln)
        for ln in lines
        if any(p in ln for p in (f"file://{cli}", f"file://{env}", CONFIG_SOURCE))
    ]
    assert order == [f"file://{cli}", f"file://{env}", CONFIG_SOURCE]


def test_a_missing_config_folder_is_refused(tmp_path, capsys):
    assert lab_main("train", "--config-dir", str(tmp_path / "nope"), "--cfg", "job") == 2
    assert "doesnotexist" in re.sub(r"[\s│]", "", capsys.readouterr().err)  # rich wraps it in a box


def _tree_state() -> str:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", "configs", "data_cards", "lab/resources"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(ln for ln in out.splitlines() if "__pycache__" not in ln)


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout")
def test_demo_clearance_writes_only_under_lab_home_and_experiments(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAB_EXPERIMENTS", str(tmp_path / "exp"))
    monkeypatch.delenv("LAB_LEDGER_URL", raising=False)
    before = _tree_state()
    assert lab_main("demo", "--no-train", "--json") == 0
    assert (tmp_path / "home" / "catalogs" / "demo" / "card.md").is_file()
    assert not (REPO / "data_cards" / "datasets").exists()
    assert _tree_state() == before
