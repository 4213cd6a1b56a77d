"""Fixtures for lab.cards: a small snapshot (arrow tables, as lab.snapshot reads them), a card built
from it, and signing keys made once per session."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from types import SimpleNamespace

import pyarrow as pa
import pytest

S, L = pa.string(), pa.list_(pa.string())
PARTY = pa.struct([("name", S), ("role", S), ("right", S), ("share", pa.float64()), ("party_id", S)])
GRANTS_SCHEMA = pa.schema(
    [
        ("grant_id", S),
        ("version", pa.int64()),
        ("seq", pa.int64()),
        ("licence", S),
        ("parties", pa.list_(PARTY)),
        ("purposes", L),
        ("territories", L),
        ("valid_until", pa.timestamp("us", tz="UTC")),
        ("on_termination", S),
        ("attribution", S),
        ("compensation", S),
    ]
)
ITEMS_SCHEMA = pa.schema(
    [
        ("recording_id", S),
        ("isrc", S),
        ("title", S),
        ("artists", L),
        ("description", S),
        ("audio_path", S),
        ("audio_sha256", S),
        ("duration_s", pa.float64()),
        ("sample_rate", pa.int64()),
        ("channels", pa.int64()),
        ("extra", S),
        ("metadata_licence", S),
        ("grant_ids", L),
        ("notes", L),
        ("digest", S),
    ]
)


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def utc(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def grant(
    gid: str,
    *,
    seq: int,
    licence="CC-BY-4.0",
    purposes=("ai_generative_training", "ai_training"),
    territories=("WW",),
    valid_until="2027-12-31",
    on_termination="retain",
    attribution="",
    parties=None,
) -> dict:
    parties = parties or [
        {"name": "Example Records", "role": "master_owner", "right": "master", "share": 100.0, "party_id": None},
        {
            "name": "Ada Example",
            "role": "composer",
            "right": "composition",
            "share": 60.0,
            "party_id": "IPI:00012345678",
        },
        {
            "name": "Example Music Publishing",
            "role": "publisher",
            "right": "composition",
            "share": 40.0,
            "party_id": None,
        },
    ]
    return {
        "grant_id": gid,
        "version": 1,
        "seq": seq,
        "licence": licence,
        "parties": parties,
        "purposes": list(purposes),
        "territories": list(territories),
        "valid_until": utc(valid_until),
        "on_termination": on_termination,
        "attribution": attribution,
        "compensation": "{}",
    }


def item(rid: str, grant_ids, *, isrc: str | None = "GBLAB2600001", extra: str = "{}", metadata_licence=None) -> dict:
    return {
        "recording_id": rid,
        "isrc": isrc,
        "title": f"Song {rid} | take 1",
        "artists": ["Ada Example"],
        "description": "warm piano",
        "audio_path": f"{rid}.wav",
        "audio_sha256": h(rid),
        "duration_s": 8.0,
        "sample_rate": 32000,
        "channels": 1,
        "extra": extra,
        "metadata_licence": metadata_licence,
        "grant_ids": list(grant_ids),
        "notes": [],
        "digest": h("d" + rid),
    }


def snapshot(items: list[dict], grants: list[dict], *, catalog="demo", excluded=None) -> SimpleNamespace:
    """An object with the attributes lab.snapshot.Snapshot has (what build_card reads)."""
    return SimpleNamespace(
        snapshot_id="snap-0123456789abcdef",
        merkle_root=h("root"),
        cleared_at=datetime(2026, 11, 23, 17, tzinfo=timezone.utc),
        catalog={"name": catalog, "root": "/x", "manifest_sha256": h("manifest")},
        policy={
            "name": "research",
            "purposes": ["ai_generative_training"],
            "territory": "GB",
            "accept_licence_classes": ["permissive", "contract"],
            "contracts": {},
            "digest": h("policy"),
        },
        ledger={"head_seq": 42, "head_hash": h("head")},
        counts={"items": len(items), "cleared": len(items), "excluded": excluded or {"revoked": 2, "no_grant": 1}},
        items=pa.Table.from_pylist(items, schema=ITEMS_SCHEMA),
        grants=pa.Table.from_pylist(grants, schema=GRANTS_SCHEMA),
    )


def demo_snapshot() -> SimpleNamespace:
    """Three recordings: one plain grant, one under a catalogue deal, one cleared by two grants."""
    grants = [
        grant("G-0001", seq=3, attribution="'Song demo-0001' courtesy of Example Records"),
        grant(
            "G-deal",
            seq=5,
            licence="LicenseRef-lab-catalogue-deal",
            territories=("GB", "FR"),
            valid_until="2027-06-30",
            on_termination="retrain",
        ),
        grant(
            "G-0003a",
            seq=7,
            purposes=("ai_training", "ai_generative_training", "commercial_output"),
            territories=("GB", "FR", "DE"),
            valid_until=None,
            on_termination="retire",
            attribution="credit A",
            parties=[{"name": "Old Label", "role": "label", "right": "master", "share": 100.0, "party_id": None}],
        ),
        grant(
            "G-0003b",
            seq=9,
            licence="CC-BY-NC-4.0",
            purposes=("ai_generative_training", "eval_only"),
            territories=("FR", "GB", "US"),
            valid_until="2027-03-01",
            attribution="credit B",
            parties=[
                {"name": "New Label", "role": "label", "right": "master", "share": 70.0, "party_id": None},
                {"name": "Co Label", "role": "label", "right": "master", "share": 30.0, "party_id": None},
            ],
        ),
    ]
    items = [
        item("demo-0001", ["G-0001"]),
        item("demo-0002", ["G-deal"], isrc=None),
        item("demo-0003", ["G-0003a", "G-0003b"]),
        item("demo-0004", ["G-0001"]),
    ]
    return snapshot(items, grants)


def lineage(**extra) -> dict:
    return {
        "base_model": {
            "id": "facebook/musicgen-small",
            "digest": h("weights"),
            "licence": "CC-BY-NC-4.0",
            "declared_training_data": "Meta's licensed music",
            "kind": "local_pretrained",
            "card": {"summary": "MusicGen small"},
        },
        "relation": "finetune",
        **extra,
    }


def build(snap=None, seconds=None, *, checkpoint_id="run-abc-step-000200", lineage_=None, inherited=None):
    from lab.cards import build_card

    snap = snap or demo_snapshot()
    seconds = {"demo-0001": 12.5, "demo-0002": 7.5, "demo-0003": 4.0, "demo-0004": 0.0} if seconds is None else seconds
    return build_card(
        snapshot=snap,
        seconds_seen=seconds,
        samples=10,
        tokens=5000,
        lineage=lineage_ or lineage(),
        inherited=inherited,
        checkpoint_id=checkpoint_id,
        step=200,
        config={"seed": 1},
        seed=1,
    )


@pytest.fixture
def bundle():
    return build()


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    from lab.cards.signing import ensure_keypair

    root = tmp_path_factory.mktemp("keys")
    return ensure_keypair(root / "a"), ensure_keypair(root / "b")
