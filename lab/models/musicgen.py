"""MusicGen construction and loading, on the stock `transformers` classes.

Two ways to get a model, both returning ``(MusicgenForConditionalGeneration, tokenizer)``:

* :func:`build_tiny` — a CPU-trainable MusicGen built from config (:class:`TinySpec`): T5 text
  encoder + EnCodec codec + MusicGen decoder, a tokenizer trained on the given texts, codec
  codebooks initialised by k-means on the given audio. Nothing is downloaded.
* :func:`load_local_pretrained` — a real MusicGen ``save_pretrained`` folder, offline.

:func:`save_model` writes a folder that stock ``MusicgenForConditionalGeneration.from_pretrained``,
``AutoTokenizer.from_pretrained`` and ``AutoProcessor.from_pretrained`` load (the checkpoint contract
in DESIGN.md).

Training helpers: :func:`freeze_encoders` and optional :func:`apply_lora` / :func:`merge_lora` (peft,
decoder only). Encoding lives in ``lab.models.codec``, the delay pattern in ``lab.models.delay``, the
content digest in ``lab.models.digest``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lab.models.codec import init_codebooks_from_audio
from lab.models.tokenizer import EOS_ID, PAD_ID, train_text_tokenizer
from lab.util.audio import resample, to_mono

__all__ = [
    "TinySpec",
    "tiny_config",
    "build_tiny",
    "default_generation_config",
    "load_local_pretrained",
    "save_model",
    "freeze_encoders",
    "apply_lora",
    "merge_lora",
    "InvalidModelFolder",
    "MissingModelFiles",
]


# --------------------------------------------------------------------------------------------------
# Tiny model spec and construction
# --------------------------------------------------------------------------------------------------


class TinySpec(BaseModel):
    """Sizes of a from-config MusicGen small enough to train on one CPU thread.

    Defaults: T5 64-d × 2 layers; EnCodec mono 16 kHz, hop 320 (50 frames/s), 4 codebooks × 256
    codes (1.6 kbps); decoder 128-d × 2 layers, 4 heads. Parameters: decoder 788,736 + text→decoder
    projection 8,320 (trainable once encoders are frozen), codec 668,986, text encoder
    65,984 + 64 × vocab. One AdamW step on 4 clips × 4 s takes ~0.07 s on one CPU thread.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # text encoder (T5EncoderModel)
    text_vocab_size: int = Field(512, ge=80, description="upper bound for the tokenizer trainer")
    text_d_model: int = 64
    text_d_kv: int = 16
    text_d_ff: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_max_length: int = 64
    # audio codec (EncodecModel)
    sampling_rate: int = 16_000
    codec_num_filters: int = 8
    codec_hidden_size: int = Field(32, description="= codebook_dim")
    codec_upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
    codec_lstm_layers: int = 1
    num_codebooks: int = 4
    codebook_size: int = 256
    kmeans_iters: int = 10
    kmeans_window_seconds: float = Field(10.0, gt=0, description="audio windows the codebooks are fitted on")
    kmeans_windows_per_recording: int = Field(12, ge=1, description="cap per recording (reservoir-sampled)")
    kmeans_max_frames: int = Field(50_000, ge=1, description="encoder frames clustered, at most (reservoir)")
    # MusicGen decoder
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ffn_dim: int = 512
    max_position_embeddings: int = Field(1024, description="decoder steps; 1024 ≈ 20 s at 50 frames/s")
    dropout: float = 0.0
    # generation defaults written to generation_config.json
    max_new_tokens: int = 256
    guidance_scale: float = Field(
        1.0, description="> 1 enables classifier-free guidance; only useful if training drops the text condition"
    )
    top_k: int = 250

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.codec_upsampling_ratios))

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.hop_length

    @property
    def bandwidth_kbps(self) -> float:
        """The single EnCodec target bandwidth giving exactly ``num_codebooks`` quantizers."""
        bits = math.log2(self.codebook_size)
        return round(self.num_codebooks * bits * self.frame_rate / 1000.0, 6)

    @model_validator(mode="after")
    def _check(self) -> TinySpec:
        if self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1):
            raise ValueError(f"codebook_size must be a power of two, got {self.codebook_size}")
        if self.sampling_rate % self.hop_length:
            raise ValueError(
                f"sampling_rate {self.sampling_rate} must be a multiple of the hop length {self.hop_length} "
                "(product of codec_upsampling_ratios) so that frames/s is exact"
            )
        if self.hidden_size % self.num_heads or self.text_d_model % self.text_heads:
            raise ValueError("hidden sizes must be divisible by the number of heads")
        if self.num_codebooks < 1:
            raise ValueError("num_codebooks must be >= 1")
        return self


