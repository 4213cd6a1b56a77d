"""Calibrate the replication gate: copies of training audio against unrelated and same-key/timbre clips.

    .venv/bin/python benchmarks/bench_replication.py            # 24 training clips x 30 s, 10 s outputs
    .venv/bin/python benchmarks/bench_replication.py --smoke    # 4 x 12 s, to keep the script working

Training audio is synthesized (lab.catalog.synth: timbre, key, mode, tempo, pattern chosen per clip);
the codec is lab's tiny MusicGen EnCodec (16 kHz, 4 codebooks x 256, 50 Hz) with codebooks fitted by
k-means on that audio, as `model=tiny` builds it. Each output is a 10 s clip and its tokens are the
codec's codes of that clip (what a model generating it would have emitted). Cases:

  copy             an excerpt of a training clip, frame-aligned
  noise N dB       the excerpt plus white noise at N dB SNR
  mp3              the excerpt through an MP3 round trip (libsndfile's LAME encoder, when it has one)
  gain -9 dB       the excerpt scaled down
  shift            the excerpt starting 0.37 s + 7 ms off the frame grid
  buried           a 5 s excerpt inside 10 s of noise and another melody (5 dB under the excerpt)
  unrelated        random melodies from specs and seeds not in training
  same key+timbre  a training clip's timbre, key, mode and tempo, a random melody (other notes)
  same notes, other timbre   a training clip's scale or arpeggio (same notes, same tempo) on another
                   instrument: a re-orchestration, reported beside the table, not used to calibrate

It prints the separation table (score min/median/max per case, withheld under the chosen thresholds),
an n-gram sweep, the chosen thresholds (which `configs/replication/default.yaml` carries), and the
per-output check time (fingerprinting + both lookups) on this index and against a large random one.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.catalog.synth import KEYS, PATTERNS, SCALES, TIMBRES, ClipSpec, render  # noqa: E402
from lab.models.codec import encode_batch, init_codebooks_from_audio  # noqa: E402
from lab.models.musicgen import TinySpec, tiny_config  # noqa: E402
from lab.sample import fingerprint as fp  # noqa: E402
from lab.sample.replication import (  # noqa: E402
    NgramIndex,
    ReplicationIndex,
    check_replication,
    load_settings,
)

SR = 16_000
OUT_S = 10.0
POSITIVE = ("copy", "noise 30 dB", "noise 20 dB", "noise 10 dB", "mp3", "gain -9 dB", "shift", "buried")
NEGATIVE = ("unrelated", "same key+timbre")
REFERENCE = ("same notes, other timbre",)  # a re-orchestration: neither side of the calibration


def training_specs(n: int, seed: int = 7) -> list[ClipSpec]:
    rng = np.random.default_rng(seed)
    timbres = [t for t in TIMBRES if t != "pluck"]  # Karplus-Strong renders one sample per Python step: slow
    return [
        ClipSpec(
            timbre=timbres[i % len(timbres)],
            key=list(KEYS)[int(rng.integers(len(KEYS)))],
            mode=list(SCALES)[int(rng.integers(2))],
            bpm=int(rng.choice([72, 84, 96, 110, 120, 132])),
            pattern=list(PATTERNS)[int(rng.integers(len(PATTERNS)))],
            with_drums=bool(rng.integers(2)),
            seed=10_000 + i,
        )
        for i in range(n)
    ]


def sibling(spec: ClipSpec, k: int) -> ClipSpec:
    """Same timbre, key and mode; a random melody (other notes), and another seed."""
    return ClipSpec(spec.timbre, spec.key, spec.mode, spec.bpm, "melody", spec.with_drums, 50_000 + k)


def reorchestrated(spec: ClipSpec) -> ClipSpec:
    """The same notes at the same tempo (scale and arpeggio patterns are fixed by key and mode), another timbre."""
    timbres = [t for t in TIMBRES if t not in ("pluck", spec.timbre)]
    return ClipSpec(timbres[spec.seed % len(timbres)], spec.key, spec.mode, spec.bpm, spec.pattern, False, 70_000)


def unrelated(n: int) -> list[ClipSpec]:
    """Random melodies: a scale or arpeggio in a training clip's key and tempo would be the same notes."""
    return [
        ClipSpec(s.timbre, s.key, s.mode, s.bpm, "melody", s.with_drums, 90_000 + i)
        for i, s in enumerate(training_specs(n, seed=99))
    ]


def with_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    p = float(np.mean(x**2)) or 1e-8
    return (x + rng.standard_normal(len(x)) * np.sqrt(p / 10 ** (snr_db / 10))).astype(np.float32)


