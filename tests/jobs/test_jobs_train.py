"""`lab train` at job level: configs, the checkpoint contract, exposure, signatures, refusals,
resume and DDP. One tiny run (`shared_run`, 20 steps) is shared by the read-only tests."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from jobs_helpers import (
    REPO,
    SHARED_SAVE_EVERY,
    SHARED_STEPS,
    assert_same_seconds,
    card_seconds,
    make_demo,
    python,
    recount,
    train,
)
from omegaconf import OmegaConf

from lab import checkpoint as ck
from lab.cards import load_card
from lab.cards.signing import ensure_keypair, verify_folder
from lab.recipes.train import TrainingRefused
from lab.snapshot import load_snapshot

CONFIGS = REPO / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def _card(folder: Path) -> dict:
    return json.loads((folder / "data_card.json").read_text())


def _front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n"), "README.md must open with YAML metadata"
    return yaml.safe_load(text.split("---\n", 2)[1])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_nothing_trained(run_dir: Path) -> None:
    assert not (run_dir / "checkpoints").exists(), "a refused run must not write checkpoints"
    assert not (run_dir / "summary.json").exists()


# =========================================================================== 1. configs


def _compose(overrides: list[str], hydra: bool = False):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


def _check_job_config(cfg) -> None:
    """What `lab train` does with each group before training, minus the data: it must accept them."""
    from lab.models.musicgen import TinySpec
    from lab.recipes.clear import policy_from_cfg
    from lab.train.trainer import TrainerConfig

    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["run_dir"] and resolved["ledger_url"]
    trainer = {k: v for k, v in resolved["trainer"].items() if k not in ("batch_size", "resume")}
    TrainerConfig.from_dict({**trainer, "seed": int(cfg.seed)})  # unknown keys / bad values raise
    assert int(cfg.trainer.batch_size) >= 1 and isinstance(cfg.trainer.resume, bool)
    policy = policy_from_cfg(cfg.policy)
    assert policy.name == cfg.policy.name and policy.purposes
    from hydra.utils import instantiate

    from lab.recipes.base_model import LocalPretrained, TinyFromConfig

    base = instantiate(cfg.model, _convert_="all")  # the recipe's own call: unknown keys raise
    assert isinstance(base, (TinyFromConfig, LocalPretrained))
    if isinstance(base, TinyFromConfig):
        TinySpec(**base.spec)
    assert cfg.logger.mode in ("disabled", "offline", "online")
    assert float(cfg.data.segment_seconds) > 0 and int(cfg.data.max_text_len) > 0


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = _compose([f"experiment={experiment}"])
    _check_job_config(cfg)
    first = (CONFIGS / "experiment" / f"{experiment}.yaml").read_text().splitlines()[:5]
    assert any(f"lab train experiment={experiment}" in line for line in first), (
        "an experiment config opens with the command that runs it"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=tiny"],
        [
            "model=local_pretrained",
            "model.path=/models/musicgen-small",
            "model.id=facebook/musicgen-small",
            "model.licence=CC-BY-NC-4.0",
        ],
        ["trainer=cpu"],
        ["trainer=gpu"],
        ["logger=wandb_offline"],
        ["logger=none"],
        ["policy=research"],
        ["policy=commercial"],
        ["experiment=demo", "policy=commercial", "trainer=gpu", "logger=none"],
    ],
    ids=lambda o: " ".join(o),
)
def test_config_groups_compose(overrides):
    _check_job_config(_compose(overrides))


def test_trainer_groups_differ_where_they_should():
    cpu, gpu = _compose(["trainer=cpu"]), _compose(["trainer=gpu"])
    assert cpu.trainer.precision == "fp32" and gpu.trainer.precision == "bf16"
    assert gpu.trainer.batch_size > cpu.trainer.batch_size


def test_local_pretrained_needs_a_path():
    from omegaconf.errors import MissingMandatoryValue

    cfg = _compose(["model=local_pretrained"])
    with pytest.raises(MissingMandatoryValue):
        OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("launcher,cls", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")])
def test_launchers_compose_and_instantiate(launcher, cls):
    from hydra.utils import get_class

    cfg = _compose([f"hydra/launcher={launcher}", "experiment=demo"], hydra=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    target = get_class(params.pop("_target_"))
    assert target.__name__ == cls
    target(**params)  # the plugin accepts every key (a typo in the yaml raises here)
    if launcher == "slurm":  # one task per GPU: each task is a torch.distributed rank
        assert params["tasks_per_node"] == params["gpus_per_node"]


def test_cli_prints_launcher_config(demo, tmp_path):
    # `-m` cannot be combined with `--cfg` in Hydra 1.3; `--cfg hydra` shows what a sweep would launch with
    proc = subprocess.run(
        [python(), "-m", "lab", "train", "hydra/launcher=slurm", "experiment=demo", "--cfg", "hydra"],
        env=demo.env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SlurmLauncher" in proc.stdout and "hydra/launcher: slurm" in proc.stdout
    proc = subprocess.run(
        [python(), "-m", "lab", "train", "experiment=demo", "policy=commercial", "--cfg", "job"],
        env=demo.env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = yaml.safe_load(proc.stdout)
    assert job["policy"]["name"] == "commercial" and job["model"]["_target_"].endswith("TinyFromConfig")
    assert not list(tmp_path.iterdir()), "--cfg must not create run folders"


# =========================================================================== 2. the checkpoint folder


def test_shared_run_layout(shared_run):
    assert sorted(shared_run.checkpoints) == list(range(SHARED_SAVE_EVERY, SHARED_STEPS + 1, SHARED_SAVE_EVERY))
    assert shared_run.summary["steps"] == SHARED_STEPS and shared_run.summary["start_step"] == 0
    assert Path(shared_run.summary["last_checkpoint"]) == shared_run.last
    summary = json.loads((shared_run.run_dir / "summary.json").read_text())
    assert summary["last_checkpoint"] == str(shared_run.last)
    for step, folder in shared_run.checkpoints.items():
        for name in (
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "README.md",
            "data_card.json",
            "croissant.json",
            "model.sig",
            "training_state/trainer.json",
        ):
            assert (folder / name).is_file(), f"step {step}: {name} missing"
        assert _card(folder)["identity"]["step"] == step
        assert json.loads((folder / "config.lab.json").read_text())["trainer"]["max_steps"] == SHARED_STEPS
    assert not [p for p in ck.checkpoints_dir(shared_run.run_dir).iterdir() if p.name.startswith(".")]


def test_checkpoint_loads_with_stock_transformers_and_generates(shared_run):
    from transformers import AutoProcessor, AutoTokenizer, MusicgenForConditionalGeneration

    folder = str(shared_run.last)
    model, info = MusicgenForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert tokenizer("a calm piano study")["input_ids"]
    inputs = processor(text=["a calm piano study", "fast drums"], padding=True, return_tensors="pt")
    torch.manual_seed(0)
    audio = model.generate(**inputs, max_new_tokens=8, do_sample=True)
    assert audio.ndim == 3 and audio.shape[:2] == (2, 1) and audio.shape[-1] > 0
    assert torch.isfinite(audio).all() and audio.abs().max() > 0

    # the weights are the trained ones, not the base's
    from safetensors.torch import load_file

    trained = load_file(str(shared_run.last / "model.safetensors"))
    base = load_file(str(shared_run.run_dir / "base" / "model.safetensors"))
    changed = [k for k in trained if k.startswith("decoder.") and not torch.equal(trained[k], base[k])]
    assert changed, "the checkpoint holds the base weights: nothing was trained"
    frozen = [k for k in trained if k.startswith(("text_encoder.", "audio_encoder."))]
    assert frozen and all(torch.equal(trained[k], base[k]) for k in frozen)


def test_data_cards_validate_against_schema(shared_run):
    for folder in shared_run.checkpoints.values():
        card = load_card(folder).card
        assert card.identity.checkpoint_id == f"{shared_run.run_dir.name}-step-{card.identity.step:06d}"
        assert card.lineage.base_model.kind == "tiny_from_config" and card.lineage.relation == "pretrain"


def test_model_card_metadata(shared_run, demo):
    for step, folder in shared_run.checkpoints.items():
        meta = _front_matter(folder / "README.md")
        card = _card(folder)
        # derived, not the tiny base's apache-2.0 alone: its licence AND those of the demo sources seen
        assert meta["license"] == "other" and meta["license_link"] == "LICENSE"
        expression = card["licence"]["expression"]
        assert meta["lab"]["licence_expression"] == expression
        assert {"Apache-2.0", "CC-BY-4.0"} <= set(expression.split(" AND "))
        assert (folder / "LICENSE").read_text().startswith("Licence of the weights")
        assert "base_model" not in meta  # built from config: there is no Hub base to point at
        lab = meta["lab"]
        assert lab["snapshot"] == demo.snapshot_id == card["snapshot"]["snapshot_id"]
        assert lab["data_card_sha256"] == _sha256(folder / "data_card.json")
        assert lab["checkpoint_id"] == card["identity"]["checkpoint_id"] and lab["step"] == step


# =========================================================================== 3. exposure


@pytest.mark.parametrize("step", [SHARED_SAVE_EVERY, SHARED_STEPS])
def test_exposure_equals_independent_recount(shared_run, demo, step):
    card = _card(shared_run.checkpoints[step])
    want = recount(shared_run.cfg, demo.snapshot, shared_run.run_dir / "base", step)
    assert_same_seconds(card_seconds(shared_run.checkpoints[step]), want["seconds"])
    assert card["exposure"]["samples"] == sum(want["samples"].values())
    assert card["exposure"]["tokens"] == sum(want["tokens"].values())
    assert abs(card["exposure"]["total_seconds"] - sum(want["seconds"].values())) < 1e-6

    # the comparison has teeth: another seed's order gives other per-recording seconds
    other = recount(shared_run.cfg, demo.snapshot, shared_run.run_dir / "base", step, seed=1)
    assert other["seconds"] != want["seconds"]


def test_intermediate_card_counts_only_its_own_steps(shared_run):
    mid, last = (card_seconds(shared_run.checkpoints[s]) for s in (SHARED_SAVE_EVERY, SHARED_STEPS))
    assert mid != last and sum(mid.values()) < sum(last.values())
    assert all(v <= last[k] for k, v in mid.items())


def test_sources_are_cleared_snapshot_items(shared_run, demo):
    snapshot = load_snapshot(demo.snapshot)
    excluded = dict(zip(snapshot.excluded["recording_id"].to_pylist(), snapshot.excluded["reason"].to_pylist()))
    assert "revoked" in excluded.values() and "opted_out" in excluded.values()  # the check below means something
    for folder in shared_run.checkpoints.values():
        card = _card(folder)
        assert card["snapshot"]["merkle_root"] == snapshot.merkle_root
        for src in pq.read_table(folder / "sources.parquet").to_pylist():
            rid = src["recording_id"]
            assert rid not in excluded, f"{rid} was excluded ({excluded.get(rid)}) but the model saw it"
            item = snapshot.item(rid)
            assert src["audio_sha256"] == item["audio_sha256"] and src["isrc"] == item["isrc"]
            assert src["title"] == item["title"] and set(src["grant_ids"]) <= set(item["grant_ids"])
            assert src["seconds_seen"] > 0
        assert sum(card["exclusions"].values()) == snapshot.excluded.num_rows


# =========================================================================== 4. signature


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _inflate_card(path: Path) -> None:
    card = json.loads(path.read_text())
    card["exposure"]["tokens"] += 1  # still a valid card, just not the signed one
    path.write_text(json.dumps(card, indent=2))


TAMPER = {
    "weights byte": (lambda f: _flip_middle_byte(f / "model.safetensors"), "modified"),
    "data card edit": (lambda f: _inflate_card(f / "data_card.json"), "modified"),
    "added file": (lambda f: (f / "notes.txt").write_text("hello"), "extra"),
    "added empty file": (lambda f: (f / "training_state" / "empty.pt").touch(), "extra"),
    "removed file": (lambda f: (f / "generation_config.json").unlink(), "missing"),
    "removed nested file": (lambda f: (f / "training_state" / "optimizer.pt").unlink(), "missing"),
}


def test_signature_verifies(shared_run, demo, tmp_path):
    for folder in shared_run.checkpoints.values():
        result = verify_folder(folder, demo.public_key)
        assert result.ok, result.reason
    copy = shutil.copytree(shared_run.last, tmp_path / "copy")
    assert verify_folder(copy, demo.public_key).ok
    other = ensure_keypair(tmp_path / "other-keys")
    assert not verify_folder(copy, other.public_path).ok


@pytest.mark.parametrize("change", list(TAMPER))
def test_signature_breaks_on_tampering(shared_run, demo, tmp_path, change):
    copy = shutil.copytree(shared_run.last, tmp_path / "copy")
    tamper, kind = TAMPER[change]
    tamper(copy)
    result = verify_folder(copy, demo.public_key)
    assert not result.ok and result.kind == kind, result
    assert verify_folder(shared_run.last, demo.public_key).ok  # the original is untouched


# =========================================================================== 5. refusals


def test_refuses_stale_snapshot(tmp_path):
    from lab.rights.ledger import Ledger
    from lab.rights.records import RevokeEvent
    from lab.util.timestamps import utcnow

    own = make_demo(tmp_path / "demo")  # its own ledger: this test revokes a grant
    snapshot = load_snapshot(own.snapshot)
    rows = snapshot.items.select(["recording_id", "grant_ids"]).to_pylist()
    grant = rows[0]["grant_ids"][0]
    covered = sorted(i["recording_id"] for i in rows if grant in i["grant_ids"])
    Ledger(own.ledger_url).append(
        RevokeEvent(grant_id=grant, reason="artist withdrew consent", effective_at=utcnow(), issuer="tests")
    )
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingRefused) as exc:
        train(own.train_cfg(run_dir, "trainer.max_steps=2"))
    msg = str(exc.value)
    assert "stale" in msg and "revoked" in msg
    for rid in covered:
        assert f"{rid}: revoked" in msg
    untouched = [i["recording_id"] for i in rows if grant not in i["grant_ids"]]
    assert untouched and not any(f"{rid}:" in msg for rid in untouched)
    _assert_nothing_trained(run_dir)
    assert not (run_dir / "base").exists(), "refused before building the model"


def test_refuses_snapshot_of_another_policy(demo, tmp_path):
    research = demo.clear("research")
    run_dir = tmp_path / "run"
    # by id (resolved under paths.snapshots), as a user would type it
    with pytest.raises(TrainingRefused, match=r"cleared under policy 'research'.*this run's policy is 'commercial'"):
        train(demo.train_cfg(run_dir, "trainer.max_steps=2", snapshot=research.name, policy="commercial"))
    _assert_nothing_trained(run_dir)
    assert not (run_dir / "base").exists()


def _local(base: Path, *declared: str) -> list[str]:
    return ["model=local_pretrained", f"model.path={base}", *declared]


DECLARED = [
    "model.id=acme/musicgen-tiny-base",
    "model.licence=CC-BY-4.0",
    "model.declared_training_data='synthetic sine studies, no third-party audio'",
]


def test_refuses_undeclared_local_base(shared_run, demo, tmp_path):
    base = shared_run.run_dir / "base"
    assert not (base / "data_card.json").exists()
    run_dir = tmp_path / "undeclared"
    with pytest.raises(TrainingRefused, match="not declared") as exc:
        train(demo.train_cfg(run_dir, *_local(base), "trainer.max_steps=2"))
    for key in ("model.id", "model.licence", "model.declared_training_data"):
        assert key in str(exc.value)
    _assert_nothing_trained(run_dir)

    run_dir = tmp_path / "wrong-digest"
    with pytest.raises(TrainingRefused, match="config declares"):
        train(demo.train_cfg(run_dir, *_local(base, *DECLARED, "model.digest=" + "0" * 64), "trainer.max_steps=2"))
    _assert_nothing_trained(run_dir)


def test_declared_local_base_trains(shared_run, demo, tmp_path):
    base = shared_run.run_dir / "base"
    run_dir = tmp_path / "declared"
    summary = train(demo.train_cfg(run_dir, *_local(base, *DECLARED), "trainer.max_steps=2"))
    folder = Path(summary["last_checkpoint"])
    assert [p.name for p in ck.list_complete(run_dir)] == ["step-000002"] and folder.parent.parent == run_dir
    card = load_card(folder).card
    lineage = card.lineage
    assert lineage.base_model.kind == "local_pretrained" and lineage.relation == "finetune"
    assert lineage.base_model.id == "acme/musicgen-tiny-base" and lineage.base_model.licence == "CC-BY-4.0"
    assert "synthetic sine studies" in lineage.base_model.declared_training_data
    # the very weights the shared run started from (its card records the same digest)
    assert lineage.base_model.digest == _card(shared_run.last)["lineage"]["base_model"]["digest"]
    assert lineage.parent_checkpoint is None and not lineage.inherited_sources
    meta = _front_matter(folder / "README.md")
    assert meta["base_model"] == "acme/musicgen-tiny-base"
    # the declared base's CC-BY-4.0 AND the demo sources' licences (a catalogue deal among them)
    assert "CC-BY-4.0" in card.licence.expression.split(" AND ") and card.licence.base == "CC-BY-4.0"
    assert meta["license"] == ("cc-by-4.0" if card.licence.expression == "CC-BY-4.0" else "other")
    assert meta["lab"]["data_card_sha256"] == _sha256(folder / "data_card.json")
    assert verify_folder(folder, demo.public_key).ok
    assert not (run_dir / "base").exists(), "a local base is used in place, not rebuilt"


def test_lab_checkpoint_as_base_inherits_lineage(shared_run, demo, tmp_path):
    parent = shared_run.last
    parent_card = _card(parent)
    run_dir = tmp_path / "child"
    summary = train(demo.train_cfg(run_dir, *_local(parent), "trainer.max_steps=2"))
    folder = Path(summary["last_checkpoint"])
    card = load_card(folder).card
    lineage = card.lineage
    assert lineage.base_model.kind == "lab_checkpoint" and lineage.relation == "finetune"
    assert lineage.parent_checkpoint.checkpoint_id == parent_card["identity"]["checkpoint_id"]
    assert lineage.parent_checkpoint.data_card_sha256 == _sha256(parent / "data_card.json")
    assert lineage.base_model.card.sha256 == _sha256(parent / "data_card.json")
    parent_id = parent_card["identity"]["checkpoint_id"]
    assert lineage.inherited_sources.seen_by == [parent_id]
    assert card_seconds(folder, seen_by=parent_id) == card_seconds(parent)  # the parent's rows, carried over
    assert card.exposure.samples == 2 * int(demo.train_cfg(run_dir).trainer.batch_size)
    assert verify_folder(folder, demo.public_key).ok


def test_refuses_tampered_lab_checkpoint_base(shared_run, demo, tmp_path):
    parent = shutil.copytree(shared_run.last, tmp_path / "parent")
    _inflate_card(parent / "data_card.json")
    run_dir = tmp_path / "child"
    with pytest.raises(TrainingRefused, match="does not verify") as exc:
        train(demo.train_cfg(run_dir, *_local(parent), "trainer.max_steps=2"))
    assert "data_card.json" in str(exc.value)
    _assert_nothing_trained(run_dir)


# =========================================================================== 6. resume


def test_resume_reproduces_uninterrupted_run(demo, tmp_path):
    from safetensors.torch import load_file

    common = [
        "trainer.grad_accum=2",
        "trainer.batch_size=5",
        "trainer.log_every=3",
        "trainer.schedule=constant",
        "trainer.warmup_steps=3",
        "trainer.save_every=6",
    ]  # schedule independent of max_steps
    x, y = tmp_path / "A", tmp_path / "B"
    a = train(demo.train_cfg(x, *common, "trainer.max_steps=12"))
    b1 = train(demo.train_cfg(y, *common, "trainer.max_steps=6"))
    assert b1["steps"] == 6 and [p.name for p in ck.list_complete(y)] == ["step-000006"]
    b2 = train(demo.train_cfg(y, *common, "trainer.max_steps=12"))
    assert b2["start_step"] == 6 and b2["steps"] == 12

    fa, fb = Path(a["last_checkpoint"]), Path(b2["last_checkpoint"])
    assert fa.name == fb.name == "step-000012"
    la = json.loads((fa / "training_state" / "trainer.json").read_text())["losses"]
    lb = json.loads((fb / "training_state" / "trainer.json").read_text())["losses"]
    assert len(la) == len(lb) == 12 and lb[6:] == la[6:] and lb == la

    def metrics(run: Path) -> dict[int, float]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return {r["step"]: r["loss"] for r in rows}

    ma, mb = metrics(x), metrics(y)
    assert [s for s in ma if s > 6] == [9, 12] and all(mb[s] == ma[s] for s in (9, 12))

    wa, wb = load_file(str(fa / "model.safetensors")), load_file(str(fb / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    ca, cb = _card(fa), _card(fb)
    assert ca["lineage"]["base_model"]["digest"] == cb["lineage"]["base_model"]["digest"]
    assert_same_seconds(card_seconds(fb), card_seconds(fa), tol=0.0)
    assert cb["exposure"] == ca["exposure"]
    cfg = demo.train_cfg(y, *common, "trainer.max_steps=12")
    assert_same_seconds(card_seconds(fb), recount(cfg, demo.snapshot, y / "base", 12)["seconds"])
    mid = y / "checkpoints" / "step-000006"
    assert_same_seconds(card_seconds(mid), recount(cfg, demo.snapshot, y / "base", 6)["seconds"])


# =========================================================================== 7. DDP


@pytest.mark.slow
def test_ddp_two_ranks_one_checkpoint(demo, tmp_path):
    run_dir = tmp_path / "ddp"
    runs_before = sorted((demo.experiments / "runs").glob("*")) if (demo.experiments / "runs").exists() else []
    steps, batch = 4, 4
    cmd = [
        python(),
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "lab",
        "train",
        "experiment=demo",
        "policy=commercial",
        f"data.snapshot={demo.snapshot}",
        "logger=none",
        "trainer.progress=false",
        f"trainer.max_steps={steps}",
        f"trainer.save_every={steps}",
        f"trainer.batch_size={batch}",
        f"run_dir={run_dir}",
    ]
    proc = subprocess.run(cmd, env=demo.env(), cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    assert [p.name for p in ck.checkpoints_dir(run_dir).iterdir()] == [f"step-{steps:06d}"]
    folder = ck.latest_complete(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == steps and summary["last_checkpoint"] == str(folder)
    runs_after = sorted((demo.experiments / "runs").glob("*")) if (demo.experiments / "runs").exists() else []
    assert runs_after == runs_before, "a rank created its own run folder"

    card = load_card(folder).card
    seg = 2.0  # data.segment_seconds of the demo
    assert card.exposure.total_seconds == pytest.approx(2 * batch * steps * seg)
    assert card.exposure.samples == 2 * batch * steps
    cfg = demo.train_cfg(run_dir, f"trainer.batch_size={batch}")
    want = recount(cfg, demo.snapshot, run_dir / "base", steps, world_size=2)
    assert_same_seconds(card_seconds(folder), want["seconds"])
    state = ck.load_training_state(folder)
    assert state.rng["world_size"] == 2 and len(state.extras["ranks"]) == 2
    assert verify_folder(folder, demo.public_key).ok


def test_lora_adapter_run_ships_merged_stock_weights(shared_run, demo, tmp_path):
    """model.lora trains adapters on the decoder; the checkpoint holds merged weights that stock
    transformers loads, and the card says the relation is an adapter."""
    from transformers import MusicgenForConditionalGeneration

    base = shared_run.run_dir / "base"
    run_dir = tmp_path / "lora"
    summary = train(
        demo.train_cfg(run_dir, *_local(base, *DECLARED), "trainer.max_steps=3", "+model.lora={r:4,alpha:8}")
    )
    folder = Path(summary["last_checkpoint"])
    card = load_card(folder).card
    assert card.lineage.relation == "adapter"
    model = MusicgenForConditionalGeneration.from_pretrained(folder)
    assert not any("lora" in k for k in model.state_dict()), "adapters must be merged before saving"
    base_model = MusicgenForConditionalGeneration.from_pretrained(base)
    changed = [
        k for k, v in model.decoder.state_dict().items() if not torch.equal(v, base_model.decoder.state_dict()[k])
    ]
    assert changed and all("proj" in k for k in changed), changed[:5]
    assert verify_folder(folder, demo.public_key).ok
