"""Snapshot identity: same inputs → same id; any input that matters → another id; edits are refused."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rights"))
from rights_helpers import SHA, grant, revoke  # noqa: E402

from lab.catalog.items import CatalogItem  # noqa: E402
from lab.catalog.store import Catalog, items_to_table, load_catalog_table, save_catalog  # noqa: E402
from lab.recipes.clear import run_clearance  # noqa: E402
from lab.rights.clearance import REASONS, clear  # noqa: E402
from lab.rights.ledger import Ledger  # noqa: E402
from lab.rights.policy import Policy  # noqa: E402
from lab.snapshot import SnapshotError, load_snapshot, write_snapshot  # noqa: E402
from lab.util.canonical import canonical_json, digest, sha256_file  # noqa: E402
from lab.util.merkle import leaf_hash, merkle_root  # noqa: E402

UTC = timezone.utc
AT = datetime(2026, 1, 1, tzinfo=UTC)
RECORDED = datetime(2025, 1, 1, tzinfo=UTC)
POLICY = dict(
    name="test", purposes=["ai_generative_training"], territory="GB", accept_licence_classes=["permissive", "contract"]
)
CATALOG = "snap"


def item(rid: str, sha: str = SHA, **over) -> CatalogItem:
    fields = dict(
        recording_id=rid,
        isrc=None,
        title=f"Title {rid}",
        artists=["Ada"],
        description="piano, 90 bpm",
        audio_path=f"{rid}.wav",
        catalog=CATALOG,
        audio_sha256=sha,
        duration_s=2.0,
        sample_rate=8000,
        channels=1,
    )
    return CatalogItem(**(fields | over))


ITEMS = [
    item("r1"),
    item("r2", sha="cd" * 32),
    item("r3"),
    item("r4"),
    item("bad", reject_reason="decode_error", status="rejected"),
]


@pytest.fixture
def world(tmp_path):
    """A saved catalogue (r1..r4 + a reject), a ledger (r3 revoked, r4 no grant), and where snapshots go."""
    home = tmp_path / "home"
    save_catalog(Catalog(name=CATALOG, root=tmp_path / "audio", items=ITEMS), home)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.append_many(
        [grant(f"G-{r}", subject={"recording_id": r, "catalog": CATALOG}) for r in ("r1", "r2", "r3", "bad")],
        recorded_at=RECORDED,
    )
    ledger.append(revoke("G-r3"), recorded_at=RECORDED + timedelta(days=200))
    yield home, ledger, tmp_path / "snapshots"
    ledger.close()


def run(world, policy: Policy | None = None, at: datetime = AT):
    home, ledger, out = world
    return run_clearance(
        catalog=CATALOG, ledger=ledger, policy=policy or Policy(**POLICY), snapshots_dir=out, home=home, at=at
    )


def header_for(world, items, tmp_path, policy: Policy | None = None, at: datetime = AT) -> dict:
    """write_snapshot over an in-memory catalogue table (to vary items without re-saving)."""
    _, ledger, _ = world
    table = items_to_table(items)
    decision = clear(table, ledger.frame(), policy or Policy(**POLICY), at)

    def payloads(seqs):  # dicts: the per-grant path
        stored = ledger.payloads(seqs)
        return [[(q, stored[q]) for q in seqs]]

    _, header = write_snapshot(
        tmp_path / "in-memory",
        table,
        decision,
        catalog_info={"name": CATALOG},
        ledger_head=ledger.head(),
        payloads=payloads,
    )
    return header


# --------------------------------------------------------------------------- the reference definition


def reference_check(folder: Path) -> None:
    """The documented digest rules, per row in plain Python (docs/snapshot-format.md), against
    what the column-wise writer stored: every ref, every leaf, the root and the id."""
    header = orjson.loads((folder / "snapshot.json").read_bytes())
    rows = {name: pq.read_table(folder / f"{name}.parquet").to_pylist() for name in ("items", "excluded", "grants")}
    refs = {g["grant_id"]: f"{g['grant_id']}@{g['seq']}#{digest(g)}" for g in rows["grants"]}
    leaves = []
    for it in rows["items"]:
        core = {k: v for k, v in it.items() if k != "digest"} | {
            "cleared": True,
            "grants": [refs[g] for g in it["grant_ids"]],
        }
        leaves.append(leaf_hash(canonical_json(core)))
        assert leaves[-1].hex() == it["digest"], it["recording_id"]
    for ex in rows["excluded"]:
        leaves.append(leaf_hash(canonical_json({k: v for k, v in ex.items() if k != "digest"} | {"cleared": False})))
        assert leaves[-1].hex() == ex["digest"], ex["recording_id"]
    assert merkle_root(leaves) == header["merkle_root"]
    import hashlib

    pre = f"{header['merkle_root']}:{header['policy']['digest']}:{header['ledger']['head_hash']}"
    assert header["snapshot_id"] == "snap-" + hashlib.sha256(pre.encode()).hexdigest()[:16] == folder.name
    for name, entry in header["files"].items():
        assert sha256_file(folder / name) == entry["sha256"]


# --------------------------------------------------------------------------- determinism


def test_same_inputs_same_id(world):
    a, b = run(world), run(world)
    assert a.doc["snapshot_id"] == b.doc["snapshot_id"]
    assert a.doc["merkle_root"] == b.doc["merkle_root"]
    assert a.snapshot_path == b.snapshot_path == a.snapshot_path.parent / a.doc["snapshot_id"]
    assert a.doc["counts"] == {"items": 5, "cleared": 2, "excluded": {"decode_error": 1, "no_grant": 1, "revoked": 1}}
    assert a.doc["files"] == b.doc["files"]  # byte-identical Parquet files
    reference_check(a.snapshot_path)


def test_a_later_moment_with_nothing_changing_in_between_keeps_the_id(world):
    a, b = run(world), run(world, at=AT + timedelta(days=100))
    assert a.doc["cleared_at"] != b.doc["cleared_at"]
    assert a.doc["snapshot_id"] == b.doc["snapshot_id"]
    c = run(world, at=datetime(2027, 6, 1, tzinfo=UTC))
    assert c.doc["counts"]["cleared"] == 0
    assert c.doc["snapshot_id"] != a.doc["snapshot_id"]
    reference_check(c.snapshot_path)


def test_catalogue_row_order_does_not_matter(world, tmp_path):
    a = header_for(world, ITEMS, tmp_path / "a")
    b = header_for(world, list(reversed(ITEMS)), tmp_path / "b")
    assert (a["merkle_root"], a["snapshot_id"], a["files"]) == (b["merkle_root"], b["snapshot_id"], b["files"])


def test_terms_parsed_by_arrow_or_per_grant_give_the_same_snapshot(world, tmp_path, monkeypatch):
    """`lab clear` hands the payloads' JSON lines to Arrow's reader; dicts take the per-grant path."""
    from lab.snapshot import write

    per_grant = header_for(world, ITEMS, tmp_path)["merkle_root"]

    def refused(batch):
        raise AssertionError("lab clear took the per-grant path")

    monkeypatch.setattr(write, "_python_terms", refused)
    assert run(world).doc["merkle_root"] == per_grant


def test_a_new_ledger_event_changes_the_id(world):
    before = run(world)
    _, ledger, _ = world
    ledger.append(
        grant("G-elsewhere", subject={"recording_id": "not-in-this-catalogue", "catalog": CATALOG}),
        recorded_at=RECORDED + timedelta(days=201),
    )
    after = run(world)
    assert after.doc["merkle_root"] == before.doc["merkle_root"]  # same decisions ...
    assert after.doc["snapshot_id"] != before.doc["snapshot_id"]  # ... against another ledger
    assert after.doc["ledger"]["head_seq"] == before.doc["ledger"]["head_seq"] + 1


def test_the_same_policy_written_in_another_order_keeps_the_id(world):
    a = run(world, Policy(**(POLICY | {"purposes": ["ai_generative_training", "ai_training"]})))
    b = run(
        world,
        Policy(
            **(
                POLICY
                | {
                    "purposes": ["ai_training", "ai_generative_training"],
                    "accept_licence_classes": ["contract", "permissive"],
                    "territory": "gb",
                }
            )
        ),
    )
    assert a.doc["snapshot_id"] == b.doc["snapshot_id"]


def test_a_different_policy_changes_the_id(world):
    base = run(world).doc["snapshot_id"]
    renamed = run(world, Policy(**(POLICY | {"name": "test-2"}))).doc["snapshot_id"]
    wider = run(world, Policy(**(POLICY | {"accept_licence_classes": ["permissive", "contract", "share_alike"]})))
    assert len({base, renamed, wider.doc["snapshot_id"]}) == 3
    assert wider.doc["merkle_root"] == run(world).doc["merkle_root"]  # same decisions, other policy


@pytest.mark.parametrize(
    "change",
    [
        {"audio_sha256": "ef" * 32},  # new audio under the same id (the grant names the recording only)
        {"recording_id": "r1-renamed"},
        {"title": "another title"},
        {"description": "another caption"},
        {"duration_s": 2.5},
    ],
)
def test_a_changed_item_changes_the_root_and_the_id(world, tmp_path, change):
    base = header_for(world, ITEMS, tmp_path / "a")
    changed = [item("r1", **change) if it.recording_id == "r1" else it for it in ITEMS]
    header = header_for(world, changed, tmp_path / "b")
    assert header["merkle_root"] != base["merkle_root"]
    assert header["snapshot_id"] != base["snapshot_id"]


# --------------------------------------------------------------------------- what loads


def test_a_written_snapshot_loads(world):
    res = run(world)
    snap = load_snapshot(res.snapshot_path)
    assert snap.snapshot_id == res.doc["snapshot_id"] and snap.header == res.doc and len(snap) == 2
    assert snap.folder == res.snapshot_path and snap.cleared_at == AT and snap.created_at.tzinfo is not None
    assert snap.items["recording_id"].to_pylist() == ["r1", "r2"]
    assert snap.item("r2")["audio_sha256"] == "cd" * 32 and snap.item("r3") is None
    assert snap.take(["r2", "r1"])["recording_id"].to_pylist() == ["r2", "r1"]
    with pytest.raises(SnapshotError, match="r3"):
        snap.take(["r1", "r3"])
    assert {r["recording_id"]: r["reason"] for r in snap.excluded.to_pylist()} == {
        "r3": "revoked",
        "r4": "no_grant",
        "bad": "decode_error",
    }
    g = snap.grants.to_pylist()[0]
    assert g["grant_id"] == "G-r1" and g["parties"][0]["share"] == 60 and g["valid_until"].year == 2027
    assert orjson.loads(g["compensation"]) == []
    assert snap.ledger == res.doc["ledger"] and snap.policy["digest"] and snap.catalog["name"] == CATALOG
    shallow = load_snapshot(res.snapshot_path / "snapshot.json", deep=False)
    assert shallow.excluded.num_rows == 3


def test_files_get_normal_modes(world):
    folder = run(world).snapshot_path
    import os

    umask = os.umask(0)
    os.umask(umask)
    for p in folder.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p.name
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_every_exclusion_reason_is_written_and_verified(world, tmp_path):
    """A hand-made Clearance naming each reason once: each lands in excluded.parquet with its leaf."""
    import numpy as np

    from lab.rights.clearance import Clearance

    reasons = [r for r in REASONS if r != "superseded"] + ["superseded"]
    table = items_to_table([item(f"x{i:02d}") for i in range(len(reasons))])
    n = len(reasons)
    decision = Clearance(
        at=AT,
        policy=Policy(**POLICY),
        cleared=np.zeros(n, bool),
        reasons=pa.array(reasons),
        details=pa.array([f"because {r}" for r in reasons]),
        grant_offsets=np.arange(n + 1),
        grant_flat=pa.array([f"G-{i}" for i in range(n)]),
        clearing_ids=pa.array([], pa.string()),
        clearing_seqs=np.zeros(0, np.int64),
    )
    folder, header = write_snapshot(
        tmp_path / "s",
        table,
        decision,
        catalog_info={"name": CATALOG},
        ledger_head=(0, "0" * 64),
        payloads=lambda seqs: [],
    )
    assert header["counts"]["excluded"] == {r: 1 for r in reasons}
    snap = load_snapshot(folder)
    assert sorted(snap.excluded["reason"].to_pylist()) == sorted(reasons) and len(snap) == 0
    reference_check(folder)


# --------------------------------------------------------------------------- tamper evidence


def _rewrite(folder: Path, name: str, edit, *, rehash: bool = True) -> None:
    """Edit a Parquet file; `rehash`: and fix the header's sha256/rows, as a careful tamperer would."""
    path = folder / name
    table = pq.read_table(path)
    table = edit(table)
    pq.write_table(table, path)
    if rehash:
        hp = folder / "snapshot.json"
        header = orjson.loads(hp.read_bytes())
        header["files"][name] = {"sha256": sha256_file(path), "rows": table.num_rows}
        hp.write_bytes(orjson.dumps(header))


