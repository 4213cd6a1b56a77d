"""Snapshot identity: same inputs → same id; any input that matters → another id; edits are refused."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rights"))
from rights_helpers import SHA, grant, revoke  # noqa: E402

from lab.catalog.items import CatalogItem  # noqa: E402
from lab.catalog.store import Catalog, load_catalog_table, save_catalog  # noqa: E402
from lab.data.snapshot import SnapshotError, build_snapshot, load_snapshot, write_snapshot  # noqa: E402
from lab.jobs.clear import run_clearance  # noqa: E402
from lab.rights.clearance import clear  # noqa: E402
from lab.rights.ledger import Ledger  # noqa: E402
from lab.rights.policy import Policy  # noqa: E402

UTC = timezone.utc
AT = datetime(2026, 1, 1, tzinfo=UTC)
RECORDED = datetime(2025, 1, 1, tzinfo=UTC)
POLICY = dict(name="test", purposes=["ai_generative_training"], territory="GB",
              accept_licence_classes=["permissive", "contract"])
CATALOG = "snap"


def item(rid: str, sha: str = SHA, **over) -> CatalogItem:
    fields = dict(recording_id=rid, isrc=None, title=f"Title {rid}", artists=["Ada"], description="piano, 90 bpm",
                  audio_path=f"{rid}.wav", catalog=CATALOG, audio_sha256=sha, duration_s=2.0, sample_rate=8000,
                  channels=1)
    return CatalogItem(**(fields | over))


ITEMS = [item("r1"), item("r2", sha="cd" * 32), item("r3"), item("r4"), item("bad", reject_reason="decode_error",
                                                                                status="rejected")]


@pytest.fixture
def world(tmp_path):
    """A saved catalogue (r1..r4 + a reject), a ledger (r3 revoked, r4 no grant), and where snapshots go."""
    home = tmp_path / "home"
    save_catalog(Catalog(name=CATALOG, root=tmp_path / "audio", items=ITEMS), home)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.append_many([grant(f"G-{r}", subject={"recording_id": r}) for r in ("r1", "r2", "r3", "bad")],
                       recorded_at=RECORDED)
    ledger.append(revoke("G-r3"), recorded_at=RECORDED + timedelta(days=200))
    yield home, ledger, tmp_path / "snapshots"
    ledger.close()


def run(world, policy: Policy | None = None, at: datetime = AT):
    home, ledger, out = world
    return run_clearance(catalog=CATALOG, ledger=ledger, policy=policy or Policy(**POLICY), snapshots_dir=out,
                         home=home, at=at)


def doc_for(world, items, policy: Policy | None = None, at: datetime = AT) -> dict:
    """build_snapshot over an in-memory catalogue table (to vary items without re-saving)."""
    from lab.catalog.store import items_to_table

    _, ledger, _ = world
    table = items_to_table(items)
    decision = clear(table, ledger.frame(), policy or Policy(**POLICY), at)
    return build_snapshot(table, decision, catalog_info={"name": CATALOG}, ledger_head=ledger.head(),
                          grant_payloads=ledger.payloads(decision.grant_seq.values()))


# --------------------------------------------------------------------------- determinism


def test_same_inputs_same_id(world):
    a, b = run(world), run(world)
    assert a.doc["snapshot_id"] == b.doc["snapshot_id"]
    assert a.doc["merkle_root"] == b.doc["merkle_root"]
    assert a.snapshot_path == b.snapshot_path
    assert a.doc["counts"] == {"items": 5, "cleared": 2,
                               "excluded": {"decode_error": 1, "no_grant": 1, "revoked": 1}}


def test_a_later_moment_with_nothing_changing_in_between_keeps_the_id(world):
    a, b = run(world), run(world, at=AT + timedelta(days=100))
    assert a.doc["cleared_at"] != b.doc["cleared_at"]
    assert a.doc["snapshot_id"] == b.doc["snapshot_id"]
    # ... and a moment after the grants end changes the decisions, hence the id
    c = run(world, at=datetime(2027, 6, 1, tzinfo=UTC))
    assert c.doc["counts"]["cleared"] == 0
    assert c.doc["snapshot_id"] != a.doc["snapshot_id"]


def test_catalogue_row_order_does_not_matter(world):
    a = doc_for(world, ITEMS)
    b = doc_for(world, list(reversed(ITEMS)))
    assert (a["merkle_root"], a["snapshot_id"]) == (b["merkle_root"], b["snapshot_id"])


def test_a_new_ledger_event_changes_the_id(world):
    before = run(world)
    _, ledger, _ = world
    ledger.append(grant("G-elsewhere", subject={"recording_id": "not-in-this-catalogue"}),
                  recorded_at=RECORDED + timedelta(days=201))
    after = run(world)
    assert after.doc["merkle_root"] == before.doc["merkle_root"]  # same decisions ...
    assert after.doc["snapshot_id"] != before.doc["snapshot_id"]  # ... against another ledger
    assert after.doc["ledger"]["head_seq"] == before.doc["ledger"]["head_seq"] + 1


def test_the_same_policy_written_in_another_order_keeps_the_id(world):
    a = run(world, Policy(**(POLICY | {"purposes": ["ai_generative_training", "ai_training"]})))
    b = run(world, Policy(**(POLICY | {"purposes": ["ai_training", "ai_generative_training"],
                                       "accept_licence_classes": ["contract", "permissive"],
                                       "territory": "gb"})))
    assert a.doc["snapshot_id"] == b.doc["snapshot_id"]


def test_a_different_policy_changes_the_id(world):
    base = run(world).doc["snapshot_id"]
    renamed = run(world, Policy(**(POLICY | {"name": "test-2"}))).doc["snapshot_id"]
    wider = run(world, Policy(**(POLICY | {"accept_licence_classes": ["permissive", "contract", "share_alike"]})))
    assert len({base, renamed, wider.doc["snapshot_id"]}) == 3
    assert wider.doc["merkle_root"] == run(world).doc["merkle_root"]  # same decisions, other policy


@pytest.mark.parametrize("change", [
    {"audio_sha256": "ef" * 32},  # new audio under the same id (the grant names the recording only)
    {"recording_id": "r1-renamed"},
    {"title": "another title"},
    {"description": "another caption"},
])
def test_a_changed_item_changes_the_root_and_the_id(world, change):
    base = doc_for(world, ITEMS)
    changed = [item("r1", **change) if it.recording_id == "r1" else it for it in ITEMS]
    doc = doc_for(world, changed)
    assert doc["merkle_root"] != base["merkle_root"]
    assert doc["snapshot_id"] != base["snapshot_id"]


# --------------------------------------------------------------------------- tamper evidence


def _write(world, edit) -> Path:
    path = run(world).snapshot_path
    doc = orjson.loads(path.read_bytes())
    edit(doc)
    path.write_bytes(orjson.dumps(doc))
    return path


def test_a_written_snapshot_loads(world):
    res = run(world)
    snap = load_snapshot(res.snapshot_path.parent)
    assert snap.snapshot_id == res.doc["snapshot_id"]
    assert sorted(snap.item_by_id()) == ["r1", "r2"]
    assert {e.recording_id: e.reason for e in snap.excluded} == {"r3": "revoked", "r4": "no_grant",
                                                                "bad": "decode_error"}
    assert snap.grants["G-r1"].parties[0]["share"] == 60


def _excluded(doc, rid):
    return next(e for e in doc["excluded"] if e["recording_id"] == rid)


def _item(doc, rid):
    return next(i for i in doc["items"] if i["recording_id"] == rid)


EDITS = {
    "reason changed": lambda d: _excluded(d, "r3").__setitem__("reason", "no_grant"),
    "excluded item dropped": lambda d: d["excluded"].remove(_excluded(d, "r4")),
    "cleared item dropped": lambda d: d["items"].remove(_item(d, "r2")),
    "item grant id changed to an unknown grant": lambda d: _item(d, "r1").__setitem__("grant_ids", ["G-forged"]),
    "item grant id changed to another grant": lambda d: _item(d, "r1").__setitem__("grant_ids", ["G-r2"]),
    "grant renamed in the terms": lambda d: d["grants"].__setitem__("G-forged", d["grants"].pop("G-r1")),
    "grant id inside the terms changed": lambda d: d["grants"]["G-r1"].__setitem__("grant_id", "G-forged"),
    "grant seq changed": lambda d: d["grants"]["G-r1"].__setitem__("seq", 99),
    "grant licence changed": lambda d: d["grants"]["G-r1"].__setitem__("licence", "CC0-1.0"),
    "royalty shares changed": lambda d: d["grants"]["G-r1"]["parties"][0].__setitem__("share", 99),
    "item caption changed": lambda d: _item(d, "r1").__setitem__("description", "something else"),
    "item sha changed": lambda d: _item(d, "r1").__setitem__("audio_sha256", "ef" * 32),
    "excluded item moved to the cleared list": lambda d: d["items"].append(
        {**_item(d, "r1"), "recording_id": "r4"}) or d["excluded"].remove(_excluded(d, "r4")),
    "snapshot id changed": lambda d: d.__setitem__("snapshot_id", "snap-0000000000000000"),
    "policy changed": lambda d: d["policy"].__setitem__("territory", "US"),
    "ledger head changed": lambda d: d["ledger"].__setitem__("head_hash", "0" * 64),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_load_snapshot_rejects_an_edited_snapshot(world, edit):
    path = _write(world, EDITS[edit])
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    assert str(path) in str(err.value)
    assert any(w in str(err.value) for w in ("edited snapshot", "does not match", "no terms")), str(err.value)


def test_load_snapshot_rejects_a_missing_or_malformed_file(tmp_path):
    with pytest.raises(SnapshotError, match="no snapshot"):
        load_snapshot(tmp_path / "nope")
    bad = tmp_path / "snapshot.json"
    bad.write_text("{not json")
    with pytest.raises(SnapshotError, match="not a valid"):
        load_snapshot(bad)


def test_write_snapshot_is_idempotent(world):
    res = run(world)
    first = res.snapshot_path.read_bytes()
    # `lab clear` streams the file; writing the same document whole gives the same path and bytes.
    again = write_snapshot(orjson.loads(first), res.snapshot_path.parents[1])
    assert again == res.snapshot_path
    assert again.read_bytes() == first
    assert load_catalog_table(CATALOG, world[0]).num_rows == len(ITEMS)


# ----------------------------------------------------------------------------- the streamed writer

TRICKY = ['quote " and backslash \\ and slash /', "line\nbreak\ttab\r\x00nul\x1fus\x7fdel", "é ü ß 漢字 🎵 \u2028\u2029",
          "{\"looks\": [\"like\", \"json\"]}, \"G-1\": {", "tab\tonly"]


def test_tricky_text_and_numbers_survive_the_streamed_writer(world, tmp_path):
    """Every escape orjson makes, non-ASCII, and floats in several forms: what the column-wise writer
    hashes and writes must be what the per-entry reference path (load_snapshot) recomputes, and the
    bytes what `write_snapshot` gives for the same document."""
    home, ledger, out = world
    items = [item(f"t{i}", title=t, description=t, artists=[t, "plain", t], audio_path=f"{t}/{i}.wav",
                  isrc=None if i % 2 else "GBLAB2600001", duration_s=d)
             for i, (t, d) in enumerate(zip(TRICKY, [0.1, 1e-7, 123456789.125, 30.0, 1e16]))]
    items.append(item("t-rej", title=TRICKY[1], reject_reason="decode_error", status="rejected",
                      reject_detail=TRICKY[0]))
    save_catalog(Catalog(name=CATALOG, root=tmp_path / "audio", items=ITEMS + items), home)
    parties = [{"name": TRICKY[1], "role": "master_owner", "right": "master", "share": 33.3},
               {"name": TRICKY[2], "role": "performer", "right": "master", "share": 66.7, "party_id": TRICKY[0]}]
    ledger.append_many([grant(f"G-t{i}", subject={"recording_id": f"t{i}"}, attribution=TRICKY[i], parties=parties,
                              compensation={"model": "flat_fee", "rate": 1e-7, "notes": TRICKY[i]})
                        for i in range(len(TRICKY))], recorded_at=RECORDED + timedelta(days=300))
    res = run(world)
    snap = load_snapshot(res.snapshot_path)  # recomputes every digest the plain way
    assert {i.recording_id for i in snap.items} >= {f"t{i}" for i in range(len(TRICKY))}
    assert snap.item_by_id()["t1"].title == TRICKY[1] and snap.grants["G-t2"].attribution == TRICKY[2].strip()
    raw = res.snapshot_path.read_bytes()
    assert write_snapshot(orjson.loads(raw), tmp_path / "again").read_bytes() == raw
    # the in-memory build gives the same document
    table = load_catalog_table(CATALOG, home)
    decision = clear(table, ledger.frame(), Policy(**POLICY), AT)
    doc = build_snapshot(table, decision, catalog_info=res.doc["catalog"], ledger_head=ledger.head(),
                         grant_payloads=ledger.payloads(decision.grant_seq.values()))
    assert {k: v for k, v in doc.items() if k != "created_at"} == \
        {k: v for k, v in orjson.loads(raw).items() if k != "created_at"}


def test_an_item_cleared_by_several_grants_lists_ids_and_refs_each_in_their_own_order(world):
    """"G-10@.." sorts before "G-1@..": ids and refs are sorted apart, as the reference path does."""
    _, ledger, _ = world
    ledger.append_many([grant(g, subject={"recording_id": "r1"}) for g in ("G-10", "G-1", "G-2")],
                       recorded_at=RECORDED + timedelta(days=300))
    res = run(world)
    snap = load_snapshot(res.snapshot_path)
    assert snap.item_by_id()["r1"].grant_ids == ["G-1", "G-10", "G-2", "G-r1"]
    assert set(snap.grants) == {"G-1", "G-10", "G-2", "G-r1", "G-r2"}


def test_terms_missing_from_the_ledger_are_refused(world, tmp_path):
    from lab.data.snapshot import stream_snapshot

    home, ledger, _ = world
    table = load_catalog_table(CATALOG, home)
    decision = clear(table, ledger.frame(), Policy(**POLICY), AT)

    def dropping(seqs):
        return [[(s, p) for s, p in ledger.payload_texts(seqs) if s != seqs[0]]]

    import io

    with pytest.raises(SnapshotError, match="terms missing for clearing grant G-r1"):
        stream_snapshot(io.BytesIO(), table, decision, catalog_info={"name": CATALOG}, ledger_head=ledger.head(),
                        payloads=dropping)
    with pytest.raises(SnapshotError, match="terms missing"):
        build_snapshot(table, decision, catalog_info={"name": CATALOG}, ledger_head=ledger.head(), grant_payloads={})


def test_packed_merkle_root_is_the_reference_tree():
    import hashlib
    import os

    from lab.util.merkle import merkle_root, merkle_root_packed

    def reference(leaves):
        level = sorted(leaves)
        while len(level) > 1:
            nxt = [hashlib.sha256(b"\x01" + a + b).digest() for a, b in zip(level[0::2], level[1::2])]
            level = nxt + ([level[-1]] if len(level) % 2 else [])
        return level[0].hex() if level else hashlib.sha256(b"").hexdigest()

    for n in (0, 1, 2, 3, 5, 8, 13, 1000, 1025):
        leaves = [os.urandom(32) for _ in range(n)]
        if n > 4:  # ties on the first 8 bytes take the full-key sort
            leaves[1] = leaves[0][:8] + os.urandom(24)
            leaves[2] = leaves[0][:31] + bytes([leaves[0][31] ^ 1])
        assert merkle_root_packed(b"".join(leaves)) == merkle_root(leaves) == reference(leaves)


@pytest.mark.postgres
def test_a_postgresql_ledger_gives_the_same_decisions(world, postgres_url):
    """Same events in a PostgreSQL ledger: the frame (COPY), the terms (an array of seqs, the
    fields cut by `json_build_object`) and so the Merkle root are those of the SQLite run."""
    import uuid

    from sqlalchemy import create_engine

    home, sqlite_ledger, out = world
    name = f"lab_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        with Ledger(postgres_url.rsplit("/", 1)[0] + "/" + name) as pg:
            for e in sqlite_ledger.events():
                pg.append(e.event, recorded_at=e.recorded_at)
            res = run_clearance(catalog=CATALOG, ledger=pg, policy=Policy(**POLICY), snapshots_dir=out / "pg",
                                home=home, at=AT)
            snap = load_snapshot(res.snapshot_path)
        assert snap.merkle_root == run(world).doc["merkle_root"]
        assert res.doc["counts"]["cleared"] == 2 and snap.grants["G-r1"].parties[0]["share"] == 60
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
