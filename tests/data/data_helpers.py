"""Tiny codec, tokenizer and snapshot builders for the data tests (no downloads)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from lab.rights.policy import Policy
from lab.snapshot import Snapshot, load_snapshot, write_rows

CODEC_SR = 8000  # tiny codec: hop 40 → 200 frames/s; 64 codes (6 bits); 4.8 kbps → 4 codebooks
GRANT = {
    "grant_id": "G-1",
    "version": 1,
    "seq": 1,
    "licence": "CC-BY-4.0",
    "parties": [],
    "purposes": ["ai_training"],
    "territories": ["WW"],
    "valid_until": None,
    "on_termination": "retain",
    "attribution": "",
    "compensation": {"model": "none"},
}


def tiny_codec(seed: int = 0, bandwidths=(4.8,)):
    """A from-config EnCodec with seeded codebooks (HF initialises them to zeros, so every clip would
    encode to code 0): layer 0 holds encoder frames of random audio, later layers small random residuals."""
    from transformers import EncodecConfig, EncodecModel

    cfg = EncodecConfig(
        sampling_rate=CODEC_SR,
        audio_channels=1,
        num_filters=4,
        upsampling_ratios=[8, 5],
        target_bandwidths=list(bandwidths),
        codebook_size=64,
        codebook_dim=16,
        hidden_size=16,
        num_lstm_layers=1,
        num_residual_layers=1,
        chunk_length_s=None,
        normalize=False,
        use_causal_conv=False,
        use_conv_shortcut=False,
    )
    torch.manual_seed(seed)
    codec = EncodecModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        frames = codec.encoder(torch.randn(4, 1, CODEC_SR, generator=g) * 0.3)  # (4, D, 200)
        frames = frames.transpose(1, 2).reshape(-1, frames.shape[1])
        scale = frames.std()
        for i, layer in enumerate(codec.quantizer.layers):
            book = layer.codebook.embed
            if i == 0:
                book.copy_(frames[torch.randperm(len(frames), generator=g)[: book.shape[0]]])
            else:
                book.copy_(torch.randn(book.shape, generator=g) * scale * 0.5**i)
    return codec


def write_clip(path: Path, seconds: float, sr: int, freq: float, channels: int = 1, fmt: str = "WAV") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 3.1 * freq * t)
    data = np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)
    sf.write(str(path), data, sr, format=fmt, subtype="PCM_16")
    return hashlib.sha256(path.read_bytes()).hexdigest()


# (recording_id, relative path, seconds, sample rate, channels, freq)
CLIPS = [
    ("rec-a", "a.wav", 2.6, 16000, 1, 220.0),  # 2 full segments + a 0.6 s tail (kept, padded)
    ("rec-b", "sub/b.wav", 1.3, 8000, 2, 330.0),  # 1 full segment; 0.3 s tail dropped
    ("rec-c", "c.flac", 0.4, 22050, 1, 440.0),  # shorter than half a segment: no rows
]


def make_snapshot(root: Path, clips=CLIPS) -> Snapshot:
    """A real (verified) snapshot over clips written to `root`, stored beside it; plus an excluded,
    undecodable file next to the clips."""
    items = []
    for rid, rel, secs, sr, ch, f in clips:
        sha = write_clip(root / rel, secs, sr, f, ch, "FLAC" if rel.endswith(".flac") else "WAV")
        items.append(
            {
                "recording_id": rid,
                "isrc": None,
                "title": rid,
                "artists": ["A"],
                "description": f"tone {int(f)} hz {rid}",
                "audio_path": rel,
                "audio_sha256": sha,
                "duration_s": secs,
                "sample_rate": sr,
                "channels": ch,
                "grant_ids": ["G-1"],
            }
        )
    (root / "excluded.wav").write_bytes(b"not audio at all")
    policy = Policy(name="t", purposes=["ai_training"], territory="GB", accept_licence_classes=["permissive"])
    folder, _ = write_rows(
        root.parent / f"{root.name}-snapshots",
        items=items,
        grants=[GRANT],
        excluded=[{"recording_id": "rec-x", "reason": "revoked", "detail": "", "audio_sha256": None, "grant_ids": []}],
        catalog_info={"name": "t", "root": str(root)},
        policy=policy,
        ledger_head=(1, "0" * 64),
        cleared_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )
    return load_snapshot(folder)


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "tone hz rec a b c d e f g h 110 220 330 440 550 660 piano warm".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")


def fake_rows(n: int, k: int = 4, t: int = 6, seed: int = 0, n_recordings: int = 5) -> list[dict]:
    """Code-cache-like rows without a codec (loader/exposure tests)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rid = f"rec-{i % n_recordings}"
        rows.append(
            {
                "recording_id": rid,
                "segment": i // n_recordings,
                "start_s": float(i // n_recordings),
                "seconds": float(1.0 if i % 3 else 0.75),
                "frames": t if i % 3 else t - 2,
                "description": f"tone {110 * (1 + i % 6)} hz",
                "codes": rng.integers(0, 64, (k, t)).astype(np.int16),
                "audio_sha256": "0" * 64,
            }
        )
    return rows