def _set(table: pa.Table, column: str, row_id: str, value, key: str = "recording_id") -> pa.Table:
    values = table[column].to_pylist()
    values[table[key].to_pylist().index(row_id)] = value
    return table.set_column(
        table.schema.get_field_index(column),
        table.schema.field(column),
        pa.array(values, table.schema.field(column).type),
    )


def _drop(table: pa.Table, row_id: str, key: str = "recording_id") -> pa.Table:
    return table.filter(pc.not_equal(table[key], row_id))


def _swap_terms(t: pa.Table) -> pa.Table:
    """G-r1 gets G-r2's terms (its version, seq, parties ...) and vice versa."""
    flip = pa.array([1, 0] + list(range(2, t.num_rows)))
    return pa.Table.from_arrays([t[c] if c == "grant_id" else t[c].take(flip) for c in t.column_names], schema=t.schema)


def _move_r4_to_items(folder: Path) -> None:
    _rewrite(folder, "excluded.parquet", lambda t: _drop(t, "r4"))
    _rewrite(folder, "items.parquet", lambda t: pa.concat_tables([t, _set(t.slice(0, 1), "recording_id", "r1", "r4")]))


PARQUET_EDITS = {
    "reason changed": ("excluded.parquet", lambda t: _set(t, "reason", "r3", "no_grant")),
    "excluded row dropped": ("excluded.parquet", lambda t: _drop(t, "r4")),
    "cleared item dropped": ("items.parquet", lambda t: _drop(t, "r2")),
    "item grant id changed to an unknown grant": ("items.parquet", lambda t: _set(t, "grant_ids", "r1", ["G-forged"])),
    "item grant id changed to another grant": ("items.parquet", lambda t: _set(t, "grant_ids", "r1", ["G-r2"])),
    "grant renamed in the terms": ("grants.parquet", lambda t: _set(t, "grant_id", "G-r1", "G-0", key="grant_id")),
    "grant seq changed": ("grants.parquet", lambda t: _set(t, "seq", "G-r1", 99, key="grant_id")),
    "grant licence changed": ("grants.parquet", lambda t: _set(t, "licence", "G-r1", "CC0-1.0", key="grant_id")),
    "grant terms swapped": ("grants.parquet", _swap_terms),
    "grant expiry moved": ("grants.parquet", lambda t: _set(t, "valid_until", "G-r1", None, key="grant_id")),
    "item caption changed": ("items.parquet", lambda t: _set(t, "description", "r1", "something else")),
    "item sha changed": ("items.parquet", lambda t: _set(t, "audio_sha256", "r1", "ef" * 32)),
    "item digest recomputed by hand": ("items.parquet", lambda t: _set(t, "digest", "r1", "0" * 64)),
}


