"""A small T5-style text tokenizer trained locally, for from-config MusicGen models.

Real MusicGen checkpoints ship their own T5 tokenizer; this one is only for tiny models built
from config, where nothing may be downloaded. It mirrors the T5 layout:

* subword model with a SentencePiece-style Metaspace ("▁") pre-tokenizer — BPE rather than T5's
  Unigram, because the `tokenizers` Unigram trainer is not reproducible (its piece scores, and so
  the saved tokenizer.json, differ from run to run: hash-map iteration order), whereas the BPE
  trainer breaks ties by token id and gives byte-identical output for the same texts;
* special tokens at the ids T5 expects: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2;
* ``</s>`` appended to every sequence (T5's post-processor).

Text is NFKD-normalised, accent-stripped and lower-cased so that a tiny vocabulary goes further;
characters never seen in training (and outside printable ASCII) map to ``<unk>``.

The result is a :class:`~transformers.PreTrainedTokenizerFast`; ``save_pretrained(folder)`` writes
``tokenizer.json`` + ``tokenizer_config.json`` and ``AutoTokenizer.from_pretrained(folder)`` reloads it
offline.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)  # ids 0, 1, 2 as in T5
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2

# Always in the vocabulary, so that ordinary ASCII prompts never hit <unk> even if unseen in training.
_BASE_ALPHABET = sorted(set(string.ascii_lowercase + string.digits + string.punctuation + "▁"))
_MIN_VOCAB = len(_BASE_ALPHABET) + len(SPECIAL_TOKENS) + 2  # + "▁" and some headroom

DEFAULT_MODEL_MAX_LENGTH = 512


def _build_tokenizer_pipeline() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFKD(),
            normalizers.StripAccents(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def train_text_tokenizer(
    texts: list[str] | Iterable[str],
    vocab_size: int = 512,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> PreTrainedTokenizerFast:
    """Train a T5-layout BPE tokenizer on ``texts``; deterministic for the same input.

    ``vocab_size`` is an upper bound: on a small corpus the trainer runs out of merges earlier, so use
    ``len(tokenizer)`` (not ``vocab_size``) to size the text encoder's embedding.
    """
    texts = [str(t) for t in texts]
    if not texts or not any(t.strip() for t in texts):
        raise ValueError("train_text_tokenizer needs at least one non-empty text")
    if vocab_size < _MIN_VOCAB:
        raise ValueError(f"vocab_size must be >= {_MIN_VOCAB} (base alphabet + special tokens), got {vocab_size}")

    tok = _build_tokenizer_pipeline()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=_BASE_ALPHABET,
        show_progress=False,
    )
    # Sorted input: the trained model depends only on the multiset of texts, not on the order a
    # caller happened to list them in.
    tok.train_from_iterator(sorted(texts), trainer=trainer, length=len(texts))

    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != [PAD_ID, EOS_ID, UNK_ID]:  # pragma: no cover - guarded by the tokenizers trainer contract
        raise RuntimeError(f"special tokens landed at {ids}, expected [0, 1, 2]")

    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}",
        pair=f"$A {EOS_TOKEN} $B {EOS_TOKEN}",
        special_tokens=[(EOS_TOKEN, EOS_ID)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
    )


__all__ = ["train_text_tokenizer", "PAD_ID", "EOS_ID", "UNK_ID", "SPECIAL_TOKENS"]
