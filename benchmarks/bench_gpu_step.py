"""Fine-tune step of a musicgen-small-sized decoder in bf16: tokens/s, peak memory, MFU.

Needs a CUDA GPU for the real figures (`python benchmarks/bench_gpu_step.py`); `--smoke`
runs a tiny config on CPU so the script itself stays tested. MFU counts the decoder's
training FLOPs (6·N per token for the weights + 12·L·d·T for attention scores) against
the GPU's dense bf16 peak (`--peak-tflops`, default H200/H100 SXM: 989).
"""

from __future__ import annotations

import argparse
import time

import torch
import transformers
from transformers import MusicgenDecoderConfig, MusicgenForCausalLM


def decoder_config(smoke: bool) -> MusicgenDecoderConfig:
    vocab = 256 if smoke else 2048
    special = dict(pad_token_id=vocab, bos_token_id=vocab, decoder_start_token_id=vocab)  # MusicGen's layout
    if smoke:
        return MusicgenDecoderConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     ffn_dim=256, num_codebooks=4, max_position_embeddings=512, **special)
    # musicgen-small's decoder: 24 layers, d=1024, 16 heads, ffn 4096, 4 codebooks of 2048.
    return MusicgenDecoderConfig(vocab_size=vocab, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                 ffn_dim=4096, num_codebooks=4, max_position_embeddings=2048, **special)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=1500, help="decoder steps per example (30 s at 50 Hz)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    transformers.utils.logging.set_verbosity_error()  # pad id = vocab size is MusicGen's design
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print("no CUDA device: run with --smoke for a CPU check, or on a GPU for the figures")
        return 0
    if args.smoke:
        args.batch, args.frames, args.steps = 2, 64, 3
    dev = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    cfg = decoder_config(args.smoke)
    model = MusicgenForCausalLM(cfg).to(dev)
    model.train()
    if args.compile:
        model = torch.compile(model)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    k, t = cfg.num_codebooks, args.frames
    ids = torch.randint(0, cfg.vocab_size, (args.batch * k, t), device=dev)
    labels = torch.randint(0, cfg.vocab_size, (args.batch, t, k), device=dev)
    # Text conditioning as MusicGen feeds it: cross-attention over encoder states (T5-base width 768 → d).
    enc = torch.randn(args.batch, 64, cfg.hidden_size, device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=ids, encoder_hidden_states=enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(2 if args.smoke else 5):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    tokens = args.batch * t  # one token = one frame of K codebooks
    flops = 6 * n_params * tokens + 12 * cfg.num_hidden_layers * cfg.hidden_size * t * tokens
    mfu = flops / dt / (args.peak_tflops * 1e12) if cuda else float("nan")
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    hw = torch.cuda.get_device_name() if cuda else "cpu (smoke)"
    print("| model | method | hardware | peak memory | tokens/s | MFU |")
    print("|---|---|---|---:|---:|---:|")
    print(f"| musicgen decoder {n_params / 1e6:.0f}M | full fine-tune, bf16 autocast, AdamW | {hw} | "
          f"{peak:.1f} GiB | {tokens / dt:,.0f} | {mfu:.1%} |")
    print(f"(batch {args.batch} × {t} frames × {k} codebooks, {dt * 1e3:.1f} ms/step, final loss {loss.item():.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