@pytest.mark.parametrize("edit", list(PARQUET_EDITS), ids=list(PARQUET_EDITS))
def test_an_edited_parquet_cell_is_refused(world, edit):
    folder = run(world).snapshot_path
    name, fn = PARQUET_EDITS[edit]
    _rewrite(folder, name, fn)
    with pytest.raises(SnapshotError) as err:
        _ = load_snapshot(folder).excluded  # excluded rows' own leaves are recomputed on first access
    assert str(folder) in str(err.value)
    with pytest.raises(SnapshotError):
        load_snapshot(folder, deep=True)
    assert any(w in str(err.value) for w in ("edited snapshot", "does not match", "no terms")), str(err.value)


def test_an_excluded_item_moved_to_the_cleared_list_is_refused(world):
    folder = run(world).snapshot_path
    _move_r4_to_items(folder)
    with pytest.raises(SnapshotError, match="r4|counts|Merkle"):
        load_snapshot(folder)


def test_an_edit_without_rehashing_the_header_is_refused_by_file_hash(world):
    folder = run(world).snapshot_path
    _rewrite(folder, "items.parquet", lambda t: _set(t, "title", "r1", "x"), rehash=False)
    with pytest.raises(SnapshotError, match="items.parquet: sha256 does not match"):
        load_snapshot(folder)


