"""Check a checkpoint folder against the contract in DESIGN.md and report each check.

Every check runs even when an earlier one fails, so a reviewer sees the whole picture;
the audit passes only when all of them do.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from ..cards import CARD_FILES, CardError, card_sha256, load_card
from ..cards.schema import TERMINATION_ORDER
from ..cards.signing import verify_folder
from ..checkpoint import WEIGHT_FILES, is_complete, missing_files
from ..rights.clearance import CLEARANCE_COLUMNS
from ..rights.consent import LedgerBroken, check_sources
from ..rights.ledger import Ledger
from ..rights.policy import Policy
from ..util.canonical import sha256_file

# Problems listed in a failing check's detail; the JSON report and `lab card show` have the rest.
_SHOWN = 20
# Sources that no longer clear, listed with their grants in the report (the counts cover them all).
LISTED = 1000
# The checkpoint's status under on_termination: the strictest rule of the sources that no longer clear.
STATUS_OF_RULE = {"retain": "retained", "retrain": "retrain", "retire": "retired"}
STATUSES = ("ok", *STATUS_OF_RULE.values(), "unchecked")  # unchecked: consent now was not asked
_RULES = tuple(TERMINATION_ORDER)
_MEANING = {
    "retain": "the checkpoint stays usable (noted)",
    "retrain": "the checkpoint must be retrained without them",
    "retire": "the checkpoint is withdrawn",
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Terminated:
    """A source that no longer clears, with the rule its grants set for that case."""

    recording_id: str
    catalog: str
    reason: str
    detail: str
    on_termination: str  # strictest over its rows (own and inherited)
    grant_ids: list[str]
    seen_by: list[str]


@dataclass
class Termination:
    """What on_termination makes of the sources that no longer clear (expiry counts as termination)."""

    status: str  # ok | retained | retrain | retired
    counts: dict[str, int] = field(default_factory=dict)  # rule -> sources
    sources: list[Terminated] = field(default_factory=list)  # strictest first, then by id; at most LISTED

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "counts": self.counts,
            "total": self.total,
            "sources": [asdict(t) for t in self.sources],
        }


@dataclass
class AuditReport:
    checkpoint: str
    checks: list[Check] = field(default_factory=list)
    termination: Termination | None = None  # None: consent now was not checked
    bundle: Any = field(default=None, repr=False, compare=False)  # the CardBundle read, for the HTML report

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def status(self) -> str:
        """ok | retained | retrain | retired under on_termination; unchecked without consent now."""
        return self.termination.status if self.termination is not None else "unchecked"

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def to_dict(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "ok": self.ok,
            "status": self.status,
            "checks": [asdict(c) for c in self.checks],
            "termination": self.termination.to_dict() if self.termination is not None else None,
        }


def _readme_meta(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}


def audit_checkpoint(
    folder: Path, *, public_key: Path, ledger: Ledger | None = None, at: datetime | None = None
) -> AuditReport:
    folder = Path(folder)
    report = AuditReport(str(folder))
    missing = missing_files(folder, (*WEIGHT_FILES, *CARD_FILES))
    report.add("files", not missing, "all present" if not missing else f"missing: {', '.join(missing)}")
    complete = is_complete(folder)
    report.add(
        "complete",
        complete,
        "COMPLETE marker lists every file at its size"
        if complete
        else "no valid COMPLETE marker: an interrupted or altered write",
    )
    sig = verify_folder(folder, public_key)
    report.add("signature", sig.ok, sig.reason if not sig.ok else f"{sig.files} files signed by {public_key.name}")
    card = bundle = None
    try:  # validated once: JSON Schema + pydantic for data_card.json, column-wise for sources.parquet (+ sha256)
        bundle = load_card(folder)
        card = bundle.card
        report.bundle = bundle
        report.add(
            "data_card",
            True,
            f"valid {card.schema_id}: {card.sources.rows} sources "
            f"({card.sources.own_rows} own, {card.sources.inherited_rows} inherited) in {card.sources.file}",
        )
    except CardError as exc:
        report.add("data_card", False, "; ".join(exc.errors)[:500])
    if (folder / "README.md").is_file() and card is not None:
        meta = _readme_meta(folder / "README.md").get("lab", {})
        sha = card_sha256(folder)
        said = (meta.get("data_card_sha256"), meta.get("sources_sha256"), meta.get("snapshot"))
        have = (sha, card.sources.sha256, card.snapshot.snapshot_id)
        report.add(
            "model_card",
            said == have,
            "README.md names this data card, its sources and snapshot"
            if said == have
            else f"README.md says card / sources / snapshot {said}, folder has {have}",
        )
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
    # The clearance columns are read (SQLite and Arrow, off the GIL) while the chain is re-hashed (Python).
    now = ledger.head()
    with ThreadPoolExecutor(1, thread_name_prefix="lab-audit-frame") as pool:
        reading = pool.submit(ledger.frame, upto_seq=now[0], columns=CLEARANCE_COLUMNS)
        then = ledger.verify(deep=False, anchor=(head_seq, head_hash))
        frame = (now, reading.result())
    report.add(
        "ledger_then",
        then.ok,
        f"ledger still holds head {head_seq} ({head_hash[:12]}) the snapshot saw"
        if then.ok
        else f"ledger chain problem: {then.first_problem}",
    )
    p = card.snapshot.policy
    policy = Policy(
        name=p.name,
        purposes=p.purposes,
        territory=p.territory,
        accept_licence_classes=p.accept_licence_classes,
        contracts=p.contracts,
    )
    keys = ["recording_id", "isrc", "audio_sha256", "catalog"]  # each recording once, own or inherited
    sources = bundle.sources.select(keys).group_by(keys, use_threads=False).aggregate([])
    try:  # a ledger that lost the snapshot's head may still verify as a chain: ask it, it is the ledger now
        answer = check_sources(sources, ledger, policy, at=at, verified=then if then.ok else None, frame=frame)
    except LedgerBroken as exc:
        report.add("consent_now", False, f"not checked: {exc}")
        return
    term = termination_status(bundle.sources, answer.refused())
    report.termination = term
    report.add("consent_now", term.status in ("ok", "retained"), _consent_detail(term))


def termination_status(sources: pa.Table, refused: pa.Table, *, limit: int = LISTED) -> Termination:
    """The checkpoint's status under on_termination, given its sources (sources.parquet rows, own and
    inherited) and the ones that no longer clear (`refused`: recording_id, catalog, reason, detail).

    Each refused source takes the strictest on_termination over its rows (an unknown rule counts as
    retire: fail closed); the status is the strictest over them all. Column kernels, then Python
    only for the `limit` sources listed."""
    if refused.num_rows == 0:
        return Termination("ok")
    refused = refused.set_column(refused.schema.get_field_index("catalog"), "catalog", refused["catalog"].fill_null(""))
    rows = sources.filter(pc.is_in(_key(sources), value_set=_key(refused)))
    rows = rows.append_column("rank", pa.array(_ranks(rows["on_termination"])))
    per = rows.group_by(["recording_id", "catalog"], use_threads=False).aggregate([("rank", "max")])
    per = per.sort_by([("rank_max", "descending"), ("recording_id", "ascending"), ("catalog", "ascending")])
    rules, n = np.unique(per["rank_max"].to_numpy(), return_counts=True)
    counts = {_RULES[int(r)]: int(k) for r, k in zip(rules[::-1], n[::-1])}  # strictest first
    unmatched = pc.count_distinct(_key(refused)).as_py() - per.num_rows
    if unmatched > 0:  # refused yet in no row (not in a valid card): fail closed
        counts["retire"] = counts.get("retire", 0) + unmatched
        counts = {r: counts[r] for r in reversed(_RULES) if r in counts}
    listed = per.slice(0, limit)
    mine = _key(listed)
    why = {(r["recording_id"], r["catalog"]): r for r in refused.filter(pc.is_in(_key(refused), mine)).to_pylist()}
    grants: dict[tuple[str, str], tuple[set, set]] = {}
    shown = rows.filter(pc.is_in(_key(rows), mine)).select(["recording_id", "catalog", "grant_ids", "seen_by"])
    for r in shown.to_pylist():
        g, seen = grants.setdefault((r["recording_id"], r["catalog"]), (set(), set()))
        g.update(r["grant_ids"])
        seen.add(r["seen_by"])
    terminated = []
    for r in listed.to_pylist():
        k = (r["recording_id"], r["catalog"])
        g, seen = grants[k]
        terminated.append(
            Terminated(
                *k, why[k]["reason"] or "", why[k]["detail"] or "", _RULES[int(r["rank_max"])], sorted(g), sorted(seen)
            )
        )
    return Termination(STATUS_OF_RULE[next(iter(counts))], counts, terminated)


def _key(table: pa.Table) -> pa.ChunkedArray:
    """(recording_id, catalog) as one string column, for membership tests."""
    return pc.binary_join_element_wise(table["recording_id"], table["catalog"], "\x1f")


def _ranks(rules: pa.ChunkedArray) -> np.ndarray:
    """retain 0 < retrain 1 < retire 2 per row; an unknown rule ranks as retire."""
    at = pc.index_in(rules, value_set=pa.array(_RULES)).fill_null(len(_RULES) - 1)
    return at.to_numpy().astype(np.int64)


def _consent_detail(term: Termination) -> str:
    """One line: how many sources no longer clear, what each rule makes of them, the first few named."""
    if term.status == "ok":
        return "every source still clears"
    parts = []
    for rule, n in term.counts.items():
        named = [t for t in term.sources if t.on_termination == rule][:_SHOWN]
        shown = ", ".join(f"{t.recording_id} ({t.reason})" for t in named)
        more = f" and {n - len(named)} more" if n > len(named) else ""
        parts.append(f"{n} under {rule}: {_MEANING[rule]}: {shown}{more}")
    return f"{term.total} source(s) no longer clear; status {term.status}. " + "; ".join(parts)
