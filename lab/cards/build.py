"""Build a checkpoint's data card from the snapshot and the exposure meter, column-wise.

Only recordings with seconds seen > 0 become rows: the card lists what the model was actually
fed up to that step, not what it was allowed to see. Each row joins the snapshot item with the
terms of the grants that cleared it; with several grants the row keeps what all of them allow
(intersection of purposes and of territories, 'WW' being the identity; earliest expiry; strictest
on_termination), names the rights holders of the most recent grant (highest ledger seq), whose
shares are the current split, and gives the single licence or the distinct ones joined by
' AND '. All of it is hash lookups and segment reductions over arrow columns: no Python per row.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lab import __version__
from lab.rights.records import WORLDWIDE
from lab.util.canonical import digest
from lab.util.timestamps import utcnow

from .arrow import combine_lists, lists_from, plain, positions, segment_reduce, singletons
from .files import CardBundle
from .licence import derive_licence
from .schema import (
    SCHEMA_ID,
    DataCard,
    Exposure,
    Identity,
    InheritedSources,
    Lineage,
    SnapshotRef,
    SourcesRef,
)
from .sources import HOLDER, SOURCE_SCHEMA, TERMINATIONS, conform, derive_validity, parquet_bytes, sha256_bytes, summary

_NO_END = np.iinfo(np.int64).max


def code_version(repo: Path | None = None) -> tuple[str, bool]:
    """(git commit, dirty) of the code that trains; ('unknown', False) outside a checkout."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def _holders_per_grant(grants: pa.Table) -> pa.ListArray:
    """Each grant's parties as rights_holders entries (its grant_id added), one list per grant."""
    parties = plain(grants["parties"])
    flat = plain(pc.list_flatten(parties))
    owner = plain(pc.list_parent_indices(parties))
    names = {f.name for f in flat.type}
    fields = []
    for f in HOLDER:
        if f.name == "grant_id":
            fields.append(plain(grants["grant_id"]).take(owner))
        elif f.name in names:
            fields.append(plain(pc.struct_field(flat, f.name)).cast(f.type))
        else:
            fields.append(pa.nulls(len(flat), f.type))
    lengths = plain(pc.list_value_length(parties)).fill_null(0).to_numpy()
    return lists_from(lengths, pa.StructArray.from_arrays(fields, fields=list(HOLDER)))


def _terms(rows: pa.Table, grants: pa.Table) -> dict[str, pa.Array]:
    """The derived consent columns for these item rows, from the grants table."""
    n = rows.num_rows
    glists = plain(rows["grant_ids"])
    counts = plain(pc.list_value_length(glists)).fill_null(0).to_numpy()
    if n and counts.min() < 1:
        raise RuntimeError("a snapshot item has no clearing grant")
    row_of = plain(pc.list_parent_indices(glists)).to_numpy().astype(np.int64)
    g = positions(pc.list_flatten(glists), grants["grant_id"])
    if (g < 0).any():
        raise RuntimeError("snapshot items cite grants missing from snapshot.grants")
    take = pa.array(g)

    seq = plain(grants["seq"]).to_numpy(zero_copy_only=False)[g]
    newest = np.flatnonzero(seq == segment_reduce(np.maximum, seq, counts)[row_of])
    first = np.ones(len(newest), dtype=bool)
    first[1:] = row_of[newest][1:] != row_of[newest][:-1]
    newest = newest[first]  # the first flat position per row holding its highest seq
    rank = positions(grants["on_termination"], pa.array(TERMINATIONS))
    if (rank < 0).any():
        raise RuntimeError("a grant has an unknown on_termination")
    ends = plain(grants["valid_until"]).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    ends = ends.fill_null(_NO_END).to_numpy()[g]
    earliest = segment_reduce(np.minimum, ends, counts)
    attribution = plain(grants["attribution"]).fill_null("").take(take)
    return {
        "rights_holders": _holders_per_grant(grants).take(pa.array(g[newest])),
        "licence": pc.binary_join(
            combine_lists(row_of, singletons(plain(grants["licence"]).take(take)), n, how="union"), " AND "
        ),
        "purposes": combine_lists(row_of, plain(grants["purposes"]).take(take), n, how="intersect"),
        "territories": combine_lists(
            row_of, plain(grants["territories"]).take(take), n, how="intersect", universal=WORLDWIDE
        ),
        "valid_until": pa.array(earliest, pa.int64(), mask=earliest == _NO_END).cast(pa.timestamp("us", tz="UTC")),
        "on_termination": pa.array(TERMINATIONS).take(pa.array(segment_reduce(np.maximum, rank[g], counts))),
        "credit": pc.binary_join(
            combine_lists(row_of, singletons(attribution), n, how="union", order="first", skip_empty=True), " / "
        ),
    }


