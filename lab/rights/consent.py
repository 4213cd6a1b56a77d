"""Do these sources clear now, for this use and territory? The one place lab asks.

Training (before the first step), the audit (consent now) and sampling all ask this module,
and it asks the ledger as it is now, after checking that the ledger's hash chain is intact:
a ledger edited in place must stop the answer, not change it. The sources are subjects
(recording id in its catalogue, ISRC, audio sha256), decided by the same columnar clearance
as `lab clear`, so the reasons are the clearance vocabulary (README, "Exclusion reasons").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .clearance import CLEARANCE_COLUMNS, clear
from .ledger import Ledger, VerifyReport
from .policy import Policy

# What identifies a source to the ledger; every grant subject matches on these.
SUBJECT_COLUMNS = ("recording_id", "catalog", "isrc", "audio_sha256")


class LedgerBroken(RuntimeError):
    """The ledger's hash chain does not verify: no consent answer can be given from it."""


@dataclass(frozen=True)
class ConsentAnswer:
    """Per-source verdicts under `policy` at `at`, from the ledger up to `ledger_head`."""

    at: datetime
    policy: Policy
    ledger_head: tuple[int, str]
    verdicts: pa.Table  # recording_id, catalog, cleared, reason (null when cleared), detail

    @property
    def ok(self) -> bool:
        return bool(pc.all(self.verdicts["cleared"]).as_py()) if self.verdicts.num_rows else True

    def refused(self) -> pa.Table:
        """The sources that do not clear, with reason and detail."""
        return self.verdicts.filter(pc.invert(self.verdicts["cleared"]))

    def problems(self, limit: int | None = None) -> list[tuple[str, str, str]]:
        """(recording_id, reason, detail) of sources that do not clear, by recording id."""
        bad = self.refused().sort_by("recording_id")
        if limit is not None:
            bad = bad.slice(0, limit)
        return list(zip(bad["recording_id"].to_pylist(), bad["reason"].to_pylist(), bad["detail"].to_pylist()))


def verify_chain(ledger: Ledger, report: VerifyReport | None = None, *, incremental: bool = False) -> tuple[int, str]:
    """The ledger's head, once its chain verifies and it still extends every head the lab key signed
    (`lab.rights.heads`; `report`: a chain verification the caller just ran, then only the heads are
    checked; `incremental`: only the events since the last verified head are re-hashed);
    LedgerBroken naming the first problem otherwise."""
    from .heads import verify_ledger

    report = verify_ledger(ledger, report=report, incremental=incremental)
    if not report.ok:
        p = report.first_problem
        raise LedgerBroken(
            f"the consent ledger does not verify (seq {p.seq}: {p.problem}); "
            "no consent decision is made from it: run `lab rights verify`"
        )
    return report.head_seq, report.head_hash


def subjects(sources: pa.Table, catalog: str | None = None) -> pa.Table:
    """The subject columns of a sources table; `catalog` fills a missing catalog column."""
    cols = {}
    n = sources.num_rows
    for name in SUBJECT_COLUMNS:
        if name in sources.column_names:
            cols[name] = sources[name].cast(pa.string())
        elif name == "catalog" and catalog is not None:
            cols[name] = pa.array([catalog] * n, pa.string())
        else:
            cols[name] = pa.nulls(n, pa.string())
    return pa.table(cols)


def check_sources(
    sources: pa.Table,
    ledger: Ledger,
    policy: Policy,
    *,
    at: datetime | None = None,
    catalog: str | None = None,
    verified: VerifyReport | None = None,
    incremental: bool = False,
    frame: tuple[tuple[int, str], pa.Table] | None = None,
) -> ConsentAnswer:
    """Would every source clear under `policy` at `at` (default: now, never the policy's pinned
    moment: a past date must not hide a revocation recorded since)?

    `sources`: at least `recording_id` and `audio_sha256`, with `catalog` and `isrc` where known
    (`catalog` fills a missing catalog column). `verified`: the caller's own verification of
    the ledger a moment ago (the audit's `ledger_then`), so the chain is not read twice.
    `incremental`: re-hash only the events since the last verified signed head (`lab train`).
    `frame`: (head, `Ledger.frame` up to that head) read by the caller while the chain was being
    checked; used only when the verified chain reaches that head, and the answer is then as of it."""
    at = at or datetime.now(timezone.utc)
    head = verify_chain(ledger, verified, incremental=incremental)
    table = subjects(sources, catalog)
    if frame is not None and frame[0][0] <= head[0]:
        head, events = frame
    else:
        events = ledger.frame(upto_seq=head[0], columns=CLEARANCE_COLUMNS)
    decision = clear(table, events, policy, at)
    verdicts = pa.table(
        {
            "recording_id": table["recording_id"],
            "catalog": table["catalog"],
            "cleared": pa.array(np.asarray(decision.cleared, dtype=bool)),
            "reason": decision.reasons,
            "detail": decision.details,
        }
    )
    return ConsentAnswer(at=at, policy=policy, ledger_head=head, verdicts=verdicts)
