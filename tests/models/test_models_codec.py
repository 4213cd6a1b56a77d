from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _musicgen_testutil import SR, synth_clip

from lab.models.codec import encode_batch, encoder_frames, init_codebooks_from_audio, kmeans, quantization_error
from lab.models.musicgen import TinySpec, tiny_config
from lab.util.audio import resample


def _random_codec(seed: int = 0):
    from transformers import EncodecModel

    cfg = tiny_config(TinySpec(), text_vocab_size=128).audio_encoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EncodecModel(cfg).eval()


def test_random_init_codec_is_degenerate(clips):
    codec = _random_codec()
    codes = np.stack(encode_batch(codec, clips, 16_000))
    assert codes.shape == (4, 4, 100)  # 2 s at 50 frames/s, 4 codebooks
    assert (codes == 0).all()  # the known trap: all-zero codebooks


def test_init_gives_many_distinct_codes(clips):
    codec = _random_codec()
    err_before = quantization_error(codec, clips)
    # ~25 s of audio = 1250 frames: k-means needs a few frames per code in each of the 4 layers
    train = [synth_clip(f, seconds=4.0, seed=10 + i) for i, f in enumerate([98.0, 131.0, 175.0, 262.0, 392.0, 587.0])]
    used = init_codebooks_from_audio(codec, train + clips[:1], iters=10, seed=0)
    assert len(used) == 4 and used[0] > 128
    held_out = [synth_clip(550.0, seed=7), synth_clip(82.5, seconds=1.3, seed=8)]
    codes = encode_batch(codec, clips + held_out, 16_000)
    size = codec.config.codebook_size
    for q in range(4):
        distinct = np.unique(np.concatenate([c[q] for c in codes]))
        assert len(distinct) > 0.25 * size, (q, len(distinct))
    # different clips get different code sequences (in the first codebook already)
    assert not np.array_equal(codes[0][0], codes[1][0])
    assert (np.concatenate([c[0] for c in codes[-2:]]) != 0).any()
    # in embedding space the RVQ now explains most of the variance, and more with each layer
    errs = [quantization_error(codec, clips, n) for n in range(1, 5)]
    assert err_before >= 1.0
    assert errs[-1] < 0.2 and all(a >= b for a, b in zip(errs, errs[1:]))
    assert quantization_error(codec, held_out) < 0.5


def test_buffers_consistent_and_standardized(clips):
    codec = _random_codec()
    init_codebooks_from_audio(codec, clips, iters=5, seed=3)
    frames = encoder_frames(codec, clips)
    assert frames.mean(0).abs().max() < 1e-3
    assert torch.allclose(frames.std(0), torch.ones(frames.shape[1]), atol=1e-2)
    for layer in codec.quantizer.layers:
        book = layer.codebook
        assert book.inited.item() == 1.0
        assert book.cluster_size.sum() == len(frames)
        alive = book.cluster_size > 0
        torch.testing.assert_close(book.embed_avg[alive] / book.cluster_size[alive, None], book.embed[alive])


def test_deterministic_with_seed(clips):
    a, b, c = _random_codec(), _random_codec(), _random_codec()
    init_codebooks_from_audio(a, clips, seed=1)
    init_codebooks_from_audio(b, clips, seed=1)
    init_codebooks_from_audio(c, clips, seed=2)
    ea = [layer.codebook.embed for layer in a.quantizer.layers]
    eb = [layer.codebook.embed for layer in b.quantizer.layers]
    ec = [layer.codebook.embed for layer in c.quantizer.layers]
    assert all(torch.equal(x, y) for x, y in zip(ea, eb))
    assert not torch.equal(ea[0], ec[0])


def test_kmeans_small_and_dead_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 3, generator=g) * 0.01 + m for m in (0.0, 5.0, -5.0)])
    cent, counts = kmeans(x, 3, iters=20, generator=torch.Generator().manual_seed(0))
    assert sorted(counts.tolist()) == [20, 20, 20]
    assert sorted(round(v) for v in cent[:, 0].tolist()) == [-5, 0, 5]
    # fewer points than clusters still yields k finite centroids
    cent, counts = kmeans(x[:5], 8, generator=torch.Generator().manual_seed(0))
    assert cent.shape == (8, 3) and torch.isfinite(cent).all() and counts.sum() == 5


