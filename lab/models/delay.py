"""MusicGen's codebook delay pattern: the one layout training (collator, loss) and ``generate`` share.

Codebook k is shifted right by k steps. For codes ``c[k, t]`` (K codebooks, T frames) the target has
S = T + K - 1 steps, ``target[k, s] = c[k, s - k]`` where ``0 <= s - k < T``, else P (the pad token):

    k=0:  a0 b0 c0 P  P  P
    k=1:  P  a1 b1 c1 P  P
    k=2:  P  P  a2 b2 c2 P
    k=3:  P  P  P  a3 b3 c3

With the start token prepended this is exactly ``MusicgenForCausalLM.build_delay_pattern_mask`` (what
``generate`` builds), so step s predicts codebook k's frame s - k having seen codebooks j < k at that
frame. Labels are the target with -100 on P and on frames that only encode padding audio; the model's
own loss (``labels=``) then averages per-codebook cross-entropy over K, as audiocraft does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

IGNORE_INDEX = -100


class DelayedCodes(NamedTuple):
    """Teacher-forcing tensors for codes (B, K, T); S = T + K - 1.

    decoder_input_ids: (B*K, S), the MusicGen decoder layout: step 0 is the start token, then the target
        shifted right by one step (P on delay and padding positions).
    labels: (B, S, K), ``labels[b, k + t, k] == codes[b, k, t]``, -100 where nothing is to be predicted.
    label_mask: (B, S, K) bool, True where ``labels`` is a real code.
    """

    decoder_input_ids: torch.Tensor
    labels: torch.Tensor
    label_mask: torch.Tensor


def delay_pattern(
    codes: torch.Tensor,
    pad_token_id: int,
    lengths: torch.Tensor | Sequence[int] | None = None,
    *,
    start_token_id: int | None = None,
) -> DelayedCodes:
    """Delay codes (B, K, T) for teacher forcing.

    ``lengths`` (B,) gives each clip's frames that carry audio when a batch is right-padded (default: all
    T); frames past it are kept out of the loss. ``start_token_id`` defaults to ``pad_token_id`` (as in
    MusicGen). Codes on valid frames must lie in [0, pad_token_id).
    """
    codes = torch.as_tensor(codes)
    if codes.ndim != 3:
        raise ValueError(f"codes must be (B, K, T), got {tuple(codes.shape)}")
    codes = codes.long()
    b, k, t = codes.shape
    if t == 0:
        raise ValueError("codes have no frames")
    device = codes.device
    if lengths is None:
        lengths_t = torch.full((b,), t, dtype=torch.long, device=device)
    else:
        lengths_t = torch.as_tensor(lengths, dtype=torch.long).to(device).reshape(b)
        if (lengths_t < 0).any() or (lengths_t > t).any():
            raise ValueError(f"lengths must lie in [0, {t}]")
    frame_ok = torch.arange(t, device=device)[None, :] < lengths_t[:, None]  # (B, T)
    valid = codes[frame_ok[:, None, :].expand(b, k, t)]
    if valid.numel() and (valid.min() < 0 or valid.max() >= pad_token_id):
        raise ValueError(f"codes must lie in [0, {pad_token_id}) (pad = {pad_token_id})")

    s = t + k - 1
    frame = torch.arange(s, device=device)[None, :] - torch.arange(k, device=device)[:, None]  # (K, S)
    at = frame.clamp(0, t - 1)
    gathered = codes.gather(2, at[None].expand(b, k, s))  # (B, K, S)
    mask = ((frame >= 0) & (frame < t))[None] & frame_ok[:, at.reshape(-1)].reshape(b, k, s)
    target = torch.where(mask, gathered, torch.full_like(gathered, pad_token_id))
    inputs = torch.empty_like(target)
    inputs[:, :, 0] = pad_token_id if start_token_id is None else start_token_id
    inputs[:, :, 1:] = target[:, :, :-1]
    return DelayedCodes(
        decoder_input_ids=inputs.reshape(b * k, s),
        labels=target.masked_fill(~mask, IGNORE_INDEX).transpose(1, 2).contiguous(),
        label_mask=mask.transpose(1, 2).contiguous(),
    )
