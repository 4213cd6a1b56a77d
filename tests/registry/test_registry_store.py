"""Registry store: idempotent registration, queries by grant / recording / hash, audits, bulk speed shape."""

from __future__ import annotations

import pytest
from registry_helpers import entry
from sqlalchemy.exc import IntegrityError

from lab.registry import Registry


@pytest.fixture
def reg(tmp_path):
    with Registry(f"sqlite:///{tmp_path / 'r.sqlite'}") as r:
        yield r


def test_empty_registry_creates_nothing(tmp_path):
    path = tmp_path / "none.sqlite"
    r = Registry(f"sqlite:///{path}")
    assert r.is_empty() and r.checkpoints() == [] and r.source_rows(grant_ids=["G1"]).num_rows == 0
    assert not path.exists(), "reading an absent registry must not create it"


def test_register_is_idempotent_and_replaces_rows(reg):
    reg.add([entry("a", rows=[("r1", "G1", "retain", 2), ("r1", "G2", "retain", 2), ("r2", "G3", "retire", 5)])])
    reg.add([entry("a", rows=[("r1", "G1", "retain", 2)])])  # re-registered: the new rows replace the old
    assert reg.counts() == (1, 1)
    assert reg.source_rows(grant_ids=["G3"]).num_rows == 0
    reg.add([entry("a", rows=[("r1", "G1", "retain", 2)])])
    assert reg.counts() == (1, 1)


def test_queries(reg):
    reg.add(
        [
            entry("a", rows=[("r1", "G1", "retain", 2), ("r2", "G2", "retrain", 3)]),
            entry("b", "a", rows=[("r1", "G1", "retain", 2, "a"), ("r1", "G9", "retain", 1, "b", "other")]),
        ]
    )
    assert sorted(reg.source_rows(grant_ids=["G1"])["checkpoint_id"].to_pylist()) == ["a", "b"]
    assert reg.source_rows(recording_id="r1").num_rows == 3  # any catalogue
    assert reg.source_rows(recording_id="r1", catalog="other")["grant_id"].to_pylist() == ["G9"]
    sha = reg.source_rows(recording_id="r2")["audio_sha256"][0].as_py()
    assert reg.source_rows(audio_sha256=sha.upper())["recording_id"].to_pylist() == ["r2"]
    assert reg.lineage_edges() == [("b", "a")]
    assert [c["checkpoint_id"] for c in reg.checkpoints()] == ["a", "b"]
    assert reg.checkpoint("b")["parent_id"] == "a" and reg.checkpoint("zz") is None


def test_audit_summary_kept_across_clear(reg):
    reg.add([entry("a")])
    reg.record_audit(
        "a",
        {
            "ok": False,
            "checks": [
                {"name": "signature", "ok": False, "detail": "modified: x"},
                {"name": "files", "ok": True, "detail": ""},
            ],
        },
    )
    got = reg.audits()["a"]
    assert got["ok"] is False and got["summary"] == {
        "passed": 1,
        "failed": [{"name": "signature", "detail": "modified: x"}],
    }
    reg.clear()
    assert reg.is_empty() and "a" in reg.audits()


def test_bulk_load(reg):
    import pyarrow as pa

    entries = [entry(f"c{i}", rows=[(f"r{j}", f"G{j}", "retain", 1) for j in range(50)]) for i in range(20)]
    reg.bulk_load([e.row for e in entries], pa.concat_tables([e.sources for e in entries]))
    assert reg.counts() == (20, 1000)
    with pytest.raises(IntegrityError):  # bulk_load appends: an id already there is refused, not duplicated
        reg.bulk_load([entries[0].row], entries[0].sources)
    assert reg.counts() == (20, 1000)
