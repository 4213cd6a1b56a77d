"""Tiny catalogue fixtures in tmp_path (helpers in catalog_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from catalog_helpers import row, write_audio, write_jsonl


@pytest.fixture
def lab_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "labhome"
    monkeypatch.setenv("LAB_HOME", str(home))
    return home


@pytest.fixture
def source(tmp_path) -> Path:
    """A clean catalogue folder: WAV, FLAC and OGG clips with JSONL metadata."""
    src = tmp_path / "src"
    write_audio(src / "a.wav", "WAV", 440)
    write_audio(src / "sub" / "b.flac", "FLAC", 550, channels=2)
    write_audio(src / "c.ogg", "OGG", 660)
    write_jsonl(
        src / "metadata.jsonl", [row("r1", "a.wav", isrc="GBLAB2600001"), row("r2", "sub/b.flac"), row("r3", "./c.ogg")]
    )
    return src
