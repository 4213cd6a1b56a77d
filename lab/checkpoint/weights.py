"""Model weights in a checkpoint folder: written with `save_pretrained` (stock transformers
loads the folder), read back into a live model on resume.

Keys `save_pretrained` drops because they alias a saved tensor (T5's `encoder.embed_tokens` is
`shared`), and non-persistent position buffers, may be absent; any other missing or unexpected
key is an error, never a silently half-loaded model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

# Buffers transformers recomputes at init and may leave out of the file.
_RECOMPUTED = ("position_ids", "embed_positions.weights")


def save_model_files(model: nn.Module, directory: str | os.PathLike) -> None:
    """Default weights writer: `save_pretrained` when the model has it, else `model.pt`."""
    directory = Path(directory)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
    else:
        torch.save(model.state_dict(), directory / "model.pt")


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / "model.pt").exists():
        return torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    from safetensors.torch import load_file

    if (directory / "model.safetensors").exists():
        return load_file(directory / "model.safetensors")
    index = directory / "model.safetensors.index.json"
    if index.exists():
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(json.loads(index.read_text("utf-8"))["weight_map"].values())):
            state.update(load_file(directory / shard))
        return state
    if (directory / "pytorch_model.bin").exists():
        return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"no model weights (model.pt, model.safetensors[.index.json], pytorch_model.bin) in {directory}"
    )


def load_model_files(model: nn.Module, directory: str | os.PathLike) -> None:
    """Load what `save_model_files` (or `save_pretrained`) wrote back into `model`, in place."""
    state = _read_weights(Path(directory))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint {directory} does not match the model: unexpected keys {result.unexpected_keys[:10]}"
        )
    if result.missing_keys:
        current = model.state_dict(keep_vars=True)
        loaded_ptrs = {current[k].data_ptr() for k in state if k in current}
        untied = [
            k for k in result.missing_keys if not k.endswith(_RECOMPUTED) and current[k].data_ptr() not in loaded_ptrs
        ]
        if untied:
            raise RuntimeError(f"checkpoint {directory} does not match the model: missing keys {untied[:10]}")
