"""The checkpoint's status under on_termination: retain passes with a note, retrain and retire fail."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest
from audit_helpers import build_audit_demo, cards_fx

from lab.audit.verify import audit_checkpoint, termination_status
from lab.rights.records import ExpireEvent, RevokeEvent
from lab.util.timestamps import utcnow


@pytest.fixture(scope="module")
def audit_demo(tmp_path_factory):
    return build_audit_demo(tmp_path_factory.mktemp("audit-demo"))


def _refused(*rids: str, reason: str = "revoked", catalog: str = "demo") -> pa.Table:
    return pa.table(
        {
            "recording_id": pa.array(rids, pa.string()),
            "catalog": pa.array([catalog] * len(rids), pa.string()),
            "reason": pa.array([reason] * len(rids), pa.string()),
            "detail": pa.array([f"G for {r}: {reason}" for r in rids], pa.string()),
        }
    )


@pytest.fixture(scope="module")
def sources() -> pa.Table:
    """demo-0001 retain (G-0001), demo-0002 retrain (G-deal), demo-0003 retire (G-0003a + G-0003b)."""
    return cards_fx.build().sources


def test_nothing_refused_is_ok(sources):
    term = termination_status(sources, _refused())
    assert (term.status, term.counts, term.sources) == ("ok", {}, [])


@pytest.mark.parametrize(
    ("rids", "status", "counts"),
    [
        (("demo-0001",), "retained", {"retain": 1}),
        (("demo-0002",), "retrain", {"retrain": 1}),
        (("demo-0003",), "retired", {"retire": 1}),
        (("demo-0001", "demo-0002"), "retrain", {"retrain": 1, "retain": 1}),
        (("demo-0001", "demo-0002", "demo-0003"), "retired", {"retire": 1, "retrain": 1, "retain": 1}),
    ],
)
def test_status_is_the_strictest_rule_of_the_refused_sources(sources, rids, status, counts):
    term = termination_status(sources, _refused(*rids))
    assert term.status == status and term.counts == counts and term.total == len(rids)
    assert list(term.counts) == sorted(term.counts, key=["retire", "retrain", "retain"].index)  # strictest first
    assert [t.recording_id for t in term.sources][0] == {
        "retired": "demo-0003",
        "retrain": "demo-0002",
        "retained": "demo-0001",
    }[status]


def test_listed_sources_name_their_grants_reason_and_rule(sources):
    term = termination_status(sources, _refused("demo-0003", reason="expired"))
    (t,) = term.sources
    assert (t.recording_id, t.catalog, t.reason, t.on_termination) == ("demo-0003", "demo", "expired", "retire")
    assert t.grant_ids == ["G-0003a", "G-0003b"] and t.seen_by == ["run-abc-step-000200"]
    assert "expired" in t.detail


def test_a_refused_source_the_rows_do_not_hold_fails_closed(sources):
    assert termination_status(sources, _refused("demo-0003", catalog="elsewhere")).counts == {"retire": 1}


def test_inherited_rows_make_a_source_stricter(sources):
    # the same recording, seen by an ancestor under a retire grant, is retire here too
    inherited = sources.filter(pa.compute.equal(sources["recording_id"], "demo-0001"))
    inherited = inherited.set_column(
        inherited.schema.get_field_index("seen_by"), "seen_by", pa.array(["parent-step-000100"])
    )
    inherited = inherited.set_column(
        inherited.schema.get_field_index("on_termination"), "on_termination", pa.array(["retire"])
    )
    term = termination_status(pa.concat_tables([sources, inherited]), _refused("demo-0001"))
    assert term.status == "retired" and term.sources[0].seen_by == ["parent-step-000100", "run-abc-step-000200"]


def test_an_unknown_rule_counts_as_retire(sources):
    odd = sources.set_column(
        sources.schema.get_field_index("on_termination"),
        "on_termination",
        pa.array(["keep-forever"] * sources.num_rows),
    )
    assert termination_status(odd, _refused("demo-0001")).status == "retired"


def test_the_listing_is_capped_not_the_counts(sources):
    term = termination_status(sources, _refused("demo-0001", "demo-0002", "demo-0003"), limit=1)
    assert term.total == 3 and [t.recording_id for t in term.sources] == ["demo-0003"]


# --------------------------------------------------------------------------- audit of a card folder


def _consent(report):
    return next(c for c in report.checks if c.name == "consent_now")


def _audit(audit_demo, tmp_path, folder, *events, at=None):
    ledger = audit_demo.ledger_copy(tmp_path)
    for e in events:
        ledger.append(e)
    return audit_checkpoint(folder, public_key=audit_demo.env.public_key, ledger=ledger, at=at)


def _revoke(gid: str) -> RevokeEvent:
    return RevokeEvent(grant_id=gid, reason="artist withdrew", effective_at=utcnow(), issuer="test")


SECONDS = {"demo-0001": 4.0, "demo-0002": 3.0, "demo-0006": 2.0}  # G-0001 retain, G-0002 retain, G-0006 retrain


def test_audit_fresh_card_is_ok(audit_demo, tmp_path):
    folder = audit_demo.checkpoint(tmp_path / "ck", SECONDS)
    report = _audit(audit_demo, tmp_path, folder)
    assert report.status == "ok" and _consent(report).ok
    assert report.to_dict()["status"] == "ok"


def test_audit_revoked_retain_source_passes_with_a_note(audit_demo, tmp_path):
    folder = audit_demo.checkpoint(tmp_path / "ck", SECONDS)
    report = _audit(audit_demo, tmp_path, folder, _revoke("G-0001"))
    check = _consent(report)
    assert check.ok and report.status == "retained"
    assert "demo-0001 (revoked)" in check.detail and "stays usable" in check.detail
    assert {c.name for c in report.checks if not c.ok} <= {"files", "complete", "signature", "model_card"}


def test_audit_revoked_retrain_source_fails_and_says_retrain(audit_demo, tmp_path):
    folder = audit_demo.checkpoint(tmp_path / "ck", SECONDS)
    report = _audit(audit_demo, tmp_path, folder, _revoke("G-0001"), _revoke("G-0006"))
    check = _consent(report)
    assert not check.ok and report.status == "retrain" and not report.ok
    assert "retrained without them: demo-0006 (revoked)" in check.detail
    assert "1 under retain" in check.detail
    as_json = report.to_dict()["termination"]
    assert as_json["counts"] == {"retrain": 1, "retain": 1}
    assert as_json["sources"][0]["grant_ids"] == ["G-0006"]


def test_audit_revoked_retire_source_withdraws_the_checkpoint(audit_demo, tmp_path):
    folder = audit_demo.checkpoint(tmp_path / "ck", SECONDS, rules={"G-0002": "retire"})
    report = _audit(audit_demo, tmp_path, folder, _revoke("G-0002"))
    check = _consent(report)
    assert not check.ok and report.status == "retired"
    assert "withdrawn: demo-0002 (revoked)" in check.detail


def test_audit_expiry_counts_as_termination(audit_demo, tmp_path):
    folder = audit_demo.checkpoint(tmp_path / "ck", SECONDS)
    expire = ExpireEvent(grant_id="G-0002", effective_at=utcnow() - timedelta(seconds=1))
    report = _audit(audit_demo, tmp_path, folder, expire)
    assert report.status == "retained" and "demo-0002 (expired)" in _consent(report).detail
    # past every grant's valid_until: all three end, the strictest rule (retrain) decides
    later = _audit(audit_demo, tmp_path / "later", folder, at=utcnow() + timedelta(days=3 * 365))
    assert later.status == "retrain" and later.termination.counts == {"retrain": 1, "retain": 2}


def test_offline_audit_is_unchecked(audit_demo, tmp_path):
    folder = audit_demo.checkpoint(tmp_path / "ck", SECONDS)
    report = audit_checkpoint(folder, public_key=audit_demo.env.public_key)
    assert report.status == "unchecked" and report.to_dict()["termination"] is None
