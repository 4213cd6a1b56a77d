"""`lab clear`: catalogue × ledger × policy → a content-addressed snapshot folder."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from omegaconf import DictConfig, OmegaConf

from ..catalog.store import load_catalog_table, manifest_path
from ..data.snapshot import build_snapshot, write_snapshot
from ..rights.clearance import clear
from ..rights.ledger import Ledger
from ..rights.policy import Policy
from ..util.canonical import sha256_file


@dataclass
class ClearResult:
    snapshot_path: Path
    doc: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        d = self.doc
        return {"snapshot_id": d["snapshot_id"], "path": str(self.snapshot_path), "catalog": d["catalog"]["name"],
                "policy": d["policy"]["name"], "cleared_at": d["cleared_at"], "items": d["counts"]["items"],
                "cleared": d["counts"]["cleared"], "excluded": d["counts"]["excluded"],
                "ledger_head_seq": d["ledger"]["head_seq"]}


def policy_from_cfg(cfg: DictConfig | dict) -> Policy:
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return Policy.model_validate(data)


def run_clearance(*, catalog: str, ledger: Ledger, policy: Policy, snapshots_dir: Path,
                  home: Path | None = None, at: datetime | None = None) -> ClearResult:
    table = load_catalog_table(catalog, home)
    frame = ledger.frame()
    head = ledger.head()
    decision = clear(table, frame, policy, at)
    payloads = ledger.payloads(sorted(set(decision.grant_seq.values())))
    root = None
    mpath = manifest_path(catalog, home)
    manifest = orjson.loads(Path(mpath).read_bytes())
    root = manifest.get("root")
    info = {"name": catalog, "root": root, "manifest_sha256": sha256_file(mpath)}
    doc = build_snapshot(table, decision, catalog_info=info, ledger_head=head, grant_payloads=payloads)
    path = write_snapshot(doc, snapshots_dir)
    return ClearResult(path, doc)


def main(cfg: DictConfig) -> ClearResult:
    policy = policy_from_cfg(cfg.policy)
    ledger = Ledger(cfg.ledger_url)
    return run_clearance(catalog=cfg.data.catalog, ledger=ledger, policy=policy,
                         snapshots_dir=Path(cfg.paths.snapshots), home=Path(cfg.paths.home))