def tiny_config(spec: TinySpec, text_vocab_size: int):
    """The consistent ``MusicgenConfig`` for ``spec`` with a text vocabulary of ``text_vocab_size``.

    Invariants checked here: codec quantizers at its (single) bandwidth == decoder num_codebooks;
    decoder vocab == codebook_size; pad = bos = decoder_start = codebook_size (as in MusicGen);
    audio_channels = 1 everywhere.
    """
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    codebook_id = spec.codebook_size  # MusicGen's special token: one past the last code
    text = T5Config(
        vocab_size=text_vocab_size,
        d_model=spec.text_d_model,
        d_kv=spec.text_d_kv,
        d_ff=spec.text_d_ff,
        num_layers=spec.text_layers,
        num_decoder_layers=spec.text_layers,
        num_heads=spec.text_heads,
        dropout_rate=spec.dropout,
        feed_forward_proj="relu",
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )
    codec = EncodecConfig(
        sampling_rate=spec.sampling_rate,
        audio_channels=1,
        target_bandwidths=[spec.bandwidth_kbps],
        codebook_size=spec.codebook_size,
        num_filters=spec.codec_num_filters,
        hidden_size=spec.codec_hidden_size,
        upsampling_ratios=list(spec.codec_upsampling_ratios),
        num_lstm_layers=spec.codec_lstm_layers,
        normalize=False,
        chunk_length_s=None,
        overlap=None,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=spec.codebook_size,
        max_position_embeddings=spec.max_position_embeddings,
        num_hidden_layers=spec.num_layers,
        ffn_dim=spec.ffn_dim,
        num_attention_heads=spec.num_heads,
        hidden_size=spec.hidden_size,
        dropout=spec.dropout,
        num_codebooks=spec.num_codebooks,
        audio_channels=1,
        pad_token_id=codebook_id,
        bos_token_id=codebook_id,
        decoder_start_token_id=codebook_id,
    )
    bits_per_q = math.log2(codec.codebook_size) * codec.frame_rate
    n_q_bw = int(max(1, math.floor(spec.bandwidth_kbps * 1000 / bits_per_q)))
    if not (codec.num_quantizers == n_q_bw == decoder.num_codebooks):
        raise ValueError(
            f"inconsistent codebooks: codec has {codec.num_quantizers} quantizers, {n_q_bw} at "
            f"{spec.bandwidth_kbps} kbps, decoder expects {decoder.num_codebooks}"
        )
    return MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder)


def default_generation_config(
    model, *, max_new_tokens: int = 256, guidance_scale: float = 1.0, top_k: int = 250, **overrides
):
    """MusicGen-style sampling defaults (do_sample, top-k 250) with the model's special token ids.

    ``max_new_tokens`` counts decoder steps: ``max_new_tokens + 1 - num_codebooks`` frames of audio
    come out (256 → 253 frames ≈ 5 s at 50 frames/s).
    """
    from transformers import GenerationConfig

    tok = model.config.decoder.pad_token_id
    kw: dict[str, Any] = dict(
        do_sample=True,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        guidance_scale=guidance_scale,
        pad_token_id=tok,
        bos_token_id=model.config.decoder.bos_token_id,
        decoder_start_token_id=tok,
        use_cache=True,
    )
    kw.update(overrides)
    return GenerationConfig(**kw)


