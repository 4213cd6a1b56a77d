"""Where a run's base model comes from, and what its lineage says about it.

Each `configs/model/*.yaml` names one of these with `_target_`; the recipe instantiates it and
calls `build`. A base is either built from config (its tokenizer and codebooks fitted on the
cleared snapshot only), a lab checkpoint (verified, its sources inherited), or a
`save_pretrained` folder whose id, licence and training data the researcher declares: an
undeclared base is refused, because nothing downstream could say what the weights carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..cards.schema import BaseCardRef, BaseModelRef, Lineage
from ..checkpoint.lineage import is_lab_checkpoint, read_parent
from ..data.codes import sample_item_windows
from ..models.digest import model_digest
from ..models.musicgen import TinySpec, apply_lora, build_tiny, freeze_encoders, load_local_pretrained, save_model
from ..snapshot import Snapshot
from ..train.distributed import DistInfo, barrier
from ..util.canonical import sha256_file


class BaseRefused(RuntimeError):
    """The base model cannot be vouched for: training does not start."""


@dataclass
class Base:
    model: Any
    tokenizer: Any
    lineage: Lineage
    licence: str  # of the weights this run starts from
    inherited: pa.Table | None = None  # sources a lab-checkpoint base carries
    hub_id: str | None = None  # for the model card's `base_model`, when the base is a Hub model


@dataclass(kw_only=True)
class _Trainable:
    """What of the base trains: encoders frozen by default, optionally a LoRA adapter."""

    freeze_text_encoder: bool = True
    freeze_audio_encoder: bool = True
    lora: Mapping[str, Any] | None = None  # e.g. {r: 8, alpha: 16, target_modules: [q_proj, v_proj]}

    def prepare(self, base: Base) -> Base:
        freeze_encoders(base.model, text=self.freeze_text_encoder, audio=self.freeze_audio_encoder)
        if self.lora:
            apply_lora(base.model, **dict(self.lora))
            base.lineage = base.lineage.model_copy(update={"relation": "adapter"})
        return base


@dataclass(kw_only=True)
class TinyFromConfig(_Trainable):
    """A tiny MusicGen built from config (`model=tiny`), saved under the run so every rank and
    every resume start from the very same weights."""

    id: str
    licence: str
    declared_training_data: str
    spec: Mapping[str, Any] = field(default_factory=dict)

    def build(self, snapshot: Snapshot, run_dir: Path, dist: DistInfo, *, seed: int, public_key: Path) -> Base:
        spec = TinySpec(**dict(self.spec))
        base_dir = run_dir / "base"
        if dist.is_main and not (base_dir / "config.json").is_file():
            root = Path(snapshot.catalog["root"])
            rows = snapshot.items.select(["recording_id", "audio_path", "audio_sha256", "description"]).to_pylist()
            # A bounded, seeded sample of each recording, streamed: setup memory does not grow with the audio.
            clips = sample_item_windows(
                rows,
                root,
                spec.sampling_rate,
                window_seconds=spec.kmeans_window_seconds,
                per_item=spec.kmeans_windows_per_recording,
                seed=seed,
                progress=None,
                total_seconds=float(sum(snapshot.items.column("duration_s").to_pylist())),
            )
            model, tok = build_tiny(
                spec, [r["description"] for r in rows], clips, seed=seed, sample_rate=spec.sampling_rate
            )
            save_model(model, tok, base_dir)
        barrier()
        model, tok = load_local_pretrained(base_dir)
        ref = BaseModelRef(
            id=self.id,
            digest=model_digest(model),
            licence=self.licence,
            declared_training_data=self.declared_training_data,
            kind="tiny_from_config",
            card=BaseCardRef(path=str(base_dir), summary="built from config by lab"),
        )
        return Base(model, tok, Lineage(base_model=ref, relation="pretrain"), self.licence)


@dataclass(kw_only=True)
class LocalPretrained(_Trainable):
    """A `save_pretrained` MusicGen folder: a lab checkpoint (verified and inherited) or a declared base."""

    path: str
    id: str | None = None
    licence: str | None = None
    declared_training_data: str | None = None
    digest: str | None = None

    def build(self, snapshot: Snapshot, run_dir: Path, dist: DistInfo, *, seed: int, public_key: Path) -> Base:
        path = Path(self.path)
        model, tok = load_local_pretrained(path)
        digest = model_digest(model)
        if is_lab_checkpoint(path):
            parent = read_parent(path, public_key, model_digest=digest, model_id=self.id, licence=self.licence)
            lineage = Lineage(base_model=parent.base, parent_checkpoint=parent.checkpoint, relation="finetune")
            return Base(model, tok, lineage, parent.licence, inherited=parent.sources)
        missing = [k for k in ("id", "licence", "declared_training_data") if not getattr(self, k)]
        if missing:
            raise BaseRefused(
                f"base model at {path} carries no lab data card and is not declared: set "
                + ", ".join(f"model.{k}" for k in missing)
                + " (what it is, its licence, and what its publisher says it was trained on)"
            )
        if self.digest and self.digest != digest:
            raise BaseRefused(f"base model at {path} has digest {digest}, config declares {self.digest}")
        readme = path / "README.md"
        ref = BaseModelRef(
            id=str(self.id),
            digest=digest,
            licence=str(self.licence),
            declared_training_data=str(self.declared_training_data),
            kind="local_pretrained",
            card=BaseCardRef(
                path=str(readme) if readme.is_file() else None, sha256=sha256_file(readme) if readme.is_file() else None
            ),
        )
        return Base(model, tok, Lineage(base_model=ref, relation="finetune"), str(self.licence), hub_id=str(self.id))
