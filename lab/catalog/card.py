"""Dataset card (Hugging Face style: YAML metadata + prose) for an ingested catalogue.

The card lives beside the catalogue it describes, `<LAB_HOME>/catalogs/<name>/card.md`: it is
state like the catalogue, never written into the source tree or the installed package.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from ..util.atomic import write_text
from .store import CatalogNotFoundError, catalog_dir

CARD_NAME = "card.md"
MAX_LISTED = 1000  # recordings listed in the card's table; `lab catalog show NAME -n 0` lists all
DEFAULT_CONSENT = (
    "Consent is not recorded in this card: the rights ledger (`lab rights`) holds it, and "
    "`lab clear` decides per recording, under a policy, at a moment."
)
_SIZES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
]


def size_category(n: int) -> str:
    """The Hugging Face Hub's `size_categories` bucket for n rows."""
    return next((label for bound, label in _SIZES if n < bound), "n>10M")


def render_dataset_card(cat, consent: str = DEFAULT_CONSENT) -> str:
    ok = [i for i in cat.items if i.status == "ok"]
    rejected = Counter(i.reject_reason for i in cat.items if i.status != "ok")
    licences = sorted({i.licence for i in cat.items if i.licence})
    meta = {
        "pretty_name": f"lab catalogue: {cat.name}",
        "license": "other",
        "license_name": "per-recording consent grants (see the lab rights ledger)",
        "task_categories": ["text-to-audio"],
        "tags": ["music", "consent-cleared", "lab"],
        "size_categories": [size_category(len(cat.items))],
        "lab": {
            "catalog": cat.name,
            "recordings": len(cat.items),
            "decoded": len(ok),
            "rejected": dict(sorted(rejected.items())),
            "declared_licences": licences,
        },
    }
    hours = sum(i.duration_s or 0 for i in ok) / 3600
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# lab catalogue `{cat.name}`",
        "",
        "A catalogue ingested by `lab catalog ingest`. Declared licences here are informational: "
        "only the rights ledger's grants decide what a model may be trained on (`lab clear`).",
        "",
        f"- recordings: {len(cat.items)} ({len(ok)} decoded, {sum(rejected.values())} rejected at ingest)",
        f"- audio: {hours * 60:.1f} minutes",
        "",
        "## Recordings",
        "",
        "| recording | ISRC | title | artists | rights holders | status | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in cat.items[:MAX_LISTED]:
        status = "ok" if i.status == "ok" else f"rejected: {i.reject_reason}"
        lines.append(
            f"| {i.recording_id} | {i.isrc or ''} | {i.title} | {', '.join(i.artists)} | "
            f"{', '.join(i.rights_holders)} | {status} | {i.description} |"
        )
    if len(cat.items) > MAX_LISTED:
        lines += ["", f"… and {len(cat.items) - MAX_LISTED} more: `lab catalog show {cat.name} --limit 0`."]
    lines += ["", "## Consent", "", consent, ""]
    return "\n".join(lines)


def card_path(name: str, home: str | Path | None = None) -> Path:
    """Where catalogue `name`'s card lives (under LAB_HOME unless `home` is given)."""
    return catalog_dir(name, home) / CARD_NAME


def write_dataset_card(cat, home: str | Path | None = None, consent: str = DEFAULT_CONSENT) -> Path:
    """Write the card of a saved catalogue (after `save_catalog`, which replaces the folder whole)."""
    return write_text(card_path(cat.name, home), render_dataset_card(cat, consent))


def read_dataset_card(name: str, home: str | Path | None = None) -> str:
    path = card_path(name, home)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogNotFoundError(f"no dataset card for catalogue {name!r} at {path}") from None
