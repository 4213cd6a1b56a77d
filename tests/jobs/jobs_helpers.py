"""Helpers of the job-level tests (tests/jobs): a built demo, in-process `lab train`, and an
independent recount of what the loader yields."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[2]

# A shape of the shared run chosen so that its checkpoints do NOT fall on epoch boundaries:
# 38 demo segments / batch 6 = 7 steps per epoch, so steps 10 and 20 end mid-epoch and the
# per-recording seconds depend on the sampler's order (a wrong seed or a skipped batch shows).
SHARED_STEPS, SHARED_SAVE_EVERY, SHARED_BATCH = 20, 10, 6
QUIET = ["logger=none", "trainer.progress=false"]


@dataclass
class DemoEnv:
    """A built demo: catalogue, ledger and one snapshot cleared under `policy`."""

    root: Path
    home: Path
    experiments: Path
    ledger_url: str
    snapshot: Path  # .../snapshots/<id>/ (the snapshot folder)
    snapshot_id: str
    policy: str = "commercial"

    def overrides(self) -> list[str]:
        return [f"paths.home={self.home}", f"paths.experiments={self.experiments}", f"ledger_url={self.ledger_url}"]

    def train_cfg(self, run_dir: Path, *extra: str, snapshot: str | Path | None = None, policy: str | None = None):
        from lab.cli.demo import compose

        return compose(
            "train",
            [
                *self.overrides(),
                "experiment=demo",
                f"policy={policy or self.policy}",
                f"data.snapshot={snapshot or self.snapshot}",
                *QUIET,
                f"run_dir={run_dir}",
                *extra,
            ],
        )

    def clear(self, policy: str) -> Path:
        """A new snapshot of the demo catalogue under `policy`, now (its folder)."""
        from lab.cli.demo import compose
        from lab.recipes.clear import main as clear_main

        return Path(clear_main(compose("clear", [*self.overrides(), f"policy={policy}"])).snapshot_path)

    @property
    def public_key(self) -> Path:
        from lab.cards.signing import PUBLIC_KEY_NAME

        return self.home / "keys" / PUBLIC_KEY_NAME

    def env(self) -> dict[str, str]:
        """Environment for a `lab` subprocess on this demo."""
        env = {k: v for k, v in os.environ.items() if k not in ("LAB_LEDGER_URL", "LAB_CONFIG_DIR")}
        env.update(
            LAB_HOME=str(self.home),
            LAB_EXPERIMENTS=str(self.experiments),
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            WANDB_MODE="disabled",
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )
        return env


def make_demo(root: Path, policy: str = "commercial") -> DemoEnv:
    """Render + ingest the demo catalogue, import its ledger and clear it under `policy`."""
    from lab.cli.demo import build_demo

    root.mkdir(parents=True, exist_ok=True)
    home, experiments = root / ".lab", root / "experiments"
    url = f"sqlite:///{home / 'ledger.sqlite'}"
    build_demo(home, url)
    env = DemoEnv(root, home, experiments, url, Path("/nonexistent"), "", policy)
    env.snapshot = env.clear(policy)
    env.snapshot_id = env.snapshot.name
    return env


def reset_hydra() -> None:
    """Forget any HydraConfig a Hydra app run in this process left behind: the train recipe
    would otherwise take that old job's output dir as its run dir."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def train(cfg) -> dict[str, Any]:
    """`lab.recipes.train.main` in-process, the way the CLI runs it minus Hydra's output dir."""
    from lab.recipes.train import main

    reset_hydra()
    return main(cfg).to_dict()


