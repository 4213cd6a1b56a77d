"""`lab audit --html FILE`: the audit as one self-contained page a reviewer opens offline.

The page tells the story of one checkpoint: every check, its status under on_termination, consent
then (the snapshot's ledger head) and now, the sources that no longer clear with their grants and
rules, the sources it saw (top N by seconds, plus counts: never every row), the lineage chain as far
as the parent folders exist, and the derived licence. Inline CSS, no script, no external asset;
every value is escaped by Jinja's autoescape (recording titles and credits come from catalogues).
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined

from ..cards.render import top_sources
from ..util import atomic
from ..util.canonical import sha256_hex
from .verify import AuditReport

TEMPLATE = "audit_report.html.j2"
TOP_SOURCES = 50  # rows of the sources table; the counts cover every row
MAX_LINEAGE = 64  # ancestors followed before the chain is cut (a cycle cannot loop forever)

STATUS_MEANING = {
    "ok": "every source still clears",
    "retained": "some sources no longer clear, but their grants say retain: the checkpoint stays usable",
    "retrain": "some sources no longer clear and their grants say retrain: retrain without them",
    "retired": "some sources no longer clear and their grants say retire: the checkpoint is withdrawn",
    "unchecked": "consent now was not checked (offline, or the ledger could not be read)",
}


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("lab.audit", "templates"), autoescape=True, undefined=StrictUndefined, trim_blocks=True
    )


def lineage_chain(card: Any, limit: int = MAX_LINEAGE) -> list[dict[str, Any]]:
    """This checkpoint, then each parent whose folder still exists, following parent_checkpoint links.

    Each entry: checkpoint_id, step, relation, base (id and kind), snapshot, path, and `status`:
    'this checkpoint' | 'card matches' | 'card changed since the child was trained' | 'folder not found'
    | 'unreadable card'."""
    chain = [_link(card.model_dump(mode="json", by_alias=True), None, "this checkpoint")]
    parent = card.lineage.parent_checkpoint
    want = parent.data_card_sha256 if parent else None
    seen = {card.identity.checkpoint_id}
    ref = parent.model_dump() if parent else None
    while ref is not None and len(chain) <= limit:
        folder = Path(ref["path"])
        path = folder / "data_card.json"
        if not path.is_file():
            chain.append({"checkpoint_id": ref["checkpoint_id"], "path": str(folder), "status": "folder not found"})
            break
        data = path.read_bytes()
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError:
            chain.append({"checkpoint_id": ref["checkpoint_id"], "path": str(folder), "status": "unreadable card"})
            break
        status = "card matches" if sha256_hex(data) == want else "card changed since the child was trained"
        chain.append(_link(raw, str(folder), status))
        me = raw.get("identity", {}).get("checkpoint_id")
        if me in seen:
            break
        seen.add(me)
        ref = (raw.get("lineage") or {}).get("parent_checkpoint")
        want = ref.get("data_card_sha256") if ref else None
    return chain


def _link(raw: dict[str, Any], path: str | None, status: str) -> dict[str, Any]:
    identity, lineage, snap = raw.get("identity", {}), raw.get("lineage", {}), raw.get("snapshot", {})
    base = lineage.get("base_model", {})
    return {
        "checkpoint_id": identity.get("checkpoint_id", "?"),
        "step": identity.get("step"),
        "relation": lineage.get("relation"),
        "base": f"{base.get('id', '?')} ({base.get('kind', '?')})",
        "snapshot": snap.get("snapshot_id"),
        "licence": (raw.get("licence") or {}).get("expression"),
        "path": path,
        "status": status,
    }


def render_html(report: AuditReport, *, top: int = TOP_SOURCES, generated_at: datetime | None = None) -> str:
    """The report as one HTML page (`report.bundle`, when the card was readable, fills the sections)."""
    bundle = report.bundle
    card = bundle.card if bundle is not None else None
    terminated = report.termination.sources if report.termination is not None else []
    gone = {(t.recording_id, t.catalog) for t in terminated}
    # a source not among those listed as no longer clearing is known to clear only when all were listed
    checked = report.termination is not None and report.termination.total <= len(terminated)
    rows = [
        {**r, "cleared_now": False if (r["recording_id"], r["catalog"]) in gone else (True if checked else None)}
        for r in (top_sources(bundle.sources, top) if bundle is not None else [])
    ]
    checks = {c.name: c for c in report.checks}
    return (
        _env()
        .get_template(TEMPLATE)
        .render(
            r=report,
            c=card,
            checks=report.checks,
            status=report.status,
            meaning=STATUS_MEANING.get(report.status, ""),
            termination=report.termination,
            terminated=terminated,
            then=checks.get("ledger_then"),
            now=checks.get("consent_now"),
            rows=rows,
            more=max((card.sources.rows if card else 0) - len(rows), 0),
            chain=lineage_chain(card) if card is not None else [],
            generated=(generated_at or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        )
    )


def write_html(report: AuditReport, path: str | Path, *, top: int = TOP_SOURCES) -> Path:
    """Render and write the page atomically; returns its path."""
    path = Path(path)
    atomic.write_bytes(path, render_html(report, top=top).encode())
    return path
