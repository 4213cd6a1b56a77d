"""Shared helpers for tests/models (a uniquely named module: `conftest` is ambiguous across test folders)."""

from __future__ import annotations

import numpy as np

from lab.models.delay import delay_pattern

SR = 16_000
TEXTS = [
    "warm analog bass line with slow groove",
    "bright acoustic guitar strumming, folk",
    "soft piano ballad with reverb",
    "fast electronic drums and synth arpeggio",
]


def synth_clip(f0: float, seconds: float = 2.0, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Harmonic tone with tremolo and a little noise: distinct per f0, deterministic per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * h * t + h) / h for h in range(1, 5))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * (1.5 + seed) * t))
    x = 0.3 * x / np.abs(x).max() + 0.02 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def teacher_forced_loss(model, input_ids, attention_mask, codes, lengths=None):
    """The training loss as the train job computes it: delay-pattern labels into the model's own loss."""
    device = next(model.parameters()).device
    d = delay_pattern(codes.to(device), model.config.decoder.pad_token_id, lengths)
    return model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        decoder_input_ids=d.decoder_input_ids,
        labels=d.labels,
        use_cache=False,
    ).loss
