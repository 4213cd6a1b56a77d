"""Fixtures for lab.models tests: synthetic clips, captions, one tiny MusicGen built per session.

Offline by construction (HF_HUB_OFFLINE) and single-threaded (shared 2-core machines).
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from _musicgen_testutil import TEXTS, synth_clip  # noqa: E402


@pytest.fixture(scope="session")
def clips() -> list[np.ndarray]:
    return [synth_clip(f, seed=i) for i, f in enumerate([110.0, 220.0, 330.0, 440.0])]


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return list(TEXTS)


@pytest.fixture(scope="session")
def _tiny(clips, texts):
    from lab.models.musicgen import TinySpec, build_tiny

    return build_tiny(TinySpec(), texts, clips, seed=0)


@pytest.fixture
def tiny(_tiny):
    """A fresh copy of the session's tiny (model, tokenizer): tests may mutate it."""
    model, tok = _tiny
    return copy.deepcopy(model), tok


@pytest.fixture(scope="session")
def saved_dir(_tiny, tmp_path_factory):
    from lab.models.musicgen import save_model

    model, tok = _tiny
    folder = tmp_path_factory.mktemp("tiny-musicgen")
    save_model(model, tok, folder)
    return folder
