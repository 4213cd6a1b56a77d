"""`lab train`: fine-tune MusicGen on a snapshot that still clears, writing signed, carded checkpoints.

Order matters and is fail-closed: policy → snapshot (re-checked against the ledger now) →
base model with declared lineage → code cache → training. Any refusal happens before a
single gradient step.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..cards import build_card, card_sha256, load_card, write_card_files
from ..cards.schema import BaseCardRef, BaseModelRef, Lineage, ParentCheckpoint
from ..cards.signing import ensure_keypair, require_valid, sign_folder
from ..catalog.store import load_catalog_table
from ..data.codes import build_code_cache, load_item_audio
from ..data.exposure import ExposureMeter
from ..data.loader import MusicgenCollator, iterate_batches, model_inputs
from ..data.snapshot import Snapshot, load_snapshot
from ..models.musicgen import (
    TinySpec,
    apply_lora,
    build_tiny,
    freeze_encoders,
    load_local_pretrained,
    merge_lora,
    save_model,
)
from ..models.digest import model_digest
from ..rights.clearance import recheck
from ..rights.ledger import Ledger
from ..train.distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from ..train.logging import WandbHooks, finish, init_wandb, log_artifact, plot_losses
from ..train.trainer import Trainer, TrainerConfig, TrainerHooks
from ..util.atomic import write_bytes
from ..util.canonical import canonical_json
from .clear import policy_from_cfg, run_clearance

log = logging.getLogger("lab.train")


class TrainingRefused(RuntimeError):
    """Training will not start: the data or the base model cannot be vouched for."""


# ----------------------------------------------------------------------------- snapshot


def resolve_snapshot(cfg: DictConfig, ledger: Ledger, policy, dist: DistInfo) -> Snapshot:
    """The run's snapshot: the one named in config, or a fresh clearance now (rank 0)."""
    ref = cfg.data.get("snapshot")
    if ref:
        path = Path(str(ref))
        if not path.exists():
            path = Path(cfg.paths.snapshots) / str(ref)
    else:
        path = None
        if dist.is_main:
            path = run_clearance(catalog=cfg.data.catalog, ledger=ledger, policy=policy,
                                 snapshots_dir=Path(cfg.paths.snapshots), home=Path(cfg.paths.home)).snapshot_path
        path = Path(broadcast_object(str(path) if path else None))
    return load_snapshot(path)


def check_snapshot(snapshot: Snapshot, policy, ledger: Ledger, home: Path) -> None:
    """Refuse a snapshot cleared under another policy, or one whose consent no longer holds."""
    if snapshot.policy.get("digest") != policy.digest():
        raise TrainingRefused(
            f"snapshot {snapshot.snapshot_id} was cleared under policy '{snapshot.policy.get('name')}' "
            f"({snapshot.policy.get('digest', '')[:12]}), this run's policy is '{policy.name}' "
            f"({policy.digest()[:12]}): clear the catalogue under this policy first (`lab clear policy=...`)")
    if not snapshot.items:
        raise TrainingRefused(f"snapshot {snapshot.snapshot_id} clears no recordings")
    table = load_catalog_table(snapshot.catalog["name"], home)
    problems = recheck(table, ledger.frame(), policy, {i.recording_id: i.audio_sha256 for i in snapshot.items})
    if problems:
        lines = "\n".join(f"  {rid}: {reason} ({detail})" for rid, (reason, detail) in sorted(problems.items()))
        raise TrainingRefused(
            f"snapshot {snapshot.snapshot_id} is stale: {len(problems)} of its recordings no longer clear "
            f"under '{policy.name}' now:\n{lines}\nre-run `lab clear` to get a snapshot that does")


# ----------------------------------------------------------------------------- base model


