"""`lab demo` then `lab clear`, as a user runs them: real subprocesses, state under tmp_path.

Expected decisions are derived from the demo's own case table (`lab.catalog.demo.CASES`), so
adding a case there updates this test instead of breaking it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from lab.catalog.demo import CASES

# What each demo case is excluded for under the `commercial` policy (None: cleared).
COMMERCIAL = {
    "opted_out": "opted_out",
    "revoked": "revoked",
    "expired": "expired",  # valid_until passed
    "expired_event": "expired",  # an `expire` event
    "territory": "territory_not_granted",  # JP, KR only; the policy is GB
    "non_commercial": "licence_not_accepted",  # CC-BY-NC-4.0 (and no commercial_output purpose)
    "no_grant": "no_grant",
    "corrupt": "decode_error",
    "duplicate": "duplicate_audio",
    "purpose": "purpose_not_granted",  # eval_only
    "not_yet_valid": "not_yet_valid",
    "amended": None,  # v1 US only, v2 widens to WW
    "contract": None,  # LicenseRef-lab-* contract licence
}
# The `research` policy accepts non-commercial licences and needs only ai_generative_training.
RESEARCH = COMMERCIAL | {"non_commercial": None}


def _lab() -> list[str]:
    script = Path(sys.executable).with_name("lab")  # the console script (lab = lab.cli:main)
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from lab.cli import main; main()"]


def _run(args: list[str], cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env.update(
        LAB_HOME=str(cwd / "home"),
        LAB_EXPERIMENTS=str(cwd / "experiments"),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
    )
    r = subprocess.run([*_lab(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"lab {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


def _expected(table: dict, n: int) -> dict[str, str | None]:
    """recording_id → reason (None: cleared) for the demo's n recordings under one policy."""
    out = {f"demo-{i:04d}": table[CASES[i]] if i in CASES else None for i in range(n)}
    # A duplicate copies recording 0's audio: ingest cannot tell which id owns it, so both go.
    if "duplicate" in CASES.values():
        out["demo-0000"] = "duplicate_audio"
    return out


def _decisions(snapshot_path: str) -> dict[str, str | None]:
    """recording id → exclusion reason (None: cleared), read straight from the snapshot's Parquet files."""
    import pyarrow.parquet as pq

    folder = Path(snapshot_path)
    items = pq.read_table(folder / "items.parquet", columns=["recording_id"]).to_pylist()
    excluded = pq.read_table(folder / "excluded.parquet", columns=["recording_id", "reason"]).to_pylist()
    return {i["recording_id"]: None for i in items} | {e["recording_id"]: e["reason"] for e in excluded}


def _counts(expected: dict[str, str | None]) -> tuple[int, dict[str, int]]:
    reasons = Counter(r for r in expected.values() if r is not None)
    return sum(r is None for r in expected.values()), dict(sorted(reasons.items()))


def test_demo_then_clear_under_both_policies(tmp_path):
    demo = _run(["demo", "--no-train", "--json"], tmp_path)
    n = demo["demo"]["items"]
    assert n > max(CASES)
    commercial = demo["clearance"]
    assert commercial["policy"] == "commercial"
    want = _expected(COMMERCIAL, n)
    cleared, excluded = _counts(want)
    assert (commercial["items"], commercial["cleared"], commercial["excluded"]) == (n, cleared, excluded)
    assert _decisions(commercial["path"]) == want  # and per recording, not only in total
    assert set(excluded) >= {
        "opted_out",
        "revoked",
        "expired",
        "not_yet_valid",
        "purpose_not_granted",
        "territory_not_granted",
        "licence_not_accepted",
        "no_grant",
        "decode_error",
        "duplicate_audio",
    }

    research = _run(["clear", "policy=research", "json=true"], tmp_path)
    assert research["policy"] == "research"
    want_r = _expected(RESEARCH, n)
    assert (research["cleared"], research["excluded"]) == _counts(want_r)
    got_r = _decisions(research["path"])
    assert got_r == want_r
    # research clears exactly what commercial does, plus the non-commercial recordings commercial excludes
    nc = {f"demo-{i:04d}" for i, c in CASES.items() if c == "non_commercial"}
    assert len(nc) == 2
    cleared_c = {r for r, why in _decisions(commercial["path"]).items() if why is None}
    cleared_r = {r for r, why in got_r.items() if why is None}
    assert cleared_r == cleared_c | nc and not (cleared_c & nc)
    assert research["snapshot_id"] != commercial["snapshot_id"]
    assert research["ledger_head_seq"] == commercial["ledger_head_seq"]  # the demo ledger is imported once
