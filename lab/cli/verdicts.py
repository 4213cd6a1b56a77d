"""Per-recording verdicts as a table or JSON: `lab clear show=...` (a snapshot's rows) and `lab rights show`."""

from __future__ import annotations

from typing import Any

from .output import emit_json, table

SHOW = ("excluded", "cleared", "all")


class ShowError(ValueError):
    """`show=` / `limit=` of `lab clear` is not one we know (bad input)."""


def check_show(show: Any, limit: Any) -> None:
    if show is not None and show not in SHOW:
        raise ShowError(f"show={show!r}: expected one of {', '.join(SHOW)} (or null)")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ShowError(f"limit={limit!r}: expected a number of rows >= 0 (or null for all)")


def snapshot_verdicts(snapshot: Any, show: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a loaded snapshot: excluded ones (reason + detail), cleared ones (their clearing grants), or both."""
    check_show(show, limit)
    rows: list[dict[str, Any]] = []
    if show in ("cleared", "all"):
        from ..catalog.licence import note_detail

        items = snapshot.items.select(["recording_id", "grant_ids", "metadata_licence", "notes"])
        items = items.slice(0, limit) if limit is not None else items
        noted = items.to_pylist()
        licence = {}
        if any(r["notes"] for r in noted):  # the grants' licences, for the notes' detail
            licence = dict(zip(snapshot.grants["grant_id"].to_pylist(), snapshot.grants["licence"].to_pylist()))
        rows += [
            {
                "recording_id": r["recording_id"],
                "verdict": "cleared",
                "reason": None,
                "detail": note_detail(r["notes"], r["metadata_licence"], [licence.get(g, "?") for g in r["grant_ids"]]),
                "grant_ids": r["grant_ids"],
                "notes": r["notes"],
            }
            for r in noted
        ]
    if show in ("excluded", "all"):
        room = None if limit is None else max(limit - len(rows), 0)
        ex = snapshot.excluded.select(["recording_id", "reason", "detail", "grant_ids"])
        ex = ex.slice(0, room) if room is not None else ex
        rows += [{"verdict": "excluded", **r} for r in ex.to_pylist()]
    return rows


def load_policy(name: str):
    """A policy from the config group `policy/NAME.yaml` (packaged, or a user's folder), as `lab clear` composes it."""
    from hydra import compose, initialize_config_module

    from ..recipes.clear import policy_from_cfg

    with initialize_config_module(config_module="lab.resources.configs", version_base="1.3"):
        cfg = compose(config_name="clear", overrides=[f"policy={name}"])
    return policy_from_cfg(cfg.policy)


def catalogue_rows(key: str, catalog: str | None = None) -> tuple[Any, list[str]]:
    """Rows of the stored catalogues (or `catalog` only) whose recording id, ISRC or audio sha256 is `key`,
    and the catalogues searched."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..catalog.store import list_catalogs, load_catalog_table
    from ..util.identifiers import as_isrc

    names = [catalog] if catalog else [m["name"] for m in list_catalogs() if "error" not in m]
    found = []
    for name in names:
        t = load_catalog_table(name)
        hit = pc.equal(t["recording_id"], key)
        isrc = as_isrc(key)
        if isrc:
            hit = pc.or_(hit, pc.equal(t["isrc"], isrc).fill_null(False))
        hit = pc.or_(hit, pc.equal(t["audio_sha256"], key.lower()).fill_null(False))
        found.append(
            t.filter(hit).select(
                ["recording_id", "catalog", "isrc", "audio_sha256", "status", "reject_reason", "reject_detail"]
            )
        )
    return (pa.concat_tables(found) if found else None), names


def consent_verdicts(rows: Any, ledger: Any, policy: Any) -> list[dict[str, Any]]:
    """Each catalogue row's verdict under `policy` now (lab.rights.consent; an ingest reject says so first)."""
    from ..rights.consent import check_sources

    if rows is None or rows.num_rows == 0:
        return []
    answer = check_sources(rows, ledger, policy)
    out = []
    for row, v in zip(rows.to_pylist(), answer.verdicts.to_pylist()):
        rejected = row["status"] != "ok"
        out.append(
            {
                "recording_id": row["recording_id"],
                "catalog": row["catalog"],
                "verdict": "excluded" if rejected or not v["cleared"] else "cleared",
                "reason": row["reject_reason"] if rejected else v["reason"],
                "detail": row["reject_detail"] if rejected else v["detail"],
                "consent": {"cleared": v["cleared"], "reason": v["reason"], "detail": v["detail"]},
            }
        )
    return out


def print_verdicts(title: str, rows: list[dict[str, Any]], as_json: bool, **extra: Any) -> None:
    if as_json:
        emit_json({"ok": True, **extra, "verdicts": rows})
        return
    cols = ["recording_id", *(["catalog"] if rows and "catalog" in rows[0] else []), "verdict", "reason", "detail"]
    with_grants = bool(rows) and "grant_ids" in rows[0]
    table(
        title,
        cols + (["grant_ids"] if with_grants else []),
        [[r[c] or "" for c in cols] + ([", ".join(r["grant_ids"] or [])] if with_grants else []) for r in rows],
    )
