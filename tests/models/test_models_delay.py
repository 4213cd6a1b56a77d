"""The one delay pattern: hand-computed layout, and the same layout transformers' generate builds."""

from __future__ import annotations

import pytest
import torch

from lab.models.delay import delay_pattern

P = 64
M = -100


def test_delay_pattern_hand_computed():
    # K=4 codebooks, T=3 frames: value 10*k + t
    codes = torch.tensor([[[0, 1, 2], [10, 11, 12], [20, 21, 22], [30, 31, 32]]])
    d = delay_pattern(codes, P)
    assert d.labels[0].T.tolist() == [
        [0, 1, 2, M, M, M],
        [M, 10, 11, 12, M, M],
        [M, M, 20, 21, 22, M],
        [M, M, M, 30, 31, 32],
    ]
    assert torch.equal(d.label_mask, d.labels != M)
    assert d.decoder_input_ids.tolist() == [
        [P, 0, 1, 2, P, P],
        [P, P, 10, 11, 12, P],
        [P, P, P, 20, 21, 22],
        [P, P, P, P, 30, 31],
    ]
    # only 2 of 3 frames carry audio: frame 2 is masked in every codebook, and fed as P
    d2 = delay_pattern(codes, P, lengths=[2], start_token_id=7)
    assert d2.label_mask[0].T.int().tolist() == [
        [1, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 0],
    ]
    assert d2.decoder_input_ids[:, 0].tolist() == [7] * 4 and d2.decoder_input_ids[0].tolist() == [7, 0, 1, P, P, P]


def test_delay_pattern_refuses_bad_input():
    with pytest.raises(ValueError, match="lie in"):
        delay_pattern(torch.full((1, 4, 3), P), P)  # the pad token is not a code
    with pytest.raises(ValueError, match="lengths"):
        delay_pattern(torch.zeros((1, 4, 3), dtype=torch.long), P, lengths=[4])
    with pytest.raises(ValueError, match="B, K, T"):
        delay_pattern(torch.zeros((4, 3), dtype=torch.long), P)
    # a padded frame may hold anything: it is not a code
    codes = torch.zeros((1, 4, 3), dtype=torch.long)
    codes[0, :, 2] = P
    assert delay_pattern(codes, P, lengths=[2]).label_mask.sum() == 8


def test_delay_pattern_is_generates_layout():
    """``generate`` starts from a start column and applies build_delay_pattern_mask: same layout."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    k, t, b = 4, 7, 2
    decoder = MusicgenForCausalLM(
        MusicgenDecoderConfig(
            vocab_size=P,
            num_codebooks=k,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            ffn_dim=32,
            max_position_embeddings=64,
            pad_token_id=P,
            bos_token_id=P,
            decoder_start_token_id=P,
        )
    )
    codes = torch.randint(0, P, (b, k, t), generator=torch.Generator().manual_seed(0))
    d = delay_pattern(codes, P)
    with_start = torch.cat([torch.full((b, k, 1), P), codes], dim=2).reshape(b * k, t + 1)
    _, pattern = decoder.build_delay_pattern_mask(with_start, P, max_length=t + k)
    assert torch.equal(pattern[:, :-1], d.decoder_input_ids)
    labels = d.labels.transpose(1, 2).reshape(b * k, t + k - 1)
    assert torch.equal(pattern[:, 1:], labels.masked_fill(labels == M, P))
