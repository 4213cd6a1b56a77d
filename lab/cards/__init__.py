"""A checkpoint's data card: `data_card.json` + `sources.parquet` (+ README.md, croissant.json views).

Names resolve lazily, so `python -m lab.cards.schema` and `lab.cards.signing` load nothing else.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOME = {
    "build_card": "build",
    "CARD_FILES": "files",
    "CardBundle": "files",
    "card_errors": "files",
    "card_sha256": "files",
    "load_card": "files",
    "write_card_files": "files",
    "BaseCardRef": "schema",
    "BaseModelRef": "schema",
    "CardError": "schema",
    "DataCard": "schema",
    "Lineage": "schema",
    "ParentCheckpoint": "schema",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
