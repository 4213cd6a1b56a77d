"""Live consent in `lab train`: expiry known ahead, revocations applied mid-run (exclude and stop),
and resume after a change. Each test trains a tiny model on its own copy of the demo (the ledger
changes), and checks the card against an independent per-step listing of what the sampler draws."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import timedelta
from itertools import islice
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

from jobs_helpers import DemoEnv, card_seconds, make_demo, reset_hydra, stray_env  # noqa: E402

from lab.train.trainer import TrainerHooks  # noqa: E402
from lab.util.timestamps import utcnow  # noqa: E402

pytestmark = pytest.mark.slow

BATCH = 6  # 38 demo segments: 7 steps an epoch
R = "demo-0002"  # drawn both early and late in the first 12 steps under seed 0 (asserted below)
GRANT = "G-0002"


@pytest.fixture(scope="module")
def base_demo(tmp_path_factory) -> DemoEnv:
    torch.set_num_threads(1)
    with stray_env(tmp_path_factory.mktemp("env-unused")):
        return make_demo(tmp_path_factory.mktemp("consent-demo"))


@pytest.fixture
def demo(base_demo, tmp_path, tmp_path_factory) -> DemoEnv:
    """A private copy of the demo (catalogue, ledger, snapshot, code cache) this test may change."""
    torch.set_num_threads(1)
    root = tmp_path / "demo"
    shutil.copytree(base_demo.root, root)
    snap = root / base_demo.snapshot.relative_to(base_demo.root)
    env = DemoEnv(
        root, root / ".lab", root / "experiments", f"sqlite:///{root / '.lab' / 'ledger.sqlite'}", snap, snap.name
    )
    reset_hydra()
    with stray_env(tmp_path_factory.mktemp("env-unused")):
        yield env


class AtStep(TrainerHooks):
    """Calls `fn` once, at the end of optimizer step `step` (after the consent watch's own poll)."""

    def __init__(self, step: int, fn):
        self.step, self.fn, self.done = step, fn, False

    def on_batch(self, step, batch):
        if step == self.step and not self.done:
            self.done = True
            self.fn()


def recipe(cfg, extra=(), clock=None):
    from lab.recipes.train import TrainRecipe

    reset_hydra()
    r = TrainRecipe(cfg)
    if clock is not None:
        r.clock = clock
    r.setup_data()
    r.setup_model()
    r.setup_codes()
    r.setup_optimizer()
    r.setup_trainer(extra_hooks=list(extra))
    return r


def drawn(cfg, snapshot_path: Path, base_dir: Path, steps: int) -> list[list[tuple[str, float]]]:
    """Per step, the (recording, seconds) rows the sampler draws with no consent filter (independent
    of the admission: plain `iterate_batches` over the same code cache, collator, batch size and seed)."""
    from lab.data.codes import build_code_cache
    from lab.data.loader import MusicgenCollator, iterate_batches
    from lab.models.musicgen import load_local_pretrained
    from lab.snapshot import load_snapshot

    model, tok = load_local_pretrained(base_dir)
    dataset = build_code_cache(
        load_snapshot(snapshot_path),
        model.audio_encoder,
        Path(cfg.paths.home) / "cache" / "codes",
        segment_seconds=float(cfg.data.segment_seconds),
    )
    d = model.decoder.config
    collator = MusicgenCollator(
        tok,
        num_codebooks=d.num_codebooks,
        pad_token_id=d.pad_token_id,
        max_text_len=int(cfg.data.max_text_len),
        decoder_start_token_id=d.decoder_start_token_id,
    )
    it = iterate_batches(dataset, collator, BATCH, seed=int(cfg.seed))
    return [list(zip(b["recording_ids"], b["seconds"])) for _, _, b in islice(it, steps)]


def seconds_of(steps: list[list[tuple[str, float]]], rid: str, first: int, last: int) -> float:
    """Seconds of `rid` drawn in steps first..last (1-based, inclusive)."""
    return sum(s for rows in steps[first - 1 : last] for r, s in rows if r == rid)


def totals(steps: list[list[tuple[str, float]]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for rows in steps:
        for r, s in rows:
            out[r] = out.get(r, 0.0) + s
    return out


def card(folder: Path) -> dict:
    return json.loads((Path(folder) / "data_card.json").read_text())


def revoke(demo: DemoEnv, grant_id: str = GRANT) -> None:
    from lab.rights.ledger import Ledger
    from lab.rights.records import RevokeEvent

    with Ledger(demo.ledger_url) as ledger:
        ledger.append(
            RevokeEvent(grant_id=grant_id, reason="the artist opted out", effective_at=utcnow(), issuer="test")
        )


def assert_others_untouched(got: dict[str, float], steps, rid: str) -> None:
    want = {k: v for k, v in totals(steps).items() if k != rid}
    assert {k: round(v, 6) for k, v in got.items() if k != rid} == {k: round(v, 6) for k, v in want.items()}


# =========================================================================== expiry known ahead


def test_expiry_mid_run_no_exposure_after_valid_until(demo, tmp_path):
    """G-0002's valid_until falls between step 6's and step 7's batch (the run's clock ticks one second a
    step): demo-0002 is fed in steps 1-6 only, the others throughout, and the card flags it."""
    from lab.rights.ledger import Ledger
    from lab.rights.records import AmendEvent

    deadline = utcnow().replace(microsecond=0) + timedelta(hours=1)
    with Ledger(demo.ledger_url) as ledger:
        g = ledger.grant_history(GRANT)[-1].event.grant
        ledger.append(
            AmendEvent(
                grant=g.model_copy(update={"version": g.version + 1, "supersedes": GRANT, "valid_until": deadline})
            )
        )
    snapshot = demo.clear("commercial")
    t0 = deadline - timedelta(seconds=5.5)
    now = [t0]

    class Tick(TrainerHooks):  # the batch of step s is drawn at t0 + (s - 1) s
        def on_batch(self, step, batch):
            now[0] = t0 + timedelta(seconds=step)

    run_dir = tmp_path / "run"
    cfg = demo.train_cfg(
        run_dir, "trainer.max_steps=12", "trainer.save_every=12", f"trainer.batch_size={BATCH}", snapshot=snapshot
    )
    recipe(cfg, [Tick()], clock=lambda: now[0]).train()
    last = run_dir / "checkpoints" / "step-000012"
    steps = drawn(cfg, snapshot, run_dir / "base", 12)
    assert seconds_of(steps, R, 7, 12) > 0, "the test needs demo-0002 drawn after its deadline"
    got = card_seconds(last)
    assert got[R] == pytest.approx(seconds_of(steps, R, 1, 6))
    assert_others_untouched(got, steps, R)
    flagged = card(last)["consent"]["expired_sources"]
    assert [(f["recording_id"], f["seconds_seen"]) for f in flagged] == [(R, pytest.approx(got[R]))]
    assert flagged[0]["valid_until"].startswith(deadline.strftime("%Y-%m-%dT%H:%M:%S"))


# =========================================================================== revocation mid-run


def test_revocation_mid_run_excludes_from_the_next_poll(demo, tmp_path):
    run_dir = tmp_path / "run"
    cfg = demo.train_cfg(
        run_dir,
        "trainer.max_steps=12",
        "trainer.save_every=12",
        f"trainer.batch_size={BATCH}",
        "consent.poll_seconds=0.001",
    )
    r = recipe(cfg, [AtStep(4, lambda: revoke(demo))])
    r.train()
    last = run_dir / "checkpoints" / "step-000012"
    steps = drawn(cfg, demo.snapshot, run_dir / "base", 12)
    assert seconds_of(steps, R, 7, 12) > 0
    got = card_seconds(last)
    # revoked after step 4; the watch reads it after step 5; from step 6 on demo-0002 is never fed
    assert got[R] == pytest.approx(seconds_of(steps, R, 1, 5))
    assert_others_untouched(got, steps, R)
    (event,) = card(last)["consent"]["events_applied"]
    assert (event["kind"], event["grant_id"], event["recordings"], event["step"], event["action"]) == (
        "revoke",
        GRANT,
        [R],
        6,
        "exclude",
    )
    assert card(last)["consent"]["poll_seconds"] == pytest.approx(0.001)
    logged = [json.loads(line) for line in (run_dir / "consent_events.jsonl").read_text().splitlines()]
    assert logged == [event]


def test_revocation_mid_run_stop_saves_and_stops(demo, tmp_path, capfd):
    from lab.train.consent_watch import ConsentStop

    run_dir = tmp_path / "run"
    cfg = demo.train_cfg(
        run_dir,
        "trainer.max_steps=12",
        "trainer.save_every=0",
        f"trainer.batch_size={BATCH}",
        "consent.poll_seconds=0.001",
        "consent.on_change=stop",
    )
    r = recipe(cfg, [AtStep(4, lambda: revoke(demo))])
    with pytest.raises(ConsentStop, match=f"revoke of grant {GRANT}.*{R}.*step-000005"):
        r.train()
    assert "consent: revoke of grant G-0002" in capfd.readouterr().err
    from lab import checkpoint as ck

    assert [ck.step_of(p) for p in ck.list_complete(run_dir)] == [5]
    folder = run_dir / "checkpoints" / "step-000005"
    (event,) = card(folder)["consent"]["events_applied"]
    assert (event["grant_id"], event["recordings"], event["action"]) == (GRANT, [R], "stop")
    steps = drawn(cfg, demo.snapshot, run_dir / "base", 5)
    assert card_seconds(folder) == pytest.approx(totals(steps))


# =========================================================================== resume after a change


def test_resume_after_revocation_same_snapshot_without_the_source(demo, tmp_path):
    from lab.cli.demo import compose
    from lab.recipes.train import TrainingRefused

    run_dir = tmp_path / "run"
    common = [
        *demo.overrides(),
        "experiment=demo",
        "policy=commercial",
        "logger=none",
        "trainer.progress=false",
        f"run_dir={run_dir}",
        f"trainer.batch_size={BATCH}",
        "consent.poll_seconds=0.001",
    ]
    first = compose("train", [*common, f"data.snapshot={demo.snapshot}", "trainer.max_steps=8", "trainer.save_every=8"])
    rid, grant = "demo-0001", "G-0001"  # drawn in step 3 and again in step 11
    recipe(first, [AtStep(3, lambda: revoke(demo, grant))]).train()
    seen_first = card_seconds(run_dir / "checkpoints" / "step-000008")

    # another snapshot (cleared after the revocation) is refused, naming both
    other = demo.clear("commercial")
    assert other.name != demo.snapshot_id
    with pytest.raises(TrainingRefused, match=f"{demo.snapshot_id}.*{other.name}"):
        recipe(compose("train", [*common, f"data.snapshot={other}", "trainer.max_steps=14"]))

    # data.snapshot=null: the checkpoint's snapshot, not a fresh clearance
    r = recipe(compose("train", [*common, "data.snapshot=null", "trainer.max_steps=14", "trainer.save_every=14"]))
    summary = r.train()
    assert summary.snapshot_id == demo.snapshot_id and summary.start_step == 8
    last = run_dir / "checkpoints" / "step-000014"
    got = card_seconds(last)
    steps = drawn(first, demo.snapshot, run_dir / "base", 14)
    assert seconds_of(steps, rid, 9, 14) > 0, "the test needs the recording drawn after the resume"
    assert got[rid] == pytest.approx(seen_first[rid]) == pytest.approx(seconds_of(steps, rid, 1, 4))
    assert_others_untouched(got, steps, rid)
    assert [e["grant_id"] for e in card(last)["consent"]["events_applied"]] == [grant]
