"""Fixtures for lab.cards: a small valid data card, and signing keys made once per session."""

from __future__ import annotations

import copy
import hashlib

import pytest


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def source(rid: str, *, purposes=("ai_generative_training", "ai_training"), territories=("WW",),
           valid_until="2027-12-31T00:00:00Z", on_termination="retain", seconds=12.5,
           licence="CC-BY-4.0") -> dict:
    gid = f"G-{rid}"
    return {
        "recording_id": rid,
        "isrc": "GBLAB2600001",
        "title": f"Song {rid} | take 1",
        "artists": ["Ada Example"],
        "audio_sha256": _h(rid),
        "rights_holders": [
            {"name": "Example Records", "role": "master_owner", "right": "master", "share": 100.0, "grant_id": gid},
            {"name": "Ada Example", "role": "composer", "right": "composition", "share": 60.0, "grant_id": gid},
            {"name": "Example Music Publishing", "role": "publisher", "right": "composition", "share": 40.0,
             "grant_id": gid},
        ],
        "licence": licence,
        "grant_ids": [gid],
        "purposes": list(purposes),
        "territories": list(territories),
        "valid_until": valid_until,
        "on_termination": on_termination,
        "seconds_seen": seconds,
        "credit": f"'Song {rid}' by Ada Example, courtesy of Example Records",
    }


def card_dict(sources=None) -> dict:
    sources = [source("demo-0001"), source("demo-0002", territories=("GB", "FR"), seconds=7.5,
                                            valid_until="2027-06-30T00:00:00Z", on_termination="retrain",
                                            licence="LicenseRef-lab-catalogue-deal")] if sources is None else sources
    return {
        "schema": "lab.data_card/1",
        "identity": {
            "checkpoint_id": "run-abc.step-000200",
            "created_at": "2026-11-23T17:05:00Z",
            "step": 200,
            "code_commit": "26a6d6c",
            "code_dirty": False,
            "config_digest": _h("config"),
            "seed": 1234,
            "lab_version": "0.1.0",
        },
        "lineage": {
            "base_model": {
                "id": "facebook/musicgen-small",
                "digest": _h("weights"),
                "licence": "CC-BY-NC-4.0",
                "declared_training_data": "Meta's licensed music (ShutterStock, Pond5, internal)",
                "card": {"path": None, "sha256": None, "summary": "MusicGen small, 300M"},
                "kind": "local_pretrained",
            },
            "parent_checkpoint": None,
            "relation": "finetune",
            "inherited_sources": [],
        },
        "snapshot": {
            "snapshot_id": "snap-0123456789abcdef",
            "merkle_root": _h("root"),
            "ledger_head_seq": 42,
            "ledger_head_hash": _h("head"),
            "policy": {
                "name": "research",
                "purposes": ["ai_generative_training"],
                "territory": "GB",
                "accept_licence_classes": ["permissive", "contract", "non_commercial"],
                "digest": _h("policy"),
            },
            "cleared_at": "2026-11-23T17:00:00Z",
            "catalog": "demo",
        },
        "sources": sources,
        "exclusions": {"revoked": 2, "no_grant": 1},
        "exposure": {"total_seconds": sum(s["seconds_seen"] for s in sources), "samples": 10, "tokens": 5000},
    }


@pytest.fixture
def raw_card() -> dict:
    """A valid card as a dict, validity omitted (the model derives it)."""
    return copy.deepcopy(card_dict())


@pytest.fixture
def card(raw_card):
    from lab.cards.schema import DataCard

    return DataCard.model_validate(raw_card)


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    from lab.cards.signing import ensure_keypair

    root = tmp_path_factory.mktemp("keys")
    return ensure_keypair(root / "a"), ensure_keypair(root / "b")


@pytest.fixture
def make_source():
    return source


@pytest.fixture
def make_card_dict():
    return card_dict
