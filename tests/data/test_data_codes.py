"""Code cache: shapes, reuse without re-encoding, keying by codec weights, refusal of changed audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import CODEC_SR, make_snapshot, tiny_codec, write_clip

from lab.data import codes as codes_mod
from lab.data.codes import (
    AudioChangedError,
    build_code_cache,
    cache_key,
    read_cache_json,
    resample,
    segment_audio,
)
from lab.models.digest import model_digest


class CountingEncode:
    """Wraps codec.encode to count calls (and segments encoded)."""

    def __init__(self, codec):
        self.calls, self.segments, self._orig = 0, 0, codec.encode
        codec.encode = self

    def __call__(self, x, *a, **kw):
        self.calls += 1
        self.segments += x.shape[0]
        return self._orig(x, *a, **kw)


def codes_array(ds) -> np.ndarray:
    return ds.with_format("numpy")[:]["codes"]


@pytest.fixture
def snap(tmp_path):
    return make_snapshot(tmp_path / "catalog")


def test_build_rows_shapes_and_cache_json(tmp_path, snap):
    codec = tiny_codec()
    ds = build_code_cache(snap, codec, tmp_path / "cache", segment_seconds=1.0, batch_size=3)
    assert ds.features["codes"].dtype == "int16" and ds.features["codes"].shape == (4, 200)
    rows = ds.to_list()
    got = [(r["recording_id"], r["segment"], r["start_s"], r["seconds"], r["frames"]) for r in rows]
    assert got == [
        ("rec-a", 0, 0.0, 1.0, 200), ("rec-a", 1, 1.0, 1.0, 200), ("rec-a", 2, 2.0, pytest.approx(0.6), 120),
        ("rec-b", 0, 0.0, 1.0, 200),
    ]
    assert {r["description"] for r in rows} == {"tone 220 hz rec-a", "tone 330 hz rec-b"}
    assert all(r["audio_sha256"] == snap.item(r["recording_id"])["audio_sha256"] for r in rows)
    arr = codes_array(ds)
    assert arr.shape == (4, 4, 200) and arr.min() >= 0 and arr.max() < 64
    assert all(len(np.unique(arr[:, k])) > 3 for k in range(4)), "codes carry no information"
    folder = tmp_path / "cache" / cache_key(snap, codec, segment_seconds=1.0)
    assert folder.name.startswith(f"{snap.snapshot_id}-{model_digest(codec)[:16]}-1s-")
    info = read_cache_json(folder)
    assert info["num_codebooks"] == 4 and info["frames_per_segment"] == 200 and info["sampling_rate"] == CODEC_SR
    assert info["recordings"]["rec-a"]["segments"] == 3 and info["rows"] == 4
    assert info["skipped"][0]["recording_id"] == "rec-c"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no tmp leftovers


def test_second_call_loads_without_encoding(tmp_path, snap):
    codec = tiny_codec()
    counter = CountingEncode(codec)
    ds1 = build_code_cache(snap, codec, tmp_path / "cache", segment_seconds=1.0, batch_size=2)
    assert counter.calls == 2 and counter.segments == 4
    ds2 = build_code_cache(snap, codec, tmp_path / "cache", segment_seconds=1.0, batch_size=2)
    assert counter.calls == 2
    assert ds1.to_list() == ds2.to_list()


def test_batching_does_not_change_codes(tmp_path, snap):
    a = build_code_cache(snap, tiny_codec(), tmp_path / "c1", segment_seconds=1.0, batch_size=1)
    b = build_code_cache(snap, tiny_codec(), tmp_path / "c2", segment_seconds=1.0, batch_size=8)
    assert np.array_equal(codes_array(a), codes_array(b))


def test_key_changes_with_codec_weights_segment_and_bandwidth(tmp_path, snap):
    codec = tiny_codec()
    d0 = model_digest(codec)
    assert model_digest(tiny_codec()) == d0  # same seed, same weights
    counter = CountingEncode(codec)
    build_code_cache(snap, codec, tmp_path / "cache", segment_seconds=1.0)
    with torch.no_grad():
        codec.quantizer.layers[0].codebook.embed[0, 0] += 1.0
    assert model_digest(codec) != d0
    build_code_cache(snap, codec, tmp_path / "cache", segment_seconds=1.0)
    assert counter.calls == 2  # a new key: encoded again
    build_code_cache(snap, codec, tmp_path / "cache", segment_seconds=0.5)
    assert len(list((tmp_path / "cache").iterdir())) == 3

    two = tiny_codec(bandwidths=(2.4, 4.8))
    small = build_code_cache(snap, two, tmp_path / "bw", segment_seconds=1.0, bandwidth=2.4)
    big = build_code_cache(snap, two, tmp_path / "bw", segment_seconds=1.0, bandwidth=4.8)
    assert small.features["codes"].shape == (2, 200) and big.features["codes"].shape == (4, 200)
    assert len(list((tmp_path / "bw").iterdir())) == 2
    with pytest.raises(codes_mod.CodeCacheError, match="bandwidth"):
        build_code_cache(snap, two, tmp_path / "bw", segment_seconds=1.0, bandwidth=3.0)


def test_changed_audio_is_refused(tmp_path, snap):
    write_clip(Path(snap.catalog["root"]) / "sub/b.wav", 1.3, 8000, 331.0, 2)  # same name, new content
    with pytest.raises(AudioChangedError, match="rec-b.*changed since clearance"):
        build_code_cache(snap, tiny_codec(), tmp_path / "cache", segment_seconds=1.0)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_reads_only_snapshot_items(tmp_path, snap, monkeypatch):
    read = []
    orig = Path.read_bytes

    def spy(self):
        read.append(self.name)
        return orig(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    build_code_cache(snap, tiny_codec(), tmp_path / "cache", segment_seconds=1.0)
    audio_reads = [n for n in read if n not in ("cache.json",)]
    assert sorted(audio_reads) == ["a.wav", "b.wav", "c.flac"]


def test_audio_path_must_stay_inside_root(tmp_path, snap):
    bad = snap.item(snap.items["recording_id"][0].as_py()) | {"audio_path": "../x.wav"}
    with pytest.raises(codes_mod.CodeCacheError, match="relative"):
        codes_mod.load_item_audio(bad, Path(snap.catalog["root"]), 8000)


def test_nothing_to_encode_is_an_error(tmp_path):
    short = make_snapshot(tmp_path / "cat", clips=[("rec-c", "c.flac", 0.4, 22050, 1, 440.0)])
    with pytest.raises(codes_mod.CodeCacheError, match="no audio to train on"):
        build_code_cache(short, tiny_codec(), tmp_path / "cache", segment_seconds=1.0)
    assert not any((tmp_path / "cache").iterdir())


def test_segmenting_rule():
    assert [(s.index, s.start, s.samples) for s in segment_audio(25, 10)] == [(0, 0, 10), (1, 10, 10), (2, 20, 5)]
    assert len(segment_audio(24, 10)) == 2  # 4-sample tail < half: dropped
    assert segment_audio(4, 10) == []


@pytest.mark.parametrize("src,dst", [(44100, 32000), (16000, 8000), (8000, 32000), (22050, 24000)])
def test_resample_preserves_a_tone(src, dst):
    n = src // 2
    t = np.arange(n) / src
    y = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), src, dst)
    assert len(y) == int(np.ceil(n * dst / src))
    ref = np.sin(2 * np.pi * 440 * np.arange(len(y)) / dst)
    inner = slice(len(y) // 10, -len(y) // 10)
    assert np.max(np.abs(y[inner] - ref[inner])) < 2e-3
    assert resample(y, dst, dst) is not None and len(resample(y, dst, dst)) == len(y)