@contextlib.contextmanager
def stray_env(where: Path):
    """LAB_HOME / LAB_EXPERIMENTS pointing at `where` (which must stay empty), no LAB_LEDGER_URL."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_HOME", str(where / ".lab"))
        mp.setenv("LAB_EXPERIMENTS", str(where / "experiments"))
        mp.delenv("LAB_LEDGER_URL", raising=False)
        mp.setenv("WANDB_MODE", "disabled")
        yield
    assert not (where / ".lab").exists() and not (where / "experiments").exists(), (
        "something wrote under $LAB_HOME / $LAB_EXPERIMENTS instead of the configured paths"
    )


@dataclass
class SharedRun:
    run_dir: Path
    summary: dict[str, Any]
    cfg: Any
    checkpoints: dict[int, Path] = field(default_factory=dict)

    @property
    def last(self) -> Path:
        return self.checkpoints[max(self.checkpoints)]


# --------------------------------------------------------------------------- independent recount


def recount(
    cfg, snapshot_path: Path, base_dir: Path, steps: int, *, world_size: int = 1, seed: int | None = None
) -> dict[str, dict[str, float]]:
    """What the loader yields for `steps` optimizer steps of a run with config `cfg`, re-created the
    way `lab train` creates it (same code cache, collator, batch size, seed, shards), summed here
    with plain dicts (not lab's ExposureMeter). Returns {"seconds"|"samples"|"tokens": {rid: n}},
    over every rank of `world_size`."""
    from lab.data.codes import build_code_cache
    from lab.data.loader import MusicgenCollator, iterate_batches
    from lab.models.musicgen import load_local_pretrained
    from lab.snapshot import load_snapshot

    snapshot = load_snapshot(snapshot_path)
    model, tok = load_local_pretrained(base_dir)
    dataset = build_code_cache(
        snapshot,
        model.audio_encoder,
        Path(cfg.paths.home) / "cache" / "codes",
        segment_seconds=float(cfg.data.segment_seconds),
    )
    dcfg = model.decoder.config
    collator = MusicgenCollator(
        tok,
        num_codebooks=dcfg.num_codebooks,
        pad_token_id=dcfg.pad_token_id,
        max_text_len=int(cfg.data.max_text_len),
        decoder_start_token_id=dcfg.decoder_start_token_id,
    )
    micro = steps * int(cfg.trainer.grad_accum)
    seconds: dict[str, list[float]] = defaultdict(list)
    samples: dict[str, int] = defaultdict(int)
    tokens: dict[str, int] = defaultdict(int)
    for rank in range(world_size):
        it = iterate_batches(
            dataset,
            collator,
            int(cfg.trainer.batch_size),
            seed=int(cfg.seed if seed is None else seed),
            rank=rank,
            world_size=world_size,
        )
        for _ in range(micro):
            _, _, batch = next(it)
            for rid, sec, tok_n in zip(batch["recording_ids"], batch["seconds"], batch["tokens"]):
                seconds[rid].append(float(sec))
                samples[rid] += 1
                tokens[rid] += int(tok_n)
    return {
        "seconds": {k: math.fsum(v) for k, v in sorted(seconds.items())},
        "samples": dict(sorted(samples.items())),
        "tokens": dict(sorted(tokens.items())),
    }


def card_seconds(folder: Path, seen_by: str | None = None) -> dict[str, float]:
    """recording_id -> seconds_seen from a checkpoint's sources.parquet, for the rows `seen_by` saw
    (default: the checkpoint itself, i.e. its own run)."""
    import pyarrow.parquet as pq

    seen_by = seen_by or json.loads((Path(folder) / "data_card.json").read_text())["identity"]["checkpoint_id"]
    rows = pq.read_table(Path(folder) / "sources.parquet", columns=["recording_id", "seen_by", "seconds_seen"])
    return {r["recording_id"]: float(r["seconds_seen"]) for r in rows.to_pylist() if r["seen_by"] == seen_by}


def assert_same_seconds(got: dict[str, float], want: dict[str, float], tol: float = 1e-6) -> None:
    assert sorted(got) == sorted(want), (
        f"sources differ: only in card {sorted(set(got) - set(want))}, only in recount {sorted(set(want) - set(got))}"
    )
    bad = {k: (got[k], want[k]) for k in want if abs(got[k] - want[k]) > tol}
    assert not bad, f"seconds differ (card, recount): {bad}"


def python() -> str:
    return sys.executable
