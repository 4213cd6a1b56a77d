"""What a grant or recording touches: every registered checkpoint, directly or through lineage, and their outputs.

A checkpoint is touched *directly* when one of its source rows names the grant (or the
recording, ISRC or audio hash), and *through lineage* when it descends from a touched one
(fine-tunes of fine-tunes, followed down the registry's parent links). The rule is the strictest
of retain < retrain < retire over the grants involved (each grant's `on_termination` as in force
at the checkpoint's ledger head, else as recorded in its sources), and a descendant is never less
strict than its parent: weights trained from retired weights are retired too. Each released output
of a touched checkpoint follows its checkpoint's rule: kept under retain, withdrawn under retrain or
retire (withheld and refused attempts released nothing, so nothing is to be done about them).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from lab.cards.schema import TERMINATION_ORDER
from lab.registry.store import Registry
from lab.rights.ledger import Ledger
from lab.rights.records import AmendEvent, GrantEvent
from lab.util.identifiers import as_isrc

QueryKind = Literal["grant", "recording", "isrc", "audio_sha256", "unknown"]
RULES = tuple(TERMINATION_ORDER)  # retain < retrain < retire
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

MEANING = {
    "retain": "still usable: its grants let trained weights be kept after they end; reported, nothing to do",
    "retrain": "retrain without the recording: clear a new snapshot (the ended grant drops it) and train again "
    "from the same base",
    "retire": "withdraw it: `lab audit` fails its consent check and sampling refuses it",
}


# What happens to a released output of a checkpoint under each rule.
OUTPUT_ACTION = {"retain": "keep", "retrain": "withdraw", "retire": "withdraw"}
OUTPUT_ACTIONS = ("keep", "withdraw")
OUTPUT_MEANING = {
    "keep": "the checkpoint's grants let it be kept: nothing to do",
    "withdraw": "withdraw the output: stop distributing it and take it down where it was published",
}


def stricter(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if TERMINATION_ORDER[a] >= TERMINATION_ORDER[b] else b


@dataclass
class TouchedCheckpoint:
    checkpoint_id: str
    folder: str
    step: int
    parent_id: str | None
    snapshot_id: str
    rule: str
    direct: bool  # a source row of its own names the subject (own or inherited rows)
    via: str | None  # the parent it inherits a stricter rule from, if any
    grants: list[str] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # seconds of the matching recordings in its weights (own and inherited)
    meaning: str = ""
    commands: list[str] = field(default_factory=list)


@dataclass
class TouchedOutput:
    """A released output of a touched checkpoint and what must happen to it."""

    record_id: str
    checkpoint_id: str
    rule: str  # the checkpoint's
    action: str  # keep | withdraw
    created_at: str
    prompt: str
    uses: list[str]
    territory: str
    path: str | None
    audio_sha256: str | None
    meaning: str = ""


@dataclass
class ImpactReport:
    query: str
    kind: QueryKind
    grant_ids: list[str]
    events: list[dict[str, Any]]  # the ledger's revocations and expiries of those grants
    checkpoints: list[TouchedCheckpoint]
    outputs: list[TouchedOutput] = field(default_factory=list)  # released outputs of those checkpoints

    @property
    def rule(self) -> str | None:
        """The strictest rule over every touched checkpoint (None when nothing is touched)."""
        out = None
        for c in self.checkpoints:
            out = stricter(out, c.rule)
        return out

    def counts(self) -> dict[str, int]:
        return {r: sum(c.rule == r for c in self.checkpoints) for r in RULES}

    def output_counts(self) -> dict[str, int]:
        return {a: sum(o.action == a for o in self.outputs) for a in OUTPUT_ACTIONS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "kind": self.kind,
            "grant_ids": self.grant_ids,
            "events": self.events,
            "rule": self.rule,
            "counts": self.counts(),
            "checkpoints": [asdict(c) for c in self.checkpoints],
            "output_counts": self.output_counts(),
            "outputs": [asdict(o) for o in self.outputs],
        }


# --------------------------------------------------------------------------- resolving the query


def _ledger_grants(ledger: Ledger | None, ident: str) -> tuple[list[str], dict[str, list[tuple[int, str]]], list]:
    """The grant's lineage (supersedes chain), each grant's (seq, on_termination) versions, its end events."""
    if ledger is None:
        return [], {}, []
    history = ledger.grant_history(ident)
    terms: dict[str, list[tuple[int, str]]] = defaultdict(list)
    ends = []
    for ev in history:
        if isinstance(ev.event, (GrantEvent, AmendEvent)):
            terms[ev.grant_id].append((ev.seq, ev.event.grant.on_termination))
        else:
            ends.append(
                {
                    "seq": ev.seq,
                    "kind": ev.kind,
                    "grant_id": ev.grant_id,
                    "effective_at": ev.event.effective_at.isoformat(),
                    "reason": ev.event.reason,
                }
            )
    return sorted({ev.grant_id for ev in history}), dict(terms), ends


def _resolve(registry: Registry, ledger: Ledger | None, ident: str, catalog: str | None):
    """(kind, grant ids, per-grant terms, end events, matching source rows)."""
    grant_ids, terms, ends = _ledger_grants(ledger, ident)
    if grant_ids:
        return "grant", grant_ids, terms, ends, registry.source_rows(grant_ids=grant_ids)
    rows = registry.source_rows(grant_ids=[ident])
    if rows.num_rows:
        return "grant", [ident], {}, [], rows
    if _SHA256.match(ident):
        return "audio_sha256", [], {}, [], registry.source_rows(audio_sha256=ident)
    isrc = as_isrc(ident)
    if isrc:
        rows = registry.source_rows(isrc=isrc)
        if rows.num_rows:
            return "isrc", [], {}, [], rows
    rows = registry.source_rows(recording_id=ident, catalog=catalog)
    return ("recording" if rows.num_rows else "unknown"), [], {}, [], rows


def _rule_of(grant: str, recorded: str, head_seq: int, terms: dict[str, list[tuple[int, str]]]) -> str:
    """The grant's on_termination in force at the checkpoint's ledger head, else the recorded one."""
    versions = [rule for seq, rule in terms.get(grant, ()) if seq <= head_seq]
    return versions[-1] if versions else recorded


# --------------------------------------------------------------------------- the report


def impact(
    registry: Registry, ledger: Ledger | None, grant_or_recording_id: str, *, catalog: str | None = None
) -> ImpactReport:
    """Every registered checkpoint a grant (or recording id, ISRC, audio sha256) touches, with its rule.

    A grant id is looked up in the ledger first (its supersedes chain counts as one grant); a
    recording id matches in every catalogue unless `catalog` is given."""
    kind, grant_ids, terms, ends, rows = _resolve(registry, ledger, grant_or_recording_id, catalog)
    if kind in ("recording", "isrc", "audio_sha256"):
        grant_ids = sorted(set(rows["grant_id"].to_pylist()))
    touched_ids = sorted(set(rows["checkpoint_id"].to_pylist()))
    info = {r["checkpoint_id"]: r for r in registry.checkpoints(touched_ids)}

    direct: dict[str, str] = {}
    grants: dict[str, set[str]] = defaultdict(set)
    recs: dict[str, set[str]] = defaultdict(set)
    seconds: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for cid, rid, cat, gid, secs, rule, seen_by in zip(
        *(
            rows[c].to_pylist()
            for c in (
                "checkpoint_id",
                "recording_id",
                "catalog",
                "grant_id",
                "seconds_seen",
                "on_termination",
                "seen_by",
            )
        )
    ):
        head = info[cid]["ledger_head_seq"] if cid in info else 0
        if kind == "grant":
            rule = _rule_of(gid, rule, head, terms)
        direct[cid] = stricter(direct.get(cid), rule)
        grants[cid].add(gid)
        recs[cid].add(f"{cat}:{rid}")
        seconds[cid][(f"{cat}:{rid}", seen_by)] = secs  # once per recording and run, not per grant

    rules, via = _propagate(direct, registry.lineage_edges())
    missing = [c for c in rules if c not in info]
    info |= {r["checkpoint_id"]: r for r in registry.checkpoints(missing)}
    out = []
    for cid in sorted(rules, key=lambda c: (info.get(c, {}).get("created_at", ""), c)):
        row = info.get(cid)
        if row is None:
            continue  # a source row of a checkpoint no longer registered
        t = TouchedCheckpoint(
            checkpoint_id=cid,
            folder=row["folder"],
            step=row["step"],
            parent_id=row["parent_id"],
            snapshot_id=row["snapshot_id"],
            rule=rules[cid],
            direct=cid in direct,
            via=via.get(cid),
            grants=sorted(grants.get(cid, ())),
            recordings=sorted(recs.get(cid, ())),
            seconds=float(sum(seconds.get(cid, {}).values())),
            meaning=MEANING[rules[cid]],
        )
        t.commands = retrain_commands(row) if t.rule == "retrain" else []
        out.append(t)
    return ImpactReport(grant_or_recording_id, kind, grant_ids, ends, out, touched_outputs(registry, out))


def touched_outputs(registry: Registry, touched: list[TouchedCheckpoint]) -> list[TouchedOutput]:
    """The released outputs of the touched checkpoints, in checkpoint order then newest first, with their action."""
    rules = {c.checkpoint_id: c.rule for c in touched}
    order = {c.checkpoint_id: i for i, c in enumerate(touched)}
    rows = registry.outputs(list(rules), kind="released", with_record=False) if rules else []
    rows.sort(key=lambda r: order[r["checkpoint_id"]])  # stable: newest first within a checkpoint
    return [
        TouchedOutput(
            record_id=r["record_id"],
            checkpoint_id=r["checkpoint_id"],
            rule=rules[r["checkpoint_id"]],
            action=OUTPUT_ACTION[rules[r["checkpoint_id"]]],
            created_at=r["created_at"],
            prompt=r["prompt"],
            uses=r["uses"],
            territory=r["territory"],
            path=r["path"],
            audio_sha256=r["audio_sha256"],
            meaning=OUTPUT_MEANING[OUTPUT_ACTION[rules[r["checkpoint_id"]]]],
        )
        for r in rows
    ]


def _propagate(direct: dict[str, str], edges: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """Carry rules down parent → child links: a child is never less strict than its parent.
    Returns (rule per checkpoint, parent it took a stricter rule from)."""
    children: dict[str, list[str]] = defaultdict(list)
    for child, parent in edges:
        children[parent].append(child)
    rules = dict(direct)
    via: dict[str, str] = {}
    stack = list(direct)
    while stack:
        parent = stack.pop()
        for child in children.get(parent, ()):
            new = stricter(rules.get(child), rules[parent])
            if child not in rules or new != rules[child]:
                if new != direct.get(child):
                    via[child] = parent
                rules[child] = new
                stack.append(child)
    return rules, via


def retrain_commands(row: dict[str, Any]) -> list[str]:
    """`lab clear` for a snapshot without the recording, then `lab train` from the same base."""
    policy, catalog = row["policy_name"], row["catalog"]
    kind = row["base_model_kind"]
    if kind == "tiny_from_config":
        model = "model=tiny"
    elif kind == "lab_checkpoint":
        model = f"model=local_pretrained model.path=<retrained {row['parent_id']}, or {row['base_model_path']}>"
    else:
        model = f"model=local_pretrained model.path={row['base_model_path'] or row['base_model_id']}"
    return [
        f"lab clear policy={policy} data.catalog={catalog}",
        f"lab train policy={policy} {model} data.snapshot=<snapshot printed by lab clear>",
    ]


def ended_subjects(stored_events) -> list[tuple[str, str | None]]:
    """(identifier, catalogue) that newly recorded ledger events end: a revoked or expired grant, the
    identifiers of an opt-out (recording id in its catalogue, ISRC, audio sha256). A whole-catalogue
    opt-out is left to clearance: it names no recording the registry indexes."""
    out: list[tuple[str, str | None]] = []
    for ev in stored_events:
        if ev.kind in ("revoke", "expire"):
            out.append((ev.grant_id, None))
        elif ev.event.grant.status == "opted_out":
            s = ev.event.grant.subject
            if s.recording_id:
                out.append((s.recording_id, s.catalog))
            out += [(x, None) for x in (s.isrc, s.audio_sha256) if x]
    return list(dict.fromkeys(out))


def impact_of_events(registry: Registry, ledger: Ledger, stored_events) -> list[ImpactReport]:
    """The impact of each subject the events end (none when the registry is empty)."""
    if registry.is_empty():
        return []
    return [impact(registry, ledger, ident, catalog=cat) for ident, cat in ended_subjects(stored_events)]
