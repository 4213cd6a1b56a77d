from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _musicgen_testutil import SR, synth_clip, teacher_forced_loss

from lab.models.codec import encode_batch
from lab.models.delay import delay_pattern
from lab.models.digest import model_digest
from lab.models.musicgen import (
    InvalidModelFolder,
    MissingModelFiles,
    TinySpec,
    apply_lora,
    build_tiny,
    freeze_encoders,
    load_local_pretrained,
    merge_lora,
    save_model,
    tiny_config,
)
from lab.util.audio import resample

K = 4
PAD = 256


# ---------------------------------------------------------------- spec / construction


def test_tiny_config_is_consistent():
    spec = TinySpec()
    cfg = tiny_config(spec, text_vocab_size=300)
    assert spec.frame_rate == 50.0 and spec.hop_length == 320
    assert cfg.audio_encoder.num_quantizers == cfg.decoder.num_codebooks == K
    assert cfg.decoder.vocab_size == cfg.audio_encoder.codebook_size == PAD
    assert cfg.decoder.pad_token_id == cfg.decoder.bos_token_id == cfg.decoder.decoder_start_token_id == PAD
    assert cfg.decoder.audio_channels == cfg.audio_encoder.audio_channels == 1
    assert cfg.text_encoder.vocab_size == 300 and cfg.text_encoder.pad_token_id == 0
    with pytest.raises(ValueError):
        TinySpec(codebook_size=200)
    with pytest.raises(ValueError):
        TinySpec(sampling_rate=22_050)
    with pytest.raises(ValueError):
        TinySpec(no_such_field=1)


def test_build_is_deterministic(_tiny, clips, texts):
    model, tok = _tiny
    again, tok2 = build_tiny(TinySpec(), texts, iter(clips), seed=0)  # a stream of clips works like a list
    assert model_digest(again) == model_digest(model)
    assert tok2.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    other, _ = build_tiny(TinySpec(), texts, clips, seed=1)
    assert model_digest(other) != model_digest(model)
    assert model.config.text_encoder.vocab_size == len(tok)
    # the caller's RNG is untouched
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny(TinySpec(), texts, clips[:1], seed=5)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- save / load


