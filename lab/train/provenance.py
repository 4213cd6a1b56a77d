"""What a checkpoint says about itself: the data card, built from the snapshot and the exposure meter.

Only recordings with seconds seen > 0 become source rows: the card lists what the model was
actually fed up to that step, not what it was allowed to see.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from ..cards.schema import DataCard, Identity, Lineage, SnapshotRef, source_row_from_item
from ..data.snapshot import Snapshot
from ..util.canonical import digest
from ..util.timestamps import utcnow

_TERMINATION_ORDER = {"retain": 0, "retrain": 1, "retire": 2}


def code_version(repo: Path | None = None) -> tuple[str, bool]:
    """(git commit, dirty) of the code that trains; ('unknown', False) outside a checkout."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def item_terms(snapshot: Snapshot, recording_id: str) -> dict[str, Any]:
    """A snapshot item joined with the terms of the grants that cleared it.

    With several clearing grants, the card keeps what all of them allow (intersection of
    purposes and territories, earliest expiry, strictest termination rule) and names the
    rights holders of the most recent grant, whose shares are the current split.
    """
    item = snapshot.item_by_id()[recording_id]
    grants = [snapshot.grants[g] for g in item.grant_ids]
    latest = max(grants, key=lambda g: g.seq)
    purposes = set.intersection(*(set(g.purposes) for g in grants))
    terrs = [set(g.territories) for g in grants]
    concrete = [t for t in terrs if "WW" not in t]
    territories = set.intersection(*concrete) if concrete else {"WW"}
    ends = [g.valid_until for g in grants if g.valid_until is not None]
    return {
        **item.model_dump(mode="json"),
        "rights_holders": [dict(p, grant_id=latest.grant_id) for p in latest.parties],
        "licence": latest.licence if len(grants) == 1 else " AND ".join(sorted({g.licence for g in grants})),
        "purposes": sorted(purposes),
        "territories": sorted(territories),
        "valid_until": min(ends).isoformat().replace("+00:00", "Z") if ends else None,
        "on_termination": max((g.on_termination for g in grants), key=_TERMINATION_ORDER.__getitem__),
        "attribution": " / ".join(dict.fromkeys(g.attribution for g in grants if g.attribution)),
    }


def build_data_card(
    *,
    snapshot: Snapshot,
    seconds_seen: Mapping[str, float],
    samples: int,
    tokens: int,
    lineage: Lineage | Mapping[str, Any],
    checkpoint_id: str,
    step: int,
    config: Mapping[str, Any],
    seed: int,
) -> DataCard:
    commit, dirty = code_version()
    cleared = snapshot.item_by_id()
    unknown = sorted(set(seconds_seen) - set(cleared))
    if unknown:
        # The loader only reads snapshot items; anything else means the meter is wrong.
        raise RuntimeError(f"exposure names recordings outside the snapshot: {unknown[:5]}")
    sources = [source_row_from_item(item_terms(snapshot, rid), secs)
               for rid, secs in sorted(seconds_seen.items()) if secs > 0]
    snap_doc = snapshot.model_dump(mode="json", by_alias=True)
    return DataCard.model_validate({
        "schema": "lab.data_card/1",
        "identity": Identity(checkpoint_id=checkpoint_id, created_at=utcnow(), step=step, code_commit=commit,
                             code_dirty=dirty, config_digest=digest(dict(config)), seed=seed,
                             lab_version=__version__),
        "lineage": lineage,
        "snapshot": SnapshotRef.from_snapshot(snap_doc),
        "sources": sources,
        "exclusions": {k: int(v) for k, v in snapshot.counts.get("excluded", {}).items()},
        "exposure": {"total_seconds": sum(s.seconds_seen for s in sources), "samples": samples, "tokens": tokens},
    })
