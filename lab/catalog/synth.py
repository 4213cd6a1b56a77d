"""Deterministic music-like clips from numpy: several timbres, keys, tempi, with a caption each.

Why synthesize: no audio can be downloaded here, and a demo must be consent-clean by
construction. These are simple, but they are music a codec can learn: pitched notes on a
beat grid, in a key, with a timbre the caption names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEYS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "Bb": 10}
SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
TIMBRES = {
    "piano": "a soft felt piano",
    "organ": "a warm drawbar organ",
    "pluck": "a bright plucked guitar",
    "bass": "a round synth bass",
    "bells": "glassy bells",
    "pad": "a slow evolving synth pad",
}
PATTERNS = {"arpeggio": "an arpeggio", "scale": "a rising scale", "melody": "a wandering melody"}


@dataclass(frozen=True)
class ClipSpec:
    timbre: str
    key: str
    mode: str
    bpm: int
    pattern: str
    with_drums: bool
    seed: int

    def caption(self) -> str:
        drums = " over a steady kick and hi-hat" if self.with_drums else ""
        mood = "bright and upbeat" if self.mode == "major" else "moody and reflective"
        return (
            f"{TIMBRES[self.timbre]} playing {PATTERNS[self.pattern]} in {self.key} {self.mode} "
            f"at {self.bpm} bpm{drums}, {mood}"
        )


def _midi_hz(m: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69) / 12)


def _note(timbre: str, hz: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    if timbre == "pluck":  # Karplus-Strong string
        period = max(2, int(sr / hz))
        buf = rng.uniform(-1, 1, period)
        out = np.empty(n)
        for i in range(n):
            out[i] = buf[i % period]
            buf[i % period] = 0.5 * (buf[i % period] + buf[(i + 1) % period]) * 0.996
        return out
    if timbre == "bells":  # inharmonic FM
        env = np.exp(-3.0 * t)
        return env * np.sin(2 * np.pi * hz * t + 2.0 * env * np.sin(2 * np.pi * hz * 3.5 * t))
    harmonics = {
        "piano": [1, 0.5, 0.25, 0.12],
        "organ": [1, 0.8, 0.6, 0.4, 0.3],
        "bass": [1, 0.6, 0.35, 0.2, 0.1, 0.05],
        "pad": [1, 0.5, 0.33, 0.25],
    }[timbre]
    sig = sum(a * np.sin(2 * np.pi * hz * (k + 1) * t) for k, a in enumerate(harmonics))
    if timbre == "pad":
        sig = sig + 0.7 * np.sin(2 * np.pi * hz * 1.004 * t)
        env = np.minimum(1.0, t / 0.15)
    elif timbre == "piano":
        env = np.exp(-4.0 * t) * np.minimum(1.0, t / 0.005)
    else:
        env = np.minimum(1.0, t / 0.01) * np.exp(-0.8 * t)
    return env * sig


def _drums(total: int, beat: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(total)
    kick_n = min(beat, int(0.15 * sr))
    tk = np.arange(kick_n) / sr
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-30 * tk)) * tk) * np.exp(-20 * tk)
    hat_n = int(0.04 * sr)
    hat = rng.uniform(-1, 1, hat_n) * np.exp(-np.arange(hat_n) / (0.008 * sr))
    for start in range(0, total, beat):
        out[start : start + kick_n] += kick[: total - start]
        h = start + beat // 2
        if h < total:
            out[h : h + hat_n] += 0.3 * hat[: total - h]
    return out


def render(spec: ClipSpec, seconds: float = 4.0, sr: int = 32000) -> np.ndarray:
    """Mono float32 in [-1, 1]."""
    rng = np.random.default_rng(spec.seed)
    total = int(seconds * sr)
    beat = int(sr * 60 / spec.bpm)
    step = beat // 2  # eighth notes
    root = 48 + KEYS[spec.key] + (12 if spec.timbre in ("bells", "pluck") else 0) - (12 if spec.timbre == "bass" else 0)
    scale = SCALES[spec.mode]
    if spec.pattern == "arpeggio":
        degrees = [0, 2, 4, 7, 4, 2]
    elif spec.pattern == "scale":
        degrees = list(range(8))
    else:
        degrees = list(np.cumsum(rng.integers(-2, 3, 16)) % 10)
    out = np.zeros(total)
    for k, start in enumerate(range(0, total, step)):
        d = int(degrees[k % len(degrees)])
        midi = root + 12 * (d // 7) + scale[d % 7]
        n = min(total - start, int(step * (2.5 if spec.timbre in ("pad", "organ") else 1.8)))
        out[start : start + n] += _note(spec.timbre, float(_midi_hz(midi)), n, sr, rng)
    if spec.with_drums:
        out += 0.6 * _drums(total, beat, sr, rng)
    out += 0.002 * rng.standard_normal(total)  # a little room noise: real recordings are never silent
    peak = np.max(np.abs(out)) or 1.0
    return (0.8 * out / peak).astype(np.float32)


def demo_specs(n: int, seed: int = 0) -> list[ClipSpec]:
    rng = np.random.default_rng(seed)
    timbres, keys, modes = list(TIMBRES), list(KEYS), list(SCALES)
    specs = []
    for i in range(n):
        specs.append(
            ClipSpec(
                timbre=timbres[i % len(timbres)],
                key=keys[int(rng.integers(len(keys)))],
                mode=modes[int(rng.integers(2))],
                bpm=int(rng.choice([72, 84, 96, 110, 120, 132])),
                pattern=list(PATTERNS)[int(rng.integers(len(PATTERNS)))],
                with_drums=bool(rng.integers(2)),
                seed=seed * 1000 + i,
            )
        )
    return specs