def _require_declared(mcfg: DictConfig, path: Path) -> None:
    missing = [k for k in ("id", "licence", "declared_training_data") if not mcfg.get(k)]
    if missing:
        raise TrainingRefused(
            f"base model at {path} carries no lab data card and is not declared: set "
            + ", ".join(f"model.{k}" for k in missing)
            + " (what it is, its licence, and what its publisher says it was trained on)")


def _lab_checkpoint_lineage(path: Path, cfg: DictConfig, model) -> tuple[dict, str]:
    """Lineage of a base that is itself a lab checkpoint: verify it, then inherit its sources."""
    pub = Path(cfg.signing.public_key) if cfg.signing.get("public_key") else ensure_keypair(
        Path(cfg.signing.key_dir)).public_path
    try:
        require_valid(path, pub)
    except Exception as exc:  # noqa: BLE001 - any failure means we cannot trust the parent's card
        raise TrainingRefused(f"base checkpoint {path} does not verify: {exc}") from None
    bundle = load_card(path)
    parent = bundle.card
    parent_sha = card_sha256(path)
    licences = sorted(set(bundle.sources["licence"].to_pylist()))
    base = BaseModelRef(
        id=str(cfg.model.get("id") or parent.identity.checkpoint_id), digest=model_digest(model),
        licence=str(cfg.model.get("licence") or (" AND ".join(licences) if licences else "none")),
        declared_training_data=f"lab checkpoint {parent.identity.checkpoint_id} (snapshot {parent.snapshot.snapshot_id})",
        card=BaseCardRef(path=str(path / "data_card.json"), sha256=parent_sha,
                         summary=f"{parent.sources.rows} sources, {parent.sources.total_seconds:.1f} s seen"),
        kind="lab_checkpoint")
    lineage = {
        "base_model": base,
        "parent_checkpoint": ParentCheckpoint(checkpoint_id=parent.identity.checkpoint_id,
                                              data_card_sha256=parent_sha,
                                              path=str(path.resolve())),
        "relation": "finetune",
        "inherited": bundle.sources,  # every row the parent carries (its own and its ancestors'), as a table
    }
    return lineage, base.licence


def build_model(cfg: DictConfig, snapshot: Snapshot, run_dir: Path, dist: DistInfo):
    """(model, tokenizer, lineage dict, weights licence). The tiny base is built once by rank 0
    and saved under the run, so every rank and every resume uses the very same weights."""
    mcfg = cfg.model
    if mcfg.kind == "tiny_from_config":
        spec = TinySpec(**OmegaConf.to_container(mcfg.spec, resolve=True))
        base_dir = run_dir / "base"
        if dist.is_main and not (base_dir / "config.json").is_file():
            root = Path(snapshot.catalog["root"])
            waves = [load_item_audio(i, root, spec.sampling_rate) for i in snapshot.items]
            model, tok = build_tiny(spec, [i.description for i in snapshot.items], waves, seed=int(cfg.seed),
                                    sample_rate=spec.sampling_rate)
            save_model(model, tok, base_dir)
        barrier()
        model, tok = load_local_pretrained(base_dir)
        base = BaseModelRef(id=str(mcfg.id), digest=model_digest(model), licence=str(mcfg.licence),
                            declared_training_data=str(mcfg.declared_training_data), kind="tiny_from_config",
                            card=BaseCardRef(path=str(base_dir), summary="built from config by lab"))
        lineage, licence = {"base_model": base, "relation": "pretrain"}, str(mcfg.licence)
    elif mcfg.kind == "local_pretrained":
        path = Path(str(mcfg.path))
        model, tok = load_local_pretrained(path)
        if (path / "data_card.json").is_file():
            lineage, licence = _lab_checkpoint_lineage(path, cfg, model)
        else:
            _require_declared(mcfg, path)
            digest = model_digest(model)
            if mcfg.get("digest") and mcfg.digest != digest:
                raise TrainingRefused(f"base model at {path} has digest {digest}, config declares {mcfg.digest}")
            readme = path / "README.md"
            base = BaseModelRef(
                id=str(mcfg.id), digest=digest, licence=str(mcfg.licence),
                declared_training_data=str(mcfg.declared_training_data), kind="local_pretrained",
                card=BaseCardRef(path=str(readme) if readme.is_file() else None,
                                 sha256=card_sha256(readme) if readme.is_file() else None))
            lineage, licence = {"base_model": base, "relation": "finetune"}, str(mcfg.licence)
    else:
        raise TrainingRefused(f"unknown model.kind {mcfg.kind!r} (tiny_from_config | local_pretrained)")
    freeze_encoders(model, text=bool(mcfg.freeze_text_encoder), audio=bool(mcfg.freeze_audio_encoder))
    if mcfg.get("lora"):
        apply_lora(model, **OmegaConf.to_container(mcfg.lora, resolve=True))
        lineage["relation"] = "adapter"
    return model, tok, lineage, licence