def test_rejects_stereo():
    codec = _random_codec()
    with pytest.raises(ValueError, match="mono"):
        init_codebooks_from_audio(codec, [np.zeros((2, 1600), np.float32)])


def test_encode_shapes_batching_and_resampling(_tiny, clips):
    model, _ = _tiny
    varied = [clips[0][:16_000], clips[1][:12_345], clips[2]]
    batch = encode_batch(model, varied, SR, batch_size=8)
    assert [c.shape for c in batch] == [(4, 50), (4, math.ceil(12_345 / 320)), (4, 100)]
    assert all(c.dtype == np.int64 and c.min() >= 0 and c.max() < 256 for c in batch)
    for clip, codes in zip(varied, batch):
        single = encode_batch(model.audio_encoder, [clip], SR)[0]
        assert (single == codes).mean() > 0.99  # same up to float rounding
    # other sample rates are resampled to the codec rate first
    at_32k = resample(clips[0], SR, 32_000).numpy()
    codes32 = encode_batch(model, [at_32k], 32_000)[0]
    assert codes32.shape == (4, 100)
    # up- then down-sampling is near-transparent: most first-codebook codes agree with the original
    assert (codes32[0] == encode_batch(model, [clips[0]], SR)[0][0]).mean() > 0.5
    with pytest.raises(ValueError, match="mono"):
        encode_batch(model, [np.zeros((2, 1000), np.float32)], SR)
    with pytest.raises(ValueError):
        encode_batch(model.audio_encoder, [clips[0]], SR, bandwidth=3.0)


def test_reservoir_keeps_a_uniform_bounded_sample():
    from lab.models.codec import _reservoir

    def run(seed):
        g, keep, seen = torch.Generator().manual_seed(seed), None, 0
        rows = torch.arange(10_000, dtype=torch.float32)[:, None]
        for i in range(0, len(rows), 37):  # a stream of uneven chunks
            keep, seen = _reservoir(rows[i : i + 37], keep, seen, 200, g)
        return keep[:, 0], seen

    kept, seen = run(0)
    assert seen == 10_000 and kept.shape == (200,) and len(torch.unique(kept)) == 200
    assert 3_500 < float(kept.mean()) < 6_500  # not the head of the stream: drawn from all of it
    assert (kept >= 9_000).sum() >= 5 and (kept < 1_000).sum() >= 5
    assert torch.equal(run(0)[0], kept) and not torch.equal(run(1)[0], kept)  # seeded


def test_sampled_frames_are_bounded_and_standardised_like_a_reencode(clips):
    from lab.models.codec import sample_encoder_frames, standardize_encoder_output

    codec = _random_codec()
    stream = (c for c in clips * 5)  # a generator, consumed once
    frames = sample_encoder_frames(codec, stream, max_frames=300, seed=0)
    assert frames.shape == (300, codec.config.hidden_size)
    assert standardize_encoder_output(codec, frames)
    affine = (frames - frames.mean(dim=0)) / frames.std(dim=0).clamp_min(1e-8)
    reencoded = encoder_frames(codec, clips)
    # the last layer is affine: the standardised sample is what encoding again would give
    full = encoder_frames(_random_codec(), clips)
    mean, std = frames.mean(dim=0), frames.std(dim=0).clamp_min(1e-8)
    assert torch.allclose((full - mean) / std, reencoded, atol=1e-3)
    assert affine.mean().abs() < 1e-4 and (affine.std(dim=0) - 1).abs().max() < 1e-3


def test_init_codebooks_from_a_generator_with_a_frame_cap(clips):
    codec = _random_codec()
    used = init_codebooks_from_audio(codec, (c for c in clips), iters=3, seed=0, max_frames=150)
    assert len(used) == 4 and used[0] > 20  # fitted on the 150 frames kept, not all 400
    codes = np.stack(encode_batch(codec, clips, 16_000))
    assert len(np.unique(codes[:, 0])) > 20
