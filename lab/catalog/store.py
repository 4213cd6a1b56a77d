"""Where catalogues live: `<catalogs_dir>/<name>/{catalog.parquet, manifest.json}`.

A catalogue is written whole (staging folder, then one rename via `publish_dir`), so a
reader sees the previous catalogue or the new one. The manifest records the sha256 of
the parquet file; every load checks it, so an edited catalogue is refused, not used.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from lab import settings
from lab.util.atomic import publish_dir
from lab.util.canonical import sha256_file, sha256_hex
from lab.util.locks import file_lock

from .importers import CatalogError
from .items import CatalogItem, extra_json

FORMAT = "lab.catalog/1"
PARQUET_NAME = "catalog.parquet"
MANIFEST_NAME = "manifest.json"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_STR = pa.string()
_LIST = pa.list_(pa.string())
SCHEMA = pa.schema(
    [
        ("recording_id", _STR),
        ("isrc", _STR),
        ("title", _STR),
        ("artists", _LIST),
        ("description", _STR),
        ("rights_holders", _LIST),
        ("licence", _STR),
        ("audio_path", _STR),
        ("extra", _STR),  # canonical JSON text of the row's `extra` object ("{}" when none)
        ("catalog", _STR),
        ("status", _STR),
        ("reject_reason", _STR),
        ("reject_detail", _STR),
        ("audio_sha256", _STR),
        ("duration_s", pa.float64()),
        ("sample_rate", pa.int64()),
        ("channels", pa.int64()),
        ("frames", pa.int64()),
        ("format", _STR),
        ("size_bytes", pa.int64()),
    ]
)
assert SCHEMA.names == list(CatalogItem.model_fields), "catalog parquet schema out of step with CatalogItem"


class CatalogNotFoundError(CatalogError):
    """No catalogue of that name under the catalogues folder."""


class CatalogIntegrityError(CatalogError):
    """A stored catalogue does not match its manifest (edited, truncated or foreign)."""


class Catalog(BaseModel):
    """An ingested catalogue: every metadata row as one item (ok or rejected), in file order."""

    name: str
    root: Path
    items: list[CatalogItem]
    manifest: dict[str, Any] = {}

    def counts(self) -> dict[str, Any]:
        return item_counts(self.items)

    @property
    def rejected_items(self) -> list[CatalogItem]:
        return [i for i in self.items if i.status != "ok"]


def item_counts(items: list[CatalogItem]) -> dict[str, Any]:
    ok = sum(1 for i in items if i.status == "ok")
    by_reason = Counter(i.reject_reason or "unknown" for i in items if i.status != "ok")
    return {
        "total": len(items),
        "ok": ok,
        "rejected": len(items) - ok,
        "rejected_by_reason": dict(sorted(by_reason.items())),
    }


# --------------------------------------------------------------------------- paths


def check_name(name: str) -> str:
    """Catalogue names are one path component: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise CatalogError(
            f"invalid catalogue name {name!r}: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 64 characters)"
        )
    return name


def catalogs_root(home: str | Path | None = None) -> Path:
    return Path(home) / "catalogs" if home is not None else settings.catalogs_dir()


def catalog_dir(name: str, home: str | Path | None = None) -> Path:
    return catalogs_root(home) / check_name(name)


def manifest_path(name: str, home: str | Path | None = None) -> Path:
    return catalog_dir(name, home) / MANIFEST_NAME


def parquet_path(name: str, home: str | Path | None = None) -> Path:
    return catalog_dir(name, home) / PARQUET_NAME


# --------------------------------------------------------------------------- write


def items_to_table(items: list[CatalogItem]) -> pa.Table:
    cols = {f: [getattr(it, f) for it in items] for f in SCHEMA.names}
    cols["extra"] = [extra_json(e) for e in cols["extra"]]
    return pa.table(cols, schema=SCHEMA)


def _with_extra(table: pa.Table) -> pa.Table:
    """A catalogue stored before `extra` existed: the same rows, each with no extra facts."""
    if "extra" in table.schema.names or table.schema.names != [f for f in SCHEMA.names if f != "extra"]:
        return table
    at = SCHEMA.get_field_index("extra")
    return table.add_column(at, SCHEMA.field("extra"), pa.array(["{}"] * table.num_rows, _STR))


