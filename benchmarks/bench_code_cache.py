"""Cached EnCodec codes vs encoding on the fly: seconds per epoch of MusicGen training batches.

    .venv/bin/python benchmarks/bench_code_cache.py            # 32 clips x 10 s, batch 8, 1 torch thread

Both sides produce the same batches (checked): the cached side reads codes from the `datasets` cache
built by `lab.data.codes.build_code_cache`; the on-the-fly side reads each clip, checks its sha256,
decodes it with soundfile, downmixes, resamples 44.1 kHz -> 32 kHz and runs the EnCodec encoder for
every batch. The codec has the real MusicGen 32 kHz geometry (facebook/encodec_32khz: 4 codebooks of
2048 at 50 Hz, ~57 M parameters in encoder + decoder) with random weights, which cost the same to run
as trained ones. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.data.codes import build_code_cache, load_item_audio  # noqa: E402
from lab.data.loader import MusicgenCollator, ResumableSampler, make_loader  # noqa: E402
from lab.rights.policy import Policy  # noqa: E402
from lab.snapshot import Snapshot, load_snapshot, write_rows  # noqa: E402

PAD = 2048  # MusicGen's pad / start token for 2048-code codebooks


def musicgen_32khz_codec(seed: int = 0):
    """EnCodec with facebook/encodec_32khz's config (as in transformers' conversion script), random weights;
    codebooks seeded with encoder frames so codes are not all zero (HF initialises codebooks to zeros)."""
    from transformers import EncodecConfig, EncodecModel

    cfg = EncodecConfig(
        sampling_rate=32_000,
        audio_channels=1,
        num_filters=64,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        codebook_size=2048,
        use_causal_conv=False,
        normalize=False,
        use_conv_shortcut=False,
        chunk_length_s=None,
    )
    torch.manual_seed(seed)
    codec = EncodecModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        frames = codec.encoder(torch.randn(1, 1, 32_000 * 4, generator=g) * 0.1)[0].T  # (200, 128)
        for i, layer in enumerate(codec.quantizer.layers):
            book = layer.codebook.embed
            idx = torch.randint(0, len(frames), (book.shape[0],), generator=g)
            book.copy_(frames[idx] * 0.5**i + 0.01 * torch.randn(book.shape, generator=g))
    return codec


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "warm bright piano guitar drums bass synth pad slow fast major minor in at bpm hz c d e f g a b".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")


def make_catalogue(root: Path, clips: int, seconds: float, sr: int = 44_100) -> Snapshot:
    rng = np.random.default_rng(0)
    items = []
    root.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(clips):
        f = 110.0 * 2 ** (i / 12)
        x = 0.3 * np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)) + 0.02 * rng.standard_normal(
            len(t)
        )
        stereo = np.stack([x, 0.8 * x], axis=1).astype(np.float32)
        path = root / f"clip-{i:03d}.wav"
        sf.write(str(path), stereo, sr, subtype="PCM_16")
        items.append(
            {
                "recording_id": f"bench-{i:03d}",
                "isrc": None,
                "title": f"clip {i}",
                "artists": ["bench"],
                "description": f"warm piano in {'cdefgab'[i % 7]} major {90 + i} bpm",
                "audio_path": path.name,
                "audio_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "duration_s": seconds,
                "sample_rate": sr,
                "channels": 2,
                "grant_ids": ["G-1"],
            }
        )
    grant = {
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
    policy = Policy(name="bench", purposes=["ai_training"], territory="GB", accept_licence_classes=["permissive"])
    folder, _ = write_rows(
        root / "snapshots",
        items=items,
        grants=[grant],
        catalog_info={"name": "bench", "root": str(root)},
        policy=policy,
        ledger_head=(1, "0" * 64),
        cleared_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )
    return load_snapshot(folder)


def on_the_fly_epoch(
    snapshot: Snapshot,
    codec,
    collator,
    order: list[int],
    rows_meta: list[dict],
    batch_size: int,
    segment_seconds: float,
):
    """One epoch in the sampler's order, reading and encoding audio for every batch."""
    by_id = {r["recording_id"]: r for r in snapshot.items.to_pylist()}
    sr = codec.config.sampling_rate
    seg = int(round(segment_seconds * sr))
    root = Path(snapshot.catalog["root"])
    for i in range(0, len(order), batch_size):
        metas = [rows_meta[j] for j in order[i : i + batch_size]]
        audio = {}
        chunks = []
        for m in metas:
            rid = m["recording_id"]
            if rid not in audio:
                audio[rid] = load_item_audio(by_id[rid], root, sr)
            start = int(round(m["start_s"] * sr))
            c = audio[rid][start : start + seg]
            chunks.append(np.pad(c, (0, seg - len(c))))
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(np.stack(chunks))[:, None], bandwidth=2.2).audio_codes[0]
        rows = [dict(m, codes=codes[j].numpy()) for j, m in enumerate(metas)]
        yield collator(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--segment-seconds", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cached-epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        snap = make_catalogue(tmp / "catalogue", args.clips, args.seconds)
        codec = musicgen_32khz_codec()
        collator = MusicgenCollator(tokenizer(), num_codebooks=4, pad_token_id=PAD)

        t0 = time.perf_counter()
        ds = build_code_cache(
            snap, codec, tmp / "cache", segment_seconds=args.segment_seconds, batch_size=args.batch_size
        )
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = build_code_cache(
            snap, codec, tmp / "cache", segment_seconds=args.segment_seconds, batch_size=args.batch_size
        )
        reopen_s = time.perf_counter() - t0

        meta = ds.remove_columns(["codes"]).to_list()
        sampler = ResumableSampler(len(ds), seed=0)
        order = sampler.shard(0)

        # cached: full epochs through the real loader (sampler + collator), averaged
        loader = make_loader(ds, collator, args.batch_size, seed=0)
        cached_batches = None
        t0 = time.perf_counter()
        for e in range(args.cached_epochs):
            loader.sampler.set_epoch(e)
            batches = list(loader)
            if e == 0:
                cached_batches = batches
        cached_s = (time.perf_counter() - t0) / args.cached_epochs

        t0 = time.perf_counter()
        fly_batches = list(on_the_fly_epoch(snap, codec, collator, order, meta, args.batch_size, args.segment_seconds))
        fly_s = time.perf_counter() - t0

        same = len(cached_batches) == len(fly_batches) and all(
            a["recording_ids"] == b["recording_ids"] and torch.equal(a["labels"], b["labels"])
            for a, b in zip(cached_batches, fly_batches)
        )

    n_params = sum(p.numel() for p in codec.parameters())
    print(
        f"{args.clips} clips x {args.seconds:g} s (44.1 kHz stereo WAV) -> {len(ds)} segments of "
        f"{args.segment_seconds:g} s; batch {args.batch_size}; EnCodec 32 kHz ({n_params / 1e6:.1f} M params, "
        f"random weights); torch threads = {torch.get_num_threads()}"
    )
    print(f"identical batches from both paths: {same}")
    print(f"one-time cache build: {build_s:.2f} s; reopening the cache: {reopen_s:.3f} s\n")
    print("| method | seconds/epoch | ratio |")
    print("|---|---:|---:|")
    print(f"| encode on the fly (read + sha256 + decode + resample + EnCodec) | {fly_s:.3f} | 1.0x |")
    print(f"| cached codes (`datasets`, memory-mapped) | {cached_s:.4f} | {fly_s / cached_s:.0f}x faster |")
    if not same:
        raise SystemExit("the two paths produced different batches")


if __name__ == "__main__":
    main()
