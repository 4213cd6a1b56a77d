"""Content digests of models and codecs: the same weights and config give the same digest.

Used for lineage (a checkpoint's base model) and for the code cache key (the codec). Config fields that
do not change what the model computes (library version, class names, dtype, runtime output flags,
private ``_`` keys) are left out, so a digest survives ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

_VOLATILE = frozenset(
    {
        "transformers_version",
        "architectures",
        "dtype",
        "torch_dtype",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
    }
)


def config_for_digest(config) -> dict[str, Any]:
    """The config as a plain dict (nested sub-configs included) without the volatile fields."""

    def clean(obj):
        if isinstance(obj, dict):
            return {
                str(k): clean(v)
                for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))
                if str(k) not in _VOLATILE and not str(k).startswith("_")
            }
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    return clean(config.to_dict())


def model_digest(model) -> str:
    """sha256 over the config (see :func:`config_for_digest`) and every state-dict tensor (name, dtype,
    shape, bytes); changes when any weight or persistent buffer (e.g. a codebook) does."""
    h = hashlib.sha256()
    cfg = json.dumps(config_for_digest(model.config), sort_keys=True, separators=(",", ":"), default=str)
    h.update(b"config\0" + cfg.encode() + b"\0")
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