def save_catalog(cat: Catalog, home: str | Path | None = None) -> Path:
    """Write (or replace) catalogue `cat.name`; returns its folder.

    `cat.manifest` is updated to the manifest written (it gains the parquet sha256).
    """
    name = check_name(cat.name)
    stray = [i.recording_id for i in cat.items if i.catalog != name]
    if stray:
        raise CatalogError(f"items {stray[:5]} belong to another catalogue than {name!r}")
    root = catalogs_root(home)
    final = root / name
    with file_lock(root / f".{name}.lock"):
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=root))
        try:
            pq.write_table(items_to_table(cat.items), staging / PARQUET_NAME, compression="zstd")
            manifest = dict(cat.manifest)
            manifest.update(
                {
                    "format": FORMAT,
                    "name": name,
                    "root": str(Path(cat.root).resolve()),
                    "counts": item_counts(cat.items),
                    "parquet": {
                        "file": PARQUET_NAME,
                        "sha256": sha256_file(staging / PARQUET_NAME),
                        "rows": len(cat.items),
                    },
                }
            )
            (staging / MANIFEST_NAME).write_bytes(_manifest_bytes(manifest))
            publish_dir(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    cat.manifest = manifest
    return final


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


# --------------------------------------------------------------------------- read


def _read_manifest(name: str, home: str | Path | None) -> tuple[dict[str, Any], bytes]:
    path = manifest_path(name, home)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CatalogNotFoundError(f"no catalogue named {name!r} under {catalogs_root(home)}") from None
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CatalogIntegrityError(f"catalogue {name!r}: manifest {path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CatalogIntegrityError(f"catalogue {name!r}: {path} is not a {FORMAT} manifest")
    if manifest.get("name") != name:
        raise CatalogIntegrityError(f"catalogue {name!r}: manifest names {manifest.get('name')!r}")
    return manifest, raw


def load_manifest(name: str, home: str | Path | None = None) -> dict[str, Any]:
    return _read_manifest(name, home)[0]


def manifest_sha256(name: str, home: str | Path | None = None) -> str:
    """sha256 of the manifest file's bytes (what a snapshot pins)."""
    return sha256_hex(_read_manifest(name, home)[1])


def _load_verified(name: str, home: str | Path | None) -> tuple[dict[str, Any], pa.Table]:
    # Hash and parse the same bytes, so what is verified is what is used. If a re-ingest
    # swaps the catalogue between reading the manifest and the parquet, read again once.
    for attempt in range(2):
        manifest, raw = _read_manifest(name, home)
        ppath = parquet_path(name, home)
        try:
            data = ppath.read_bytes()
        except FileNotFoundError:
            data = None
        expected = (manifest.get("parquet") or {}).get("sha256")
        actual = sha256_hex(data) if data is not None else None
        if actual is not None and actual == expected:
            break
        if attempt == 0 and _read_manifest_quiet(name, home) != raw:
            continue
        if data is None:
            raise CatalogIntegrityError(f"catalogue {name!r}: {ppath} is missing")
        raise CatalogIntegrityError(
            f"catalogue {name!r} was modified after ingest: sha256 of {ppath} is {actual}, "
            f"manifest says {expected}. Re-ingest it (lab catalog ingest) rather than editing it."
        )
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise CatalogIntegrityError(f"catalogue {name!r}: cannot read {ppath}: {exc}") from None
    table = _with_extra(table)
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise CatalogIntegrityError(f"catalogue {name!r}: {ppath} has an unexpected schema")
    if table.num_rows != (manifest.get("parquet") or {}).get("rows"):
        raise CatalogIntegrityError(f"catalogue {name!r}: row count differs from the manifest")
    return manifest, table


def _read_manifest_quiet(name: str, home: str | Path | None) -> bytes | None:
    try:
        return manifest_path(name, home).read_bytes()
    except OSError:
        return None


def load_catalog_table(name: str, home: str | Path | None = None) -> pa.Table:
    """The catalogue as a pyarrow Table (columns = CatalogItem fields), integrity-checked."""
    return _load_verified(name, home)[1]


def list_catalogs(home: str | Path | None = None) -> list[dict[str, Any]]:
    """Manifests of every stored catalogue, by name (unreadable ones carry an `error`)."""
    root = catalogs_root(home)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir() or not NAME_RE.fullmatch(d.name):
            continue
        if not (d / MANIFEST_NAME).exists():
            continue
        try:
            out.append(load_manifest(d.name, home))
        except CatalogError as exc:
            out.append({"name": d.name, "error": str(exc)})
    return out
