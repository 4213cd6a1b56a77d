"""A lab checkpoint as the base of another run: verified first, then its sources inherited.

A parent is only as good as its signature: a base whose folder does not verify against the
lab key is refused, because its data card (what the child inherits) could have been edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ..cards import card_sha256, load_card
from ..cards.schema import BaseCardRef, BaseModelRef, ParentCheckpoint
from ..cards.signing import require_valid


class ParentRefused(RuntimeError):
    """The parent checkpoint cannot be vouched for (signature or card)."""


@dataclass(frozen=True)
class Parent:
    base: BaseModelRef
    checkpoint: ParentCheckpoint
    sources: pa.Table  # every source the parent's weights carry (its own and what it inherited)
    licence: str


def is_lab_checkpoint(path: Path) -> bool:
    return (Path(path) / "data_card.json").is_file()


def read_parent(
    path: Path, public_key: Path, *, model_digest: str, model_id: str | None = None, licence: str | None = None
) -> Parent:
    """Verify `path` (signature over every file, then its card) and describe it as a base."""
    path = Path(path)
    try:
        require_valid(path, public_key)
        bundle = load_card(path)
    except Exception as exc:  # noqa: BLE001 - any failure means the parent's card cannot be trusted
        raise ParentRefused(f"base checkpoint {path} does not verify: {exc}") from None
    card = bundle.card
    sha = card_sha256(path)
    weights_licence = licence or card.licence.expression  # the parent's derived licence: its base's and sources'
    base = BaseModelRef(
        id=model_id or card.identity.checkpoint_id,
        digest=model_digest,
        licence=weights_licence,
        declared_training_data=f"lab checkpoint {card.identity.checkpoint_id} (snapshot {card.snapshot.snapshot_id})",
        card=BaseCardRef(
            path=str(path / "data_card.json"),
            sha256=sha,
            summary=f"{bundle.sources.num_rows} sources, {card.exposure.total_seconds:.1f} s seen",
        ),
        kind="lab_checkpoint",
    )
    parent = ParentCheckpoint(checkpoint_id=card.identity.checkpoint_id, data_card_sha256=sha, path=str(path.resolve()))
    return Parent(base=base, checkpoint=parent, sources=bundle.sources, licence=weights_licence)
