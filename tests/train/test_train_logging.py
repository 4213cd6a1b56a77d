from __future__ import annotations

import json
import math

import psutil
import pytest
import torch
from train_toy import Toy, factory, loss_fn

from lab.train.logging import (
    MetricsLog,
    WandbHooks,
    finish,
    init_wandb,
    log_artifact,
    plot_losses,
    resolve_wandb_mode,
)
from lab.train.trainer import Trainer, TrainerConfig

torch.set_num_threads(1)


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for var in ("WANDB_DIR", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    # keep wandb's caches and settings out of $HOME
    for var, sub in (
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / sub))
    return tmp_path


def _wandb_children() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if c.name().startswith("wandb")]


def test_wandb_offline_by_default_and_torn_down(wandb_env):
    run_dir = wandb_env / "run"
    run = init_wandb({"lr": 1e-2}, run_dir, project="lab-test", name="toy", tags=["test"])
    try:
        assert run is not None and run.settings.mode == "offline"
        cfg = TrainerConfig(max_steps=4, log_every=2, save_every=0, save_final=False, progress=False)
        Trainer(Toy(), loss_fn, cfg, out_dir=run_dir, hooks=WandbHooks(run)).fit(factory())
        card = run_dir / "data_card.json"
        card.write_text(json.dumps({"snapshot": "abc"}))
        assert log_artifact(card, "data-card", "data_card", run=run) is not None
    finally:
        finish(run)
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    assert _wandb_children() == []
    assert [row["step"] for row in MetricsLog.read(run_dir / "metrics.jsonl")] == [2, 4]


def test_wandb_disabled_writes_nothing(wandb_env):
    run_dir = wandb_env / "run"
    run = init_wandb({"a": 1}, run_dir, mode="disabled")
    run.log({"loss": 1.0}, step=1)
    assert log_artifact(run_dir, "x", "y", run=run) is None
    finish(run)
    assert not (run_dir / "wandb").exists()
    assert init_wandb({}, run_dir, is_main=False) is None  # non-zero ranks never log


def test_offline_and_disabled_runs_send_no_analytics(wandb_env, monkeypatch):
    """wandb's usage analytics (OpenTelemetry, to its servers) are switched off before any such run starts."""
    proxy = pytest.importorskip("wandb.analytics.opentelemetry.opentelemetry_proxy")
    monkeypatch.setattr(proxy, "_disabled", type(proxy._disabled)())  # a fresh, unset flag for this test
    run = init_wandb({"a": 1}, wandb_env / "run", mode="disabled")
    finish(run)
    assert proxy._disabled.is_set()


def test_wandb_mode_resolution(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_wandb_mode("auto") == "offline"
    assert resolve_wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_wandb_mode("offline") == "offline"  # explicit config wins over the environment
    assert resolve_wandb_mode("auto") is None  # wandb reads WANDB_MODE itself; we never pass "online"
    assert resolve_wandb_mode("online") == "online"
    with pytest.raises(ValueError):
        resolve_wandb_mode("cloud")


def test_plot_losses_png(tmp_path):
    losses = [math.exp(-i / 20) + 0.01 * (i % 3) for i in range(50)] + [float("nan")]
    path = plot_losses(losses, tmp_path / "plots" / "loss.png", smooth=5)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_metrics_log_is_strict_json(tmp_path):
    with MetricsLog(tmp_path / "m.jsonl") as m:
        m.log(1, {"loss": float("nan"), "lr": torch.tensor(0.5), "note": "ok"})
    line = (tmp_path / "m.jsonl").read_text().strip()
    row = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert row["loss"] is None and row["lr"] == 0.5 and row["step"] == 1
    MetricsLog(tmp_path / "never.jsonl", enabled=False).log(1, {"a": 1})
    assert not (tmp_path / "never.jsonl").exists()
