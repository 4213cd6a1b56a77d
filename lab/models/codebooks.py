"""Codebook initialisation for a from-config (randomly initialised) EnCodec.

transformers' ``EncodecModel`` initialises every RVQ codebook to zeros (``_init_weights`` zeroes
``embed``, ``embed_avg`` and ``cluster_size`` and sets ``inited``), so a from-config codec maps every
frame of every clip to code 0 in every codebook — a MusicGen trained on that learns nothing.

:func:`init_codebooks_from_audio` fixes this the way audiocraft's ``kmeans_init`` does on the first
batch: run the (random but fixed) encoder on real audio — after rescaling its last layer so the
frames are standardised (:func:`standardize_encoder_output`) — then for quantizer layer 0 run k-means on
the encoder frames, set the codebook to the centroids, subtract the quantised part and move on to
layer 1 with the residual, and so on. Codes then carry information about the audio (many distinct
codes, residual error falling layer by layer).

HF stores each layer's codebook at ``codec.quantizer.layers[i].codebook`` as persistent buffers:
``embed`` (codebook_size, codebook_dim) — the only one used for encode/decode; ``embed_avg`` and
``cluster_size`` (EMA statistics from training, kept consistent here: ``embed_avg = embed * count``,
``cluster_size = count``); ``inited`` (1.0). Being persistent buffers they go into
``model.safetensors`` and are restored by a stock ``from_pretrained``.

Note that the EnCodec *decoder* of a from-config codec is untrained, so decoded audio does not
resemble the input whatever the codebooks; the meaningful check is in embedding space
(see :func:`quantization_error`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "init_codebooks_from_audio",
    "standardize_encoder_output",
    "kmeans",
    "quantization_error",
    "encoder_frames",
]


def _as_mono_tensor(w: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w).detach().to(torch.float32)
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (samples,), got {tuple(t.shape)}")
    return t.cpu()


@torch.no_grad()
def encoder_frames(codec, waveforms: Sequence[np.ndarray | torch.Tensor], batch_size: int = 8) -> torch.Tensor:
    """Run ``codec.encoder`` on mono waveforms (already at the codec's sampling rate).

    Returns the valid frames of all clips stacked, shape (N, codebook_dim). Each clip is zero-padded
    to a multiple of the hop length (so no reflect padding leaks into its last frame) and only its own
    ``ceil(len / hop)`` frames are kept.
    """
    hop = int(np.prod(codec.config.upsampling_ratios))
    device = next(codec.parameters()).device
    dtype = next(codec.parameters()).dtype
    clips = [_as_mono_tensor(w) for w in waveforms]
    if not clips:
        raise ValueError("need at least one waveform")
    out = []
    for i in range(0, len(clips), batch_size):
        chunk = clips[i : i + batch_size]
        frames_per = [max(1, -(-len(c) // hop)) for c in chunk]
        length = max(frames_per) * hop
        x = torch.zeros(len(chunk), 1, length, dtype=dtype)
        for j, c in enumerate(chunk):
            x[j, 0, : len(c)] = c
        emb = codec.encoder(x.to(device))  # (B, D, T)
        for j, n in enumerate(frames_per):
            out.append(emb[j, :, :n].transpose(0, 1).float().cpu())
    return torch.cat(out, dim=0)


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    # Same expansion as EncodecEuclideanCodebook.quantize, so assignments match what encode() will do.
    return x.pow(2).sum(1, keepdim=True) - 2 * x @ c.t() + c.pow(2).sum(1)[None, :]


def _kmeans_pp(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (D^2 sampling), deterministic for a given generator state."""
    n = len(x)
    centroids = torch.empty(k, x.shape[1])
    centroids[0] = x[torch.randint(0, n, (1,), generator=g)]
    d2 = _sq_dists(x, centroids[:1]).squeeze(1).clamp_min(0)
    for i in range(1, k):
        total = d2.sum()
        if total <= 0:  # all points already coincide with a centroid: fall back to uniform picks
            j = torch.randint(0, n, (1,), generator=g)
        else:
            j = torch.multinomial(d2 / total, 1, generator=g)
        centroids[i] = x[j]
        d2 = torch.minimum(d2, _sq_dists(x, centroids[i : i + 1]).squeeze(1).clamp_min(0))
    return centroids


@torch.no_grad()
def kmeans(
    x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd k-means with k-means++ seeding on rows of ``x`` (N, D). Returns (centroids (k, D), counts (k,)).

    With N < k, all points are centroids and the rest are random points plus tiny noise; a cluster that
    goes empty is re-seeded with a random point (audiocraft's dead-code replacement). Deterministic for
    a given generator state.
    """
    x = x.to(torch.float32)
    n, d = x.shape
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    if n > k:
        centroids = _kmeans_pp(x, k, g)
    else:
        idx = torch.randint(0, n, (k,), generator=g)
        idx[:n] = torch.randperm(n, generator=g)
        scale = x.std().clamp_min(1e-6) * 1e-3 if n > 1 else torch.tensor(1e-6)
        centroids = x[idx] + scale * torch.randn(k, d, generator=g)
    counts = torch.zeros(k)
    for _ in range(max(1, iters)):
        assign = _sq_dists(x, centroids).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).to(torch.float32)
        sums = torch.zeros(k, d).index_add_(0, assign, x)
        alive = counts > 0
        centroids[alive] = sums[alive] / counts[alive, None]
        dead = (~alive).nonzero().flatten()
        if len(dead):
            centroids[dead] = x[torch.randint(0, n, (len(dead),), generator=g)]
    assign = _sq_dists(x, centroids).argmin(dim=1)
    counts = torch.bincount(assign, minlength=k).to(torch.float32)
    return centroids, counts


@torch.no_grad()
def standardize_encoder_output(codec, frames: torch.Tensor) -> bool:
    """Data-dependent init of the encoder's last convolution (as in the weight-norm paper).

    A random EnCodec encoder emits nearly constant frames (for the tiny spec: offset norm ~0.3, temporal
    std per channel ~7e-4), so codes hinge on the 4th significant digit and batched vs single encoding
    can disagree. Rescaling that layer's weight-norm gain and bias so the given ``frames`` (N, D) come
    out zero-mean, unit-variance per channel keeps the same function up to an affine map per channel,
    with well-conditioned codes. Returns False (and changes nothing) if the layer is not a weight-normed
    or plain ``Conv1d`` (``norm_type="time_group_norm"``).
    """
    last = codec.encoder.layers[-1]
    conv = getattr(last, "conv", None)
    if conv is None or getattr(last, "norm_type", "weight_norm") != "weight_norm" or conv.bias is None:
        return False
    mean = frames.mean(dim=0)
    std = frames.std(dim=0).clamp_min(1e-8)
    if std.numel() != conv.out_channels:
        return False
    dev, dt = conv.bias.device, conv.bias.dtype
    mean, std = mean.to(dev, dt), std.to(dev, dt)
    param = getattr(conv, "parametrizations", None)
    if param is not None and hasattr(param, "weight"):
        g = param.weight.original0  # weight = g * v / ||v||, norm over all dims but 0
        if g.shape[0] != std.numel() or g.numel() != std.numel():
            return False
        g.div_(std.view_as(g))
    elif hasattr(conv, "weight_g"):  # legacy torch.nn.utils.weight_norm
        conv.weight_g.div_(std.view_as(conv.weight_g))
    else:
        conv.weight.div_(std[:, None, None])
    conv.bias.sub_(mean).div_(std)
    return True


@torch.no_grad()
def init_codebooks_from_audio(
    codec,
    waveforms: Sequence[np.ndarray | torch.Tensor],
    iters: int = 10,
    seed: int = 0,
    max_frames: int = 50_000,
    standardize: bool = True,
) -> list[int]:
    """Initialise every RVQ codebook of ``codec`` (an ``EncodecModel``) by residual k-means.

    ``waveforms`` are mono clips at ``codec.config.sampling_rate``. With ``standardize`` the encoder's
    last layer is first rescaled so its frames are zero-mean/unit-variance on this audio (see
    :func:`standardize_encoder_output`; meant for random-init codecs, leave it off for a trained one).
    Up to ``max_frames`` encoder frames (a seeded random subset) are clustered. Modifies ``codec`` in
    place and returns the number of codes in use per layer on the clustering frames.
    """
    frames = encoder_frames(codec, waveforms)
    if standardize and standardize_encoder_output(codec, frames):
        frames = encoder_frames(codec, waveforms)
    g = torch.Generator().manual_seed(int(seed))
    if len(frames) > max_frames:
        frames = frames[torch.randperm(len(frames), generator=g)[:max_frames]]
    n_layers = len(codec.quantizer.layers)
    k = codec.quantizer.layers[0].codebook.embed.shape[0]
    wanted = 2 * k * n_layers
    if len(frames) < wanted:
        logger.warning(
            "init_codebooks_from_audio: %d encoder frames for %d layers of %d codes; later RVQ layers may "
            "see near-zero residuals and use few codes (>= %d frames, about %.0f s of audio, is better)",
            len(frames), n_layers, k, wanted, wanted / codec.config.frame_rate,
        )
    residual = frames
    used = []
    for layer in codec.quantizer.layers:
        book = layer.codebook
        k = book.embed.shape[0]
        centroids, counts = kmeans(residual, k, iters=iters, generator=g)
        dev, dt = book.embed.device, book.embed.dtype
        book.embed.copy_(centroids.to(dev, dt))
        book.embed_avg.copy_((centroids * counts[:, None]).to(dev, dt))
        book.cluster_size.copy_(counts.to(dev, book.cluster_size.dtype))
        book.inited.fill_(1.0)
        # Quantise with the codebook's own code path so the residual is exactly what encode() sees.
        idx = book.quantize(residual.to(dev, dt)).cpu()
        used.append(int(torch.unique(idx).numel()))
        residual = residual - centroids[idx]
    return used


@torch.no_grad()
def quantization_error(codec, waveforms: Sequence[np.ndarray | torch.Tensor], num_quantizers: int | None = None) -> float:
    """Unexplained variance of the RVQ: ||e - q(e)||^2 / ||e - mean(e)||^2 over the encoder frames.

    Normalised by the *centred* energy because a random encoder's frames carry a large constant
    offset that any codebook captures. Compared with all-zero codebooks (>= 1.0) this falls well
    below 1 once the codebooks are initialised, and keeps falling as layers are added.
    """
    e = encoder_frames(codec, waveforms)
    layers = codec.quantizer.layers
    n = len(layers) if num_quantizers is None else num_quantizers
    dev, dt = layers[0].codebook.embed.device, layers[0].codebook.embed.dtype
    residual = e.to(dev, dt)
    for layer in layers[:n]:
        idx = layer.codebook.quantize(residual)
        residual = residual - layer.codebook.embed[idx]
    centred = e - e.mean(dim=0, keepdim=True)
    return float(residual.float().pow(2).sum() / centred.pow(2).sum().clamp_min(1e-12))
