"""Exposure meter: exact recount of yielded batches, resume, and merging across DDP ranks (gloo)."""

from __future__ import annotations

import math
import os
import socket
from collections import Counter, defaultdict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from data_helpers import fake_rows, tiny_tokenizer

from lab.data.exposure import ExposureError, ExposureMeter
from lab.data.loader import MusicgenCollator, iterate_batches

STEPS, BATCH, N = 9, 4, 23


def _recount(batches):
    seconds, samples, tokens = defaultdict(float), Counter(), Counter()
    for b in batches:
        for rid, sec, tok in zip(b["recording_ids"], b["seconds"], b["tokens"]):
            seconds[rid] += sec
            samples[rid] += 1
            tokens[rid] += tok
    return dict(seconds), dict(samples), dict(tokens)


def _run(meter, rank=0, world_size=1, start=0, steps=STEPS):
    """Train-loop stand-in: meter exactly the batches yielded; return them for an independent recount."""
    col = MusicgenCollator(tiny_tokenizer(), num_codebooks=4, pad_token_id=64)
    seen = []
    for _epoch, step, batch in iterate_batches(
        fake_rows(N), col, BATCH, seed=1, rank=rank, world_size=world_size, start_step=start
    ):
        if step >= steps:
            break
        meter.add(batch["recording_ids"], batch["seconds"], batch["tokens"])
        seen.append(batch)
    return seen


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k]) for k in a)


def test_totals_equal_recount_of_yielded_batches():
    meter = ExposureMeter()
    seen = _run(meter)
    seconds, samples, tokens = _recount(seen)
    assert meter.samples() == dict(sorted(samples.items()))
    assert meter.tokens() == dict(sorted(tokens.items()))
    assert _close(meter.totals(), seconds)
    # 23 rows in batches of 4: 6 steps per epoch (the last one short), so 9 steps = 23 + 3 * 4 samples
    assert meter.total_samples() == N + 3 * BATCH
    assert math.isclose(meter.total_seconds(), sum(sum(b["seconds"]) for b in seen))
    # tokens = frames carrying audio × codebooks (fake rows: 6 frames, or 4 for the padded ones)
    assert meter.total_tokens() == sum(4 * (6 if s == 1.0 else 4) for b in seen for s in b["seconds"])
    assert meter.summary() == {
        "total_seconds": meter.total_seconds(),
        "samples": N + 12,
        "tokens": meter.total_tokens(),
    }


def test_state_round_trip_and_resume_continues_counting():
    whole = ExposureMeter()
    _run(whole, steps=STEPS)

    first = ExposureMeter()
    _run(first, steps=4)
    state = first.state_dict()
    assert state["schema"] == "lab.exposure/1" and set(state) == {"schema", "base", "local"}
    resumed = ExposureMeter()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    _run(resumed, start=4, steps=STEPS)
    assert resumed.samples() == whole.samples() and resumed.tokens() == whole.tokens()
    assert _close(resumed.totals(), whole.totals())

    # merging outside DDP keeps the totals, and reduce-then-reduce never double counts
    assert resumed.merged().totals() == resumed.totals()
    before = resumed.samples()
    resumed.all_reduce()
    resumed.all_reduce()
    assert resumed.samples() == before and resumed.state_dict()["local"]["samples"] == {}


def test_combine_per_rank_states():
    a, b = ExposureMeter(), ExposureMeter()
    a.add(["x", "y"], [1.0, 2.0], [10, 20])
    b.add(["y", "z"], [0.5, 4.0], [5, 40])
    c = ExposureMeter.combine([a.state_dict(), b.state_dict()])
    assert c.totals() == {"x": 1.0, "y": 2.5, "z": 4.0} and c.samples() == {"x": 1, "y": 2, "z": 1}
    assert c.tokens() == {"x": 10, "y": 25, "z": 40}
    # a combined state loads on any number of ranks; merging them counts the base once
    assert ExposureMeter.combine([c.state_dict()] * 3).totals() == c.totals()
    other = ExposureMeter()
    other.load_state_dict(c.state_dict())
    other.add(["x"], [1.0])
    with pytest.raises(ExposureError, match="base"):
        ExposureMeter.combine([a.state_dict(), other.state_dict()])


def test_add_and_load_validate():
    m = ExposureMeter()
    with pytest.raises(ValueError):
        m.add(["a"], [1.0, 2.0])
    with pytest.raises(ValueError):
        m.add(["a"], [-1.0])
    with pytest.raises(ValueError):
        m.add(["a"], [float("nan")])
    with pytest.raises(ValueError):
        m.add(["a"], [1.0], [1, 2])
    assert len(m) == 0  # a rejected batch counts nothing
    with pytest.raises(ExposureError):
        m.load_state_dict({"schema": "other"})
    with pytest.raises(ExposureError):
        m.load_state_dict({"schema": "lab.exposure/1", "base": {"seconds": {"a": 1.0}, "samples": {}}, "local": {}})
    m.add(["b", "a", "b"], [1.0, 0.5, 0.25])
    assert m.totals() == {"a": 0.5, "b": 1.25} and m.samples() == {"a": 1, "b": 2} and m.tokens() == {}
    assert list(m.totals()) == ["a", "b"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        meter = ExposureMeter()
        _run(meter, rank=rank, world_size=world_size)
        local = meter.state_dict()
        merged = meter.merged()
        meter.all_reduce()
        meter.all_reduce()  # idempotent: nothing new was added
        meter.add(["extra"], [2.0])  # one more step on each rank
        meter.all_reduce()
        torch.save({"local": local, "merged": merged.state_dict(), "after": meter.state_dict()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_merge_across_two_gloo_ranks(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # expected totals, recounted here from the batches each rank was given
    seen = _run(ExposureMeter(), rank=0, world_size=2) + _run(ExposureMeter(), rank=1, world_size=2)
    seconds, samples, tokens = _recount(seen)
    assert res[0]["local"] != res[1]["local"]  # ranks saw different shards
    for r in res:
        m = ExposureMeter()
        m.load_state_dict(r["merged"])
        assert m.samples() == dict(sorted(samples.items())) and m.tokens() == dict(sorted(tokens.items()))
        assert _close(m.totals(), seconds)
        assert m.total_samples() == 2 * STEPS * BATCH
        after = ExposureMeter()
        after.load_state_dict(r["after"])
        assert after.samples()["extra"] == 2 and after.totals()["extra"] == 4.0
        assert {k: v for k, v in after.samples().items() if k != "extra"} == m.samples()
    assert res[0]["merged"] == res[1]["merged"]  # bit-identical on every rank
    # the per-rank checkpoint style gives the same totals
    assert ExposureMeter.combine([r["local"] for r in res]).state_dict() == res[0]["merged"]
