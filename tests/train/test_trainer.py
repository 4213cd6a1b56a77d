from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from train_toy import ExposureHook, Toy, factory, loss_fn, make_batch

from lab.checkpoint import latest_complete
from lab.train.logging import MetricsLog
from lab.train.trainer import (
    Trainer,
    TrainerConfig,
    TrainerHooks,
    build_optimizer,
    build_scheduler,
    lr_factor,
    to_device,
)

torch.set_num_threads(1)


def cfg(**kw) -> TrainerConfig:
    base = dict(
        max_steps=10,
        lr=1e-2,
        warmup_steps=0,
        schedule="constant",
        save_every=0,
        save_final=False,
        log_every=5,
        progress=False,
        grad_clip=None,
    )
    base.update(kw)
    return TrainerConfig(**base)


def test_loss_goes_down_and_metrics_logged(tmp_path):
    hook = ExposureHook()
    t = Trainer(
        Toy(dropout=0.0), loss_fn, cfg(max_steps=60, schedule="cosine", warmup_steps=5), out_dir=tmp_path, hooks=hook
    )
    r = t.fit(factory(bs=16))
    assert len(r.losses) == 60 and r.step == 60 and r.start_step == 0
    first, last = sum(r.losses[:10]) / 10, sum(r.losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)
    assert r.steps_per_s > 0
    rows = MetricsLog.read(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(5, 61, 5))
    assert {"loss", "lr", "steps_per_s"} <= set(rows[0])
    assert math.isclose(rows[-1]["loss"], sum(r.losses[-5:]) / 5, rel_tol=1e-6)
    # the exposure hook saw every sample, with non-tensor fields passed through untouched
    assert hook.batches == 60 and sum(hook.seconds.values()) == 60 * 16 * 2.5
    # frozen encoder in eval mode (its dropout off), head in train mode
    assert not t.module.encoder.training and t.module.head.training
    assert r.last_checkpoint is None and latest_complete(tmp_path) is None


def test_to_device_leaves_non_tensors_alone():
    b = make_batch(0, 4)
    moved = to_device(b, torch.device("cpu"))
    assert moved["recording_ids"] is b["recording_ids"] and moved["seconds"] is b["seconds"]
    assert torch.equal(moved["x"], b["x"])


def _grads_at_first_step(trainer: Trainer) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def pre_hook(opt, args, kwargs):
        if not seen:
            for n, p in trainer.module.named_parameters():
                if p.grad is not None:
                    seen[n] = p.grad.detach().clone()

    trainer.optimizer.register_step_pre_hook(pre_hook)
    return seen


def test_grad_accumulation_matches_big_batch(tmp_path):
    model = Toy(dropout=0.0)
    a = Trainer(copy.deepcopy(model), loss_fn, cfg(max_steps=1, grad_accum=2), out_dir=tmp_path / "a")
    b = Trainer(copy.deepcopy(model), loss_fn, cfg(max_steps=1, grad_accum=1), out_dir=tmp_path / "b")
    ga, gb = _grads_at_first_step(a), _grads_at_first_step(b)
    small = [make_batch(0, 4), make_batch(1, 4)]
    big = {
        "x": torch.cat([s["x"] for s in small]),
        "y": torch.cat([s["y"] for s in small]),
        "recording_ids": sum((s["recording_ids"] for s in small), []),
        "seconds": [2.5] * 8,
    }
    ra, rb = a.fit(iter(small)), b.fit(iter([big]))
    assert set(ga) == set(gb) and ga
    assert not any(n.startswith("encoder") for n in ga)  # frozen parts get no gradient
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=1e-5, atol=1e-6)
    assert ra.losses[0] == pytest.approx(rb.losses[0], rel=1e-6)


