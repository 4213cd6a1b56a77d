"""Live consent during training: the ledger is polled for events appended since the run's head.

Expiry known ahead is the loader's job (`lab.data.loader.Admission` drops a recording at its grant's
valid_until by the clock). Everything else (revocations, opt-outs, amendments) can arrive at any time:
`ConsentWatch` reads the events after the head it last verified (`Ledger.verify_since` +
`Ledger.events_since`: incremental, a broken chain stops the run), works out which recordings in use
they name (by grant id, or by subject for a new grant or amendment), and asks `lab.rights.consent` about
those sources only. A source that no longer clears leaves the sampler from the next step
(`on_change: exclude`) or the run saves and stops (`on_change: stop`); a revocation or expiry that
takes effect later becomes that recording's deadline. Every change is written to
`consent_events.jsonl` in the run folder, printed as one line, kept in the training state and recorded
in the next data card.

The ledger is polled every `poll_seconds` (at the end of a step) and always before a checkpoint is
written (in `state_dict`, which the Trainer calls on every rank just before it saves). Rank 0 reads
and decides; the decision is broadcast, so DDP ranks always agree on the excluded set. Under DDP,
whether a poll is due is broadcast by rank 0 at every step (alone, nothing is).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ..data.loader import Admission
from ..rights.consent import LedgerBroken, check_sources
from ..rights.ledger import Ledger, StoredEvent
from ..rights.policy import Policy
from ..util.timestamps import to_ts
from .distributed import DistInfo, broadcast_object
from .trainer import TrainerHooks

__all__ = ["ConsentConfig", "ConsentStop", "ConsentWatch", "WATCH_SCHEMA", "EVENTS_FILE"]

log = logging.getLogger("lab.train.consent")

WATCH_SCHEMA = "lab.consent_watch/1"
EVENTS_FILE = "consent_events.jsonl"
ACTIONS = ("exclude", "stop")


class ConsentStop(RuntimeError):
    """`consent.on_change=stop` and a consent change touched a recording in use: the run saved and stopped."""


@dataclass(frozen=True)
class ConsentConfig:
    """The `consent/` config group."""

    poll_seconds: float = 30.0
    on_change: Literal["exclude", "stop"] = "exclude"

    def __post_init__(self) -> None:
        if not (math.isfinite(float(self.poll_seconds)) and 0 < float(self.poll_seconds) <= 30):
            raise ValueError(f"consent.poll_seconds must be in (0, 30], not {self.poll_seconds!r}")
        if self.on_change not in ACTIONS:
            raise ValueError(f"consent.on_change must be one of {ACTIONS}, not {self.on_change!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ConsentConfig:
        data = dict(data or {})
        unknown = sorted(set(data) - {"poll_seconds", "on_change"})
        if unknown:
            raise ValueError(f"unknown consent config keys: {unknown}")
        return cls(**data)


def _isrc(value: Any) -> str | None:
    return str(value).replace("-", "").upper() if value else None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Index:
    """Snapshot items by grant id and by subject identifier (built at the first event)."""

    def __init__(self, snapshot: Any):
        items = snapshot.items
        self.rids: list[str] = items["recording_id"].to_pylist()
        self.by_grant: dict[str, list[int]] = {}
        for i, gids in enumerate(items["grant_ids"].to_pylist()):
            for g in gids:
                self.by_grant.setdefault(g, []).append(i)
        self.by_id: dict[str, list[int]] = {}
        for col, norm in (("recording_id", str), ("isrc", _isrc), ("audio_sha256", lambda v: str(v).lower())):
            for i, v in enumerate(items[col].to_pylist()):
                if v:
                    self.by_id.setdefault(f"{col}:{norm(v)}", []).append(i)

    def touched(self, stored: StoredEvent, catalog: str) -> set[int]:
        ev = stored.event
        rows = set(self.by_grant.get(stored.grant_id, ()))
        grant = getattr(ev, "grant", None)
        if grant is not None:
            if grant.supersedes:
                rows.update(self.by_grant.get(grant.supersedes, ()))
            s = grant.subject
            ids = [
                ("recording_id", s.recording_id),
                ("isrc", _isrc(s.isrc)),
                ("audio_sha256", s.audio_sha256.lower() if s.audio_sha256 else None),
            ]
            for col, v in ids:
                if v:
                    rows.update(self.by_id.get(f"{col}:{v}", ()))
            if s.catalog == catalog and not any(v for _, v in ids):
                rows.update(range(len(self.rids)))  # a whole-catalogue deal
        return rows


class ConsentWatch(TrainerHooks):
    """Polls the ledger during training and applies consent changes to the run's Admission."""

    state_key = "consent"

    def __init__(
        self,
        *,
        snapshot: Any,
        ledger: Ledger,
        policy: Policy,
        admission: Admission,
        head: tuple[int, str],
        config: ConsentConfig,
        dist: DistInfo,
        run_dir: Path,
        clock: Callable[[], datetime] | None = None,
        grad_accum: int = 1,
    ):
        self.snapshot, self.ledger, self.policy, self.admission = snapshot, ledger, policy, admission
        self.head = (int(head[0]), str(head[1]))
        self.config, self.dist, self.run_dir = config, dist, Path(run_dir)
        self.clock = clock or _utcnow
        self.grad_accum = int(grad_accum)
        self.catalog = snapshot.catalog["name"] if isinstance(snapshot.catalog, Mapping) else str(snapshot.catalog)
        self.events_applied: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.saved_step = -1
        self.polls = 0
        self._index: _Index | None = None
        self._last = time.monotonic()
        self._step, self._micro = -1, 0

    # ------------------------------------------------------------------ when
    def _due(self) -> bool:
        due = time.monotonic() - self._last >= float(self.config.poll_seconds)
        return bool(broadcast_object(due)) if self.dist.distributed else due

    def on_batch(self, step: int, batch: Any) -> None:
        if step != self._step:
            self._step, self._micro = step, 0
        self._micro += 1
        if self._micro == self.grad_accum and self._due():  # after the step's last micro-batch was metered
            self.poll(step)

    def poll(self, step: int, *, force: bool = True) -> None:
        """Read the events since the head (rank 0), decide, and apply the same decision on every rank.
        `step`: the last step trained; a change takes effect from `step + 1`. Collective under DDP."""
        if not force and not self._due():
            return
        decision = None
        if self.dist.is_main:
            try:
                decision = self._decide(step)
            except LedgerBroken as exc:
                decision = {"error": str(exc)}
        decision = broadcast_object(decision)
        self._last = time.monotonic()
        self.polls += 1
        self._apply(decision)

    # ------------------------------------------------------------------ what
    def _decide(self, step: int) -> dict[str, Any]:
        report = self.ledger.verify_since(self.head)
        if not report.ok:
            p = report.first_problem
            raise LedgerBroken(
                f"the consent ledger no longer verifies (seq {p.seq}: {p.problem}); "
                "training stops: run `lab rights verify`"
            )
        head = (report.head_seq, report.head_hash)
        if head == self.head:
            return {"head": head}
        now = self.clock()
        events = [e for e in self.ledger.events_since(self.head[0]) if e.seq <= head[0]]
        if self._index is None:
            self._index = _Index(self.snapshot)
        rids = self._index.rids
        touched = {e.seq: self._index.touched(e, self.catalog) for e in events}
        live = sorted({i for rows in touched.values() for i in rows if rids[i] not in self.admission.excluded})
        refused: set[str] = set()
        if live:
            sources = self.snapshot.items.select(["recording_id", "isrc", "audio_sha256"]).take(live)
            answer = check_sources(sources, self.ledger, self.policy, at=now, catalog=self.catalog, verified=report)
            refused = {rid for rid, _, _ in answer.problems()}
        action = self.config.on_change
        applied, tighten = [], {}
        for e in events:
            rows = touched[e.seq]
            recs = sorted({rids[i] for i in rows} & refused)
            later = self._later(e, now)
            if later is not None:
                moving = sorted(
                    rids[i]
                    for i in rows
                    if rids[i] not in refused
                    and rids[i] not in self.admission.excluded
                    and later.timestamp() < self.admission.deadlines.get(rids[i], math.inf)
                )
                tighten.update({r: min(tighten.get(r, math.inf), later.timestamp()) for r in moving})
                if moving:
                    applied.append(self._record(e, moving, later, now, step, "deadline"))
            if recs:
                applied.append(self._record(e, recs, self._effective(e), now, step, action))
        return {"head": head, "refused": sorted(refused), "tighten": tighten, "events": applied}

    @staticmethod
    def _effective(e: StoredEvent) -> datetime:
        """When a change takes effect: a revocation's or expiry's effective time; else when it was recorded."""
        return getattr(e.event, "effective_at", None) or e.recorded_at

    @staticmethod
    def _later(e: StoredEvent, now: datetime) -> datetime | None:
        """A consent end the event sets in the future (a revocation effective later, an amended
        valid_until), which becomes a deadline; None otherwise."""
        when = getattr(e.event, "effective_at", None)
        grant = getattr(e.event, "grant", None)
        if when is None and grant is not None:
            when = grant.valid_until
        return when if when is not None and when > now else None

    @staticmethod
    def _record(
        e: StoredEvent, recs: list[str], effective: datetime, now: datetime, step: int, action: str
    ) -> dict[str, Any]:
        return {
            "seq": e.seq,
            "event_id": e.event_id,
            "kind": e.kind,
            "grant_id": e.grant_id,
            "recordings": recs,
            "effective_at": to_ts(effective),
            "detected_at": to_ts(now),
            "step": int(step) + 1,
            "action": action,
        }

    # ------------------------------------------------------------------ apply
    def _apply(self, decision: Mapping[str, Any]) -> None:
        if "error" in decision:
            raise LedgerBroken(decision["error"])
        self.head = tuple(decision["head"])
        if not decision.get("events"):
            return
        for rid, ts in decision["tighten"].items():
            self.admission.tighten(rid, datetime.fromtimestamp(ts, timezone.utc))
        self.admission.exclude(decision["refused"])
        self.events_applied.extend(decision["events"])
        for ev in decision["events"]:
            line = self.describe(ev)
            if ev["action"] == "stop" and self.stop_reason is None:
                self.stop_reason = line
            if self.dist.is_main:
                print(line, file=sys.stderr, flush=True)
                log.info(line)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                with open(self.run_dir / EVENTS_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(ev, sort_keys=True) + "\n")

    @staticmethod
    def describe(ev: Mapping[str, Any]) -> str:
        """One line for a consent change applied to the run."""
        recs = ", ".join(ev["recordings"][:5]) + (
            f" (+{len(ev['recordings']) - 5})" if len(ev["recordings"]) > 5 else ""
        )
        what = {
            "exclude": f"excluded from step {ev['step']}",
            "stop": f"run stops after step {ev['step'] - 1} (consent.on_change=stop)",
            "deadline": f"no longer fed from {ev['effective_at']}",
        }[ev["action"]]
        return f"consent: {ev['kind']} of grant {ev['grant_id']} (ledger seq {ev['seq']}) touches {recs}: {what}"

    def raise_if_stopped(self) -> None:
        if self.stop_reason is not None:
            raise ConsentStop(self.stop_reason)

    # ------------------------------------------------------------------ state and card
    def state_dict(self) -> dict[str, Any]:
        """Polls first (every rank calls this just before a checkpoint is saved), then the state."""
        step = self.trainer.step if self.trainer is not None else 0
        self.poll(step)
        self.saved_step = step
        return {
            "schema": WATCH_SCHEMA,
            "snapshot_id": self.snapshot.snapshot_id,
            "head": list(self.head),
            "events_applied": list(self.events_applied),
            "admission": self.admission.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("schema") != WATCH_SCHEMA:
            raise ValueError(f"consent state is not {WATCH_SCHEMA}: {state.get('schema')!r}")
        if state["snapshot_id"] != self.snapshot.snapshot_id:
            raise ValueError(
                f"the checkpoint trained on snapshot {state['snapshot_id']}, this run has "
                f"{self.snapshot.snapshot_id}: a resume continues on its own snapshot"
            )
        self.head = (int(state["head"][0]), str(state["head"][1]))
        self.events_applied = list(state.get("events_applied", []))
        self.admission.load_state_dict(state.get("admission", {}))
        if self.trainer is not None:
            self.saved_step = self.trainer.step

    def card_section(self) -> dict[str, Any]:
        """The data card's `consent` section (lab.cards.schema.ConsentSection)."""
        return {
            "poll_seconds": float(self.config.poll_seconds),
            "on_change": self.config.on_change,
            "events_applied": list(self.events_applied),
        }
