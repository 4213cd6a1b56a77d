"""The transformers lab declares must load the checkpoints lab writes.

A checkpoint records the transformers that wrote it (`config.json: transformers_version`) and its
tokenizer class (`tokenizer_config.json`); transformers 5 writes `TokenizersBackend`, which 4.x cannot
load. Testing an older floor would need a second venv, so the declared floor must be the tested
(installed) major.minor: upgrading transformers without raising the floor fails here.
"""

from __future__ import annotations

import importlib.metadata as md
import json

import pytest
from packaging.requirements import Requirement
from packaging.version import Version


def _declared() -> Requirement:
    reqs = [Requirement(r) for r in md.requires("lab") or []]
    found = [r for r in reqs if r.name == "transformers" and r.marker is None]
    assert len(found) == 1, f"lab should declare transformers exactly once, got {found}"
    return found[0]


def _floor(req: Requirement) -> Version:
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert floors, f"{req} declares no floor"
    return max(floors)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import MusicgenForConditionalGeneration

    from lab.models.musicgen import TinySpec, save_model, tiny_config
    from lab.models.tokenizer import train_text_tokenizer

    spec = TinySpec()
    tok = train_text_tokenizer(
        ["a calm piano", "a fast drum loop"], vocab_size=spec.text_vocab_size, model_max_length=spec.text_max_length
    )
    model = MusicgenForConditionalGeneration(tiny_config(spec, text_vocab_size=len(tok)))
    return save_model(model, tok, tmp_path_factory.mktemp("ckpt") / "step-000001")


def test_floor_is_at_least_the_version_that_wrote_the_checkpoint(checkpoint):
    wrote = Version(json.loads((checkpoint / "config.json").read_text())["transformers_version"])
    floor = _floor(_declared())
    assert floor.release[:2] >= wrote.release[:2], (
        f"checkpoints are written by transformers {wrote} but lab declares {_declared()}: "
        f"raise the floor to >={wrote.major}.{wrote.minor} (pyproject.toml) or test the floor"
    )


def test_tokenizer_class_loads_at_the_floor(checkpoint):
    cls = json.loads((checkpoint / "tokenizer_config.json").read_text()).get("tokenizer_class")
    if cls == "TokenizersBackend":  # introduced in transformers 5
        assert _floor(_declared()).major >= 5, f"{cls} tokenizers need transformers 5, lab declares {_declared()}"


def test_installed_transformers_satisfies_the_declaration():
    installed = md.version("transformers")
    assert _declared().specifier.contains(installed, prereleases=True), (
        f"installed transformers {installed} is outside {_declared()}"
    )
