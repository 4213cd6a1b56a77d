"""Helpers of the audit tests: the card fixtures of tests/cards (a synthetic snapshot, no training),
and a built demo (catalogue + ledger + snapshot, no training) whose checkpoints are card folders
written from the demo snapshot; each test revokes on its own copy of the ledger.

A module with its own name rather than a conftest.py: tests/cards imports `from conftest import …`,
which another directory's conftest.py would shadow when both are collected. Test modules import the
demo builder from here into a module-scoped fixture."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "jobs"))  # jobs_helpers: the demo builder the job tests use


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cards_fx = _load("cards_fixtures", TESTS / "cards" / "conftest.py")


@dataclass
class AuditDemo:
    env: object  # jobs_helpers.DemoEnv
    snapshot: object  # lab.snapshot.Snapshot

    def ledger_copy(self, where: Path):
        """A private copy of the demo ledger (same head, so ledger_then holds)."""
        from lab.rights.ledger import Ledger

        src = Path(self.env.ledger_url.removeprefix("sqlite:///"))
        where.mkdir(parents=True, exist_ok=True)
        dst = where / "ledger.sqlite"
        with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:  # backup API: WAL content included
            a.backup(b)
        return Ledger(f"sqlite:///{dst}")

    def checkpoint(
        self,
        folder: Path,
        seconds: dict[str, float],
        *,
        rules: dict[str, str] | None = None,
        checkpoint_id: str = "audit-step-000010",
        parent: Path | None = None,
        inherited=None,
        title: str | None = None,
    ) -> Path:
        """A checkpoint folder's card files built from the demo snapshot (no weights, unsigned).
        `rules`: grant_id -> on_termination overrides; `title`: every item's title."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from lab.cards import build_card, card_sha256, write_card_files

        snap = self.snapshot
        grants, items = snap.grants, snap.items
        if rules:
            col = [
                rules.get(g, r) for g, r in zip(grants["grant_id"].to_pylist(), grants["on_termination"].to_pylist())
            ]
            grants = grants.set_column(
                grants.schema.get_field_index("on_termination"), "on_termination", pa.array(col, pa.string())
            )
        if title is not None:
            items = items.set_column(
                items.schema.get_field_index("title"), "title", pc.cast(pa.repeat(title, items.num_rows), pa.string())
            )
        fake = SimpleNamespace(
            **{
                k: getattr(snap, k)
                for k in ("snapshot_id", "merkle_root", "catalog", "ledger", "policy", "cleared_at", "counts")
            },
            items=items,
            grants=grants,
        )
        base = {
            "id": "lab-tiny",
            "digest": None,
            "licence": "Apache-2.0",
            "declared_training_data": "none",
            "kind": "tiny_from_config",
        }
        lineage = {"base_model": base, "relation": "pretrain"}
        if parent is not None:
            base = {**base, "kind": "lab_checkpoint", "id": parent.name}
            parent_id = __import__("orjson").loads((parent / "data_card.json").read_bytes())["identity"][
                "checkpoint_id"
            ]
            lineage = {
                "base_model": base,
                "relation": "finetune",
                "parent_checkpoint": {
                    "checkpoint_id": parent_id,
                    "data_card_sha256": card_sha256(parent),
                    "path": str(parent),
                },
            }
        bundle = build_card(
            snapshot=fake,
            seconds_seen=seconds,
            samples=len(seconds),
            tokens=100,
            lineage=lineage,
            inherited=inherited,
            checkpoint_id=checkpoint_id,
            step=10,
            config={"t": 1},
            seed=0,
        )
        folder.mkdir(parents=True, exist_ok=True)
        write_card_files(bundle, folder, base_model_hub_id=None)
        return folder


def build_audit_demo(root: Path) -> AuditDemo:
    """Render, ingest, import and clear the demo under `root` (no training: seconds, not minutes)."""
    from jobs_helpers import make_demo

    from lab.snapshot import load_snapshot

    env = make_demo(root)
    return AuditDemo(env, load_snapshot(env.snapshot))