def test_an_excluded_file_changed_after_loading_is_refused_on_access(world):
    folder = run(world).snapshot_path
    snap = load_snapshot(folder)
    _rewrite(folder, "excluded.parquet", lambda t: _set(t, "detail", "r4", "x"), rehash=False)
    with pytest.raises(SnapshotError, match="excluded.parquet: sha256 does not match"):
        _ = snap.excluded


def test_an_excluded_edit_is_caught_by_the_root_even_without_deep(world):
    folder = run(world).snapshot_path
    _rewrite(folder, "excluded.parquet", lambda t: _set(t, "digest", "r3", "ab" * 32))
    with pytest.raises(SnapshotError, match="Merkle root"):
        load_snapshot(folder, deep=False)


HEADER_EDITS = {
    "snapshot id changed": lambda d: d.__setitem__("snapshot_id", "snap-0000000000000000"),
    "merkle root changed": lambda d: d.__setitem__("merkle_root", "0" * 64),
    "policy changed": lambda d: d["policy"].__setitem__("territory", "US"),
    "ledger head changed": lambda d: d["ledger"].__setitem__("head_hash", "0" * 64),
    "counts changed": lambda d: d["counts"].__setitem__("cleared", 3),
    "schema changed": lambda d: d.__setitem__("schema", "lab.snapshot/1"),
    "a file dropped from the list": lambda d: d["files"].pop("grants.parquet"),
}


