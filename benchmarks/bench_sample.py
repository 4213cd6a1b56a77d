"""Sampling: what the gate, the replication check and the content credential cost beside generation.

On the demo (catalogue, ledger, commercial snapshot, a few training steps of the tiny model through
`lab train`'s recipe), measured in one process, side by side:

* the gate (`lab.sample.gate.check_gate`): cold (no signature receipt, no validated card in memory)
  and warm (median of N), with the warm time split by check;
* generating 10 s of audio with the tiny model through `SampleRecipe`, and with a decoder the size of
  musicgen-small (1024-d × 24 layers, 16 heads, 4 × 2048 codes, random weights: only the cost matters);
* the warm gate as a percentage of each generation (targets: ≤ 50 ms and ≤ 1 %);
* the content credential per output (`bench_credentials.time_credentials`) and the replication
  check per output (`lab.sample.replication.check_replication`).

`--smoke`: 2 training steps, 2 s of audio, few repeats, no musicgen-small-sized decoder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGET_WARM_S = 0.050
TARGET_SHARE = 0.01
USES = ["ai_inference", "commercial_output"]


def median_time(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def setup(work: Path, steps: int):
    """The demo, a commercial snapshot, `steps` training steps of the tiny model; the last checkpoint."""
    from lab.checkpoint import latest_complete
    from lab.cli.demo import build_demo, compose
    from lab.recipes.clear import main as clear_main
    from lab.recipes.train import main as train_main

    home, experiments = work / ".lab", work / "experiments"
    paths = [f"paths.home={home}", f"paths.experiments={experiments}", f"ledger_url=sqlite:///{home}/ledger.sqlite"]
    build_demo(home, f"sqlite:///{home}/ledger.sqlite")
    snap = clear_main(compose("clear", [*paths, "policy=commercial"])).snapshot_path
    cfg = compose(
        "train",
        [
            *paths,
            "experiment=demo",
            "policy=commercial",
            f"data.snapshot={snap}",
            "logger=none",
            "trainer.progress=false",
            f"run_dir={work / 'run'}",
            f"trainer.max_steps={steps}",
            f"trainer.save_every={steps}",
            f"registry_url=sqlite:///{home}/registry.sqlite",
        ],
    )
    train_main(cfg)
    return paths, home, latest_complete(work / "run")


def gate_times(folder: Path, home: Path, n: int) -> dict[str, float]:
    """Cold and warm gate (median of n), and the warm time split by check."""
    from lab.registry import Registry
    from lab.rights.heads import open_ledger
    from lab.sample import gate as g

    ledger = open_ledger(f"sqlite:///{home}/ledger.sqlite", home=home)
    registry = Registry(f"sqlite:///{home}/registry.sqlite")
    key = home / "keys" / "signing_key.pub.pem"

    def call():
        d = g.check_gate(folder, uses=USES, territory="GB", ledger=ledger, registry=registry, public_key=key, home=home)
        if not d.allowed:
            raise RuntimeError(f"the gate refused the bench checkpoint: {g.refusal_lines(d)}")

    t = time.perf_counter()
    call()
    first = time.perf_counter() - t

    def cold():
        g._CARDS.clear()
        shutil.rmtree(home / "cache" / "signatures", ignore_errors=True)
        call()

    out = {"first": first, "cold": median_time(cold, max(3, n // 4)), "warm": median_time(call, n)}
    listing = g._stat_listing(folder)
    bundle, _ = g._card(folder, listing)
    policy = g.sampling_policy(USES, "GB", bundle.card.snapshot.policy.contracts)
    cid = bundle.card.identity.checkpoint_id
    out["warm: stat listing"] = median_time(lambda: g._stat_listing(folder), n)
    out["warm: signature (receipt)"] = median_time(lambda: g.signature_receipt(folder, key, home, listing), n)
    out["warm: card (in memory)"] = median_time(lambda: g._card(folder, listing), n)
    out["warm: registry"] = median_time(lambda: g.registry_status(registry, cid, None), n)
    out["warm: consent (incremental chain + clearance)"] = median_time(
        lambda: g._consent(bundle, ledger, policy, datetime.now(timezone.utc), []), n
    )
    registry.close()
    return out


def generation_times(paths: list[str], home: Path, folder: Path, seconds: float, repeats: int, work: Path):
    """SampleRecipe's own steps: load, generate `seconds` of audio, replication per output."""
    from lab.cli.demo import compose
    from lab.recipes.sample import SampleRecipe
    from lab.sample.replication import check_replication

    cfg = compose(
        "sample",
        [
            *paths,
            f"checkpoint={folder}",
            "prompt=warm piano",
            f"duration={seconds}",
            "progress=false",
            f"out={work / 'out'}",
            f"registry_url=sqlite:///{home}/registry.sqlite",
        ],
    )
    recipe = SampleRecipe(cfg)
    recipe.setup_gate()
    recipe.setup_model()
    recipe.generate()  # warm-up
    gen_s = median_time(recipe.generate, repeats)
    outputs = recipe.generate()
    t = time.perf_counter()
    results = recipe.replicate(outputs)  # builds (or loads) the index
    index_s = time.perf_counter() - t
    if "withheld: not checked" in results[0].detail:
        raise RuntimeError(f"replication did not run: {results[0].detail}")
    from lab.models.digest import model_digest
    from lab.sample.replication import ReplicationIndex

    index = ReplicationIndex.for_checkpoint(
        folder, home=home, codec_digest=model_digest(recipe.generator.model.audio_encoder), snapshot=recipe._snapshot()
    )
    o = outputs[0]
    rep_s = median_time(lambda: check_replication(o.codes, o.audio, o.sample_rate, index=index), max(3, repeats))
    return {"generate": gen_s, "index": index_s, "replicate": rep_s, "sample_rate": o.sample_rate, "gen": recipe}


