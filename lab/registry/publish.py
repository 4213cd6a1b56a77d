"""Registration at write time: the train recipe hands over each checkpoint it sealed, and each is
indexed once its folder is published (never from staging). A registry that cannot be written
never stops training: the checkpoint is signed and complete, and `lab registry rebuild` finds it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lab.checkpoint.folder import is_complete

from .store import Registry

log = logging.getLogger("lab.registry")


def register_published(url: str | None, folders: list[Path]) -> list[Path]:
    """Register every folder of `folders` that is published now; return the ones not published yet."""
    pending, ready = [], []
    for folder in folders:
        (ready if is_complete(folder) else pending).append(Path(folder))
    if not ready:
        return pending
    try:
        with Registry(url) as registry:
            for folder in ready:
                registry.register(folder)
                log.info("registered %s", folder)
    except Exception as exc:  # noqa: BLE001 - derived data; the signed folder is the record
        log.warning(
            "could not register %s in the checkpoint registry (%s); `lab registry rebuild %s` recovers it",
            ", ".join(map(str, ready)),
            exc,
            ready[0].parent,
        )
    return pending
