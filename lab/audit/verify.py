"""Check a checkpoint folder against the contract in DESIGN.md and report each check.

Every check runs even when an earlier one fails, so a reviewer sees the whole picture;
the audit passes only when all of them do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import yaml

from ..cards import CardError, card_sha256, load_card
from ..cards.signing import verify_folder
from ..rights.clearance import recheck
from ..rights.ledger import Ledger
from ..rights.policy import Policy

REQUIRED = ("config.json", "model.safetensors", "data_card.json", "README.md", "model.sig")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class AuditReport:
    checkpoint: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def _readme_meta(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}


def audit_checkpoint(folder: Path, *, public_key: Path, ledger: Ledger | None = None,
                     at: datetime | None = None) -> AuditReport:
    folder = Path(folder)
    report = AuditReport(str(folder))
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    report.add("files", not missing, "all present" if not missing else f"missing: {', '.join(missing)}")
    report.add("complete", (folder / "COMPLETE").is_file(), "COMPLETE marker" if (folder / "COMPLETE").is_file()
               else "no COMPLETE marker: an interrupted write")
    sig = verify_folder(folder, public_key)
    report.add("signature", sig.ok, sig.reason if not sig.ok else f"{sig.files} files signed by {public_key.name}")
    card = bundle = None
    try:  # validated once: JSON Schema + pydantic for data_card.json, column-wise for sources.parquet (+ sha256)
        bundle = load_card(folder)
        card = bundle.card
        report.add("data_card", True, f"valid {card.schema_id}: {card.sources.rows} sources "
                   f"({card.sources.own_rows} own, {card.sources.inherited_rows} inherited) in {card.sources.file}")
    except CardError as exc:
        report.add("data_card", False, "; ".join(exc.errors)[:500])
    if (folder / "README.md").is_file() and card is not None:
        meta = _readme_meta(folder / "README.md").get("lab", {})
        sha = card_sha256(folder)
        said = (meta.get("data_card_sha256"), meta.get("sources_sha256"), meta.get("snapshot"))
        have = (sha, card.sources.sha256, card.snapshot.snapshot_id)
        report.add("model_card", said == have, "README.md names this data card, its sources and snapshot"
                   if said == have else f"README.md says card / sources / snapshot {said}, folder has {have}")
    if card is None:
        return report
    parent = card.lineage.parent_checkpoint
    if parent is not None:
        ppath = Path(parent.path) / "data_card.json"
        if ppath.is_file():
            same = card_sha256(ppath) == parent.data_card_sha256
            report.add("lineage", same, f"parent {parent.checkpoint_id} card " + ("matches" if same else "changed"))
        else:
            report.add("lineage", False, f"parent card not found at {ppath}")
    else:
        report.add("lineage", True, f"base {card.lineage.base_model.id} ({card.lineage.base_model.kind}), "
                   f"relation {card.lineage.relation}")
    if ledger is not None:
        _consent_now(report, bundle, ledger, at)
    return report


def _consent_now(report: AuditReport, bundle, ledger: Ledger, at: datetime | None) -> None:
    """Would every source still clear today, under the policy the checkpoint was trained under?"""
    card = bundle.card
    keys = ["recording_id", "isrc", "audio_sha256", "catalog"]  # own and inherited rows, each recording once
    sources = bundle.sources.select(keys).group_by(keys, use_threads=False).aggregate([])
    n = sources.num_rows
    head_seq, head_hash = card.snapshot.ledger_head_seq, card.snapshot.ledger_head_hash
    then = ledger.verify(deep=False, anchor=(head_seq, head_hash))
    report.add("ledger_then", then.ok, f"ledger still holds head {head_seq} ({head_hash[:12]}) the snapshot saw"
               if then.ok else f"ledger chain problem: {then.first_problem}")
    p = card.snapshot.policy
    policy = Policy(name=p.name, purposes=p.purposes, territory=p.territory,
                    accept_licence_classes=p.accept_licence_classes, contracts=p.contracts)
    table = sources.append_column("status", pa.repeat("ok", n)).append_column(
        "reject_reason", pa.nulls(n, pa.string())).append_column("reject_detail", pa.repeat("", n))
    expected = dict(zip(sources["recording_id"].to_pylist(), sources["audio_sha256"].to_pylist()))
    problems = recheck(table, ledger.frame(), policy, expected, at)
    detail = "every source still clears" if not problems else "; ".join(
        f"{rid}: {reason}" for rid, (reason, _) in sorted(problems.items()))
    report.add("consent_now", not problems, detail)