def source_rows(snapshot: Any, seconds_seen: Mapping[str, float], checkpoint_id: str) -> pa.Table:
    """This checkpoint's own rows (seconds > 0), in snapshot item order, as SOURCE_SCHEMA."""
    ids = pa.array(list(seconds_seen.keys()), pa.string())
    secs = np.fromiter(seconds_seen.values(), dtype=np.float64, count=len(ids))
    if not np.isfinite(secs).all():
        raise RuntimeError("exposure holds a non-finite seconds value")
    keep = secs > 0
    ids, secs = ids.filter(pa.array(keep)), secs[keep]
    items = snapshot.items
    at = positions(ids, items["recording_id"])
    if (at < 0).any():
        # The loader only reads snapshot items; anything else means the meter is wrong.
        unknown = ids.filter(pa.array(at < 0)).slice(0, 5).to_pylist()
        raise RuntimeError(f"exposure names recordings outside the snapshot: {unknown}")
    order = np.argsort(at, kind="stable")
    cols = ["recording_id", "isrc", "title", "artists", "audio_sha256", "grant_ids", "metadata_licence", "extra"]
    rows = items.select(cols).take(pa.array(at[order]))
    n = rows.num_rows
    catalog = snapshot.catalog["name"] if isinstance(snapshot.catalog, Mapping) else str(snapshot.catalog)
    columns = {
        "recording_id": rows["recording_id"],
        "seen_by": pa.repeat(checkpoint_id, n),
        "catalog": pa.repeat(catalog, n),
        "isrc": rows["isrc"],
        "title": rows["title"],
        "artists": rows["artists"],
        "audio_sha256": rows["audio_sha256"],
        "grant_ids": rows["grant_ids"],
        "metadata_licence": rows["metadata_licence"],
        "extra": rows["extra"],
        **_terms(rows, snapshot.grants),
        "seconds_seen": pa.array(secs[order], pa.float64()),
    }
    return pa.Table.from_arrays([plain(columns[f.name]).cast(f.type) for f in SOURCE_SCHEMA], schema=SOURCE_SCHEMA)


def expired_sources(table: pa.Table, at: datetime) -> list[dict[str, Any]]:
    """Rows whose valid_until is earlier than `at` (the card flags them: fed only before it)."""
    ends = table["valid_until"].cast(pa.timestamp("us", tz="UTC"))
    late = table.filter(pc.fill_null(pc.less(ends, pa.scalar(at, pa.timestamp("us", tz="UTC"))), False))
    cols = ["recording_id", "seen_by", "valid_until", "seconds_seen"]
    return late.select(cols).sort_by([("valid_until", "ascending"), ("recording_id", "ascending")]).to_pylist()


def build_card(
    *,
    snapshot: Any,
    seconds_seen: Mapping[str, float],
    samples: int,
    tokens: int,
    lineage: Lineage | Mapping[str, Any],
    inherited: pa.Table | None,
    checkpoint_id: str,
    step: int,
    config: Mapping[str, Any],
    seed: int,
    consent: Mapping[str, Any] | None = None,
    created_at: datetime | None = None,
) -> CardBundle:
    """The card and its rows (own + the parent's `inherited` rows), not yet written.

    `snapshot`: the snapshot object (items / grants arrow tables, header attributes).
    `inherited`: the parent checkpoint's sources table (None without a lab-checkpoint parent).
    `consent`: the run's consent section (poll_seconds, on_change, events_applied; lab.train.consent_watch);
    rows whose valid_until is before `created_at` (default: now) are added to it as expired_sources.
    """
    created_at = created_at or utcnow()
    lineage = lineage.model_dump() if isinstance(lineage, Lineage) else dict(lineage)
    own = source_rows(snapshot, seconds_seen, checkpoint_id)
    table = own
    lineage["inherited_sources"] = None
    if inherited is not None:
        inherited = conform(inherited)
        lineage["inherited_sources"] = InheritedSources(**summary(inherited))
        table = pa.concat_tables([own, inherited])
    data = parquet_bytes(table)
    commit, dirty = code_version()
    card_lineage = Lineage.model_validate(lineage)
    card = DataCard(
        schema=SCHEMA_ID,
        identity=Identity(
            checkpoint_id=checkpoint_id,
            created_at=created_at,
            step=step,
            code_commit=commit,
            code_dirty=dirty,
            config_digest=digest(dict(config)),
            seed=seed,
            lab_version=__version__,
        ),
        lineage=card_lineage,
        snapshot=SnapshotRef.from_snapshot(snapshot),
        sources=SourcesRef(
            sha256=sha256_bytes(data),
            bytes=len(data),
            rows=table.num_rows,
            own_rows=own.num_rows,
            inherited_rows=table.num_rows - own.num_rows,
            total_seconds=summary(table)["total_seconds"],
        ),
        exclusions={k: int(v) for k, v in (snapshot.counts.get("excluded") or {}).items()},
        validity=derive_validity(table),
        licence=derive_licence(card_lineage.base_model.licence, table),
        exposure=Exposure(total_seconds=summary(own)["total_seconds"], samples=samples, tokens=tokens),
        consent=None if consent is None else {**consent, "expired_sources": expired_sources(table, created_at)},
    )
    return CardBundle(card=card, sources=table, parquet=data)
