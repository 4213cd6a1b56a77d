"""Code cache: shapes, reuse without re-encoding, keying by codec weights, refusal of changed audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
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
        ("rec-a", 0, 0.0, 1.0, 200),
        ("rec-a", 1, 1.0, 1.0, 200),
        ("rec-a", 2, 2.0, pytest.approx(0.6), 120),
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
    orig = codes_mod._open_audio

    def spy(path):
        read.append(path.name)
        return orig(path)

    monkeypatch.setattr(codes_mod, "_open_audio", spy)
    build_code_cache(snap, tiny_codec(), tmp_path / "cache", segment_seconds=1.0)
    assert sorted(read) == ["a.wav", "b.wav", "c.flac"]


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


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize(
    "src,dst,block", [(44100, 16000, 4410), (22050, 8000, 1000), (16000, 8000, 7), (8000, 8000, 3)]
)
def test_stream_resampler_equals_whole_signal(src, dst, block):
    x = np.random.default_rng(0).standard_normal(src + 123).astype(np.float32)
    rs = codes_mod.StreamResampler(src, dst)
    parts = [rs.push(x[i : i + block]) for i in range(0, len(x), block)] + [rs.flush()]
    assert max(len(p) for p in parts) <= block * dst // src + dst  # bounded by the block, not the signal
    got = np.concatenate(parts)
    want = resample(x, src, dst)
    assert got.shape == want.shape
    assert np.allclose(got, want, atol=1e-5)


def test_item_audio_streams_in_blocks_equal_to_whole_file(snap):
    root = Path(snap.catalog["root"])
    item = snap.item("rec-b")  # stereo 8 kHz: downmixed and resampled per block
    blocks = list(codes_mod.iter_item_audio(item, root, CODEC_SR * 2, block_seconds=0.1))
    assert len(blocks) > 5 and max(len(b) for b in blocks) <= 0.1 * 16000 + 1
    import soundfile as sf

    wave, sr = sf.read(root / item["audio_path"], dtype="float32", always_2d=True)
    want = resample(wave.mean(axis=1), sr, CODEC_SR * 2)
    assert np.allclose(np.concatenate(blocks), want, atol=1e-5)


def test_item_windows_are_bounded_per_item_and_seeded(snap):
    root = Path(snap.catalog["root"])
    items = [snap.item("rec-a"), snap.item("rec-c")]  # 2.6 s and 0.4 s

    def sample(seed):
        return list(codes_mod.sample_item_windows(items, root, 8000, window_seconds=0.37, per_item=2, seed=seed))

    a = sample(0)
    assert [len(w) for w in a] == [2960, 2960, 2960]  # two of rec-a's 7 windows, rec-c's one (its tail < half)
    assert all(np.array_equal(x, y) for x, y in zip(a, sample(0)))
    short = codes_mod.sample_item_windows(items[1:], root, 8000, window_seconds=1.0, per_item=2, seed=0)
    assert [len(w) for w in short] == [3200]  # a clip shorter than a window is kept whole
    assert any(not np.array_equal(a[0], b[0]) or not np.array_equal(a[1], b[1]) for b in map(sample, range(1, 6)))


# --------------------------------------------------------------------------- verified, not trusted


def _arrow_file(folder: Path) -> Path:
    (path,) = folder.glob("*.arrow")
    return path


def _rewrite(folder: Path, edit) -> None:
    """Rewrite the cache's Arrow file in place with `edit(table) -> table` (schema and metadata kept)."""
    import pyarrow as pa

    path = _arrow_file(folder)
    with pa.memory_map(str(path)) as src:
        table = pa.ipc.open_stream(src).read_all()
    table = edit(table)
    tmp = path.with_suffix(".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    tmp.replace(path)


def _bump_codes(row: int):
    import pyarrow as pa

    def edit(table):
        col = table.column("codes").combine_chunks()
        rows = col.storage.to_pylist()
        rows[row][0][0] = (rows[row][0][0] + 1) % 64
        new = pa.ExtensionArray.from_storage(col.type, pa.array(rows, type=col.type.storage_type))
        return table.set_column(table.schema.get_field_index("codes"), table.schema.field("codes"), new)

    return edit


def _redigest(table):
    """An attacker who also recomputes the row digest of every row."""
    import pyarrow as pa

    rows = table.to_pylist()
    digests = [codes_mod.row_digest(r, np.array(r["codes"])) for r in rows]
    i = table.schema.get_field_index("digest")
    return table.set_column(i, table.schema.field("digest"), pa.array(digests, pa.string()))


@pytest.mark.parametrize("how", ["codes", "codes+row digest", "cache.json", "description"])
def test_tampered_cache_is_refused_and_rebuilt(tmp_path, snap, how):
    codec = tiny_codec()
    good = build_code_cache(snap, codec, tmp_path / "cache", segment_seconds=1.0)
    want = codes_array(good)
    folder = tmp_path / "cache" / cache_key(snap, codec, segment_seconds=1.0)
    if how == "codes":
        _rewrite(folder, _bump_codes(1))
    elif how == "codes+row digest":
        _rewrite(folder, lambda t: _redigest(_bump_codes(1)(t)))
    elif how == "cache.json":
        info = read_cache_json(folder)
        info["recordings"]["rec-a"]["segments"] = 2
        (folder / "cache.json").write_bytes(orjson.dumps(info))
    else:
        import pyarrow as pa

        def edit(t):
            desc = t.column("description").to_pylist()
            desc[0] = "a happy jingle"
            return _redigest(
                t.set_column(
                    t.schema.get_field_index("description"), t.schema.field("description"), pa.array(desc, pa.string())
                )
            )

        _rewrite(folder, edit)
    with pytest.raises(codes_mod.TamperedCacheError, match="refused"):
        codes_mod.load_code_cache(folder, snap)

    counter, said = CountingEncode(codec), []
    again = build_code_cache(snap, codec, tmp_path / "cache", segment_seconds=1.0, notify=said.append)
    assert counter.segments == 4  # re-encoded from the audio
    assert len(said) == 1 and "\n" not in said[0] and "refused, rebuilding" in said[0] and folder.name in said[0]
    assert np.array_equal(codes_array(again), want)  # training sees the true codes, never the tampered ones
    assert again.to_list()[0]["description"] == "tone 220 hz rec-a"
    codes_mod.verify_code_cache(folder, snap, codec_digest=model_digest(codec))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # the refused copy is gone


def test_cache_is_bound_to_the_snapshot_items(tmp_path, snap):
    codec = tiny_codec()
    build_code_cache(snap, codec, tmp_path / "cache", segment_seconds=1.0)
    folder = tmp_path / "cache" / cache_key(snap, codec, segment_seconds=1.0)
    other = make_snapshot(tmp_path / "other", clips=[("rec-a", "a.wav", 2.6, 16000, 1, 221.0)])
    with pytest.raises(codes_mod.TamperedCacheError, match="snapshot"):
        codes_mod.verify_code_cache(folder, other)
    info = read_cache_json(folder)
    info["items_sha256"] = "0" * 64
    info["info_sha256"] = codes_mod._info_sha256(info)  # a consistent cache.json, about other items
    (folder / "cache.json").write_bytes(orjson.dumps(info))
    with pytest.raises(codes_mod.TamperedCacheError, match="leaf digests"):
        codes_mod.verify_code_cache(folder, snap)
    with pytest.raises(codes_mod.TamperedCacheError, match="codec"):
        codes_mod.verify_code_cache(folder, codec_digest="f" * 64)