# ----------------------------------------------------------------------------- checkpoint hook


class ProvenanceHook(TrainerHooks):
    """Meters exposure and writes each checkpoint as the contract in DESIGN.md says."""

    state_key = "provenance"

    def __init__(self, *, tokenizer, snapshot: Snapshot, lineage: dict, licence: str, cfg: dict,
                 run_name: str, private_key: Path, lora: bool):
        self.meter = ExposureMeter()
        self.tokenizer, self.snapshot, self.lineage, self.licence = tokenizer, snapshot, lineage, licence
        self.cfg, self.run_name, self.private_key, self.lora = cfg, run_name, private_key, lora

    def on_batch(self, step: int, batch: Any) -> None:
        self.meter.add(batch["recording_ids"], batch["seconds"], batch.get("tokens"))

    def state_dict(self) -> dict[str, Any]:
        return self.meter.state_dict()

    def load_state_dict(self, state) -> None:
        self.meter.load_state_dict(state)

    def write_checkpoint_extras(self, step: int, staging_dir: Path) -> None:
        staging_dir = Path(staging_dir)
        total = ExposureMeter.combine(self.trainer.gathered_state(self))
        model = self.trainer.unwrapped_model
        if self.lora:  # ship merged weights: the folder must load with stock transformers
            model = copy.deepcopy(model)
            merge_lora(model)
        save_model(model, self.tokenizer, staging_dir)
        lineage = {k: v for k, v in self.lineage.items() if k != "inherited"}
        bundle = build_card(
            snapshot=self.snapshot, seconds_seen=total.totals(), samples=total.total_samples(),
            tokens=total.total_tokens(), lineage=Lineage.model_validate(lineage),
            inherited=self.lineage.get("inherited"), checkpoint_id=f"{self.run_name}-step-{step:06d}", step=step,
            config=self.cfg,
            seed=int(self.cfg.get("seed", 0)))
        base = bundle.card.lineage.base_model
        write_card_files(bundle, staging_dir, weights_licence=self.licence,
                         base_model_hub_id=base.id if base.kind == "local_pretrained" else None)
        write_bytes(staging_dir / "config.lab.json", canonical_json(self.cfg))

    def seal_checkpoint(self, step: int, staging_dir: Path) -> None:
        sign_folder(Path(staging_dir), self.private_key)  # after COMPLETE: the signature covers it


# ----------------------------------------------------------------------------- main


def _run_dir(cfg: DictConfig, dist: DistInfo) -> Path:
    """Hydra's output dir when launched by Hydra (per job in a sweep), else cfg.run_dir; rank 0 decides."""
    path = None
    if dist.is_main:
        try:
            from hydra.core.hydra_config import HydraConfig

            path = HydraConfig.get().runtime.output_dir
        except (ValueError, ImportError):
            path = str(cfg.run_dir)
    return Path(broadcast_object(path))


