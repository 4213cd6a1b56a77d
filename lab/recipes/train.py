"""`lab train`: fine-tune MusicGen on a snapshot that still clears, writing signed, carded checkpoints.

One recipe class, in the order the work happens (torchtune's shape): `setup_data` (the
snapshot, re-checked against the ledger now), `setup_model` (the base, with declared
lineage), `setup_codes` (the EnCodec code cache and collator), `setup_optimizer`,
`setup_trainer`, `train`. Every refusal
happens before a single gradient step. Tests and benchmarks call this class; the CLI only
composes the config.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..cards import build_card, write_card_files
from ..cards.signing import ensure_keypair, sign_folder
from ..catalog.store import load_catalog_table
from ..checkpoint import latest_complete
from ..checkpoint.folder import checkpoint_name
from ..checkpoint.lineage import ParentRefused
from ..data.codes import build_code_cache
from ..data.exposure import ExposureMeter
from ..data.loader import Admission, MusicgenCollator, iterate_batches, model_inputs
from ..models.musicgen import merge_lora, save_model
from ..registry.publish import register_published
from ..rights.consent import LedgerBroken, check_sources
from ..rights.heads import open_ledger
from ..rights.ledger import Ledger
from ..rights.policy import Policy
from ..snapshot import Snapshot, load_snapshot, receipts_dir
from ..train.consent_watch import ConsentConfig, ConsentStop, ConsentWatch
from ..train.distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from ..train.logging import WandbHooks, finish, init_wandb, log_artifact, plot_losses
from ..train.trainer import Trainer, TrainerConfig, TrainerHooks
from ..util.atomic import write_bytes
from ..util.canonical import canonical_json
from ..util.secrets import redact_config
from ..util.timestamps import utcnow
from .base_model import Base, BaseRefused
from .clear import policy_from_cfg, run_clearance

log = logging.getLogger("lab.train")


class TrainingRefused(RuntimeError):
    """Training will not start: the data or the base model cannot be vouched for."""


@dataclass
class TrainSummary:
    """What `lab train` did (printed at the end, `json=true` for machines)."""

    run_dir: str
    snapshot_id: str
    steps: int
    start_step: int
    last_checkpoint: str | None
    data_card: str | None
    final_loss: float | None
    steps_per_s: float | None
    audit: str | None  # the command that audits the last checkpoint

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- consent at start


def stale_sources(snapshot: Snapshot, catalog: pa.Table, ledger: Ledger, policy: Policy) -> list[tuple[str, str, str]]:
    """(recording_id, reason, detail) of snapshot items that no longer clear now: audio changed or
    gone from the catalogue since clearance, or consent withdrawn, expired or narrowed (lab.rights.consent)."""
    items = snapshot.items.select(["recording_id", "isrc", "audio_sha256"])
    now = catalog.select(["recording_id", "audio_sha256"]).rename_columns(["recording_id", "catalogue_sha256"])
    joined = items.join(now, "recording_id", join_type="left outer")
    problems = []
    gone = joined.filter(pc.is_null(joined["catalogue_sha256"]))
    problems += [
        (rid, "not_in_catalogue", "the recording is no longer in the catalogue")
        for rid in gone["recording_id"].to_pylist()
    ]
    changed = joined.filter(
        pc.and_(
            pc.is_valid(joined["catalogue_sha256"]), pc.not_equal(joined["catalogue_sha256"], joined["audio_sha256"])
        )
    )
    problems += [
        (rid, "audio_changed", f"catalogue audio sha256 is now {new}, snapshot has {old}")
        for rid, new, old in zip(
            changed["recording_id"].to_pylist(),
            changed["catalogue_sha256"].to_pylist(),
            changed["audio_sha256"].to_pylist(),
        )
    ]
    try:  # the chain and its signed heads, re-hashed since the last verified head
        answer = check_sources(items, ledger, policy, catalog=snapshot.catalog["name"], incremental=True)
    except LedgerBroken as exc:
        raise TrainingRefused(str(exc)) from None
    return sorted(problems + answer.problems())


def excluded_in(card: dict[str, Any]) -> set[str]:
    """Recordings a checkpoint's run took out of its sampler (its data card's consent events)."""
    events = (card.get("consent") or {}).get("events_applied") or []
    return {r for e in events if e.get("action") in ("exclude", "stop") for r in e.get("recordings", [])}


# ----------------------------------------------------------------------------- checkpoint hook


class ProvenanceHook(TrainerHooks):
    """Meters exposure and writes each checkpoint's provenance: card, sources, model card, signature."""

    state_key = "provenance"

    def __init__(self, *, recipe: TrainRecipe):
        self.meter = ExposureMeter()
        self.recipe = recipe
        self.sealed: list[Path] = []  # checkpoint folders to register once published (lab.registry)

    def on_batch(self, step: int, batch: Any) -> None:
        self.meter.add(batch["recording_ids"], batch["seconds"], batch.get("tokens"))

    def state_dict(self) -> dict[str, Any]:
        return self.meter.state_dict()

    def load_state_dict(self, state) -> None:
        self.meter.load_state_dict(state)

    def write_checkpoint_extras(self, step: int, staging_dir: Path) -> None:
        r = self.recipe
        total = ExposureMeter.combine(self.trainer.gathered_state(self))
        model = self.trainer.unwrapped_model
        if r.base.lineage.relation == "adapter":  # ship merged weights: the folder must load with stock transformers
            model = copy.deepcopy(model)
            merge_lora(model)
        save_model(model, r.base.tokenizer, staging_dir)
        bundle = build_card(
            snapshot=r.snapshot,
            seconds_seen=total.totals(),
            samples=total.total_samples(),
            tokens=total.total_tokens(),
            lineage=r.base.lineage,
            inherited=r.base.inherited,
            checkpoint_id=f"{r.run_dir.name}-step-{step:06d}",
            step=step,
            config=r.resolved,
            seed=int(r.cfg.seed),
            consent=r.watch.card_section(),
            created_at=r.clock(),
        )
        write_card_files(bundle, staging_dir, base_model_hub_id=r.base.hub_id)
        write_bytes(staging_dir / "config.lab.json", canonical_json(r.resolved))

    def seal_checkpoint(self, step: int, staging_dir: Path) -> None:
        sign_folder(Path(staging_dir), self.recipe.private_key)  # after COMPLETE: the signature covers it
        self.recipe.register_published()  # the earlier ones are published by now
        self.sealed.append(Path(staging_dir).parent / checkpoint_name(step))


