"""Audio helpers shared by the code cache and the model layer: mono conversion and resampling."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def to_mono(waveform: np.ndarray | torch.Tensor, *, channel_axis: int | None = None) -> torch.Tensor:
    """A float32 CPU tensor (samples,) from (samples,) or single-channel audio.

    Multichannel audio is averaged over ``channel_axis``, which the caller must name: (channels, samples)
    and soundfile's (samples, channels) look alike, so without it a multichannel input raises.
    """
    t = waveform.detach() if isinstance(waveform, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(waveform))
    t = t.to("cpu", torch.float32)
    if t.ndim == 2 and channel_axis is not None:
        return t.select(channel_axis, 0) if t.shape[channel_axis] == 1 else t.mean(dim=channel_axis)
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (samples,), got {tuple(t.shape)}; downmix first")
    return t


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99) -> tuple[torch.Tensor, int]:
    # Hann-windowed sinc polyphase kernel (the algorithm of torchaudio.functional.resample).
    base = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base).clamp(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernel = kernel * window * (base / orig)
    return kernel.to(torch.float32), width


def resample(waveform: np.ndarray | torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling of (..., samples) in torch (Hann-windowed sinc, 6 zero crossings).

    Output length is ``ceil(samples * new_sr / orig_sr)``. Returns float32 torch.
    """
    x = waveform.detach() if isinstance(waveform, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(waveform))
    x = x.to(torch.float32)
    if orig_sr == new_sr:
        return x
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError("sample rates must be positive")
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    length = shape[-1]
    kernel, width = _sinc_kernel(orig, new)
    padded = torch.nn.functional.pad(x[:, None], (width, width + orig))
    y = torch.nn.functional.conv1d(padded, kernel, stride=orig)  # (N, new, L')
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    target = math.ceil(new * length / orig)
    return y[:, :target].reshape(*shape[:-1], target)
