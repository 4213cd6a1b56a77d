"""EnCodec for MusicGen: the one audio → codes path, and codebook initialisation for a from-config codec.

:func:`encode_batch` is what the code cache (``lab.data.codes``) and the tests encode with: clips are
zero-padded to a whole number of hops (no reflect padding leaks into a clip's last frame) and batched
by similar length; the codec is causal, so a clip's codes do not depend on its batch-mates.

transformers' ``EncodecModel`` initialises every RVQ codebook to zeros (``_init_weights`` zeroes
``embed``, ``embed_avg`` and ``cluster_size`` and sets ``inited``), so a from-config codec maps every
frame of every clip to code 0 in every codebook — a MusicGen trained on that learns nothing.
:func:`init_codebooks_from_audio` fixes this the way audiocraft's ``kmeans_init`` does on the first
batch: run the (random but fixed) encoder on real audio — after rescaling its last layer so the
frames are standardised (:func:`standardize_encoder_output`) — then for quantizer layer 0 run k-means on
the encoder frames, set the codebook to the centroids, subtract the quantised part and move on to
layer 1 with the residual, and so on.

HF stores each layer's codebook at ``codec.quantizer.layers[i].codebook`` as persistent buffers
(``embed``, the only one used for encode/decode; ``embed_avg`` and ``cluster_size``, EMA statistics
kept consistent here; ``inited``), so they go into ``model.safetensors`` and a stock
``from_pretrained`` restores them. The EnCodec *decoder* of a from-config codec stays untrained, so
the meaningful check is in embedding space (:func:`quantization_error`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from lab.util.audio import resample, to_mono

logger = logging.getLogger(__name__)

__all__ = [
    "hop_length",
    "resolve_bandwidth",
    "encode_batch",
    "encoder_frames",
    "init_codebooks_from_audio",
    "sample_encoder_frames",
    "standardize_encoder_output",
    "kmeans",
    "quantization_error",
]

Clip = np.ndarray | torch.Tensor


def hop_length(codec) -> int:
    """Samples per code frame (the product of the codec's up-sampling ratios)."""
    return int(np.prod(codec.config.upsampling_ratios))


def resolve_bandwidth(codec, bandwidth: float | None = None) -> float:
    """``bandwidth`` (kbps) if the codec supports it; ``None`` → its first, what MusicGen uses.

    A ``MusicgenForConditionalGeneration`` may be passed for its ``audio_encoder``; then the codebook count
    at that bandwidth must be the decoder's.
    """
    codec, expected_k = _unwrap(codec)
    bws = [float(b) for b in codec.config.target_bandwidths]
    bw = bws[0] if bandwidth is None else float(bandwidth)
    if bw not in bws:
        raise ValueError(f"codec does not support bandwidth {bw:g} kbps; choose one of {bws}")
    n_q = codec.quantizer.get_num_quantizers_for_bandwidth(bw)
    if expected_k is not None and n_q != expected_k:
        raise ValueError(f"bandwidth {bw:g} gives {n_q} codebooks but the MusicGen decoder expects {expected_k}")
    return bw


def _unwrap(codec):
    if hasattr(codec, "audio_encoder") and hasattr(codec, "decoder"):  # a MusicgenForConditionalGeneration
        return codec.audio_encoder, codec.decoder.num_codebooks
    return codec, None


def _padded(clips: Sequence[torch.Tensor], hop: int, dtype: torch.dtype) -> tuple[torch.Tensor, list[int]]:
    """Clips zero-padded to the longest one's whole number of hops: (B, 1, n*hop), frames per clip."""
    frames = [max(1, -(-len(c) // hop)) for c in clips]
    x = torch.zeros(len(clips), 1, max(frames) * hop, dtype=dtype)
    for j, c in enumerate(clips):
        x[j, 0, : len(c)] = c
    return x, frames


@torch.no_grad()
def encode_batch(
    codec, waveforms: Sequence[Clip], sample_rate: int, bandwidth: float | None = None, batch_size: int = 8
) -> list[np.ndarray]:
    """Encode mono clips to EnCodec codes: one int64 array (num_codebooks, frames) per clip, in order.

    ``codec`` is an ``EncodecModel`` or a MusicGen model (see :func:`resolve_bandwidth`). Clips are
    resampled to the codec rate; ``frames = ceil(resampled_len / hop)``.
    """
    bw = resolve_bandwidth(codec, bandwidth)
    codec, _ = _unwrap(codec)
    sr, hop = int(codec.config.sampling_rate), hop_length(codec)
    param = next(codec.parameters())
    clips = [resample(to_mono(w), sample_rate, sr) for w in waveforms]
    order = sorted(range(len(clips)), key=lambda i: -(-len(clips[i]) // hop))  # by frames, stable
    out: list[np.ndarray | None] = [None] * len(clips)
    was_training = codec.training
    codec.eval()
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            x, frames = _padded([clips[i] for i in idx], hop, param.dtype)
            codes = codec.encode(x.to(param.device), bandwidth=bw).audio_codes  # (chunks, B, K, n)
            if codes.shape[0] != 1:
                raise ValueError(
                    f"codec produced {codes.shape[0]} chunks per clip; set chunk_length_s=None (as MusicGen does)"
                )
            for j, i in enumerate(idx):
                out[i] = codes[0, j, :, : frames[j]].cpu().numpy().astype(np.int64)
    finally:
        codec.train(was_training)
    return out  # type: ignore[return-value]


@torch.no_grad()
def encoder_frames(codec, waveforms: Sequence[Clip], batch_size: int = 8) -> torch.Tensor:
    """Run ``codec.encoder`` on mono waveforms (already at the codec's sampling rate).

    Returns the valid frames of all clips stacked, shape (N, codebook_dim); clips are padded as in
    :func:`encode_batch` and only each clip's own ``ceil(len / hop)`` frames are kept.
    """
    param = next(codec.parameters())
    clips = [to_mono(w) for w in waveforms]
    if not clips:
        raise ValueError("need at least one waveform")
    out = []
    for i in range(0, len(clips), batch_size):
        x, frames = _padded(clips[i : i + batch_size], hop_length(codec), param.dtype)
        emb = codec.encoder(x.to(param.device))  # (B, D, T)
        for j, n in enumerate(frames):
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


def _reservoir(frames: torch.Tensor, keep: torch.Tensor | None, seen: int, cap: int, g: torch.Generator):
    """Algorithm R over rows: ``keep`` holds a uniform sample of at most ``cap`` of the ``seen`` rows so
    far; returns it with ``frames`` offered, in O(cap) memory whatever the stream's length."""
    if keep is None or len(keep) < cap:
        room = cap - (0 if keep is None else len(keep))
        head, frames = frames[:room], frames[room:]
        keep = head.clone() if keep is None else torch.cat([keep, head])
        seen += len(head)
    if len(frames):
        t = torch.arange(seen + 1, seen + len(frames) + 1, dtype=torch.float64)
        j = (torch.rand(len(frames), generator=g, dtype=torch.float64) * t).long()  # uniform in [0, seen_i]
        hit = (j < cap).nonzero().flatten()
        if len(hit):  # later offers overwrite earlier ones at the same slot, as in the sequential algorithm
            slots = j[hit].numpy()
            _, last = np.unique(slots[::-1], return_index=True)
            pick = hit[len(hit) - 1 - torch.from_numpy(last)]
            keep[j[pick]] = frames[pick]
        seen += len(frames)
    return keep, seen


@torch.no_grad()
def sample_encoder_frames(
    codec, waveforms: Iterable[Clip], max_frames: int, seed: int = 0, batch_size: int = 8
) -> torch.Tensor:
    """:func:`encoder_frames` of a stream of clips, reservoir-sampled down to ``max_frames`` rows: the clips
    are consumed ``batch_size`` at a time, so memory is bounded by ``max_frames`` and one batch."""
    g = torch.Generator().manual_seed(int(seed))
    keep, seen, batch = None, 0, []
    for clip in waveforms:
        batch.append(clip)
        if len(batch) == batch_size:
            keep, seen = _reservoir(encoder_frames(codec, batch, batch_size), keep, seen, max_frames, g)
            batch = []
    if batch:
        keep, seen = _reservoir(encoder_frames(codec, batch, batch_size), keep, seen, max_frames, g)
    if keep is None:
        raise ValueError("need at least one waveform")
    return keep


@torch.no_grad()
def init_codebooks_from_audio(
    codec,
    waveforms: Iterable[np.ndarray | torch.Tensor],
    iters: int = 10,
    seed: int = 0,
    max_frames: int = 50_000,
    standardize: bool = True,
) -> list[int]:
    """Initialise every RVQ codebook of ``codec`` (an ``EncodecModel``) by residual k-means.

    ``waveforms`` are mono clips at ``codec.config.sampling_rate``, any iterable (a generator streaming
    windows of long files is fine): their encoder frames are reservoir-sampled down to ``max_frames``
    (seeded), so memory does not grow with the audio. With ``standardize`` the encoder's last layer is
    then rescaled so its frames are zero-mean/unit-variance on that sample (see
    :func:`standardize_encoder_output`; meant for random-init codecs, leave it off for a trained one); the
    layer is affine, so the sampled frames are standardised the same way instead of being encoded again.
    Modifies ``codec`` in place and returns the number of codes in use per layer on the clustering frames.
    """
    frames = sample_encoder_frames(codec, waveforms, max_frames, seed=seed)
    if standardize and standardize_encoder_output(codec, frames):
        frames = (frames - frames.mean(dim=0)) / frames.std(dim=0).clamp_min(1e-8)
    g = torch.Generator().manual_seed(int(seed))
    n_layers = len(codec.quantizer.layers)
    k = codec.quantizer.layers[0].codebook.embed.shape[0]
    wanted = 2 * k * n_layers
    if len(frames) < wanted:
        logger.warning(
            "init_codebooks_from_audio: %d encoder frames for %d layers of %d codes; later RVQ layers may "
            "see near-zero residuals and use few codes (>= %d frames, about %.0f s of audio, is better)",
            len(frames),
            n_layers,
            k,
            wanted,
            wanted / codec.config.frame_rate,
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
def quantization_error(codec, waveforms: Sequence[Clip], num_quantizers: int | None = None) -> float:
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
