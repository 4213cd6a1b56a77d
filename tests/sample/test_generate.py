"""Generation from an untrained tiny checkpoint: reproducible by seed, batch-independent, real codes, audio files."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from lab.sample.generate import GenerationError, generate, load_generator, write_audio

PROMPTS = ["warm piano", "slow strings with a much longer prompt than the others", "bright synth"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from lab.models.musicgen import TinySpec, build_tiny, save_model

    torch.set_num_threads(1)
    t = np.arange(32_000, dtype=np.float32) / 16_000
    clips = [0.3 * np.sin(2 * np.pi * f * t).astype(np.float32) for f in (110.0, 220.0, 440.0)]
    model, tok = build_tiny(TinySpec(), ["warm piano", "slow strings", "bright synth"], clips, seed=0)
    return save_model(model, tok, tmp_path_factory.mktemp("gen") / "model")


@pytest.fixture(scope="module")
def gen(model_dir):
    return load_generator(model_dir)


def test_same_seed_same_output_other_seed_differs(gen):
    a = generate(gen, PROMPTS[:1], duration_s=0.5, seed=3, progress=False)[0]
    b = generate(gen, PROMPTS[:1], duration_s=0.5, seed=3, progress=False)[0]
    c = generate(gen, PROMPTS[:1], duration_s=0.5, seed=4, progress=False)[0]
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.audio, b.audio)
    assert (a.codes != c.codes).mean() > 0.5 and not np.allclose(a.audio, c.audio)
    assert a.seed == 3 and c.seed == 4


def test_batch_equals_one_by_one(gen):
    # prompt i is drawn with seed + i whatever the batch; prompts of different lengths are padded in a batch,
    # so the decoded audio agrees to float rounding while the codes agree exactly
    batched = generate(gen, PROMPTS, duration_s=0.5, seed=11, batch_size=3, progress=False)
    pairs = generate(gen, PROMPTS, duration_s=0.5, seed=11, batch_size=2, progress=False)
    alone = [generate(gen, [p], duration_s=0.5, seed=11 + i, progress=False)[0] for i, p in enumerate(PROMPTS)]
    assert [g.prompt for g in batched] == PROMPTS and [g.seed for g in batched] == [11, 12, 13]
    for x, y, z in zip(batched, pairs, alone):
        assert np.array_equal(x.codes, y.codes) and np.array_equal(x.codes, z.codes)
        np.testing.assert_allclose(x.audio, z.audio, atol=1e-5)
    assert not np.array_equal(batched[0].codes, batched[1].codes)


def test_guided_batch_equals_one_by_one(gen):
    # an untrained model barely listens to its text, so a large scale is needed for guidance to show
    batched = generate(gen, PROMPTS, duration_s=0.2, seed=5, batch_size=3, guidance_scale=50.0, progress=False)
    alone = generate(gen, PROMPTS[2:], duration_s=0.2, seed=7, guidance_scale=50.0, progress=False)[0]
    plain = generate(gen, PROMPTS[2:], duration_s=0.2, seed=7, progress=False)[0]
    assert np.array_equal(batched[2].codes, alone.codes)
    assert not np.array_equal(alone.codes, plain.codes)  # guidance changed the distribution drawn from


def test_codes_are_what_was_decoded(gen):
    out = generate(gen, PROMPTS[:1], duration_s=0.4, seed=0, progress=False)[0]
    frames = round(0.4 * gen.frame_rate)
    assert out.codes.dtype == np.int64 and out.codes.shape == (gen.num_codebooks, frames)
    assert out.codes.min() >= 0 and out.codes.max() < gen.model.config.decoder.vocab_size
    assert out.audio.dtype == np.float32 and out.audio.ndim == 1 and out.sample_rate == gen.sample_rate
    assert out.duration_s == pytest.approx(0.4, abs=1 / gen.frame_rate)
    with torch.inference_mode():
        again = gen.model.audio_encoder.decode(torch.from_numpy(out.codes)[None, None], [None]).audio_values
    np.testing.assert_allclose(again[0, 0].numpy(), out.audio, atol=1e-5)


def test_progress_bar_on_stderr_only_when_asked(gen, capsys):
    generate(gen, PROMPTS[:1], duration_s=0.1, seed=0, progress=True)
    err = capsys.readouterr()
    assert "generating" in err.err and "step" in err.err and err.out == ""
    generate(gen, PROMPTS[:1], duration_s=0.1, seed=0, progress=None)  # not a terminal under pytest
    assert capsys.readouterr().err == ""


def test_bad_requests_name_the_problem(gen):
    with pytest.raises(GenerationError, match="longer than this checkpoint"):
        generate(gen, PROMPTS[:1], duration_s=60.0, seed=0, progress=False)
    with pytest.raises(GenerationError, match="no prompts"):
        generate(gen, [], duration_s=1.0, seed=0, progress=False)
    with pytest.raises(GenerationError, match="shorter than one frame"):
        generate(gen, PROMPTS[:1], duration_s=0.001, seed=0, progress=False)


def test_processor_built_when_folder_lacks_it(model_dir, gen, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "processor_config.json").unlink()
    other = load_generator(bare)
    assert other.processor_built and not gen.processor_built
    a = generate(other, PROMPTS[:2], duration_s=0.2, seed=1, progress=False)
    b = generate(gen, PROMPTS[:2], duration_s=0.2, seed=1, progress=False)
    assert all(np.array_equal(x.codes, y.codes) for x, y in zip(a, b))


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_write_audio_round_trip(tmp_path, fmt):
    sr = 16_000
    audio = (0.5 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)).astype(np.float32)
    audio[:10] = 1.7  # clipped, not wrapped
    path = tmp_path / f"out.{fmt}"
    digest = write_audio(path, audio, sr, fmt)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    back, rate = sf.read(path, dtype="float32")
    info = sf.info(path)
    assert rate == sr and info.format == fmt.upper() and info.channels == 1 and back.shape == audio.shape
    np.testing.assert_allclose(back[10:], audio[10:], atol=1 / 32_000)
    assert np.all(back[:10] > 0.99)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no staging file left behind


def test_write_audio_unknown_format_writes_nothing(tmp_path):
    with pytest.raises(GenerationError, match="unknown audio format"):
        write_audio(tmp_path / "x.mp3", np.zeros(10, np.float32), 16_000, "mp3")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
