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


def remember_audit(folder: str | Path, report: dict, url: str | None = None) -> bool:
    """Keep `lab audit`'s result for `lab checkpoints list` when the folder's checkpoint is registered.

    The id comes from the folder's data_card.json as stored (the audit judges whether to trust it),
    and the card's sha256 goes with the summary, so an audit of an edited copy is not shown as the
    registered checkpoint's."""
    import orjson

    from lab.cards.files import CARD_FILE
    from lab.util.canonical import sha256_file

    card = Path(folder) / CARD_FILE
    try:
        registry = Registry(url)
        with registry:
            if not registry.exists():
                return False
            checkpoint_id = orjson.loads(card.read_bytes())["identity"]["checkpoint_id"]
            if registry.checkpoint(checkpoint_id) is None:
                return False
            registry.record_audit(checkpoint_id, report, data_card_sha256=sha256_file(card))
    except Exception as exc:  # noqa: BLE001 - the audit's verdict stands without its cached summary
        log.warning("audit not recorded in the checkpoint registry: %s", exc)
        return False
    return True
