from __future__ import annotations

import json

import pytest

from lab.models.tokenizer import EOS_ID, PAD_ID, UNK_ID, train_text_tokenizer


def test_special_token_ids_follow_t5(texts):
    tok = train_text_tokenizer(texts)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (PAD_ID, EOS_ID, UNK_ID) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    ids = tok("soft piano").input_ids
    assert ids[-1] == EOS_ID and EOS_ID not in ids[:-1]
    assert len(tok) <= 512


def test_roundtrip_normalises_case_accents_and_spaces(texts):
    tok = train_text_tokenizer(texts)
    for text in texts + ["Unseen   Words: Café 123!"]:
        ids = tok(text).input_ids
        assert UNK_ID not in ids
        decoded = tok.decode(ids, skip_special_tokens=True)
        assert decoded == " ".join(text.lower().replace("é", "e").split())


def test_batch_padding_uses_pad_zero(texts):
    tok = train_text_tokenizer(texts)
    batch = tok(["a", "a much longer caption here"], padding=True, return_tensors="pt")
    assert batch.input_ids[0, -1].item() == PAD_ID
    assert batch.attention_mask[0].sum() < batch.attention_mask[1].sum()


def test_deterministic_and_order_independent(texts):
    a = train_text_tokenizer(texts).backend_tokenizer.to_str()
    b = train_text_tokenizer(list(texts)).backend_tokenizer.to_str()
    c = train_text_tokenizer(list(reversed(texts))).backend_tokenizer.to_str()
    assert a == b == c
    assert train_text_tokenizer(texts + ["jazz"]).backend_tokenizer.to_str() != a


def test_save_and_reload_offline(texts, tmp_path):
    from transformers import AutoTokenizer

    tok = train_text_tokenizer(texts)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    json.loads((tmp_path / "tokenizer_config.json").read_text())
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    for text in texts:
        assert again(text).input_ids == tok(text).input_ids
    assert (again.pad_token_id, again.eos_token_id, again.unk_token_id) == (0, 1, 2)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        train_text_tokenizer([])
    with pytest.raises(ValueError):
        train_text_tokenizer(["  "])
    with pytest.raises(ValueError):
        train_text_tokenizer(["ok"], vocab_size=10)