def mp3_round_trip(x: np.ndarray) -> np.ndarray | None:
    if "MP3" not in sf.available_formats():
        return None
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="MP3", subtype="MPEG_LAYER_III")
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    y = y if y.ndim == 1 else y.mean(axis=1)
    n = len(x)
    return np.pad(y, (0, max(0, n - len(y))))[:n].astype(np.float32)


def make_cases(
    train: dict[str, np.ndarray], specs: dict[str, ClipSpec], rng
) -> list[tuple[str, str | None, np.ndarray]]:
    """(case, source recording or None, 10 s mono audio)."""
    n = int(OUT_S * SR)
    hop = SR // 50
    out: list[tuple[str, str | None, np.ndarray]] = []
    for rid, x in train.items():
        start = int(rng.integers(0, (len(x) - n - SR) // hop)) * hop
        ex = x[start : start + n]
        out.append(("copy", rid, ex.copy()))
        for snr in (30, 20, 10):
            out.append((f"noise {snr} dB", rid, with_noise(ex, snr, rng)))
        mp3 = mp3_round_trip(ex)
        if mp3 is not None:
            out.append(("mp3", rid, mp3))
        out.append(("gain -9 dB", rid, (ex * 10 ** (-9 / 20)).astype(np.float32)))
        s2 = start + int(0.377 * SR)
        out.append(("shift", rid, x[s2 : s2 + n].copy()))
        bed = render(unrelated(1)[0], OUT_S, SR) * 10 ** (-5 / 20)
        bed = with_noise(bed, 10, rng)
        half = n // 2
        bed[n // 4 : n // 4 + half] += x[start : start + half]
        out.append(("buried", rid, (bed / max(1.0, float(np.abs(bed).max()))).astype(np.float32)))
    for spec in unrelated(len(train)):
        out.append(("unrelated", None, render(spec, OUT_S, SR)))
    for i, (rid, spec) in enumerate(specs.items()):
        out.append(("same key+timbre", rid, render(sibling(spec, i), OUT_S, SR)))
        if spec.pattern != "melody":
            out.append(("same notes, other timbre", rid, render(reorchestrated(spec), OUT_S, SR)))
    return out


def q(v: list[float]) -> str:
    return f"{min(v):.2f} / {float(np.median(v)):.2f} / {max(v):.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="4 clips x 12 s: checks the script, not the figures")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--scale-hours", type=float, default=100.0, help="random fingerprint index for the timing line")
    args = ap.parse_args(argv)
    if args.smoke:
        args.clips, args.seconds, args.scale_hours = 4, 12.0, 1.0
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    settings = load_settings()

    t0 = time.perf_counter()
    specs = {f"train-{i:03d}": s for i, s in enumerate(training_specs(args.clips))}
    train = {rid: render(s, args.seconds, SR) for rid, s in specs.items()}
    spec = TinySpec()
    torch.manual_seed(0)
    from transformers import EncodecModel

    codec = EncodecModel(tiny_config(spec, text_vocab_size=100).audio_encoder).eval()
    init_codebooks_from_audio(codec, list(train.values()), iters=5, seed=0)
    codes = dict(zip(train, encode_batch(codec, list(train.values()), SR)))
    prints = {rid: fp.fingerprint(x, SR) for rid, x in train.items()}
    index = ReplicationIndex.build(codes, prints, codebook_size=spec.codebook_size, settings=settings)
    setup_s = time.perf_counter() - t0

    cases = make_cases(train, specs, rng)
    tokens = encode_batch(codec, [a for _, _, a in cases], SR)
    results, times = [], []
    for (case, src, audio), tok in zip(cases, tokens):
        t = time.perf_counter()
        r = check_replication(tok, audio, SR, index=index)
        times.append(time.perf_counter() - t)
        results.append((case, src, tok, audio, r))
    # raw BER of the negatives, to set the normaliser (unrelated median -> score 0)
    raw = {}
    for case, _src, _tok, audio, _r in results:
        if case in NEGATIVE:
            ber = min(b for b, _, _ in index.prints.matches(fp.fingerprint(audio, SR)))
            raw.setdefault(case, []).append(ber)

    cases_seen = [c for c in (*POSITIVE, *NEGATIVE, *REFERENCE) if any(r[0] == c for r in results)]
    print(f"# replication gate calibration: {args.clips} training clips x {args.seconds:g} s, {OUT_S:g} s outputs")
    print(f"# settings: {settings.model_dump()}")
    print(f"# index built in {setup_s:.1f} s (synthesis, codec fit, encoding, fingerprints)")
    if "MP3" not in sf.available_formats():
        print("# mp3: libsndfile here has no MP3 encoder; that case is skipped")
    print()
    print("| case | n | token score min/median/max | audio score min/median/max | withheld | nearest right |")
    print("|---|---:|---|---|---:|---:|")
    for case in cases_seen:
        rows = [x for x in results if x[0] == case]
        ts = [x[4].token_score for x in rows]
        au = [x[4].audio_score for x in rows]
        held = sum(x[4].withheld for x in rows)
        right = sum(1 for x in rows if x[4].withheld and x[4].nearest_recording == x[1])
        right_s = f"{right}/{held}" if case not in NEGATIVE else "-"
        print(f"| {case} | {len(rows)} | {q(ts)} | {q(au)} | {held}/{len(rows)} | {right_s} |")

    print()
    print("n-gram sweep (token score; codebooks=1): positives should sit above the negatives")
    print("| n | copy min | shift median | noise 30 dB median | unrelated max | same key+timbre max |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (4, 6, 8, 10, 12, 16):
        ng = NgramIndex.build(codes, ngram=n, codebooks=1, codebook_size=spec.codebook_size)
        by: dict[str, list[float]] = {}
        for case, _, tok, _, _ in results:
            by.setdefault(case, []).append(ng.containment(tok)[0])
        print(
            f"| {n} | {min(by['copy']):.2f} | {np.median(by['shift']):.2f} | {np.median(by['noise 30 dB']):.2f} | "
            f"{max(by['unrelated']):.2f} | {max(by['same key+timbre']):.2f} |"
        )

    print()
    print("fingerprint window sweep (audio score, each window normalised by its own unrelated median best BER)")
    print(
        "| window (items) | unrelated median BER | copy min | noise 10 dB min | buried median | buried min | "
        "unrelated max | same key+timbre max |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    queries = [(case, fp.fingerprint(audio, SR)) for case, _, _, audio, _ in results]
    for w in (8, 12, 16, 24, 32):
        idx = type(index.prints).build(prints, window=w, min_items=settings.min_items)
        ber: dict[str, list[float]] = {}
        for case, qf in queries:
            ber.setdefault(case, []).append(min(b for b, _, _ in idx.matches(qf)))
        norm = float(np.median(ber["unrelated"]))
        sc = {c: [float(np.clip(1 - b / norm, 0, 1)) for b in v] for c, v in ber.items()}
        print(
            f"| {w} | {norm:.3f} | {min(sc['copy']):.2f} | {min(sc['noise 10 dB']):.2f} | "
            f"{np.median(sc['buried']):.2f} | {min(sc['buried']):.2f} | {max(sc['unrelated']):.2f} | "
            f"{max(sc['same key+timbre']):.2f} |"
        )

    neg_t = max(x[4].token_score for x in results if x[0] in NEGATIVE)
    neg_a = max(x[4].audio_score for x in results if x[0] in NEGATIVE)
    print()
    print(
        "chosen thresholds (configs/replication/default.yaml): "
        f"tokens > {settings.token_threshold:.2f} (negatives reach {neg_t:.2f}), "
        f"audio > {settings.audio_threshold:.2f} (negatives reach {neg_a:.2f}); "
        f"unrelated BER at window {index.prints.window}: {settings.unrelated_at(index.prints.window):.3f} "
        "(measured: unrelated median best BER "
        f"{np.median(raw['unrelated']):.3f}, same key+timbre median {np.median(raw['same key+timbre']):.3f})"
    )
    ms = np.array(times) * 1000
    print(
        f"per-output check ({OUT_S:g} s output, {len(index.prints.items)} fingerprint items, "
        f"{len(index.ngrams.hashes)} n-grams): median {np.median(ms):.0f} ms, max {ms.max():.0f} ms"
    )
    # matching cost grows with the indexed audio: time one output against a random index of that size
    items = int(args.scale_hours * 3600 / fp.ITEM_SECONDS)
    big = rng.integers(0, 2**32, items, dtype=np.uint64).astype(np.uint32)
    per_rec = int(180 / fp.ITEM_SECONDS)  # 3-minute recordings
    owners = (np.arange(items) // per_rec).astype(np.int32)
    query = fp.fingerprint(cases[0][2], SR)
    t = time.perf_counter()
    fp.best_ber(query, big, owners, int(owners[-1]) + 1, window=settings.window)
    print(
        f"audio matching against {args.scale_hours:g} h of indexed audio ({items:,} items): "
        f"{(time.perf_counter() - t) * 1000:.0f} ms per output"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
