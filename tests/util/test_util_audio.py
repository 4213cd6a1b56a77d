"""lab.util.audio: the one mono conversion and the one resampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lab.util.audio import resample, to_mono


def test_to_mono_passes_mono_and_downmixes_only_on_a_named_axis():
    x = np.arange(6, dtype=np.float64)
    assert torch.equal(to_mono(x), torch.arange(6, dtype=torch.float32))
    assert to_mono(torch.ones(1, 5)).shape == (5,)
    stereo = np.stack([np.zeros(4), np.full(4, 2.0)], axis=1).astype(np.float32)  # soundfile: (samples, channels)
    assert to_mono(stereo, channel_axis=1).tolist() == [1.0] * 4
    assert to_mono(stereo.T, channel_axis=0).tolist() == [1.0] * 4
    assert to_mono(stereo[:, :1], channel_axis=1).tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="downmix first"):
        to_mono(stereo.T)


def test_resample_is_band_limited_and_accurate():
    sr_in, sr_out, f = 44_100, 16_000, 440.0
    n = sr_in  # 1 s
    x = np.sin(2 * np.pi * f * np.arange(n) / sr_in).astype(np.float32)
    y = resample(x, sr_in, sr_out).numpy()
    assert len(y) == math.ceil(n * sr_out / sr_in)
    ref = np.sin(2 * np.pi * f * np.arange(len(y)) / sr_out)
    core = slice(200, len(y) - 200)
    assert np.abs(y[core] - ref[core]).max() < 1e-2
    # a tone above the new Nyquist is removed, not aliased
    hi = np.sin(2 * np.pi * 10_000 * np.arange(n) / sr_in).astype(np.float32)
    assert np.abs(resample(hi, sr_in, sr_out).numpy()[core]).max() < 0.05
    assert torch.equal(resample(x, 16_000, 16_000), torch.from_numpy(x))