def build_tiny(
    spec: TinySpec | None,
    texts: Sequence[str],
    waveforms: Iterable[np.ndarray | torch.Tensor],
    seed: int,
    sample_rate: int | None = None,
):
    """Build a tiny MusicGen from config: ``(model, tokenizer)``; deterministic for the same inputs/seed.

    ``texts`` train the tokenizer; ``waveforms`` (mono clips at ``sample_rate``, default the codec's rate;
    any iterable, consumed once) initialise the codec codebooks from at most ``spec.kmeans_max_frames``
    encoder frames. Callers with long recordings pass a bounded sample of windows
    (``lab.data.codes.sample_item_windows``), so memory stays flat. Weights are drawn under
    ``torch.manual_seed(seed)`` inside a forked RNG, so the caller's global RNG state is untouched. The
    model is returned in eval mode.
    """
    from transformers import MusicgenForConditionalGeneration

    spec = spec or TinySpec()
    tokenizer = train_text_tokenizer(
        list(texts), vocab_size=spec.text_vocab_size, model_max_length=spec.text_max_length
    )
    config = tiny_config(spec, text_vocab_size=len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = MusicgenForConditionalGeneration(config)
    rate = sample_rate or spec.sampling_rate
    clips = (resample(to_mono(w), rate, spec.sampling_rate) for w in waveforms)
    init_codebooks_from_audio(
        model.audio_encoder, clips, iters=spec.kmeans_iters, seed=int(seed), max_frames=spec.kmeans_max_frames
    )
    model.generation_config = default_generation_config(
        model, max_new_tokens=spec.max_new_tokens, guidance_scale=spec.guidance_scale, top_k=spec.top_k
    )
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------------------------------
# Loading and saving
# --------------------------------------------------------------------------------------------------


class InvalidModelFolder(ValueError):
    """The folder is not a loadable MusicGen checkpoint."""


class MissingModelFiles(InvalidModelFolder, FileNotFoundError):
    """The folder lacks files a MusicGen checkpoint needs."""


_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


def _check_folder(path: Path) -> dict:
    if not path.is_dir():
        raise MissingModelFiles(f"{path}: not a directory")
    missing: list[str] = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        missing.append(" or ".join(_WEIGHT_FILES[:1] + _WEIGHT_FILES[1:2]) + " (weights)")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer.json or spiece.model (tokenizer)")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError) as e:
                raise InvalidModelFolder(f"{index}: unreadable weight index ({e})") from e
            missing += [f"{s} (shard listed in {index_name})" for s in shards if not (path / s).is_file()]
    if missing:
        raise MissingModelFiles(f"{path} is not a complete MusicGen checkpoint; missing: {', '.join(missing)}")
    try:
        config = json.loads((path / "config.json").read_text())
    except ValueError as e:
        raise InvalidModelFolder(f"{path / 'config.json'}: not valid JSON ({e})") from e
    model_type = config.get("model_type")
    if model_type != "musicgen":
        hint = " (MusicGen-Melody is not supported)" if model_type == "musicgen_melody" else ""
        raise InvalidModelFolder(f"{path}: model_type is {model_type!r}, expected 'musicgen'{hint}")
    for sub in ("text_encoder", "audio_encoder", "decoder"):
        if not isinstance(config.get(sub), dict):
            raise InvalidModelFolder(f"{path / 'config.json'}: MusicGen config lacks its {sub!r} section")
    return config


def load_local_pretrained(path: str | Path, *, dtype: torch.dtype | None = torch.float32, strict: bool = True):
    """Load a MusicGen ``save_pretrained`` folder offline: ``(model, tokenizer)``, model in eval mode.

    Raises :class:`MissingModelFiles` (also a ``FileNotFoundError``) when config, weights or tokenizer
    files are absent, and :class:`InvalidModelFolder` when the folder is not a MusicGen. With
    ``strict`` (default) any checkpoint key the model expected but did not find is an error rather
    than a silently random-initialised weight.
    """
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    path = Path(path)
    _check_folder(path)
    model, info = MusicgenForConditionalGeneration.from_pretrained(
        path, local_files_only=True, dtype=dtype, output_loading_info=True
    )
    missing = list(info.get("missing_keys") or [])
    if strict and missing:
        shown = ", ".join(sorted(missing)[:10]) + (" …" if len(missing) > 10 else "")
        raise InvalidModelFolder(f"{path}: {len(missing)} weights missing from the checkpoint: {shown}")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model.eval()
    return model, tokenizer


def save_model(model, tokenizer, folder: str | Path, *, generation_config=None) -> Path:
    """Write a checkpoint folder loadable with stock transformers, offline.

    Files: config.json, generation_config.json, model.safetensors, tokenizer.json +
    tokenizer_config.json, processor_config.json (a ``MusicgenProcessor`` = the tokenizer + an
    ``EncodecFeatureExtractor`` at the codec's sampling rate; ``AutoProcessor`` loads it).
    ``generation_config`` (set on the model) defaults to the model's own, or to
    :func:`default_generation_config` if it has no pad token. Refuses a model with unmerged LoRA
    adapters. Not atomic: write into a staging folder and rename (the checkpoint layer does).
    """
    from transformers import EncodecFeatureExtractor, MusicgenProcessor

    _assert_no_lora(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if generation_config is not None:
        model.generation_config = generation_config
    elif model.generation_config is None or model.generation_config.pad_token_id is None:
        model.generation_config = default_generation_config(model)
    model.save_pretrained(folder)  # safetensors is the only format in transformers 5
    codec_cfg = model.config.audio_encoder
    feature_extractor = EncodecFeatureExtractor(
        feature_size=codec_cfg.audio_channels,
        sampling_rate=codec_cfg.sampling_rate,
        padding_value=0.0,
        chunk_length_s=codec_cfg.chunk_length_s,
        overlap=codec_cfg.overlap,
    )
    MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    _umask_modes(folder)
    return folder


def _umask_modes(folder: Path) -> None:
    """safetensors writes weights 0600 whatever the umask: give every file the mode any new file gets."""
    umask = os.umask(0o022)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)


# --------------------------------------------------------------------------------------------------
# Freezing
# --------------------------------------------------------------------------------------------------


def _count(model) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen}