def _quiet_libraries() -> None:
    """transformers warns that MusicGen's pad id (= codebook size) is outside the vocabulary,
    which is by design, and draws a bar per shard write; keep the run log about the run."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def main(cfg: DictConfig) -> dict[str, Any]:
    _quiet_libraries()
    dist = init_distributed()
    try:
        return _main(cfg, dist)
    finally:
        cleanup()


def _main(cfg: DictConfig, dist: DistInfo) -> dict[str, Any]:
    run_dir = _run_dir(cfg, dist)
    run_dir.mkdir(parents=True, exist_ok=True)
    policy = policy_from_cfg(cfg.policy)
    ledger = Ledger(cfg.ledger_url)
    home = Path(cfg.paths.home)
    snapshot = resolve_snapshot(cfg, ledger, policy, dist)
    check_snapshot(snapshot, policy, ledger, home)

    model, tok, lineage, licence = build_model(cfg, snapshot, run_dir, dist)
    codec = model.audio_encoder
    cache_root = home / "cache" / "codes"
    # Rank 0 encodes (or finds) the cache; the others open it once it exists.
    segment = float(cfg.data.segment_seconds)
    dataset = build_code_cache(snapshot, codec, cache_root, segment_seconds=segment) if dist.is_main else None
    barrier()
    if dataset is None:
        dataset = build_code_cache(snapshot, codec, cache_root, segment_seconds=segment)

    tcfg = cfg.trainer
    trainer_cfg = TrainerConfig.from_dict({
        k: v for k, v in OmegaConf.to_container(tcfg, resolve=True).items() if k not in ("batch_size", "resume")
    } | {"seed": int(cfg.seed)})
    collator = MusicgenCollator(tok, num_codebooks=model.decoder.config.num_codebooks,
                                pad_token_id=model.decoder.config.pad_token_id,
                                max_text_len=int(cfg.data.max_text_len),
                                decoder_start_token_id=model.decoder.config.decoder_start_token_id)

    def batches(start_step: int):
        it = iterate_batches(dataset, collator, int(tcfg.batch_size), seed=int(cfg.seed), rank=dist.rank,
                             world_size=dist.world_size, start_step=start_step * trainer_cfg.grad_accum)
        return (b for _, _, b in it)

    def loss_fn(m, batch):
        return m(**model_inputs(batch)).loss

    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    keys = ensure_keypair(Path(cfg.signing.key_dir))
    private_key = Path(cfg.signing.private_key) if cfg.signing.get("private_key") else keys.private_path
    run_name = run_dir.name
    hook = ProvenanceHook(tokenizer=tok, snapshot=snapshot, lineage=lineage, licence=licence, cfg=resolved,
                          run_name=run_name, private_key=private_key, lora=bool(cfg.model.get("lora")))
    wandb_run = None
    hooks: list[Any] = [hook]
    if dist.is_main:
        wandb_run = init_wandb(resolved, run_dir, mode=str(cfg.logger.mode), project=str(cfg.logger.project),
                               name=run_name, tags=list(cfg.logger.tags))
        if wandb_run is not None:
            hooks.append(WandbHooks(wandb_run))
    trainer = Trainer(model, loss_fn, trainer_cfg, out_dir=run_dir, dist=dist, hooks=hooks)
    try:
        result = trainer.fit(batches, resume=bool(tcfg.resume))
        summary: dict[str, Any] = {"run_dir": str(run_dir), "snapshot_id": snapshot.snapshot_id,
                                   "steps": result.step, "start_step": result.start_step,
                                   "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
                                   "final_loss": result.losses[-1] if result.losses else None,
                                   "steps_per_s": result.steps_per_s}
        if dist.is_main:
            plot_losses(result.losses, run_dir / "loss.png")
            if result.last_checkpoint:
                log_artifact(Path(result.last_checkpoint) / "data_card.json", name=f"data_card-{run_name}",
                             type="data_card", run=wandb_run)
            write_bytes(run_dir / "summary.json", canonical_json(summary))
        return summary
    finally:
        if dist.is_main:
            finish(wandb_run)
