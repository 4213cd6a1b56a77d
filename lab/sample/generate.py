"""Audio out of a checkpoint with stock transformers: `load_generator`, `generate`, `write_audio`.

The model is `MusicgenForConditionalGeneration.from_pretrained` and its `MusicgenProcessor`, as any
MusicGen user would load them; generation goes through the stock `generate`. Only the choice of
each token is ours, for reproducibility: stock sampling draws every row of a batch from one global
RNG, so an output would depend on what else was in its batch. `_SeededSampler` (a logits
processor run after classifier-free guidance, with greedy selection picking the token it chose)
draws prompt i's tokens from its own `torch.Generator` seeded with `seed + i` (i = the prompt's
index in the list), with the checkpoint's own top-k / top-p / temperature. The same prompt list
and seed give the same codes at any batch size, and prompt i alone with `seed + i` gives what it
gives in the batch. It also records the tokens it drew, which yields the audio codes before
decoding (the stock `generate` returns only the decoded audio).
"""

from __future__ import annotations

import copy
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lab.util import atomic

__all__ = ["GeneratedAudio", "GenerationError", "Generator", "generate", "load_generator", "write_audio"]

AudioFormat = Literal["wav", "flac"]
_SUBTYPE = {"wav": "PCM_16", "flac": "PCM_16"}


class GenerationError(ValueError):
    """A request the checkpoint cannot serve (too long, no prompts, bad batch size)."""


@dataclass(frozen=True)
class Generator:
    """A loaded checkpoint, ready to generate: the stock model and processor plus the numbers that size a request."""

    folder: Path
    model: Any  # MusicgenForConditionalGeneration, eval mode
    processor: Any  # MusicgenProcessor
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    max_steps: int  # decoder positions the model has (max_position_embeddings)
    processor_built: bool = False  # True when the folder had no processor files and one was built


@dataclass(frozen=True)
class GeneratedAudio:
    """One prompt's output: float32 mono audio and its codes [K, T] (delay pattern undone)."""

    prompt: str
    seed: int
    audio: np.ndarray
    sample_rate: int
    codes: np.ndarray

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


def load_generator(folder: Path) -> Generator:
    """Load a checkpoint folder (or any MusicGen `save_pretrained` folder) for generation, offline.

    Weights through `lab.models.musicgen.load_local_pretrained` (stock `from_pretrained`, strict about
    missing weights); the processor through `AutoProcessor`. A folder without processor files gets one
    built from its tokenizer and an `EncodecFeatureExtractor` at the codec's rate (`processor_built`).
    """
    from transformers import AutoProcessor, EncodecFeatureExtractor, MusicgenProcessor

    from lab.models.musicgen import load_local_pretrained

    folder = Path(folder)
    model, tokenizer = load_local_pretrained(folder)
    codec = model.config.audio_encoder
    built = not any((folder / f).is_file() for f in ("processor_config.json", "preprocessor_config.json"))
    if built:
        extractor = EncodecFeatureExtractor(
            feature_size=codec.audio_channels, sampling_rate=codec.sampling_rate, padding_value=0.0
        )
        processor = MusicgenProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    else:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    if model.config.decoder.audio_channels != 1:
        raise GenerationError(f"{folder}: stereo MusicGen is not supported (lab writes mono outputs)")
    return Generator(
        folder=folder,
        model=model,
        processor=processor,
        sample_rate=int(codec.sampling_rate),
        frame_rate=float(codec.sampling_rate) / float(np.prod(codec.upsampling_ratios)),
        num_codebooks=int(model.config.decoder.num_codebooks),
        max_steps=int(model.config.decoder.max_position_embeddings),
        processor_built=built,
    )


class _SeededSampler:
    """Logits processor: top-k / top-p / temperature, then one draw per prompt from that prompt's generator.

    Rows are prompt-major (prompt b's codebooks are rows b*K … b*K+K-1, as MusicGen lays them out);
    the scores returned are 0 at the drawn token and -inf elsewhere, so greedy selection takes it."""

    def __init__(self, seeds: Sequence[int], num_codebooks: int, warpers: list, steps: int, bar=None):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.k = num_codebooks
        self.warpers = warpers
        self.steps = steps
        self.drawn: list[torch.Tensor] = []  # (B*K,) per step
        self.bar = bar

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        tokens = torch.cat(
            [
                torch.multinomial(probs[b * self.k : (b + 1) * self.k], 1, generator=g).squeeze(1)
                for b, g in enumerate(self.generators)
            ]
        )
        if len(self.drawn) < self.steps and self.bar is not None:
            self.bar.update(1)
        self.drawn.append(tokens)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, tokens[:, None], 0.0)
        return out


def _sampler_last(processors: list):
    """A `LogitsProcessorList` whose `append` keeps the sampler last.

    MusicGen's `generate` appends its classifier-free guidance processor to the caller's list; the
    guided scores must reach the sampler, so guidance goes in before it."""
    from transformers import LogitsProcessorList

    class SamplerLast(LogitsProcessorList):
        def append(self, processor) -> None:
            self.insert(len(self) - 1 if self and isinstance(self[-1], _SeededSampler) else len(self), processor)

    return SamplerLast(processors)


