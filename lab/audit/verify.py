"""Check a checkpoint folder against the contract in DESIGN.md and report each check.

Every check runs even when an earlier one fails, so a reviewer sees the whole picture;
the audit passes only when all of them do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
import yaml

from ..cards import CARD_FILES, CardError, card_sha256, load_card
from ..cards.signing import verify_folder
from ..checkpoint import WEIGHT_FILES, is_complete, missing_files
from ..rights.consent import LedgerBroken, check_sources
from ..rights.ledger import Ledger
from ..rights.policy import Policy
from ..util.canonical import sha256_file

# Problems listed in a failing check's detail; the JSON report and `lab card show` have the rest.
_SHOWN = 20


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
    missing = missing_files(folder, (*WEIGHT_FILES, *CARD_FILES))
    report.add("files", not missing, "all present" if not missing else f"missing: {', '.join(missing)}")
    complete = is_complete(folder)
    report.add("complete", complete, "COMPLETE marker lists every file at its size" if complete
               else "no valid COMPLETE marker: an interrupted or altered write")
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
    report.add("lineage", *_lineage(card))
    if ledger is not None:
        _consent_now(report, bundle, ledger, at)
    return report


def _lineage(card) -> tuple[bool, str]:
    """The parent's card (and the sources file it names) are what this card was built from."""
    parent = card.lineage.parent_checkpoint
    if parent is None:
        base = card.lineage.base_model
        return True, f"base {base.id} ({base.kind}), relation {card.lineage.relation}"
    folder = Path(parent.path)
    if not (folder / "data_card.json").is_file():
        return False, f"parent card not found at {folder / 'data_card.json'}"
    if card_sha256(folder) != parent.data_card_sha256:
        return False, f"parent {parent.checkpoint_id} card changed since this checkpoint was trained"
    named = orjson.loads((folder / "data_card.json").read_bytes())["sources"]
    sources = folder / named["file"]
    if not sources.is_file() or sha256_file(sources) != named["sha256"]:
        return False, f"parent {parent.checkpoint_id} sources file changed or missing ({sources.name})"
    return True, f"parent {parent.checkpoint_id} card and sources match"


def _consent_now(report: AuditReport, bundle, ledger: Ledger, at: datetime | None) -> None:
    """Does the ledger still hold the head the snapshot saw, and would every source (own and
    inherited) still clear today under the policy the checkpoint was trained under?"""
    card = bundle.card
    head_seq, head_hash = card.snapshot.ledger_head_seq, card.snapshot.ledger_head_hash
    then = ledger.verify(deep=False, anchor=(head_seq, head_hash))
    report.add("ledger_then", then.ok, f"ledger still holds head {head_seq} ({head_hash[:12]}) the snapshot saw"
               if then.ok else f"ledger chain problem: {then.first_problem}")
    p = card.snapshot.policy
    policy = Policy(name=p.name, purposes=p.purposes, territory=p.territory,
                    accept_licence_classes=p.accept_licence_classes, contracts=p.contracts)
    keys = ["recording_id", "isrc", "audio_sha256", "catalog"]  # each recording once, own or inherited
    sources = bundle.sources.select(keys).group_by(keys, use_threads=False).aggregate([])
    try:  # a ledger that lost the snapshot's head may still verify as a chain: ask it, it is the ledger now
        answer = check_sources(sources, ledger, policy, at=at, verified=then if then.ok else None)
    except LedgerBroken as exc:
        report.add("consent_now", False, f"not checked: {exc}")
        return
    problems = answer.problems()
    shown = "; ".join(f"{rid}: {reason}" for rid, reason, _ in problems[:_SHOWN])
    more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
    report.add("consent_now", not problems, "every source still clears" if not problems
               else f"{len(problems)} source(s) no longer clear: {shown}{more}")