@pytest.mark.parametrize("edit", list(HEADER_EDITS), ids=list(HEADER_EDITS))
def test_an_edited_header_is_refused(world, edit):
    folder = run(world).snapshot_path
    doc = orjson.loads((folder / "snapshot.json").read_bytes())
    HEADER_EDITS[edit](doc)
    (folder / "snapshot.json").write_bytes(orjson.dumps(doc))
    with pytest.raises(SnapshotError) as err:
        load_snapshot(folder)
    assert str(folder) in str(err.value)


def test_missing_or_malformed_files_are_refused(world, tmp_path):
    with pytest.raises(SnapshotError, match="no snapshot"):
        load_snapshot(tmp_path / "nope")
    folder = run(world).snapshot_path
    (folder / "grants.parquet").unlink()
    with pytest.raises(SnapshotError, match="grants.parquet: missing"):
        load_snapshot(folder)
    folder = run(world).snapshot_path
    (folder / "items.parquet").write_bytes(b"not parquet")
    _fix = orjson.loads((folder / "snapshot.json").read_bytes())
    _fix["files"]["items.parquet"]["sha256"] = sha256_file(folder / "items.parquet")
    (folder / "snapshot.json").write_bytes(orjson.dumps(_fix))
    with pytest.raises(SnapshotError, match="items.parquet: not a readable Parquet file"):
        load_snapshot(folder)
    (folder / "snapshot.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="not a valid lab.snapshot/2 header"):
        load_snapshot(folder)


# ----------------------------------------------------------------------------- tricky values

TRICKY = [
    'quote " and backslash \\ and slash /',
    "line\nbreak\ttab\r\x00nul\x1fus\x7fdel",
    "é ü ß 漢字 🎵 \u2028\u2029",
    '{"looks": ["like", "json"]}, "G-1": {',
    "tab\tonly",
]


def test_tricky_text_and_numbers_match_the_reference_definition(world, tmp_path):
    """Every escape orjson makes, non-ASCII, floats in several forms, null ISRCs, several grants per
    item (ids sorted: "G-1" < "G-10" < "G-2"): what the column-wise writer hashed is what the
    per-row reference recomputes, and the reader accepts it."""
    home, ledger, out = world
    items = [
        item(
            f"t{i}",
            title=t,
            description=t,
            artists=[t, "plain", t + "!"],
            audio_path=f"{t}/{i}.wav",
            isrc=None if i % 2 else "GBLAB2600001",
            duration_s=d,
        )
        for i, (t, d) in enumerate(zip(TRICKY, [0.1, 1e-7, 123456789.125, 30.0, 1e16]))
    ]
    items.append(
        item("t-rej", title=TRICKY[1], reject_reason="decode_error", status="rejected", reject_detail=TRICKY[0])
    )
    save_catalog(Catalog(name=CATALOG, root=tmp_path / "audio", items=ITEMS + items), home)
    parties = [
        {"name": TRICKY[1], "role": "master_owner", "right": "master", "share": "33.3"},
        {
            "name": TRICKY[2],
            "role": "performer",
            "right": "master",
            "share": "66.7",
            "party_id": "ISNI:0000000121032683",
        },
    ]
    ledger.append_many(
        [
            grant(
                f"G-t{i}",
                subject={"recording_id": f"t{i}", "catalog": CATALOG},
                attribution=TRICKY[i],
                parties=parties,
                compensation=[
                    {"right": "master", "model": "flat_fee", "pool": "0.0000001", "currency": "EUR", "notes": TRICKY[i]}
                ],
                valid_until="2027-01-01T00:00:00.250000Z",
            )
            for i in range(len(TRICKY))
        ],
        recorded_at=RECORDED + timedelta(days=300),
    )
    ledger.append_many(
        [grant(g, subject={"recording_id": "r1", "catalog": CATALOG}) for g in ("G-10", "G-1", "G-2")],
        recorded_at=RECORDED + timedelta(days=300),
    )
    res = run(world)
    reference_check(res.snapshot_path)
    snap = load_snapshot(res.snapshot_path)
    assert set(snap.items["recording_id"].to_pylist()) >= {f"t{i}" for i in range(len(TRICKY))}
    assert snap.item("t1")["title"] == TRICKY[1] and snap.item("t3")["artists"] == [TRICKY[3], "plain", TRICKY[3] + "!"]
    assert snap.item("r1")["grant_ids"] == ["G-1", "G-10", "G-2", "G-r1"]
    assert set(snap.grants["grant_id"].to_pylist()) == {"G-1", "G-10", "G-2", "G-r1", "G-r2"} | {
        f"G-t{i}" for i in range(len(TRICKY))
    }
    t2 = snap.grants.filter(pc.equal(snap.grants["grant_id"], "G-t2")).to_pylist()[0]
    assert t2["attribution"] == TRICKY[2].strip() and t2["valid_until"].microsecond == 250000
    stored = next(e for e in ledger.events() if e.grant_id == "G-t2").event.grant.compensation
    assert t2["compensation"] == canonical_json([c.model_dump(mode="json") for c in stored]).decode()
    assert '"pool":"0.0000001"' in t2["compensation"] and snap.grants["parties"][0][0]["share"].as_py() in (33.3, 60)


def test_terms_missing_from_the_ledger_are_refused(world, tmp_path):
    home, ledger, _ = world
    table = load_catalog_table(CATALOG, home)
    decision = clear(table, ledger.frame(), Policy(**POLICY), AT)

    def dropping(seqs):
        return [[(s, p) for s, p in ledger.payload_texts(seqs) if s != seqs[0]]]

    with pytest.raises(SnapshotError, match="terms missing for clearing grant G-r1"):
        write_snapshot(
            tmp_path / "s",
            table,
            decision,
            catalog_info={"name": CATALOG},
            ledger_head=ledger.head(),
            payloads=dropping,
        )
    with pytest.raises(SnapshotError, match="terms missing"):
        write_snapshot(
            tmp_path / "s",
            table,
            decision,
            catalog_info={"name": CATALOG},
            ledger_head=ledger.head(),
            payloads=lambda seqs: [],
        )
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())  # nothing half-written