# ----------------------------------------------------------------------------- the recipe


def quiet_libraries() -> None:
    """transformers warns that MusicGen's pad id (= codebook size) is outside the vocabulary,
    which is by design, and draws a bar per shard write; keep the run log about the run."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


class TrainRecipe:
    """One `lab train` run. `run()` does everything; the `setup_*` steps can be called one by one
    (tests, benchmarks) in the order given."""

    def __init__(self, cfg: DictConfig, dist: DistInfo | None = None):
        self.cfg = cfg
        self.dist = dist or init_distributed()
        self.run_dir = self._run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.home = Path(cfg.paths.home)
        self.policy = policy_from_cfg(cfg.policy)
        self.ledger = open_ledger(cfg.ledger_url, home=self.home, key_dir=Path(cfg.signing.key_dir))
        keys = ensure_keypair(Path(cfg.signing.key_dir))
        self.private_key = Path(cfg.signing.private_key) if cfg.signing.get("private_key") else keys.private_path
        self.public_key = Path(cfg.signing.public_key) if cfg.signing.get("public_key") else keys.public_path
        # what leaves the process (config.lab.json, the card's config digest, wandb): URL passwords hidden
        self.resolved = redact_config(OmegaConf.to_container(cfg, resolve=True))
        self.resolved.pop("hydra", None)
        self.consent_cfg = ConsentConfig.from_dict(self.resolved.get("consent"))
        self.clock = utcnow  # consent deadlines and card times (tests inject a clock)

    def _run_dir(self) -> Path:
        """Hydra's output dir when launched by Hydra (one per sweep job), else cfg.run_dir; rank 0 decides."""
        path = None
        if self.dist.is_main:
            try:
                from hydra.core.hydra_config import HydraConfig

                path = HydraConfig.get().runtime.output_dir
            except (ValueError, ImportError):
                path = str(self.cfg.run_dir)
        return Path(broadcast_object(path))

    def _resuming(self) -> tuple[Path | None, dict[str, Any]]:
        """The checkpoint a resume continues from (found as Trainer.fit finds it) and its data card."""
        found = None
        if self.dist.is_main and bool(self.cfg.trainer.resume):
            found = latest_complete(self.run_dir)
        found = broadcast_object(str(found) if found else None)
        if not found:
            return None, {}
        return Path(found), json.loads((Path(found) / "data_card.json").read_text(encoding="utf-8"))

    def setup_data(self) -> Snapshot:
        """The run's snapshot (named in config, or a fresh clearance by rank 0), refused if it was
        cleared under another policy, clears nothing, or no longer clears now. A resume continues on
        the snapshot its checkpoint trained on, minus the sources excluded since (never another one)."""
        resume, card = self._resuming()
        prior = card.get("snapshot", {}).get("snapshot_id") if resume else None
        ref = self.cfg.data.get("snapshot") or prior
        if ref:
            path = Path(str(ref))
            if not path.exists():
                path = Path(self.cfg.paths.snapshots) / str(ref)
        else:
            path = None
            if self.dist.is_main:
                path = run_clearance(
                    catalog=self.cfg.data.catalog,
                    ledger=self.ledger,
                    policy=self.policy,
                    snapshots_dir=Path(self.cfg.paths.snapshots),
                    home=self.home,
                ).snapshot_path
            path = Path(broadcast_object(str(path) if path else None))
        snapshot = load_snapshot(path, receipts=receipts_dir(self.home))
        if prior and snapshot.snapshot_id != prior:
            raise TrainingRefused(
                f"{resume} trained on snapshot {prior}, data.snapshot names {snapshot.snapshot_id}: a resume "
                f"continues on its own snapshot (drop data.snapshot, or train into a new run_dir)"
            )
        if snapshot.policy.get("digest") != self.policy.digest():
            ours = self.policy.identity()
            differ = (
                "; ".join(
                    f"{k}: snapshot {snapshot.policy.get(k)!r}, run {v!r}"
                    for k, v in ours.items()
                    if snapshot.policy.get(k) != v
                )
                or "digest only"
            )
            raise TrainingRefused(
                f"snapshot {snapshot.snapshot_id} was cleared under policy '{snapshot.policy.get('name')}' "
                f"({snapshot.policy.get('digest', '')[:12]}), this run's policy is '{self.policy.name}' "
                f"({self.policy.digest()[:12]}); they differ in {differ}: clear the catalogue under this policy "
                f"first (`lab clear policy=...`)"
            )
        if not len(snapshot):
            raise TrainingRefused(f"snapshot {snapshot.snapshot_id} clears no recordings")
        self.consent_head = self.ledger.head()  # the watch reads every event after it
        problems = stale_sources(
            snapshot, load_catalog_table(snapshot.catalog["name"], self.home), self.ledger, self.policy
        )
        if resume:  # consent changed since the checkpoint: the watch applies it (from the checkpoint's head)
            problems = [
                p for p in problems if p[1] in ("not_in_catalogue", "audio_changed") and p[0] not in excluded_in(card)
            ]
        if problems:
            lines = "\n".join(f"  {rid}: {reason} ({detail})" for rid, reason, detail in problems[:20])
            more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise TrainingRefused(
                f"snapshot {snapshot.snapshot_id} is stale: {len(problems)} of its recordings no longer clear "
                f"under '{self.policy.name}' now:\n{lines}{more}\nre-run `lab clear` to get a snapshot that does"
            )
        self.snapshot = snapshot
        return snapshot

    def setup_model(self) -> Base:
        spec = instantiate(self.cfg.model, _convert_="all")
        try:
            base = spec.build(
                self.snapshot, self.run_dir, self.dist, seed=int(self.cfg.seed), public_key=self.public_key
            )
        except (BaseRefused, ParentRefused) as exc:
            raise TrainingRefused(str(exc)) from None
        self.base = spec.prepare(base)
        return self.base

    def setup_codes(self):
        """The EnCodec code cache of the snapshot: rank 0 encodes (or finds) it, the others open it."""
        codec = self.base.model.audio_encoder
        cache_root = self.home / "cache" / "codes"
        segment = float(self.cfg.data.segment_seconds)
        dataset = None
        if self.dist.is_main:  # a refused (tampered) cache is rebuilt; say so, not only in the log
            bar = None if self.cfg.trainer.get("progress", True) else False
            dataset = build_code_cache(
                self.snapshot,
                codec,
                cache_root,
                segment_seconds=segment,
                progress=bar,
                notify=lambda msg: print(msg, file=sys.stderr, flush=True),
            )
        barrier()
        if dataset is None:
            dataset = build_code_cache(self.snapshot, codec, cache_root, segment_seconds=segment)
        self.dataset = dataset
        self.admission = Admission.from_snapshot(self.snapshot, clock=self.clock)
        dec = self.base.model.decoder.config
        self.collator = MusicgenCollator(
            self.base.tokenizer,
            num_codebooks=dec.num_codebooks,
            pad_token_id=dec.pad_token_id,
            max_text_len=int(self.cfg.data.max_text_len),
            decoder_start_token_id=dec.decoder_start_token_id,
        )
        return dataset

    def setup_optimizer(self) -> TrainerConfig:
        """Optimiser, schedule, precision and checkpoint cadence (`trainer/` group); the Trainer
        builds AdamW and the schedule from it."""
        tcfg = OmegaConf.to_container(self.cfg.trainer, resolve=True)
        self.trainer_cfg = TrainerConfig.from_dict(
            {k: v for k, v in tcfg.items() if k not in ("batch_size", "resume")} | {"seed": int(self.cfg.seed)}
        )
        return self.trainer_cfg

    def setup_trainer(self, extra_hooks: Sequence[Any] = ()) -> Trainer:
        """The Trainer with the provenance hook, wandb (rank 0), and `extra_hooks` (benchmarks, tests)."""
        self.provenance = ProvenanceHook(recipe=self)
        self.watch = ConsentWatch(
            snapshot=self.snapshot,
            ledger=self.ledger,
            policy=self.policy,
            admission=self.admission,
            head=self.consent_head,
            config=self.consent_cfg,
            dist=self.dist,
            run_dir=self.run_dir,
            clock=self.clock,
            grad_accum=self.trainer_cfg.grad_accum,
        )
        hooks: list[Any] = [self.provenance, self.watch, *extra_hooks]  # the watch polls after exposure is metered
        self.wandb_run = None
        if self.dist.is_main:
            lc = self.cfg.logger
            self.wandb_run = init_wandb(
                self.resolved,
                self.run_dir,
                mode=str(lc.mode),
                project=str(lc.project),
                name=self.run_dir.name,
                tags=list(lc.tags),
            )
            if self.wandb_run is not None:
                hooks.append(WandbHooks(self.wandb_run))
        self.trainer = Trainer(
            self.base.model, _loss, self.trainer_cfg, out_dir=self.run_dir, dist=self.dist, hooks=hooks
        )
        return self.trainer

    def batches(self, start_step: int):
        """Micro-batches from `start_step` on, as consent allows (the sampler's position is a function of
        the step and the draws the admission left empty); the ledger is read once before the first."""
        watch = getattr(self, "watch", None)  # set by setup_trainer (benchmarks may drive batches without it)
        if watch is not None:
            watch.poll(start_step)
        it = iterate_batches(
            self.dataset,
            self.collator,
            int(self.cfg.trainer.batch_size),
            seed=int(self.cfg.seed),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            admission=self.admission,
            start_step=start_step * self.trainer_cfg.grad_accum + self.admission.skipped,
        )
        while True:
            if watch is not None:
                watch.raise_if_stopped()
            yield next(it)[2]

    def _stop(self, stop: ConsentStop) -> None:
        """consent.on_change=stop: save the step (unless just saved) and stop with one clear line."""
        if self.trainer.step > self.watch.saved_step:
            self.trainer.save_checkpoint()
        raise ConsentStop(f"{stop}; checkpoint step-{self.trainer.step:06d} written in {self.run_dir}") from None

    def train(self) -> TrainSummary:
        try:
            try:
                result = self.trainer.fit(self.batches, resume=bool(self.cfg.trainer.resume))
                self.watch.raise_if_stopped()  # a change found by the final pre-save poll
            except ConsentStop as stop:
                self._stop(stop)
            last = str(result.last_checkpoint) if result.last_checkpoint else None
            summary = TrainSummary(
                run_dir=str(self.run_dir),
                snapshot_id=self.snapshot.snapshot_id,
                steps=result.step,
                start_step=result.start_step,
                last_checkpoint=last,
                data_card=f"{last}/data_card.json" if last else None,
                final_loss=result.losses[-1] if result.losses else None,
                steps_per_s=result.steps_per_s,
                audit=f"lab audit {last}" if last else None,
            )
            if self.dist.is_main:
                plot_losses(result.losses, self.run_dir / "loss.png")
                if last:
                    log_artifact(
                        Path(last) / "data_card.json",
                        name=f"data_card-{self.run_dir.name}",
                        type="data_card",
                        run=self.wandb_run,
                    )
                write_bytes(self.run_dir / "summary.json", canonical_json(summary.to_dict()))
            return summary
        finally:
            if self.dist.is_main:
                self.register_published()  # also after a stop: what was published is indexed
                finish(self.wandb_run)

    def register_published(self) -> None:
        """Index the checkpoints this run sealed and published (rank 0; lab.registry)."""
        self.provenance.sealed = register_published(self.cfg.get("registry_url"), self.provenance.sealed)

    def run(self) -> TrainSummary:
        self.setup_data()
        self.setup_model()
        self.setup_codes()
        self.setup_optimizer()
        self.setup_trainer()
        return self.train()


def _loss(model, batch):
    return model(**model_inputs(batch)).loss


def main(cfg: DictConfig) -> TrainSummary:
    """Run one training job (the Hydra task of `lab train`)."""
    quiet_libraries()
    dist = init_distributed()
    try:
        return TrainRecipe(cfg, dist).run()
    finally:
        cleanup()
