"""The replication gate: a planted copy is withheld naming its recording, unrelated output passes,
a missing fingerprinter withholds (never releases unchecked), and the index is built once per snapshot."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.catalog.synth import ClipSpec, render
from lab.sample import fingerprint as fp
from lab.sample.replication import (
    NgramIndex,
    ReplicationIndex,
    ReplicationUnavailable,
    check_replication,
    codes_by_recording,
    load_settings,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))  # jobs_helpers: the demo builder

needs_fpcalc = pytest.mark.skipif(shutil.which("fpcalc") is None, reason="Debian libchromaprint-tools not installed")
SR = 16_000
V = 256  # codebook size of the unit-test "codec"


def random_codes(seed: int, frames: int, k: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, (k, frames))


# --------------------------------------------------------------------------- tokens


def test_containment_finds_the_recording_a_copy_came_from():
    codes = {f"rec-{i}": random_codes(i, 500) for i in range(5)}
    index = NgramIndex.build(codes, ngram=6, codebooks=1, codebook_size=V)
    score, rid = index.containment(codes["rec-3"][:, 100:300])
    assert (score, rid) == (1.0, "rec-3")
    score, _ = index.containment(random_codes(99, 200))
    assert score < 0.05


def test_containment_is_the_copied_fraction_and_ignores_pad_tokens():
    codes = {"a": random_codes(1, 400), "b": random_codes(2, 400)}
    index = NgramIndex.build(codes, ngram=4, codebooks=1, codebook_size=V)
    half = np.concatenate([codes["b"][:, :100], random_codes(3, 100)], axis=1)
    score, rid = index.containment(half)
    assert rid == "b" and 0.4 < score < 0.55  # ~97 of ~197 n-grams come from b
    padded = codes["a"][:, :120].copy()
    padded[:, :3] = V  # MusicGen's pad / start token where the delay pattern has nothing yet
    assert index.containment(padded) == (1.0, "a")


def test_joint_codebooks_need_every_joined_codebook_to_match():
    base = random_codes(4, 300)
    other = base.copy()
    other[1] = random_codes(5, 300)[1]  # same first codebook, another second one
    one = NgramIndex.build({"x": base}, ngram=5, codebooks=1, codebook_size=V)
    two = NgramIndex.build({"x": base}, ngram=5, codebooks=2, codebook_size=V)
    assert one.containment(other)[0] == 1.0
    assert two.containment(other)[0] < 0.05


# --------------------------------------------------------------------------- the check, on an in-memory index


@pytest.fixture(scope="module")
def small_index():
    specs = [
        ClipSpec("organ", "D", "minor", 96, "arpeggio", False, 11),
        ClipSpec("bells", "G", "major", 120, "melody", True, 12),
        ClipSpec("pad", "A", "minor", 84, "scale", False, 13),
    ]
    audio = {f"rec-{i}": render(s, 12.0, SR) for i, s in enumerate(specs)}
    codes = {rid: random_codes(i, 600) for i, rid in enumerate(audio)}
    prints = {rid: fp.fingerprint(a, SR) for rid, a in audio.items()} if shutil.which("fpcalc") else {}
    index = ReplicationIndex.build(codes, prints, codebook_size=V, settings=load_settings())
    return index, audio, codes


@needs_fpcalc
def test_planted_copy_is_withheld_naming_its_recording(small_index):
    index, audio, codes = small_index
    r = check_replication(codes["rec-1"][:, 50:550], audio["rec-1"][SR : 11 * SR], SR, index=index)
    assert r.withheld and r.nearest_recording == "rec-1"
    assert r.token_score > 0.9 and r.audio_score > 0.9
    assert "\n" not in r.detail and "rec-1" in r.detail


@needs_fpcalc
def test_a_copy_in_audio_only_is_withheld_by_its_fingerprint(small_index):
    index, audio, _ = small_index
    noisy = audio["rec-2"][2 * SR : 12 * SR] + 0.03 * np.random.default_rng(0).standard_normal(10 * SR)
    r = check_replication(random_codes(77, 500), noisy.astype(np.float32), SR, index=index)
    assert r.token_score < index.settings.token_threshold
    assert r.withheld and r.nearest_by == "audio" and r.nearest_recording == "rec-2"


@needs_fpcalc
def test_unrelated_output_is_released(small_index):
    index, _, _ = small_index
    other = render(ClipSpec("bass", "E", "major", 132, "melody", True, 4242), 10.0, SR)
    r = check_replication(random_codes(123, 500), other, SR, index=index)
    assert not r.withheld, r.detail
    assert r.token_score < 0.1 and r.audio_score < index.settings.audio_threshold
    assert r.thresholds == index.settings.thresholds


def test_missing_fpcalc_withholds_with_one_line(small_index, monkeypatch, tmp_path):
    index, _, _ = small_index
    monkeypatch.setenv(fp.ENV_FPCALC, str(tmp_path / "gone" / "fpcalc"))
    other = render(ClipSpec("bass", "E", "major", 132, "melody", True, 4242), 10.0, SR)
    r = check_replication(random_codes(123, 500), other, SR, index=index)
    assert r.withheld and r.token_score < 0.1  # nothing over threshold, and still not released
    assert "could not run" in r.detail and "fpcalc" in r.detail and "\n" not in r.detail


def test_thresholds_given_to_the_check_override_the_defaults(small_index):
    index, _, codes = small_index
    r = check_replication(codes["rec-0"][:, :300], None, SR, index=index, thresholds={"tokens": 1.0})
    assert r.thresholds["tokens"] == 1.0 and r.token_score == 1.0
    assert r.withheld  # no audio: the audio check could not run, so the output is still withheld
    assert "not checked" in r.detail


# --------------------------------------------------------------------------- from a checkpoint folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A demo catalogue and snapshot, its code cache from a tiny k-means codec, and a checkpoint folder
    naming that snapshot (only the files the index reads: no training)."""
    from jobs_helpers import make_demo, stray_env
    from transformers import EncodecModel

    from lab.data.codes import build_code_cache, load_item_audio
    from lab.models.codec import init_codebooks_from_audio
    from lab.models.musicgen import TinySpec, tiny_config
    from lab.snapshot import load_snapshot

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("replication")
    with stray_env(tmp_path_factory.mktemp("env-unused")):
        demo = make_demo(root)
    snap = load_snapshot(demo.snapshot)
    spec = TinySpec()
    torch.manual_seed(0)
    codec = EncodecModel(tiny_config(spec, text_vocab_size=100).audio_encoder).eval()
    audio_root = Path(snap.catalog["root"])
    clips = [load_item_audio(r, audio_root, spec.sampling_rate) for r in snap.items.to_pylist()]
    init_codebooks_from_audio(codec, clips, iters=3, seed=0)
    cache = build_code_cache(snap, codec, demo.home / "cache" / "codes", segment_seconds=2.0)
    folder = root / "run" / "checkpoints" / "step-000010"
    folder.mkdir(parents=True)
    (folder / "data_card.json").write_text(json.dumps({"snapshot": {"snapshot_id": snap.snapshot_id}}))
    config = {"data": {"snapshot": str(demo.snapshot), "segment_seconds": 2.0}}
    (folder / "config.lab.json").write_text(json.dumps(config))
    return demo, snap, folder, cache


