"""`lab sample`: the only way product teams get audio out of a lab checkpoint.

One recipe class, in the order the work happens: `setup_gate` (signature, card, registry status,
consent now, licence: `lab.sample.gate`), then — only when the gate allows it — `setup_model`,
`generate` (stock MusicGen), `replicate` (the replication gate per output) and `release` (audio
written atomically with its signed content credential and sidecar). A refusal writes nothing but a
refusal record; a withheld output writes no audio. Every attempt is an `OutputRecord` in the
registry. Tests, benchmarks and `lab serve` call this class; the CLI only composes the config.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from omegaconf import DictConfig, OmegaConf

from ..cards.signing import ensure_keypair
from ..registry.store import Registry
from ..rights.heads import open_ledger
from ..sample.gate import GateInputError, check_gate, refusal_lines
from ..sample.records import GateDecision, OutputRecord, ReplicationResult
from ..util.atomic import write_bytes
from ..util.canonical import canonical_json, sha256_file
from ..util.timestamps import utcnow

log = logging.getLogger("lab.sample")


class SampleInputError(GateInputError):
    """The request is malformed (no prompt, bad duration or format): bad input, nothing recorded."""


@dataclass
class SampleSummary:
    """What `lab sample` did (printed at the end, `json=true` for machines)."""

    checkpoint: str
    checkpoint_id: str
    allowed: bool
    uses: list[str]
    territory: str
    out_dir: str
    released: list[dict[str, Any]] = field(default_factory=list)  # path, prompt, seed, sha256, sidecar, scores
    withheld: list[dict[str, Any]] = field(default_factory=list)  # prompt, seed, nearest, detail, record
    refusals: list[str] = field(default_factory=list)  # one line each: check, recording, grant, reason
    refusal_records: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_prompts(cfg: DictConfig) -> list[str]:
    """`prompt=`, `prompts=[…]` and `prompts_file=` (one prompt a line, blank lines skipped), in that order."""
    prompts = [cfg.prompt] if cfg.get("prompt") else []
    prompts += [str(p) for p in (cfg.get("prompts") or [])]
    if cfg.get("prompts_file"):
        path = Path(cfg.prompts_file)
        if not path.is_file():
            raise SampleInputError(f"prompts_file {path} does not exist")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [str(p).strip() for p in prompts if str(p).strip()]
    if not prompts:
        raise SampleInputError('no prompt: give prompt="…", prompts=[…] or prompts_file=PATH')
    return prompts


def record_digest(record: OutputRecord) -> str:
    """sha256 of a record without its id: the id of a record that has no audio (refused, withheld)."""
    import hashlib

    return hashlib.sha256(canonical_json(record.model_dump(mode="json", exclude={"record_id"}))).hexdigest()


def not_checked(detail: str, thresholds: dict[str, float]) -> ReplicationResult:
    """The replication result of an output the check could not run on: withheld (fail closed)."""
    return ReplicationResult(
        token_score=0.0,
        audio_score=0.0,
        withheld=True,
        thresholds=thresholds,
        detail=f"withheld: not checked ({detail})",
    )


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def _short(rep: ReplicationResult) -> ReplicationResult:
    """Scores to 6 decimals: the C2PA SDK's JSON reads a 17-digit float back one ulp off, and the
    credential must read back exactly as written (`sign_output` checks)."""
    return rep.model_copy(update={"token_score": round(rep.token_score, 6), "audio_score": round(rep.audio_score, 6)})


class SampleRecipe:
    """One `lab sample` request. `run()` does everything; the steps can be called one by one (tests,
    benchmarks, `lab serve`) in the order given: setup_gate → setup_model → generate → replicate → release."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.home = Path(cfg.paths.home)
        self.folder = Path(cfg.checkpoint)
        self.prompts = read_prompts(cfg)
        self.uses = [str(u) for u in (cfg.use if not isinstance(cfg.use, str) else [cfg.use])]
        self.territory = str(cfg.territory)
        self.duration = float(cfg.duration)
        self.seed = int(cfg.seed)
        self.format = str(cfg.format).lower()
        if self.format not in ("wav", "flac"):
            raise SampleInputError(f"format={cfg.format}: wav or flac")
        if not self.duration > 0:
            raise SampleInputError(f"duration={cfg.duration}: must be more than 0 seconds")
        if not self.folder.is_dir():
            raise FileNotFoundError(f"checkpoint {self.folder} is not a folder")
        key_dir = Path(cfg.signing.key_dir)
        self.ledger = open_ledger(cfg.ledger_url, home=self.home, key_dir=key_dir)
        self.public_key = Path(cfg.signing.public_key) if cfg.signing.get("public_key") else None
        if self.public_key is None:
            self.public_key = ensure_keypair(key_dir).public_path
        self.registry = Registry(cfg.registry_url)
        self.decision: GateDecision | None = None
        self.generator = None
        self.snapshot_id: str | None = None
        self.credits: list[str] = []
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []

    # -- steps ---------------------------------------------------------------

    def setup_gate(self) -> GateDecision:
        """The gate, before anything is loaded or generated."""
        t = time.perf_counter()
        self.decision = check_gate(
            self.folder,
            uses=self.uses,
            territory=self.territory,
            ledger=self.ledger,
            registry=self.registry,
            public_key=self.public_key,
            home=self.home,
        )
        self.timings["gate"] = time.perf_counter() - t
        return self.decision

    @property
    def out_dir(self) -> Path:
        if self.cfg.get("out"):
            return Path(self.cfg.out)
        cid = self.decision.checkpoint_id if self.decision is not None else self.folder.name
        return Path(self.cfg.outputs_root) / cid

    def _record(self, kind: str, prompt: str, seed: int | None, **fields: Any) -> OutputRecord:
        d = self.decision
        record = OutputRecord(
            record_id="pending",
            kind=kind,
            created_at=utcnow(),
            checkpoint_id=d.checkpoint_id,
            checkpoint_folder=str(self.folder.resolve()),
            data_card_sha256=d.data_card_sha256,
            prompt=prompt,
            seed=seed,
            duration_s=_round(fields.pop("duration_s", self.duration)),
            uses=d.uses,
            territory=d.territory,
            decision=d,
            credits=self.credits,
            **fields,
        )
        return record if kind == "released" else record.model_copy(update={"record_id": record_digest(record)})

    def _keep(self, record: OutputRecord, folder: str | None) -> str | None:
        """The record as JSON under out/<folder>/ (atomic) and its registry row; returns the file."""
        path = None
        if folder is not None:
            path = self.out_dir / folder / f"{record.record_id}.json"
            write_bytes(path, orjson.dumps(record.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n")
        try:
            self.registry.record_output(record)
        except Exception as exc:  # noqa: BLE001 - derived index: the record file is the record
            self.notes.append(f"not recorded in the registry ({exc}); `lab registry rebuild` reads the record files")
            log.warning("output %s not recorded in the registry: %s", record.record_id, exc)
        return str(path) if path is not None else None

    def refuse(self) -> list[str]:
        """One refusal record per prompt (nothing generated): out/refusals/<id>.json + registry rows."""
        return [self._keep(self._record("refused", p, None, duration_s=None), "refusals") for p in self.prompts]

    def setup_model(self):
        from ..cards import load_card
        from ..sample.generate import load_generator
        from .train import quiet_libraries

        quiet_libraries()
        t = time.perf_counter()
        self.generator = load_generator(self.folder)
        bundle = load_card(self.folder)
        self.snapshot_id = bundle.card.snapshot.snapshot_id
        self.credits = sorted({c for c in bundle.sources["credit"].to_pylist() if c})
        self.timings["load"] = time.perf_counter() - t
        return self.generator

    def generate(self) -> list:
        from ..sample.generate import generate

        t = time.perf_counter()
        progress = self.cfg.get("progress")
        out = generate(
            self.generator,
            self.prompts,
            duration_s=self.duration,
            seed=self.seed,
            batch_size=int(self.cfg.batch_size),
            guidance_scale=self.cfg.get("guidance_scale"),
            progress=None if progress is None else bool(progress),
        )
        self.timings["generate"] = time.perf_counter() - t
        return out

    def replicate(self, outputs: list) -> list[ReplicationResult]:
        """The replication gate per output; a check that cannot run withholds (never released unchecked)."""
        from ..models.digest import model_digest
        from ..sample.replication import ReplicationIndex, ReplicationSettings, check_replication

        t = time.perf_counter()
        settings = ReplicationSettings(**OmegaConf.to_container(self.cfg.replication, resolve=True))
        try:
            index = ReplicationIndex.for_checkpoint(
                self.folder,
                home=self.home,
                codec_digest=model_digest(self.generator.model.audio_encoder),
                snapshot=self._snapshot(),
                settings=settings,
            )
        except Exception as exc:  # noqa: BLE001 - whatever stops the check withholds every output
            self.timings["replicate"] = time.perf_counter() - t
            return [not_checked(str(exc), settings.thresholds) for _ in outputs]
        self.timings["replication_index"] = time.perf_counter() - t
        t = time.perf_counter()
        results = []
        for o in outputs:
            try:
                results.append(check_replication(o.codes, o.audio, o.sample_rate, index=index))
            except Exception as exc:  # noqa: BLE001
                results.append(not_checked(str(exc), settings.thresholds))
        self.timings["replicate"] = time.perf_counter() - t
        return [_short(r) for r in results]

    def _snapshot(self):
        """The checkpoint's snapshot under this config's snapshots folder, if it is there (else the
        replication index finds it through the run's own config)."""
        from ..snapshot import load_snapshot, receipts_dir

        folder = Path(self.cfg.paths.snapshots) / str(self.snapshot_id)
        if self.snapshot_id is None or not (folder / "snapshot.json").is_file():
            return None
        return load_snapshot(folder, receipts=receipts_dir(self.home))

    def release(self, outputs: list, results: list[ReplicationResult], summary: SampleSummary) -> None:
        """Withheld: a record naming the nearest recording, no audio. Released: the audio file with its
        signed content credential and sidecar, then its registry row."""
        from ..sample.credentials import CREDENTIAL, sign_output
        from ..sample.generate import write_audio

        t = time.perf_counter()
        stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
        for i, (o, rep) in enumerate(zip(outputs, results)):
            if rep.withheld:
                rec = self._record("withheld", o.prompt, o.seed, duration_s=o.duration_s, replication=rep)
                where = self._keep(rec, "withheld")
                summary.withheld.append(
                    {"prompt": o.prompt, "seed": o.seed, "nearest": rep.nearest_recording, "detail": rep.detail}
                    | {"record": where}
                )
                continue
            dst = self.out_dir / f"{stamp}-{i:02d}-seed{o.seed}.{self.format}"
            raw = dst.with_name(f".{dst.name}.raw.{self.format}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                write_audio(raw, o.audio, o.sample_rate, self.format)
                pending = self._record(
                    "released",
                    o.prompt,
                    o.seed,
                    duration_s=o.duration_s,
                    replication=rep,
                    path=str(dst.resolve()),
                    sample_rate=o.sample_rate,
                    format=self.format,
                )
                side = sign_output(raw, dst, pending, home=self.home)
            finally:
                raw.unlink(missing_ok=True)
            sha = sha256_file(dst)  # of the signed file: signing embeds the manifest
            rec = pending.model_copy(
                update={"record_id": sha, "audio_sha256": sha, "credential": CREDENTIAL, "sidecar": str(side.resolve())}
            )
            self._keep(rec, None)
            summary.released.append(
                {"path": str(dst), "prompt": o.prompt, "seed": o.seed, "sha256": sha, "sidecar": str(side)}
                | {"token_score": rep.token_score, "audio_score": rep.audio_score}
            )
        self.timings["release"] = time.perf_counter() - t

    # -- all of it -----------------------------------------------------------

    def run(self) -> SampleSummary:
        try:
            decision = self.setup_gate()
            summary = SampleSummary(
                checkpoint=str(self.folder),
                checkpoint_id=decision.checkpoint_id,
                allowed=decision.allowed,
                uses=list(decision.uses),
                territory=decision.territory,
                out_dir=str(self.out_dir),
            )
            if not decision.allowed:
                summary.refusals = refusal_lines(decision)
                summary.refusal_records = self.refuse()
            else:
                self.setup_model()
                outputs = self.generate()
                results = self.replicate(outputs)
                self.release(outputs, results, summary)
            summary.timings_s = {k: round(v, 4) for k, v in self.timings.items()}
            summary.notes = self.notes
            return summary
        finally:
            self.registry.close()


def main(cfg: DictConfig) -> SampleSummary:
    """Run one sampling request (the Hydra task of `lab sample`)."""
    return SampleRecipe(cfg).run()