def _warpers(config) -> list:
    """The checkpoint's sampling settings as stock warpers (temperature, top-k, top-p, in transformers' order)."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    # An unset value means transformers' default, as stock sampling would apply it (temperature 1, top-k 50, top-p 1).
    temperature = 1.0 if config.temperature is None else float(config.temperature)
    top_k = 50 if config.top_k is None else int(config.top_k)
    top_p = 1.0 if config.top_p is None else float(config.top_p)
    out: list = []
    if temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    if top_k:
        out.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return out


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else bool(progress)


@torch.inference_mode()
def generate(
    gen: Generator,
    prompts: list[str],
    *,
    duration_s: float,
    seed: int,
    batch_size: int = 4,
    guidance_scale: float | None = None,
    progress: bool | None = None,
) -> list[GeneratedAudio]:
    """Generate `duration_s` seconds for each prompt; prompt i is drawn with seed `seed + i`.

    `guidance_scale` (> 1: classifier-free guidance) defaults to the checkpoint's generation config.
    The progress bar (tqdm, stderr) counts decoder steps; `progress=None` shows it only on a terminal.
    """
    from tqdm.auto import tqdm

    if not prompts:
        raise GenerationError("no prompts to generate")
    if batch_size < 1:
        raise GenerationError(f"batch_size must be at least 1, got {batch_size}")
    frames = round(duration_s * gen.frame_rate)
    steps = frames + gen.num_codebooks - 1  # max_new_tokens: the delay pattern costs K - 1 extra steps
    if frames < 1:
        raise GenerationError(f"duration {duration_s} s is shorter than one frame ({1 / gen.frame_rate:.3f} s)")
    if steps + 1 > gen.max_steps:
        longest = (gen.max_steps - gen.num_codebooks) / gen.frame_rate
        raise GenerationError(f"duration {duration_s} s is longer than this checkpoint generates ({longest:.1f} s)")

    model = gen.model
    base = model.generation_config
    scale = base.guidance_scale if guidance_scale is None else guidance_scale
    config = copy.deepcopy(base)
    # Greedy over the sampler's one-hot scores; the sampler applies the checkpoint's warpers itself.
    # (transformers' own defaults, not None: `generate` would fill a None from the model's config and warn.)
    config.update(do_sample=False, top_k=50, top_p=1.0, temperature=1.0)
    config.guidance_scale = scale if scale is not None and scale > 1 else None
    config.update(max_new_tokens=steps, min_new_tokens=None, max_length=None, eos_token_id=None)
    config.update(return_dict_in_generate=False, num_return_sequences=1)
    warpers = _warpers(base)
    pad = int(config.pad_token_id)
    k = gen.num_codebooks

    batches = [list(range(i, min(i + batch_size, len(prompts)))) for i in range(0, len(prompts), batch_size)]
    out: list[GeneratedAudio] = []
    with tqdm(
        total=len(batches) * steps,
        desc="generating",
        unit="step",
        disable=not _show_progress(progress),
        file=sys.stderr,
    ) as bar:
        for idx in batches:
            texts = [prompts[i] for i in idx]
            inputs = gen.processor(text=texts, padding=True, truncation=True, return_tensors="pt")  # as training
            sampler = _SeededSampler([seed + i for i in idx], k, warpers, steps, bar)
            audio = model.generate(
                **inputs, generation_config=config, logits_processor=_sampler_last([sampler])
            )  # (B, 1, samples)
            codes = _codes(model, sampler.drawn[:steps], len(idx), k, pad, steps)
            for j, i in enumerate(idx):
                out.append(
                    GeneratedAudio(
                        prompt=prompts[i],
                        seed=seed + i,
                        audio=audio[j, 0].float().numpy().astype(np.float32, copy=True),
                        sample_rate=gen.sample_rate,
                        codes=codes[j],
                    )
                )
    return out


def _codes(model, drawn: list[torch.Tensor], batch: int, k: int, pad: int, steps: int) -> np.ndarray:
    """The drawn tokens as codes (B, K, T), through the same delay mask and pad filter `generate` applies."""
    start = torch.full((batch * k, 1), pad, dtype=torch.long)
    seq = torch.cat([start, torch.stack(drawn, dim=1)], dim=1)  # (B*K, 1 + steps)
    _, mask = model.decoder.build_delay_pattern_mask(start, pad_token_id=pad, max_length=steps + 1)
    seq = model.decoder.apply_delay_pattern_mask(seq, mask)
    return seq[seq != pad].reshape(batch, k, -1).numpy().astype(np.int64)


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, fmt: AudioFormat) -> str:
    """Write mono `audio` (float, clipped to [-1, 1]) as 16-bit WAV or FLAC, atomically; returns its sha256."""
    import soundfile as sf

    if fmt not in _SUBTYPE:
        raise GenerationError(f"unknown audio format {fmt!r} (wav or flac)")
    data = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    path = Path(path)
    with atomic.staged_path(path) as staged:
        sf.write(staged, data, int(sample_rate), subtype=_SUBTYPE[fmt], format=fmt.upper())
        digest = hashlib.sha256(staged.read_bytes()).hexdigest()
    return digest