@needs_fpcalc
def test_for_checkpoint_withholds_a_planted_training_clip(world):
    demo, snap, folder, cache = world
    from lab.data.codes import load_item_audio, read_cache_json

    index = ReplicationIndex.for_checkpoint(folder, home=demo.home)
    assert index.identity["snapshot_id"] == snap.snapshot_id
    info = read_cache_json(Path(cache.cache_files[0]["filename"]).parent)
    codes = codes_by_recording(cache, info["num_codebooks"], info["frames_per_segment"])
    rid = sorted(codes)[2]
    wave = load_item_audio(snap.item(rid), Path(snap.catalog["root"]), info["sampling_rate"])
    r = check_replication(codes[rid], wave, info["sampling_rate"], index=index)
    assert r.withheld and r.nearest_recording == rid, r.detail


@needs_fpcalc
def test_the_index_is_cached_and_a_damaged_one_rebuilt(world):
    demo, snap, folder, _ = world
    first = ReplicationIndex.for_checkpoint(folder, home=demo.home)
    built = list((demo.home / "cache" / "replication").iterdir())
    assert len(built) == 1 and built[0].name.startswith(snap.snapshot_id)
    again = ReplicationIndex.for_checkpoint(folder, home=demo.home)
    assert np.array_equal(again.ngrams.hashes, first.ngrams.hashes)
    assert again.prints.recording_ids == first.prints.recording_ids
    npz = built[0] / "index.npz"
    npz.write_bytes(npz.read_bytes()[:-10] + b"0123456789")  # damaged: its sha256 no longer matches
    with pytest.raises(ReplicationUnavailable):
        ReplicationIndex.load(built[0])
    rebuilt = ReplicationIndex.for_checkpoint(folder, home=demo.home)
    assert np.array_equal(rebuilt.prints.items, first.prints.items)
    assert ReplicationIndex.load(built[0]).identity == first.identity


def test_without_a_code_cache_the_index_is_unavailable(world, tmp_path):
    demo, _, folder, _ = world
    with pytest.raises(ReplicationUnavailable, match="no code cache") as err:
        ReplicationIndex.for_checkpoint(folder, home=tmp_path / "empty-home")
    assert "\n" not in str(err.value)


def test_the_unrelated_ber_follows_the_compared_window():
    s = load_settings(unrelated_ber={12: 0.25, 32: 0.35})
    assert s.unrelated_at(32) == 0.35 and s.unrelated_at(12) == 0.25
    assert s.unrelated_at(22) == pytest.approx(0.30)
    assert s.unrelated_at(4) == 0.25  # clamped: no extrapolation below the shortest calibrated window


def test_a_short_recording_is_compared_over_its_own_length_only():
    from lab.sample.replication import FingerprintIndex

    rng = np.random.default_rng(8)
    long_a, long_b = (rng.integers(0, 2**32, 200, dtype=np.uint64).astype(np.uint32) for _ in range(2))
    short = rng.integers(0, 2**32, 12, dtype=np.uint64).astype(np.uint32)
    index = FingerprintIndex.build({"a": long_a, "jingle": short, "b": long_b}, window=32, min_items=8)
    found = {rid: (ber, w) for ber, rid, w in index.matches(long_b[50:110])}
    assert found["b"] == (0.0, 32)  # the long recordings keep the full window
    assert found["jingle"][1] == 12 and found["jingle"][0] > 0.2
    score, ber, rid, w = index.best(long_b[50:110], lambda w: 0.35)
    assert (score, ber, rid, w) == (1.0, 0.0, "b", 32)
    assert index.best(short, lambda w: 0.35)[2:] == ("jingle", 12)  # an output as short as the jingle