def test_save_then_stock_from_pretrained_and_generate(_tiny, saved_dir):
    from transformers import AutoProcessor, AutoTokenizer, MusicgenForConditionalGeneration, MusicgenProcessor

    names = {p.name for p in saved_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "processor_config.json" in names or "preprocessor_config.json" in names
    gen = json.loads((saved_dir / "generation_config.json").read_text())
    assert gen["do_sample"] is True and gen["pad_token_id"] == PAD and gen["max_new_tokens"] > 0

    model = MusicgenForConditionalGeneration.from_pretrained(saved_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(saved_dir, local_files_only=True)
    proc = AutoProcessor.from_pretrained(saved_dir, local_files_only=True)
    assert isinstance(proc, MusicgenProcessor) and proc.feature_extractor.sampling_rate == SR
    assert model_digest(model) == model_digest(_tiny[0])

    inputs = tok(["soft piano", "fast drums with synth"], padding=True, return_tensors="pt")
    new = 12
    torch.manual_seed(0)
    audio = model.generate(**inputs, max_new_tokens=new)
    frames = 1 + new - K  # generate keeps max_length - K frames after undoing the delay pattern
    assert audio.shape == (2, 1, frames * 320)
    assert torch.isfinite(audio).all()
    # classifier-free guidance path also runs
    audio = model.generate(**proc(text=["soft piano"], return_tensors="pt"), max_new_tokens=new, guidance_scale=3.0)
    assert audio.shape == (1, 1, frames * 320)


def test_load_local_pretrained_real_path(_tiny, saved_dir, texts):
    model, tok = load_local_pretrained(saved_dir)
    assert not model.training
    assert model_digest(model) == model_digest(_tiny[0])
    for text in texts:
        assert tok(text).input_ids == _tiny[1](text).input_ids
    # codebooks survive the round trip (persistent buffers)
    assert model.audio_encoder.quantizer.layers[0].codebook.embed.abs().sum() > 0


def test_load_local_pretrained_clear_errors(saved_dir, tmp_path):
    with pytest.raises(MissingModelFiles, match="not a directory"):
        load_local_pretrained(tmp_path / "nope")

    for missing, needle in [
        ("model.safetensors", "weights"),
        ("tokenizer.json", "tokenizer"),
        ("config.json", "config.json"),
    ]:
        folder = tmp_path / f"no-{missing}"
        shutil.copytree(saved_dir, folder)
        (folder / missing).unlink()
        with pytest.raises(FileNotFoundError, match=needle):
            load_local_pretrained(folder)

    folder = tmp_path / "not-musicgen"
    shutil.copytree(saved_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "t5"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidModelFolder, match="expected 'musicgen'"):
        load_local_pretrained(folder)

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "missing-weight"
    shutil.copytree(saved_dir, folder)
    state = load_file(folder / "model.safetensors")
    del state["decoder.lm_heads.0.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InvalidModelFolder, match="lm_heads.0.weight"):
        load_local_pretrained(folder)


# ---------------------------------------------------------------- digest / freeze


def test_digest_stable_and_sensitive(tiny, tmp_path):
    model, tok = tiny
    d0 = model_digest(model)
    assert model_digest(model) == d0
    save_model(model, tok, tmp_path / "a")
    assert model_digest(model) == d0  # save_pretrained's config edits do not count
    loaded = load_local_pretrained(tmp_path / "a")[0]
    assert model_digest(loaded) == d0
    # the codec alone has a digest too (key for a codes cache), also stable across save/load
    codec_digest = model_digest(model.audio_encoder)
    assert model_digest(loaded.audio_encoder) == codec_digest != d0
    with torch.no_grad():
        model.decoder.lm_heads[0].weight[0, 0] += 1e-3
    d1 = model_digest(model)
    assert d1 != d0
    with torch.no_grad():
        model.audio_encoder.quantizer.layers[3].codebook.embed[5, 0] += 1.0
    assert model_digest(model) not in (d0, d1)
    assert model_digest(model.audio_encoder) != codec_digest


def test_freeze_counts(tiny):
    model, _ = tiny
    total = sum(p.numel() for p in model.parameters())
    counts = freeze_encoders(model)
    decoder = sum(p.numel() for p in model.decoder.parameters())
    proj = sum(p.numel() for p in model.enc_to_dec_proj.parameters())
    assert counts == {"trainable": decoder + proj, "frozen": total - decoder - proj}
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    assert not any(p.requires_grad for p in model.audio_encoder.parameters())
    model2 = tiny[0].__class__(model.config)  # fresh, nothing frozen
    only_text = freeze_encoders(model2, text=True, audio=False)
    assert only_text["frozen"] == sum(p.numel() for p in model2.text_encoder.parameters())


# ---------------------------------------------------------------- loss


def test_training_loss_matches_manual_cross_entropy(_tiny, clips, texts):
    model, tok = _tiny
    codes = torch.from_numpy(np.stack(encode_batch(model, clips[:2], SR)))
    enc = tok(texts[:2], padding=True, return_tensors="pt")
    lengths = torch.tensor([100, 60])
    with torch.no_grad():
        loss = teacher_forced_loss(model, enc.input_ids, enc.attention_mask, codes, lengths)
        d = delay_pattern(codes, PAD, lengths)
        logits = model(
            input_ids=enc.input_ids, attention_mask=enc.attention_mask, decoder_input_ids=d.decoder_input_ids
        ).logits.reshape(2, K, -1, PAD)
    manual = (
        sum(
            F.cross_entropy(logits[:, k].reshape(-1, PAD), d.labels[..., k].reshape(-1), ignore_index=-100)
            for k in range(K)
        )
        / K
    )
    torch.testing.assert_close(loss, manual)
    assert abs(loss.item() - math.log(PAD)) < 0.5  # untrained ≈ uniform


def test_loss_decreases_when_overfitting_two_clips(tiny, clips, texts):
    model, tok = tiny
    freeze_encoders(model)
    codes = torch.from_numpy(np.stack(encode_batch(model, clips[:2], SR)))
    enc = tok(texts[:2], padding=True, return_tensors="pt")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    torch.manual_seed(0)
    losses = []
    for _ in range(20):
        loss = teacher_forced_loss(model, enc.input_ids, enc.attention_mask, codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses


def test_lora_trains_adapters_and_merges_to_stock_checkpoint(tiny, clips, texts, tmp_path):
    pytest.importorskip("peft")
    model, tok = tiny
    base_decoder = {n: p.detach().clone() for n, p in model.decoder.named_parameters()}
    counts = apply_lora(model, r=4, alpha=8)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert counts["trainable"] == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    codes = torch.from_numpy(np.stack(encode_batch(model, clips[:2], SR)))
    enc = tok(texts[:2], padding=True, return_tensors="pt")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = teacher_forced_loss(model, enc.input_ids, enc.attention_mask, codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        before = teacher_forced_loss(model, enc.input_ids, enc.attention_mask, codes)
    with pytest.raises(ValueError, match="merge_lora"):
        save_model(model, tok, tmp_path / "unmerged")
    merge_lora(model)
    assert set(n for n, _ in model.decoder.named_parameters()) == set(base_decoder)
    save_model(model, tok, tmp_path / "merged")
    loaded, _ = load_local_pretrained(tmp_path / "merged")
    with torch.no_grad():
        after = teacher_forced_loss(loaded, enc.input_ids, enc.attention_mask, codes)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    changed = [n for n, p in loaded.decoder.named_parameters() if not torch.equal(p, base_decoder[n])]
    assert changed and all(any(s in n for s in ("q_proj", "k_proj", "v_proj", "out_proj")) for n in changed)


def test_build_accepts_other_sample_rates(texts):
    clip = resample(synth_clip(220.0, seconds=2.0, seed=3), SR, 24_000).numpy()
    model, _ = build_tiny(TinySpec(), texts, [clip], seed=0, sample_rate=24_000)
    assert model.audio_encoder.quantizer.layers[0].codebook.embed.abs().sum() > 0