def freeze_encoders(model, text: bool = True, audio: bool = True) -> dict[str, int]:
    """Set ``requires_grad=False`` on the text encoder and/or the audio codec (as dreamboothing does).

    The decoder and ``enc_to_dec_proj`` (text → decoder projection) stay trainable. Returns parameter
    counts (numel) ``{"trainable": n, "frozen": m}`` over the whole model.
    """
    if text:
        model.freeze_text_encoder()
    if audio:
        model.freeze_audio_encoder()
    return _count(model)


# --------------------------------------------------------------------------------------------------
# LoRA (optional; needs peft)
# --------------------------------------------------------------------------------------------------

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def apply_lora(
    model,
    r: int = 8,
    alpha: int = 16,
    target_modules: Sequence[str] = DEFAULT_LORA_TARGETS,
    dropout: float = 0.0,
) -> dict[str, int]:
    """Inject LoRA adapters (peft) into the decoder's attention projections, in place.

    Only the adapters become trainable; everything else in the model is frozen. The model keeps its
    class and structure (``peft.inject_adapter_in_model``), so ``generate`` and the training loss
    work unchanged. Call :func:`merge_lora` before :func:`save_model`. Returns parameter counts.
    """
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), bias="none")
    for p in model.parameters():
        p.requires_grad = False
    inject_adapter_in_model(cfg, model.decoder)
    for name, p in model.decoder.named_parameters():
        p.requires_grad = "lora_" in name
    return _count(model)


def _lora_layers(model):
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover
        return []
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def _assert_no_lora(model) -> None:
    if _lora_layers(model):
        raise ValueError("model has unmerged LoRA adapters; call merge_lora(model) before save_model")


@torch.no_grad()
def merge_lora(model):
    """Fold LoRA adapters into the base weights and remove them (plain ``nn.Linear`` again), in place."""
    for name, module in _lora_layers(model):
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    for p in model.decoder.parameters():
        p.requires_grad = True
    return model
