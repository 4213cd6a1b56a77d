"""Synthetic output records (released, withheld, refused) for the registry, rebuild and impact tests."""

from __future__ import annotations

import hashlib

from lab.sample.records import GateDecision, OutputRecord, Refusal, ReplicationResult

THRESHOLDS = {"token": 0.5, "audio": 0.5}


def output_record(
    cid: str,
    kind: str = "released",
    *,
    n: int = 0,
    prompt: str = "warm piano",
    created: str | None = None,
    path: str | None = None,
) -> OutputRecord:
    """Output `n` of checkpoint `cid`: a released file, a withheld one naming r1, or a refusal naming r1/G1."""
    refused = kind == "refused"
    refusals = (
        [Refusal(check="consent", reason="revoked", detail="G1 revoked", recording_id="r1", grant_id="G1")]
        if refused
        else []
    )
    decision = GateDecision(
        allowed=not refused,
        checkpoint_id=cid,
        checkpoint_folder=f"/nowhere/{cid}",
        data_card_sha256="cd" * 32,
        uses=["ai_inference", "commercial_output"],
        territory="GB",
        at=created or "2026-02-01T00:00:00Z",
        ledger_head_seq=7,
        ledger_head_hash="ef" * 32,
        checks={"signature": "ok", "consent": "G1 revoked" if refused else "ok"},
        refusals=refusals,
    )
    withheld = kind == "withheld"
    replication = (
        None
        if refused
        else ReplicationResult(
            token_score=0.9 if withheld else 0.1,
            audio_score=0.2,
            nearest_recording="demo:r1",
            nearest_by="tokens",
            withheld=withheld,
            thresholds=THRESHOLDS,
            detail="tokens 0.90 ≥ 0.50 in demo:r1" if withheld else "below thresholds",
        )
    )
    digest = hashlib.sha256(f"{cid}/{kind}/{n}".encode()).hexdigest()
    released = kind == "released"
    return OutputRecord(
        record_id=digest,
        kind=kind,
        created_at=created or f"2026-02-01T00:00:{n:02d}Z",
        checkpoint_id=cid,
        checkpoint_folder=f"/nowhere/{cid}",
        data_card_sha256="cd" * 32,
        prompt=prompt,
        seed=n,
        duration_s=None if refused else 1.0,
        uses=["ai_inference", "commercial_output"],
        territory="GB",
        decision=decision,
        replication=replication,
        path=(path or f"/out/{cid}/{n}.wav") if released else None,
        audio_sha256=digest if released else None,
        sample_rate=16_000 if released else None,
        format="wav" if released else None,
        credential="c2pa" if released else None,
        sidecar=(path or f"/out/{cid}/{n}.wav") + ".c2pa.json" if released else None,
        credits=["r1 by Acme Records"],
    )