def small_sized_generation(seconds: float) -> tuple[float, int]:
    """Generate `seconds` with a musicgen-small-sized decoder (random weights); (seconds taken, params)."""
    import numpy as np

    from lab.models.musicgen import TinySpec, build_tiny
    from lab.sample.generate import Generator, generate

    spec = TinySpec(
        hidden_size=1024,
        num_layers=24,
        num_heads=16,
        ffn_dim=4096,
        codebook_size=2048,
        kmeans_iters=1,
        sampling_rate=32_000,
        codec_upsampling_ratios=(8, 5, 4, 4),
    )
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(32_000 * 30)).astype(np.float32) for _ in range(2)]
    model, tok = build_tiny(spec, ["warm piano", "slow strings"], clips, seed=0)
    from transformers import EncodecFeatureExtractor, MusicgenProcessor

    processor = MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32_000), tokenizer=tok
    )
    gen = Generator(
        folder=Path("."),
        model=model,
        processor=processor,
        sample_rate=32_000,
        frame_rate=spec.frame_rate,
        num_codebooks=spec.num_codebooks,
        max_steps=spec.max_position_embeddings,
    )
    params = sum(p.numel() for p in model.decoder.parameters())
    t = time.perf_counter()
    generate(gen, ["warm piano"], duration_s=seconds, seed=0, progress=False)
    return time.perf_counter() - t, params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="small sizes: the script runs, the numbers mean little")
    ap.add_argument("--repeats", type=int, default=21, help="warm gate calls (median)")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per output")
    ap.add_argument("--no-small", action="store_true", help="skip the musicgen-small-sized decoder")
    args = ap.parse_args(argv)
    if args.smoke:
        args.repeats, args.seconds, args.no_small = 5, 2.0, True
    import torch

    torch.set_num_threads(1)
    from bench_credentials import time_credentials

    from lab.recipes.train import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="bench-sample-") as tmp:
        work = Path(tmp)
        paths, home, folder = setup(work, 2 if args.smoke else 4)
        g = gate_times(folder, home, args.repeats)
        r = generation_times(paths, home, folder, args.seconds, 1 if args.smoke else 3, work)
        cred = time_credentials(work / "cred", seconds=args.seconds, sample_rate=r["sample_rate"], repeats=3)
        small = None if args.no_small else small_sized_generation(args.seconds)

    print(f"sampling on the demo: {args.seconds:g} s per output, one CPU thread; warm = median of {args.repeats}\n")
    print("| step | ms | % of generating with the tiny model |")
    print("|---|---:|---:|")
    gen = r["generate"]
    rows = [
        ("gate, first call in the process", g["first"]),
        ("gate, cold (no receipt, card not in memory)", g["cold"]),
        ("gate, warm", g["warm"]),
        *[(f"  {k}", v) for k, v in g.items() if k.startswith("warm: ")],
        (f"generate {args.seconds:g} s, tiny model", gen),
        ("replication check per output", r["replicate"]),
        ("replication index, first build", r["index"]),
        ("content credential: sign per output", cred["sign"]),
        ("content credential: verify per output", cred["verify"]),
    ]
    for label, s in rows:
        print(f"| {label} | {s * 1e3:.1f} | {100 * s / gen:.2f} % |")
    share = g["warm"] / gen
    if small is not None:
        small_s, params = small
        print(
            f"| generate {args.seconds:g} s, musicgen-small-sized decoder ({params / 1e6:.0f} M params) "
            f"| {small_s * 1e3:.0f} | warm gate = {100 * g['warm'] / small_s:.3f} % of it |"
        )
        share = g["warm"] / small_s
    else:
        print("\nmusicgen-small-sized decoder: not measured (--smoke or --no-small)")
    ok = g["warm"] <= TARGET_WARM_S and share <= TARGET_SHARE
    print(
        f"\ntarget: warm gate ≤ {TARGET_WARM_S * 1e3:.0f} ms and ≤ {TARGET_SHARE:.0%} of generating "
        f"{args.seconds:g} s ({'musicgen-small-sized' if small else 'tiny model'}): {'met' if ok else 'MISSED'}"
    )
    return 0 if ok or args.smoke else 1


if __name__ == "__main__":
    raise SystemExit(main())
