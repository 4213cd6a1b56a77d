"""The card's files in a checkpoint folder: write (validated once), load (validated once), hash.

`lab.cards` is the single owner of these files; the train job writes them through
`write_card_files`, the audit and `lab card show` read them through `load_card` / `card_errors`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from lab.util import atomic
from lab.util.canonical import sha256_file

from .licence import licence_errors
from .schema import SOURCES_FILE, CardError, DataCard, schema_errors, validate_card_json
from .sources import parquet_bytes, read_parquet, sources_errors

CARD_FILE = "data_card.json"
LICENCE_FILE = "LICENSE"  # the weights' derived licence, the grants and the credits (Hub convention)
CARD_FILES = (CARD_FILE, SOURCES_FILE, "README.md", "croissant.json", LICENCE_FILE)


@dataclass(frozen=True)
class CardBundle:
    """A data card and its rows. `parquet`: the exact bytes of sources.parquet when known."""

    card: DataCard
    sources: pa.Table
    parquet: bytes | None = None

    def own_sources(self) -> pa.Table:
        """The rows this checkpoint's own run saw (seen_by = its id)."""
        return self.sources.filter(pc.equal(self.sources["seen_by"], self.card.identity.checkpoint_id))


def dump_card(card: DataCard) -> bytes:
    """The exact bytes of data_card.json: sorted keys, two-space indent, trailing newline."""
    return orjson.dumps(card.to_json(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def card_bytes_sha256(card: DataCard) -> str:
    """sha256 that data_card.json will have once written."""
    return hashlib.sha256(dump_card(card)).hexdigest()


def write_card_files(bundle: CardBundle, folder: str | Path, *, base_model_hub_id: str | None) -> None:
    """Validate the bundle once, then write CARD_FILES into folder (the caller signs the folder).

    The weights' licence is the card's own derivation (`card.licence`), never a caller's word;
    base_model_hub_id: the Hub id README names as base_model (None when the base is not on the Hub)."""
    from .render import croissant, licence_file, model_card

    folder = Path(folder)
    data = bundle.parquet if bundle.parquet is not None else parquet_bytes(bundle.sources)
    text = dump_card(bundle.card)
    errors = schema_errors(orjson.loads(text)) + sources_errors(bundle.sources, bundle.card, data)
    errors += licence_errors(bundle.card, bundle.sources)
    if errors:
        raise CardError(errors)
    atomic.write_bytes(folder / SOURCES_FILE, data)
    atomic.write_bytes(folder / CARD_FILE, text)
    readme = model_card(bundle, base_model=base_model_hub_id, data_card_sha256=hashlib.sha256(text).hexdigest())
    atomic.write_bytes(folder / "README.md", readme.encode())
    atomic.write_bytes(
        folder / "croissant.json",
        orjson.dumps(croissant(bundle), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n",
    )
    atomic.write_bytes(folder / LICENCE_FILE, licence_file(bundle).encode())


def load_card(folder: str | Path) -> CardBundle:
    """data_card.json + sources.parquet from a checkpoint folder, validated; raises CardError."""
    folder = Path(folder)
    try:
        raw = orjson.loads((folder / CARD_FILE).read_bytes())
    except OSError as exc:
        raise CardError([f"{CARD_FILE}: cannot read ({exc.strerror or exc})"]) from None
    except orjson.JSONDecodeError as exc:
        raise CardError([f"{CARD_FILE}: not JSON ({exc})"]) from None
    card = validate_card_json(raw)
    try:
        data = (folder / card.sources.file).read_bytes()
        table = read_parquet(data)
    except OSError as exc:
        raise CardError([f"{card.sources.file}: cannot read ({exc.strerror or exc})"]) from None
    except pa.ArrowException as exc:
        raise CardError([f"{card.sources.file}: not a readable Parquet file ({exc})"]) from None
    errors = sources_errors(table, card, data) + licence_errors(card, table)
    if errors:
        raise CardError(errors)
    return CardBundle(card=card, sources=table, parquet=data)


def card_errors(folder: str | Path) -> list[str]:
    """[] when the folder's data_card.json and sources.parquet validate, else every problem found."""
    try:
        load_card(folder)
    except CardError as exc:
        return exc.errors
    return []


def card_sha256(folder_or_file: str | Path) -> str:
    """sha256 of data_card.json as stored (what README and child checkpoints cite)."""
    path = Path(folder_or_file)
    return sha256_file(path / CARD_FILE if path.is_dir() else path)
