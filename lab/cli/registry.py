"""`lab registry rebuild PATH…` and `lab checkpoints list`: the checkpoint index from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import app
from .errors import LabTyper
from .output import emit_json, fail, table

registry_app = LabTyper(
    no_args_is_help=True,
    add_completion=False,
    help="The checkpoint registry: an index derived from signed checkpoints.",
)
checkpoints_app = LabTyper(no_args_is_help=True, add_completion=False, help="Registered checkpoints.")
app.add_typer(registry_app, name="registry")
app.add_typer(checkpoints_app, name="checkpoints")

RegistryOpt = Annotated[
    Optional[str],
    typer.Option(
        "--registry", help="SQLAlchemy URL of the registry (default: $LAB_REGISTRY_URL, else SQLite under $LAB_HOME)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def open_registry(url: str | None, as_json: bool):
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from ..registry import Registry

    try:
        return Registry(url)
    except (ArgumentError, SQLAlchemyError, OSError) as exc:
        fail(f"cannot open registry {url or '(default)'}: {exc}", as_json=as_json)


@registry_app.command("rebuild")
def rebuild_cmd(
    paths: Annotated[list[Path], typer.Argument(help="folders holding checkpoints and output records")],
    public_key: Annotated[Optional[Path], typer.Option(help="PEM public key; default: this lab's key")] = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Recreate the registry from the signed checkpoints under PATHS; folders that fail are skipped and named."""
    from ..cards.signing import ensure_keypair
    from ..registry import rebuild
    from ..settings import keys_dir

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such path: {', '.join(missing)}", as_json=json_)
    key = public_key or ensure_keypair(keys_dir()).public_path
    with open_registry(registry, json_) as reg:
        report = rebuild(reg, paths, key)
    if json_:
        emit_json({"ok": True, **report.to_dict()})
        return
    typer.echo(
        f"registered {len(report.registered)} checkpoint(s), {report.source_rows} source row(s), "
        f"{len(report.outputs)} output record(s)"
    )
    if report.skipped:
        table("skipped", ["folder", "reason"], [list(s) for s in report.skipped])


def _audit_text(audit: dict | None) -> str:
    if audit is None:
        return "not audited"
    summary = audit["summary"]
    if audit["ok"]:
        return f"pass ({summary['passed']} checks) {audit['audited_at'][:19]}"
    return f"FAIL: {', '.join(f['name'] for f in summary['failed'])} {audit['audited_at'][:19]}"


@checkpoints_app.command("list")
def list_cmd(registry: RegistryOpt = None, json_: JsonOpt = False) -> None:
    """Every registered checkpoint: step, folder, parent, snapshot, status, last audit, sources, seconds."""
    from ..checkpoint.folder import is_complete

    with open_registry(registry, json_) as reg:
        rows, audits = reg.checkpoints(), reg.audits()
    out = []
    for r in rows:
        status = "ok" if is_complete(r["folder"]) else "missing"
        audit = audits.get(r["checkpoint_id"])
        if audit and audit.get("data_card_sha256") not in (None, r["data_card_sha256"]):
            audit = None  # the audit was of another card under this id
        out.append(
            {
                "checkpoint_id": r["checkpoint_id"],
                "step": r["step"],
                "folder": r["folder"],
                "parent_id": r["parent_id"],
                "snapshot_id": r["snapshot_id"],
                "status": status,
                "audit": audit,
                "sources": r["sources_rows"],
                "seconds": r["total_seconds"],
                "on_termination": r["on_termination"],
                "created_at": r["created_at"],
                "weights_sha256": r["weights_sha256"],
                "data_card_sha256": r["data_card_sha256"],
            }
        )
    if json_:
        emit_json({"ok": True, "checkpoints": out})
        return
    if not out:
        typer.echo("no checkpoints registered (lab train registers them; `lab registry rebuild PATH` re-indexes)")
        return
    table(
        f"{len(out)} checkpoint(s)",
        ["id", "step", "parent", "snapshot", "status", "audit", "sources", "seconds"],
        [
            [
                c["checkpoint_id"],
                c["step"],
                c["parent_id"] or "-",
                c["snapshot_id"],
                c["status"],
                _audit_text(c["audit"]),
                c["sources"],
                f"{c['seconds']:.1f}",
            ]
            for c in out
        ],
    )
