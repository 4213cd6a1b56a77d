"""`lab clear`: catalogue × ledger × policy → a content-addressed snapshot folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from omegaconf import DictConfig, OmegaConf

from ..catalog.store import load_catalog_table, manifest_path
from ..rights.clearance import CLEARANCE_COLUMNS, clear, effective_grants
from ..rights.consent import verify_chain
from ..rights.heads import open_ledger
from ..rights.ledger import Ledger
from ..rights.policy import Policy
from ..snapshot import GrantTerms, receipts_dir, write_receipt, write_snapshot
from ..util.canonical import sha256_file


@dataclass
class ClearResult:
    snapshot_path: Path  # the snapshot folder, <snapshots>/<snapshot_id>/
    doc: dict[str, Any]  # the snapshot's header (snapshot.json)

    def summary(self) -> dict[str, Any]:
        d = self.doc
        return {
            "snapshot_id": d["snapshot_id"],
            "path": str(self.snapshot_path),
            "catalog": d["catalog"]["name"],
            "policy": d["policy"]["name"],
            "cleared_at": d["cleared_at"],
            "items": d["counts"]["items"],
            "cleared": d["counts"]["cleared"],
            "excluded": d["counts"]["excluded"],
            "notes": d["counts"].get("notes", {}),
            "ledger_head_seq": d["ledger"]["head_seq"],
        }


def policy_from_cfg(cfg: DictConfig | dict) -> Policy:
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return Policy.model_validate(data)


def _catalog_info(catalog: str, home: Path | None) -> dict[str, Any]:
    mpath = manifest_path(catalog, home)
    manifest = orjson.loads(Path(mpath).read_bytes())
    return {"name": catalog, "root": manifest.get("root"), "manifest_sha256": sha256_file(mpath)}


def run_clearance(
    *,
    catalog: str,
    ledger: Ledger,
    policy: Policy,
    snapshots_dir: Path,
    home: Path | None = None,
    at: datetime | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> ClearResult:
    """Clear `catalog` against `ledger` under `policy` and write the snapshot.

    The ledger's chain and signed heads are verified first (incrementally, since the last verified
    head; `LedgerBroken` if they do not hold: nothing is cleared from an edited ledger), then it
    is read up to that head (the head the snapshot records: an event
    appended meanwhile is in neither), only the columns clearance needs, while the catalogue
    loads on another thread. The terms of the grants that may clear something are read from the
    ledger on another thread from the moment the effective grants are known. `progress(stage,
    seconds)` is called as each stage ends. Returns the snapshot folder and its header.
    """
    clock = [time.perf_counter()]

    def done(stage: str) -> None:
        if progress is not None:
            now = time.perf_counter()
            progress(stage, now - clock[0])
            clock[0] = now

    at = at or policy.moment()
    head = verify_chain(ledger, incremental=True)
    with ThreadPoolExecutor(1, thread_name_prefix="lab-clear-catalog") as pool:
        loading = pool.submit(load_catalog_table, catalog, home)
        frame = ledger.frame(upto_seq=head[0], columns=CLEARANCE_COLUMNS)
        table = loading.result()
    done("load catalogue + ledger")
    grants = effective_grants(frame, at, policy)
    # From here on the terms of every grant with an ok verdict (a superset of the clearing ones)
    # are read on another thread, while the rest of clearance and the excluded entries are built.
    terms = GrantTerms.candidates(ledger.payload_batches, grants)
    try:
        decision = clear(table, frame, policy, at, grants=grants)
        del frame, grants
        done("clear")
        info = _catalog_info(catalog, home)
    except BaseException:
        terms.close()
        raise
    path, doc = write_snapshot(
        snapshots_dir, table, decision, catalog_info=info, ledger_head=head, terms=terms, progress=done
    )
    if home is not None:  # the writer computed every leaf: a training rank need not again (lab.snapshot.read)
        write_receipt(receipts_dir(home), doc)
    return ClearResult(path, doc)


def main(cfg: DictConfig) -> ClearResult:
    policy = policy_from_cfg(cfg.policy)
    ledger = open_ledger(cfg.ledger_url, home=Path(cfg.paths.home), key_dir=_key_dir(cfg))
    return run_clearance(
        catalog=cfg.data.catalog,
        ledger=ledger,
        policy=policy,
        snapshots_dir=Path(cfg.paths.snapshots),
        home=Path(cfg.paths.home),
    )


def _key_dir(cfg: DictConfig) -> Path:
    """The lab key that signs the ledger's heads: `signing.key_dir` where the config has one, else <home>/keys."""
    signing = cfg.get("signing") or {}
    return Path(signing.get("key_dir") or Path(cfg.paths.home) / "keys")
