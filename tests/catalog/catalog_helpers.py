"""Helpers for catalogue tests: ~0.2 s clips written with soundfile, metadata files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 8000


def tone(seconds: float = 0.2, freq: float = 440.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    x = x.astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_audio(path: Path, fmt: str = "WAV", freq: float = 440.0, channels: int = 1, seconds: float = 0.2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = {"OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}.get(fmt)
    sf.write(path, tone(seconds, freq, channels), SR, format=fmt, subtype=subtype)
    return path


def row(rid: str, audio_path: str, **kw) -> dict:
    base = {
        "recording_id": rid,
        "isrc": None,
        "title": f"Title {rid}",
        "artists": ["Ada"],
        "description": "warm piano, 90 bpm",
        "rights_holders": ["Label A"],
        "licence": "CC-BY-4.0",
        "audio_path": audio_path,
    }
    base.update(kw)
    return base


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    cols = ["recording_id", "isrc", "title", "artists", "description", "rights_holders", "licence", "audio_path"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([";".join(r[c]) if isinstance(r.get(c), list) else (r.get(c) or "") for c in cols])
    return path