def test_packed_merkle_root_is_the_reference_tree():
    import hashlib
    import os

    from lab.util.merkle import merkle_root_packed

    def reference(leaves):  # docs/snapshot-format.md: pages of 1,024 sorted leaves (0x02), then a binary tree (0x01)
        ordered = sorted(leaves)
        level = [
            hashlib.sha256(b"\x02" + b"".join(ordered[i : i + 1024])).digest() for i in range(0, len(ordered), 1024)
        ]
        while len(level) > 1:
            nxt = [hashlib.sha256(b"\x01" + a + b).digest() for a, b in zip(level[0::2], level[1::2])]
            level = nxt + ([level[-1]] if len(level) % 2 else [])
        return level[0].hex() if level else hashlib.sha256(b"").hexdigest()

    for n in (0, 1, 2, 3, 5, 8, 13, 1000, 1025, 3000):
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
            res = run_clearance(
                catalog=CATALOG, ledger=pg, policy=Policy(**POLICY), snapshots_dir=out / "pg", home=home, at=AT
            )
            snap = load_snapshot(res.snapshot_path)
        assert snap.merkle_root == run(world).doc["merkle_root"]
        assert res.doc["counts"]["cleared"] == 2 and snap.grants["parties"][0][0]["share"].as_py() == 60
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def test_write_rows_gives_a_verified_snapshot(tmp_path):
    """The fixture writer: rows already decided, digests filled in, the same checks on load."""
    from lab.snapshot import write_rows

    g = {
        "grant_id": "G-1",
        "version": 1,
        "seq": 3,
        "licence": "CC-BY-4.0",
        "purposes": ["ai_training"],
        "territories": ["WW"],
        "valid_until": None,
        "on_termination": "retain",
        "attribution": "",
        "compensation": {"model": "none"},
        "parties": [{"name": "A", "role": "performer", "right": "master", "share": 100.0, "party_id": None}],
    }
    row = {
        "isrc": None,
        "title": "t",
        "artists": ["A"],
        "description": "d",
        "audio_path": "a.wav",
        "audio_sha256": SHA,
        "duration_s": 1.0,
        "sample_rate": 8000,
        "channels": 1,
        "grant_ids": ["G-1"],
    }
    folder, header = write_rows(
        tmp_path,
        items=[row | {"recording_id": "b"}, row | {"recording_id": "a"}],
        grants=[g],
        excluded=[{"recording_id": "x", "audio_sha256": None, "reason": "revoked", "detail": "", "grant_ids": ["G-0"]}],
        catalog_info={"name": "t"},
        policy=Policy(**POLICY),
        ledger_head=(3, "ab" * 32),
        cleared_at=AT,
    )
    reference_check(folder)
    snap = load_snapshot(folder)
    assert snap.items["recording_id"].to_pylist() == ["a", "b"] and header["counts"]["excluded"] == {"revoked": 1}