def test_gradient_clipping_applied(tmp_path):
    t = Trainer(Toy(dropout=0.0), loss_fn, cfg(max_steps=3, grad_clip=0.01, log_every=1), out_dir=tmp_path)
    norms: list[float] = []

    def pre_hook(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    t.optimizer.register_step_pre_hook(pre_hook)
    t.fit(factory())
    assert len(norms) == 3 and max(norms) <= 0.01 * (1 + 1e-4)
    assert t.last_grad_norm is not None and t.last_grad_norm > 0.01  # logged norm is the pre-clip one


def test_bf16_on_cpu_falls_back_to_fp32(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="lab.train.trainer"):
        t = Trainer(Toy(), loss_fn, cfg(precision="bf16", max_steps=2), out_dir=tmp_path)
    assert t.precision == "fp32" and "fp32" in caplog.text
    t.fit(factory())


def test_schedules():
    c = TrainerConfig(max_steps=10, warmup_steps=4, schedule="cosine", lr=1.0)
    assert [lr_factor(s, c) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, c) == 1.0 and lr_factor(10, c) == pytest.approx(0.0)
    lin = TrainerConfig(max_steps=10, schedule="linear", min_lr_ratio=0.1)
    assert lr_factor(5, lin) == pytest.approx(0.55)
    assert lr_factor(7, TrainerConfig(schedule="constant")) == 1.0
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, c)
    sched = build_scheduler(opt, c)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[-1] < 0.1
    # no weight decay on biases
    assert [g["weight_decay"] for g in opt.param_groups] == [c.weight_decay, 0.0]


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValueError, match="unknown"):
        TrainerConfig.from_dict({"max_steps": 3, "learning_rate": 1})
    with pytest.raises(ValueError):
        TrainerConfig(schedule="step")
    with pytest.raises(ValueError):
        TrainerConfig(precision="fp16")
    c = TrainerConfig.from_dict({"betas": [0.8, 0.9]})
    assert c.betas == (0.8, 0.9) and TrainerConfig.from_dict(c.to_dict()) == c


def test_hooks_default_and_custom_checkpoint_writers(tmp_path):
    calls: list[tuple] = []

    class LogOnly:  # duck-typed: no write_checkpoint_extras, so the default model writer still runs
        def on_log(self, step, metrics):
            calls.append(("log", step))

    t = Trainer(
        Toy(),
        loss_fn,
        cfg(max_steps=4, save_every=2, log_every=2),
        out_dir=tmp_path / "a",
        hooks=[ExposureHook(), LogOnly()],
    )
    r = t.fit(factory())
    assert calls == [("log", 2), ("log", 4)]
    assert (r.last_checkpoint / "model.pt").exists()

    class Writer(TrainerHooks):
        def __init__(self):
            self.states = None

        def write_checkpoint_extras(self, step, staging_dir):
            self.states = self.trainer.gathered_state(exposure)
            (staging_dir / "card.json").write_text(f'{{"step": {step}}}')

    exposure, writer = ExposureHook(), Writer()
    t = Trainer(Toy(), loss_fn, cfg(max_steps=2, save_every=2), out_dir=tmp_path / "b", hooks=[exposure, writer])
    r = t.fit(factory(bs=4))
    assert (r.last_checkpoint / "card.json").exists() and not (r.last_checkpoint / "model.pt").exists()
    assert writer.states == [{"seconds": exposure.seconds, "batches": 2}]


def test_on_batch_sees_every_micro_batch(tmp_path):
    hook = ExposureHook()
    Trainer(Toy(), loss_fn, cfg(max_steps=3, grad_accum=3), out_dir=tmp_path, hooks=hook).fit(factory(grad_accum=3))
    assert hook.steps_seen == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_batches_running_out_stops_cleanly(tmp_path):
    hook = ExposureHook()
    t = Trainer(Toy(), loss_fn, cfg(max_steps=10, grad_accum=2, save_final=True), out_dir=tmp_path, hooks=hook)
    r = t.fit([make_batch(i) for i in range(7)])  # 3 full steps, a partial 4th is dropped
    assert r.step == 3 and len(r.losses) == 3 and r.last_checkpoint.name == "step-000003"
    assert hook.batches == 6  # the dropped micro-batch never counts as trained on