# --------------------------------------------------------------------------- verification receipts


def test_lab_clear_leaves_a_receipt_and_a_rank_trusts_only_the_very_files_it_names(world):
    from lab.snapshot import receipts_dir

    home = world[0]
    folder = run(world).snapshot_path
    receipts = receipts_dir(home)
    assert (receipts / f"{folder.name}.json").is_file()  # written by run_clearance, which computed every leaf
    snap = load_snapshot(folder, receipts=receipts)
    assert len(snap) == 2
    # under a receipt the grant terms are read when first asked for, and re-checked then
    _rewrite(folder, "grants.parquet", lambda t: _set(t, "licence", "G-r1", "CC0-1.0", key="grant_id"))
    with pytest.raises(SnapshotError, match="grants.parquet: sha256 does not match"):
        _ = snap.grants
    folder = run(world).snapshot_path  # the same decisions again: a fresh, intact folder
    assert load_snapshot(folder, receipts=receipts).grants.num_rows == 2
    # An edit that rewrites the header's file sha256 to match: the receipt names the old files, so every
    # leaf is recomputed and the edit is caught, receipt or not.
    _rewrite(folder, "items.parquet", lambda t: _set(t, "description", "r1", "something else"))
    with pytest.raises(SnapshotError, match="r1: digest does not match"):
        load_snapshot(folder, receipts=receipts)


def test_a_receipt_for_other_files_is_not_trusted_and_a_first_load_writes_one(world, tmp_path):
    folder = run(world).snapshot_path
    fresh = tmp_path / "other-home-receipts"
    load_snapshot(folder, receipts=fresh)  # no receipt yet: full check, then one is written
    receipt = fresh / f"{folder.name}.json"
    assert receipt.is_file()
    forged = orjson.loads(receipt.read_bytes())
    forged["files"]["items.parquet"] = "0" * 64
    receipt.write_bytes(orjson.dumps(forged))
    _rewrite(folder, "grants.parquet", lambda t: _set(t, "licence", "G-r1", "CC0-1.0", key="grant_id"))
    with pytest.raises(SnapshotError, match="digest does not match"):
        load_snapshot(folder, receipts=fresh)
